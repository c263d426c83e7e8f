"""Read PyTorch state-dict files (`torch.save(model.state_dict(), path)`) without torch.

    load_state_dict(path) -> dict[str, np.ndarray]     e.g. {'conv1.weight': (64,3,7,7) float32, ...}

A .pth file is a pickle, and unpickling runs whatever callable the file names: a hostile file
can run `os.system`. So we never let pickle look anything up. `_Unpickler.find_class` answers
only the few names a state dict needs, each mapped to a harmless stand-in of our own; any other
name raises UnsafeWeightFileError before anything is called.

    collections.OrderedDict          the container (OrderedDict itself: it runs no file code)
    torch._utils._rebuild_tensor_v2  -> _TensorRef(storage, offset, size, stride)  (and _v1)
    torch._utils._rebuild_parameter  -> the tensor inside (requires_grad is dropped)
    torch.FloatStorage, ...          -> a _StorageType naming the NumPy dtype

The tensor data is not in the pickle. The pickle refers to it by *persistent id*
('storage', storage type, key, location, numel[, view]); `persistent_load` turns that into a
_Storage placeholder. After unpickling we read the raw bytes and build each array with
as_strided + copy, after checking that every element it touches lies inside its storage.

Nothing is allocated that the file's bytes do not justify: a tensor may not have more elements
than its storage (a 400-byte file can declare a 100000 x 100000 tensor of stride 0), all arrays
together may not exceed MAX_GROWTH times the file, and a zip member's declared size must fit
its compressed bytes (files.zip_member_problem).

Two containers exist:
  zip (torch >= 1.6)   <name>/data.pkl, the raw bytes of storage <key> in <name>/data/<key>,
                       optionally <name>/byteorder ('little' or 'big'; little when missing)
  legacy (torch < 1.6, and `_use_new_zipfile_serialization=False`) one stream of five parts:
                       pickle(magic number) pickle(protocol 1001) pickle(sys_info)
                       pickle(the state dict) pickle([storage keys])
                       then per key, in that order: int64 element count + the raw bytes
"""
import collections
import io
import math
import os
import pickle
import zipfile

import numpy as np

from .files import zip_member_problem

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
# the arrays built may hold at most this many times the file's bytes: views of one storage may
# overlap (tied weights, a tensor beside its transpose: 2x) and bfloat16 widens to float32 (2x)
MAX_GROWTH = 4


class UnsafeWeightFileError(ValueError):
    """The file asks pickle for something a state dict never needs (possibly hostile code)."""


def _bfloat16_to_float32(raw):
    """bfloat16 is the top half of a float32: shift its 16 bits up. raw: uint16 array."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


# storage class name -> NumPy dtype of its elements (BFloat16 is read as uint16, then widened)
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": np.uint16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _Frozen:
    """Objects the pickle may hold but never modify (pickle's BUILD opcode calls __setstate__)."""

    def __setstate__(self, state):
        raise UnsafeWeightFileError(f"the file tries to set the state of a {type(self).__name__}")


class _StorageType(_Frozen):
    def __init__(self, name):
        self.name, self.dtype = name, np.dtype(_STORAGE_DTYPES[name])


class _Storage(_Frozen):
    """A placeholder for the raw bytes of one storage: key, type, element count; `data` later."""

    def __init__(self, key, stype, numel):
        self.key, self.stype, self.numel, self.data = key, stype, numel, None


class _TensorRef(_Frozen):
    """What torch._utils._rebuild_tensor_v2 would rebuild, with its geometry checked."""

    def __init__(self, storage, offset, size, stride):
        if not isinstance(storage, _Storage):
            raise UnsafeWeightFileError("a tensor is built from something other than a storage")
        if not (isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)
                and all(_is_int(v) for v in (offset, *size, *stride))):
            raise ValueError(f"malformed tensor geometry: offset {offset!r}, size {size!r}, "
                             f"stride {stride!r}")
        if offset < 0 or any(v < 0 for v in (*size, *stride)):
            raise ValueError(f"negative tensor offset, size or stride: {offset}, {size}, {stride}")
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))    # highest index read
        if 0 not in size and last >= storage.numel:
            raise ValueError(f"a tensor of size {tuple(size)}, stride {tuple(stride)}, offset "
                             f"{offset} reads past its storage of {storage.numel} elements")
        if math.prod(size) > storage.numel:     # stride 0 or overlapping strides: a tiny file
            raise ValueError(f"a tensor of size {tuple(size)}, stride {tuple(stride)} has "
                             f"{math.prod(size)} elements, more than its storage of "
                             f"{storage.numel} holds")
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def to_numpy(self):
        """A fresh C-contiguous array (N-d, dtype of the storage; bfloat16 becomes float32)."""
        data = self.storage.data                                      # 1-D, numel elements
        if 0 in self.size:
            out = np.empty(self.size, dtype=data.dtype)
        else:
            item = data.dtype.itemsize
            out = np.lib.stride_tricks.as_strided(
                data[self.offset:], shape=self.size, strides=[s * item for s in self.stride],
                writeable=False).copy()
        if self.storage.stype.name == "BFloat16Storage":
            out = _bfloat16_to_float32(out)
        return out


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    if not isinstance(data, _TensorRef):
        raise UnsafeWeightFileError("a parameter is built from something other than a tensor")
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor_v2,       # torch < 1.0, same first 4 args
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _Unpickler(pickle.Unpickler):
    """Unpickles only what a state dict needs; collects the storages it refers to."""

    def __init__(self, file, path):
        super().__init__(file, encoding="utf-8")
        self.path, self.storages = path, {}                           # storages: key -> _Storage

    def load(self):
        try:
            return super().load()
        except (pickle.UnpicklingError, EOFError, TypeError, AttributeError, IndexError, KeyError,
                OverflowError, MemoryError) as e:    # MemoryError: a damaged length field
            raise ValueError(f"{self.path}: damaged or truncated pickle "
                             f"({type(e).__name__}: {e})") from None
        except ValueError as e:             # ours, raised while unpickling: say which file
            raise type(e)(f"{self.path}: {e}") from None

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except (KeyError, TypeError):
            raise UnsafeWeightFileError(
                f"refusing to load {module}.{name}: a weight file should only need tensors and "
                f"dicts, and unpickling this global could run code from the file") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
                and _is_int(pid[4]) and pid[4] >= 0):
            raise UnsafeWeightFileError(f"unexpected persistent id in the pickle: {pid!r:.200}")
        if len(pid) == 6 and pid[5] is not None:
            raise ValueError("storage views (torch < 0.4 files) are not supported")
        _, stype, key, _location, numel = pid[:5]
        storage = self.storages.setdefault(key, _Storage(key, stype, numel))
        if storage.stype is not stype or storage.numel != numel:
            raise ValueError(f"storage {key!r} is declared twice with different types or sizes")
        return storage


def _read_zip(path, f):
    """(unpickled object, storages) of a zip-format file f, storages' bytes filled in."""
    archive_size = len(f.getbuffer())
    with zipfile.ZipFile(f) as z:
        names = z.namelist()
        pkl = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(pkl) != 1:
            raise ValueError(f"{path}: a zip file, but not a PyTorch one (no single data.pkl "
                             f"among {names[:5]}...)")
        prefix = pkl[0][:-len("data.pkl")]
        order = "little"
        if prefix + "byteorder" in names:
            order = z.read(prefix + "byteorder").decode("ascii", "replace").strip()
        if order not in ("little", "big"):
            raise ValueError(f"{path}: unknown byte order {order!r}")
        unpickler = _Unpickler(io.BytesIO(_read_member(path, z, archive_size, pkl[0])), path)
        obj = unpickler.load()
        for key, st in unpickler.storages.items():
            name = prefix + "data/" + key
            if name not in names:
                raise ValueError(f"{path}: storage {key!r} is missing ({name})")
            dtype = st.stype.dtype.newbyteorder("<" if order == "little" else ">")
            raw = _read_member(path, z, archive_size, name)
            st.data = _from_bytes(path, key, raw, dtype, st.numel)
    return obj, unpickler.storages


def _read_member(path, z, size, name):
    """The bytes of zip member `name`, after checking that the archive can hold what the member
    declares (size: the archive's length; a forged size is refused before anything is read)."""
    problem = zip_member_problem(z.getinfo(name), size)
    if problem:
        raise ValueError(f"{path}: {problem}")
    return z.read(name)


def _from_bytes(path, key, raw, dtype, numel):
    """raw bytes -> 1-D native-order array of `numel` elements of `dtype`."""
    if len(raw) < numel * dtype.itemsize:
        raise ValueError(f"{path}: storage {key!r} holds {len(raw)} bytes, "
                         f"{numel} elements of {dtype} need {numel * dtype.itemsize}")
    data = np.frombuffer(raw, dtype=dtype, count=numel)
    return data.astype(dtype.newbyteorder("="), copy=False)


def _read_legacy(path, f):
    """(unpickled object, storages) of a legacy-format file, f open at its start."""
    not_torch = ValueError(f"{path}: not a PyTorch weight file (neither a zip archive nor a "
                           f"legacy torch.save stream)")
    f.seek(0)
    if f.read(1) != pickle.PROTO:
        raise not_torch
    f.seek(0)
    try:
        magic = _Unpickler(f, path).load()
    except UnsafeWeightFileError:
        raise
    except Exception:
        raise not_torch from None
    if magic != LEGACY_MAGIC:
        raise not_torch
    protocol = _Unpickler(f, path).load()
    if protocol != LEGACY_PROTOCOL:
        raise ValueError(f"{path}: unsupported legacy protocol {protocol!r}")
    sys_info = _Unpickler(f, path).load()
    order = "<" if not isinstance(sys_info, dict) or sys_info.get("little_endian", True) else ">"
    unpickler = _Unpickler(f, path)
    obj = unpickler.load()
    keys = _Unpickler(f, path).load()
    if not isinstance(keys, list) or set(keys) != set(unpickler.storages):
        raise ValueError(f"{path}: the storage key list does not match the tensors in the file")
    for key in keys:
        st = unpickler.storages[key]
        count = np.frombuffer(f.read(8), dtype=order + "i8")
        if count.size != 1 or int(count[0]) != st.numel:
            raise ValueError(f"{path}: storage {key!r} should hold {st.numel} elements, "
                             f"the file says {count.tolist()}")
        dtype = st.stype.dtype.newbyteorder(order)
        st.data = _from_bytes(path, key, f.read(st.numel * dtype.itemsize), dtype, st.numel)
    return obj, unpickler.storages


def load_state_dict(path):
    """Read a PyTorch state-dict file, zip or legacy format, without torch and without running
    code from the file. Returns {name: np.ndarray} in the file's order; arrays are C-contiguous,
    in the stored dtype (bfloat16 as float32), 0-d for scalars such as `num_batches_tracked`.

    Raises FileNotFoundError, UnsafeWeightFileError (a global outside the allow-list: the
    message names it), or ValueError (not a PyTorch file, not a flat dict of tensors, damaged).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no weight file at {path}")
    with open(path, "rb") as f:
        f = io.BytesIO(f.read())                  # both containers read from memory from here on
    try:
        is_zip = zipfile.is_zipfile(f)
        if is_zip:
            obj, _ = _read_zip(path, f)
    except (zipfile.BadZipFile, NotImplementedError, EOFError, OSError, OverflowError, RuntimeError) as e:
        raise ValueError(f"{path}: damaged zip archive ({type(e).__name__}: {e})") from None
    if not is_zip:
        obj, _ = _read_legacy(path, f)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict (a dict of tensors), got {type(obj).__name__}")
    for name, value in obj.items():
        if not isinstance(name, str) or not isinstance(value, _TensorRef):
            raise ValueError(f"{path}: expected a flat dict of name -> tensor, but entry "
                             f"{name!r:.80} holds a {type(value).__name__}")
    _check_total(path, obj.values(), len(f.getbuffer()))
    return {name: ref.to_numpy() for name, ref in obj.items()}


def _check_total(path, refs, file_size):
    """Refuse a file whose tensors would build more than MAX_GROWTH times its bytes, before
    anything is built: each tensor fits inside its storage, but many views of one storage
    could still ask for far more memory than the file holds. refs: one _TensorRef per tensor."""
    need = sum(math.prod(ref.size) * (4 if ref.storage.stype.name == "BFloat16Storage"
                                      else ref.storage.stype.dtype.itemsize) for ref in refs)
    if need > MAX_GROWTH * file_size:
        raise ValueError(f"{path}: its tensors would take {need} bytes, more than {MAX_GROWTH} "
                         f"times the file's {file_size} (views that overlap far more than a "
                         f"state dict's do)")
