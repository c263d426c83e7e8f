"""A strict stand-in for CuPy, backed by NumPy: the GPU lane of the test suite, without a GPU.

It is importable as `cupy` when the lane puts tests/strict_cupy first on the path
(USTUDENTS_STRICT_CUPY=1, see tests/conftest.py). Arrays live "on the device": a NumPy array
wrapped in `ndarray`, which refuses what real CuPy refuses, so code that mixes host and device
arrays fails here as it would on a GPU:

- a numpy.ndarray operand in an operator, a ufunc, `@` or a cupy.* function: TypeError;
- implicit conversion to NumPy (`np.asarray(dev)`, `__array__`): TypeError;
- `dev[...] = host_array`: TypeError;
- reductions and integer indexing give 0-d device arrays, not Python or NumPy scalars.

`.get()`, `cupy.asnumpy`, `float()`, `int()`, `bool()`, `.item()` and `.tolist()` work; each
device-to-host copy ("d2h") and host-to-device copy ("h2d") is counted by the call site that
asked for it, and every device operation ("kernel") is counted, so tests can bound them:

    cupy.counts.clear(); train(...); assert cupy.total("d2h") <= 10

STRICT_CUPY_MEMORY_LIMIT (bytes) makes an allocation beyond it raise
cupy.cuda.memory.OutOfMemoryError; STRICT_CUPY_FAIL = nvrtc | cublas | driver | nodevice |
busy makes the first kernel, matrix product or allocation fail as CuPy does in that case.
"""
import builtins
import collections
import os
import sys
import weakref

import numpy as _np

from . import cuda

__version__ = "14.2.0+strict-standin"

counts = collections.Counter()          # (event, "file:line") -> n; events: d2h, h2d, kernel


def total(event):
    """How many times `event` ('d2h', 'h2d' or 'kernel') happened since counts.clear()."""
    return builtins.sum(n for (e, _), n in counts.items() if e == event)


def sites(event):
    """{call site: count} of one event, for a test's failure message."""
    return {site: n for (e, site), n in counts.items() if e == event}


_HERE = os.path.dirname(os.path.abspath(__file__))


def _site():
    """file:line of the first caller outside this stand-in (and outside NumPy)."""
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_filename
        if not name.startswith(_HERE) and "numpy" not in name:
            return f"{os.path.relpath(name) if name.startswith(os.getcwd()) else name}:{frame.f_lineno}"
        frame = frame.f_back
    return "?"


def _count(event, site=True):
    counts[(event, _site() if site else "")] += 1


# ---- failures and memory -------------------------------------------------------------------

_FAIL = os.environ.get("STRICT_CUPY_FAIL", "")
_LIMIT = int(os.environ.get("STRICT_CUPY_MEMORY_LIMIT", "0") or 0)


def _maybe_fail(stage):
    """Raise what CuPy raises when a library or the device is missing (STRICT_CUPY_FAIL)."""
    if _FAIL == "nodevice":
        raise cuda.runtime.CUDARuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")
    if _FAIL == "busy":
        raise cuda.runtime.CUDARuntimeError(
            "cudaErrorDevicesUnavailable: CUDA-capable device(s) is/are busy or unavailable")
    if _FAIL == "driver":
        raise cuda.runtime.CUDARuntimeError(
            "cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime version")
    if _FAIL == "nvrtc" and stage == "kernel":
        raise RuntimeError("CuPy failed to load libnvrtc.so.12: OSError: libnvrtc.so.12: cannot open "
                           "shared object file: No such file or directory")
    if _FAIL == "cublas" and stage == "matmul":
        raise ImportError("libcublas.so.12: cannot open shared object file: No such file or directory")


class _Pool:
    """The default memory pool: bytes held by live device arrays, and the most ever held."""

    def __init__(self):
        self.used, self.peak = 0, 0

    def used_bytes(self):
        return self.used

    def total_bytes(self):
        return self.peak

    def free_all_blocks(self):
        pass

    def _take(self, nbytes):
        if _LIMIT and self.used + nbytes > _LIMIT:
            raise cuda.memory.OutOfMemoryError(nbytes, self.used)
        self.used += nbytes
        self.peak = builtins.max(self.peak, self.used)

    def _give(self, nbytes):
        self.used -= nbytes


_pool = _Pool()


def get_default_memory_pool():
    return _pool


def get_default_pinned_memory_pool():
    return _Pool()


# ---- the array -----------------------------------------------------------------------------

def _refuse(x):
    raise TypeError(f"Unsupported type {type(x)}")


def _unwrap(x):
    """The NumPy array behind a device array; scalars pass; host arrays are refused."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, _np.ndarray):
        _refuse(x)
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v) for v in x)
    return x


def _wrap(a):
    """A device array over the NumPy result `a` (0-d for scalars), charged to the pool if new."""
    if isinstance(a, tuple):
        return tuple(_wrap(v) for v in a)
    if not isinstance(a, _np.ndarray):
        if isinstance(a, (_np.generic, builtins.bool, int, float, complex)):
            a = _np.asarray(a)
        else:
            return a
    out = ndarray.__new__(ndarray)
    out._a = a
    if a.base is None and a.nbytes:
        _pool._take(a.nbytes)
        weakref.finalize(out, _pool._give, a.nbytes)
    return out


def _op(fn, stage="kernel"):
    def run(*args, **kwargs):
        _maybe_fail(stage)
        counts[("kernel", "")] += 1
        return _wrap(fn(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()}))
    return run


class ndarray:
    """A device array (a NumPy array inside), strict about host arrays as CuPy is."""

    __array_priority__ = 100.0

    def __init__(self, shape, dtype=float):
        a = _np.empty(shape, dtype)
        self._a = a
        _pool._take(a.nbytes)
        weakref.finalize(self, _pool._give, a.nbytes)

    # -- refusing the host --
    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` "
                        "to construct a NumPy array explicitly.")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        out = kwargs.get("out")
        if out is not None:
            kwargs["out"] = tuple(_unwrap(o) for o in out)
        _maybe_fail("matmul" if ufunc is _np.matmul else "kernel")
        counts[("kernel", "")] += 1
        result = getattr(ufunc, method)(*_unwrap(inputs), **kwargs)
        return out[0] if out is not None and len(out) == 1 else _wrap(result)

    def __array_function__(self, func, types, args, kwargs):
        ours = globals().get(func.__name__)
        if ours is None or not callable(ours):
            return NotImplemented
        return ours(*args, **kwargs)

    # -- to the host, counted --
    def get(self, stream=None, out=None):
        _count("d2h")
        return self._a.copy()

    def item(self):
        _count("d2h")
        return self._a.item()

    def tolist(self):
        _count("d2h")
        return self._a.tolist()

    def __float__(self):
        _count("d2h")
        return float(self._a)

    def __int__(self):
        _count("d2h")
        return int(self._a)

    def __bool__(self):
        _count("d2h")
        return builtins.bool(self._a)

    def __format__(self, spec):
        _count("d2h")
        return format(self._a.item() if self._a.ndim == 0 else self._a, spec)

    def __index__(self):
        _count("d2h")
        return self._a.__index__()

    def __repr__(self):
        return f"strict_cupy.{self._a!r}"

    # -- attributes --
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: _wrap(self._a.T))
    device = property(lambda self: cuda.Device(0))

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (_wrap(v) for v in self._a)

    # -- indexing --
    def __getitem__(self, key):
        if _has_host_array(key):
            _count("h2d")
        return _wrap(self._a[_unwrap_index(key)])

    def __setitem__(self, key, value):
        if isinstance(value, _np.ndarray):
            raise TypeError(f"Unsupported type {type(value)}: copy host arrays to the device with "
                            f"cupy.asarray first")
        counts[("kernel", "")] += 1
        self._a[_unwrap_index(key)] = _unwrap(value)

    # -- views and copies (no kernel for views) --
    def reshape(self, *shape, order="C"):
        return _wrap(self._a.reshape(*shape, order=order))

    def transpose(self, *axes):
        return _wrap(self._a.transpose(*axes))

    def swapaxes(self, a, b):
        return _wrap(self._a.swapaxes(a, b))

    def squeeze(self, axis=None):
        return _wrap(self._a.squeeze(axis))

    def ravel(self):
        counts[("kernel", "")] += 1
        return _wrap(self._a.ravel())

    def view(self, dtype=None):
        return _wrap(self._a.view(dtype))

    def astype(self, dtype, copy=True, **kwargs):
        counts[("kernel", "")] += 1
        return _wrap(self._a.astype(dtype, copy=copy, **kwargs))

    def copy(self, order="C"):
        counts[("kernel", "")] += 1
        return _wrap(self._a.copy(order))

    def flatten(self):
        counts[("kernel", "")] += 1
        return _wrap(self._a.flatten())

    def fill(self, value):
        counts[("kernel", "")] += 1
        self._a.fill(_unwrap(value))


def _has_host_array(key):
    keys = key if isinstance(key, tuple) else (key,)
    return builtins.any(isinstance(k, (_np.ndarray, list)) for k in keys)


def _unwrap_index(key):
    """Device arrays as indices are fine; host integer arrays are copied over (as CuPy does)."""
    if isinstance(key, tuple):
        return tuple(_unwrap_index(k) for k in key)
    return key._a if isinstance(key, ndarray) else key


def _method(name, stage="kernel"):
    def run(self, *args, **kwargs):
        _maybe_fail(stage)
        counts[("kernel", "")] += 1
        out = kwargs.get("out")
        if out is not None:
            kwargs["out"] = _unwrap(out)
        result = getattr(self._a, name)(*_unwrap(args), **{k: v for k, v in kwargs.items() if k != "out"},
                                        **({"out": kwargs["out"]} if out is not None else {}))
        return out if out is not None else _wrap(result)
    run.__name__ = name
    return run


for _name in ("sum", "mean", "var", "std", "max", "min", "prod", "any", "all", "argmax", "argmin",
              "cumsum", "clip", "round", "dot", "nonzero", "argsort", "sort", "conj"):
    setattr(ndarray, _name, _method(_name, "matmul" if _name == "dot" else "kernel"))


def _binary(name):
    npname = f"__{name}__"

    def run(self, other):
        if isinstance(other, _np.ndarray):
            _refuse(other)
        _maybe_fail("matmul" if "matmul" in name else "kernel")
        counts[("kernel", "")] += 1
        result = getattr(self._a, npname)(_unwrap(other))
        if result is NotImplemented:
            return NotImplemented
        return self if name.startswith("i") and name not in ("invert",) else _wrap(result)
    run.__name__ = npname
    return run


for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or",
              "xor", "lshift", "rshift", "lt", "le", "gt", "ge", "eq", "ne"):
    setattr(ndarray, f"__{_name}__", _binary(_name))
    if _name not in ("lt", "le", "gt", "ge", "eq", "ne"):
        setattr(ndarray, f"__r{_name}__", _binary("r" + _name))
        setattr(ndarray, f"__i{_name}__", _binary("i" + _name))
ndarray.__hash__ = None


def _unary(name):
    def run(self):
        counts[("kernel", "")] += 1
        return _wrap(getattr(self._a, name)())
    return run


for _name in ("__neg__", "__pos__", "__abs__", "__invert__"):
    setattr(ndarray, _name, _unary(_name))


# ---- module functions ----------------------------------------------------------------------

def asarray(a, dtype=None, order=None):
    """A device array: device input is returned (cast if asked), host input is copied over."""
    if isinstance(a, ndarray):
        if dtype is None or _np.dtype(dtype) == a.dtype:
            return a
        return a.astype(dtype)
    if isinstance(a, (list, tuple)) and builtins.any(isinstance(v, ndarray) for v in _flat(a)):
        raise TypeError("cupy.asarray of a list that holds device arrays: use cupy.stack")
    _count("h2d")
    return _wrap(_np.array(a, dtype=dtype, order=order or "K", copy=True))


def _flat(seq):
    for v in seq:
        if isinstance(v, (list, tuple)):
            yield from _flat(v)
        else:
            yield v


def array(a, dtype=None, copy=True, order="K"):
    if isinstance(a, ndarray):
        return a.astype(dtype or a.dtype, copy=True)
    return asarray(a, dtype, order)


def asnumpy(a, stream=None, out=None):
    if isinstance(a, ndarray):
        _count("d2h")
        return a._a.copy()
    return _np.asarray(a)


def ascontiguousarray(a, dtype=None):
    if not isinstance(a, ndarray):
        _refuse(a) if isinstance(a, _np.ndarray) else None
        return asarray(a, dtype)
    counts[("kernel", "")] += 1
    return _wrap(_np.ascontiguousarray(a._a, dtype=dtype))


def _alloc(fn):
    def run(*args, **kwargs):
        _maybe_fail("alloc")
        counts[("kernel", "")] += 1
        return _wrap(fn(*_unwrap(args), **kwargs))
    return run


zeros, ones, empty, full = (_alloc(f) for f in (_np.zeros, _np.ones, _np.empty, _np.full))
zeros_like, ones_like, empty_like, full_like = (_alloc(f) for f in (_np.zeros_like, _np.ones_like,
                                                                    _np.empty_like, _np.full_like))
arange, linspace, eye, identity = (_alloc(f) for f in (_np.arange, _np.linspace, _np.eye, _np.identity))

for _name in ("concatenate", "stack", "where", "pad", "einsum", "tensordot", "outer", "broadcast_to",
              "take", "argsort", "sort", "unique", "cumsum", "diff", "sum", "mean", "var", "std",
              "amax", "amin", "max", "min", "prod", "any", "all", "argmax", "argmin", "count_nonzero",
              "nonzero", "flatnonzero", "searchsorted", "isclose", "allclose", "array_equal",
              "transpose", "moveaxis", "expand_dims", "squeeze", "flip", "roll", "tile", "repeat",
              "trace", "diag", "tril", "triu", "clip", "round", "percentile", "quantile", "median",
              "histogram", "bincount", "cov", "corrcoef", "interp", "split", "array_split", "meshgrid",
              "reshape", "ravel", "atleast_1d", "atleast_2d", "vstack", "hstack", "column_stack"):
    globals()[_name] = _op(getattr(_np, _name))

for _name in ("dot", "matmul", "inner", "vdot"):
    globals()[_name] = _op(getattr(_np, _name), "matmul")

for _name in dir(_np):                                  # every ufunc: add, maximum, sqrt, exp, ...
    if isinstance(getattr(_np, _name), _np.ufunc) and _name not in globals():
        globals()[_name] = _op(getattr(_np, _name), "matmul" if _name == "matmul" else "kernel")

for _name in ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16",
              "uint32", "uint64", "bool_", "complex64", "complex128", "dtype", "finfo", "iinfo",
              "newaxis", "pi", "e", "inf", "nan", "result_type", "can_cast", "promote_types",
              "integer", "floating", "number", "generic"):
    globals()[_name] = getattr(_np, _name)
bool = _np.bool_  # noqa: A001


class _Linalg:
    """cupy.linalg (solve, inv, norm, ...): NumPy's, on device arrays, counted as matrix products."""

    def __getattr__(self, name):
        return _op(getattr(_np.linalg, name), "matmul")


linalg = _Linalg()


def get_array_module(*args):
    return sys.modules[__name__] if builtins.any(isinstance(a, ndarray) for a in args) else _np


def fuse(*args, **kwargs):
    """cupy.fuse: one kernel for a whole elementwise function; here it counts as one."""
    def wrap(fn):
        def run(*a, **k):
            before = counts[("kernel", "")]
            result = fn(*a, **k)
            counts[("kernel", "")] = before + 1
            return result
        return run
    return wrap(args[0]) if args and callable(args[0]) else wrap


class _Random:
    """cupy.random, for code that draws on the device (ustudents draws on the host)."""

    def default_rng(self, seed=None):
        rng = _np.random.default_rng(seed)

        class Generator:
            def __getattr__(self, name):
                return _op(getattr(rng, name))
        return Generator()


random = _Random()
