"""NumPy or CuPy: the one place that knows which.

Every other module asks the data (`xp = get_array_module(x)`) and follows the input's module
and dtype. The default device comes from the environment variable USTUDENTS_DEVICE:

    auto  CuPy when it imports *and* a GPU answers, else NumPy   (the default)
    cpu   NumPy
    cuda  CuPy; an error if it is missing or no GPU answers

CuPy can import fine on a machine without a usable GPU and only fail at the first allocation
(`CUDARuntimeError`), so `auto` probes with a tiny allocation before it trusts CuPy.
"""
import os

import numpy as np

_VALID = ("auto", "cpu", "cuda")
_cupy_state = None  # None: not probed yet; False: unusable; else the cupy module


def _probe_cupy():
    """Return the cupy module if it imports and a GPU answers a tiny allocation, else None."""
    global _cupy_state
    if _cupy_state is None:
        try:
            import cupy

            cupy.zeros(1, dtype=cupy.float32) + 1  # raises CUDARuntimeError without a GPU
            _cupy_state = cupy
        except Exception:  # ImportError, CUDARuntimeError, driver errors: all mean "no GPU here"
            _cupy_state = False
    return _cupy_state or None


def cupy_available():
    """True when CuPy imports and a GPU is usable."""
    return _probe_cupy() is not None


def default_device(device=None):
    """Resolve a device setting ('auto' | 'cpu' | 'cuda', default from USTUDENTS_DEVICE) to 'cpu' or 'cuda'."""
    device = (device or os.environ.get("USTUDENTS_DEVICE", "auto")).lower()
    if device not in _VALID:
        raise ValueError(f"device must be one of {_VALID}, got {device!r} (check USTUDENTS_DEVICE)")
    if device == "cpu":
        return "cpu"
    if cupy_available():
        return "cuda"
    if device == "cuda":
        raise RuntimeError("device 'cuda' was asked for, but CuPy is not installed or no GPU is usable; "
                           "install the extra with pip install -e '.[gpu]' or use --device cpu")
    return "cpu"


def xp_for(device=None):
    """The array module (numpy or cupy) for a device setting."""
    return _probe_cupy() if default_device(device) == "cuda" else np


def get_array_module(*arrays):
    """numpy or cupy, whichever the arrays live in (numpy for host arrays and scalars)."""
    for a in arrays:
        if type(a).__module__.startswith("cupy"):
            return _probe_cupy()
    return np


def is_gpu_array(x):
    return get_array_module(x) is not np


def asnumpy(x):
    """A host (NumPy) copy of x; NumPy arrays and scalars pass through unchanged."""
    if is_gpu_array(x):
        return x.get()
    return np.asarray(x)


def to_device(x, device=None):
    """Move an array, or every array in a dict, to 'cpu' or 'cuda' ('auto' and None resolve first)."""
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    if default_device(device) == "cuda":
        return _probe_cupy().asarray(x)
    return asnumpy(x)


def synchronize(x=None):
    """Wait for the GPU to finish queued work (a no-op on the CPU); for timing."""
    cupy = _cupy_state or None
    if cupy is not None:
        cupy.cuda.Device().synchronize()


def describe(device=None):
    """A one-line description of the backend, for the header that tutorials and the CLI print."""
    dev = default_device(device)
    if dev == "cuda":
        cupy = _probe_cupy()
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        return f"cupy {cupy.__version__} on {name}"
    return f"numpy {np.__version__} on cpu ({os.cpu_count()} cores)"
