"""NumPy or CuPy: the one place that knows which.

Every other module asks the data (`xp = get_array_module(x)`) and follows the input's module
and dtype. The default device comes from the environment variable USTUDENTS_DEVICE:

    auto  CuPy when it imports *and* a GPU computes, else NumPy   (the default)
    cpu   NumPy
    cuda  CuPy; an error that says why if it cannot run

CuPy can import fine on a machine whose GPU cannot compute: without the CUDA libraries
(NVRTC compiles CuPy's elementwise kernels, cuBLAS does its matrix products), with a driver
older than CuPy's CUDA, or with every GPU busy. So the probe runs one elementwise kernel and one
matrix product before it trusts CuPy, and keeps CuPy's reason when they fail: `cuda` reports it
with the fix, `auto` falls back to NumPy and says why in the run's header line (describe()).

Precision: float32 everywhere. On a GPU, cuBLAS may use TF32 tensor cores for float32 matrix
products (about 10 bits of mantissa, several times faster); that is off unless asked for with
USTUDENTS_PRECISION=tf32 (or --precision tf32), set before the first GPU computation.
"""
import os

import numpy as np

_VALID = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "tf32")
_cupy_state = None  # None: not probed yet; else (the cupy module or None, why not)


def precision():
    """'fp32' (the default) or 'tf32', from USTUDENTS_PRECISION."""
    value = os.environ.get("USTUDENTS_PRECISION", "fp32").lower()
    if value not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {value!r} (check USTUDENTS_PRECISION)")
    return value


def set_precision(value):
    """Choose 'fp32' or 'tf32' for this process; before the first GPU computation."""
    if value is not None:
        os.environ["USTUDENTS_PRECISION"] = value
        precision()


def explain_cuda_error(err):
    """CuPy's reason for not computing, and what fixes it, as one line."""
    text = f"{type(err).__name__}: {err}".strip().splitlines()[0]
    low = text.lower()
    if "nvrtc" in low or "cublas" in low or "libcu" in low:
        fix = ("the CUDA libraries are missing: pip install 'cupy-cuda12x[ctk]' takes them from "
               "PyPI (or install the CUDA Toolkit)")
    elif "insufficientdriver" in low or "driver version is insufficient" in low:
        fix = ("the NVIDIA driver is older than this CuPy's CUDA: update the driver, or install the "
               "CuPy wheel for the CUDA version that nvidia-smi shows (cupy-cuda12x for 12.x)")
    elif "busy or unavailable" in low or "devicesunavailable" in low or "out of memory" in low:
        fix = "no GPU is free (nvidia-smi shows who holds it): wait, or choose one with CUDA_VISIBLE_DEVICES"
    elif "nodevice" in low or "no cuda-capable device" in low:
        fix = "no GPU is visible here (check nvidia-smi and CUDA_VISIBLE_DEVICES)"
    elif isinstance(err, ImportError) and "cupy" in low:
        fix = "CuPy is not installed: pip install -e '.[gpu]'"
    else:
        fix = "see CuPy's message"
    return f"{fix} (CuPy: {text})"


def _probe():
    """(cupy, None) if CuPy imports and runs a kernel and a matrix product, else (None, why)."""
    os.environ["CUPY_TF32"] = "1" if precision() == "tf32" else "0"  # cuBLAS reads it at first use
    try:
        import cupy
    except ImportError as err:
        return None, f"CuPy is not installed ({err})"
    try:
        x = cupy.arange(4, dtype=cupy.float32).reshape(2, 2)
        y = x * 2 + 1                              # an elementwise kernel, compiled by NVRTC
        float((y @ y).sum())                       # a matrix product by cuBLAS, then a sync
    except Exception as err:                       # CUDARuntimeError, missing libraries, ...
        return None, explain_cuda_error(err)
    return cupy, None


def _probe_cupy():
    """The cupy module if it computes here, else None (the reason: why_no_gpu())."""
    global _cupy_state
    if _cupy_state is None:
        _cupy_state = _probe()
    return _cupy_state[0]


def why_no_gpu():
    """Why CuPy cannot be used here, or None when it can."""
    _probe_cupy()
    return _cupy_state[1]


def cupy_available():
    """True when CuPy imports and a GPU computes."""
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
        raise RuntimeError(f"device 'cuda' was asked for, but the GPU cannot be used: {why_no_gpu()}; "
                           f"or run with --device cpu")
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


def synchronize():
    """Wait for the GPU to finish queued work (a no-op on the CPU); for timing."""
    cupy = _cupy_state[0] if _cupy_state else None
    if cupy is not None:
        cupy.cuda.Device().synchronize()


def fuse(fn):
    """fn, an elementwise function of arrays and scalars, as one GPU kernel (cupy.fuse: no
    temporaries, one launch instead of one per operation) for device arrays; called as it is
    for NumPy arrays. In-place updates of its array arguments (m *= b) carry over."""
    fused = []

    def run(*args):
        xp = get_array_module(*args)
        if xp is np:
            return fn(*args)
        if not fused:
            fused.append(xp.fuse(kernel_name=fn.__name__)(fn))
        return fused[0](*args)
    run.__name__, run.__doc__ = fn.__name__, fn.__doc__
    return run


def memory_pool_bytes():
    """(bytes in use, bytes held) by CuPy's default memory pool; (0, 0) without a GPU."""
    cupy = _cupy_state[0] if _cupy_state else None
    if cupy is None:
        return 0, 0
    pool = cupy.get_default_memory_pool()
    return pool.used_bytes(), pool.total_bytes()


def is_out_of_memory(err):
    """True for CuPy's OutOfMemoryError (and cuBLAS's failed allocation) and for MemoryError."""
    names = {cls.__name__ for cls in type(err).__mro__}
    return "OutOfMemoryError" in names or isinstance(err, MemoryError) or "ALLOC_FAILED" in str(err)


def out_of_memory_message(err, lower):
    """One line for an out-of-memory error: where it ran out, and which settings to lower."""
    where = "the GPU" if "OutOfMemoryError" in {c.__name__ for c in type(err).__mro__} else "memory"
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return f"{where} ran out ({reason}); lower {lower}"


def describe(device=None):
    """A one-line description of the backend, for the header that tutorials and the CLI print.
    When `auto` fell back to NumPy although CuPy is installed, it says why."""
    dev = default_device(device)
    if dev == "cuda":
        cupy = _probe_cupy()
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        return f"cupy {cupy.__version__} on {name}, {precision()}"
    line = f"numpy {np.__version__} on cpu ({os.cpu_count()} cores)"
    asked = (device or os.environ.get("USTUDENTS_DEVICE", "auto")).lower()
    why = why_no_gpu() if asked == "auto" else None
    if why and not why.startswith("CuPy is not installed"):
        line += f"; no GPU: {why}"
    return line
