"""Writing files so that nothing is ever half written: write under a temporary name in the same
folder, then rename (os.replace is atomic on one file system). A crash leaves the old file or
none, never a torn one. A folder of outputs (a model, an evaluation) is written the same way as
a whole: staged_folder."""
import contextlib
import json
import math
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path` (same suffix, so writers that go by the suffix
    pick the right format); renamed to `path` when the block succeeds, removed when it fails.
    Missing parent folders are made."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=path.suffix)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())          # mkstemp makes 0600; give the usual mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path, obj):
    """obj as indented JSON at path, atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=1) + "\n")
    return Path(path)


# deflate expands a byte at most this many times (RFC 1951): a bound on honest zip members
DEFLATE_MAX_RATIO = 1032


def zip_member_problem(info, archive_size):
    """Why a zip member (a zipfile.ZipInfo) cannot be honest, or None. Its sizes are claims of
    the archive's directory: the compressed bytes must lie inside the archive (archive_size
    bytes), and the declared size must fit them (a stored member holds what it stores, deflate
    expands at most DEFLATE_MAX_RATIO times). Other methods (bzip2, lzma) are refused: neither
    np.savez nor torch.save writes them. Checked before reading or allocating anything."""
    if info.header_offset + info.compress_size > archive_size:
        return (f"member {info.filename!r} claims {info.compress_size} compressed bytes, "
                f"more than the {archive_size}-byte archive holds")
    if info.compress_type == zipfile.ZIP_STORED:
        limit = info.compress_size
    elif info.compress_type == zipfile.ZIP_DEFLATED:
        limit = DEFLATE_MAX_RATIO * info.compress_size + 1024
    else:
        return (f"member {info.filename!r} is compressed with zip method {info.compress_type}; "
                f"only stored and deflated members are read")
    if info.file_size > limit:
        return (f"member {info.filename!r} declares {info.file_size} bytes, more than its "
                f"{info.compress_size} compressed bytes can hold")
    return None


def _npz_problem(path):
    """Why `path` is no .npz of arrays np.load may read, or None. Looked at before np.load,
    which allocates the shape an array's header declares before it reads the bytes."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head not in (b"PK\x03\x04", b"PK\x05\x06"):        # a zip with members, an empty zip
        return f"a .npz is a zip archive of .npy arrays, this file starts with {head!r}"
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if not info.filename.endswith(".npy"):
                hint = " (a PyTorch file?)" if info.filename.endswith("data.pkl") else ""
                return f"it holds {info.filename!r}, not a .npy array{hint}"
            problem = zip_member_problem(info, os.path.getsize(path))
            if problem:
                return problem
            with z.open(info) as m:
                version = np.lib.format.read_magic(m)
                shape, _, dtype = (np.lib.format.read_array_header_1_0(m) if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0(m))
                need, held = math.prod(shape) * dtype.itemsize, info.file_size - m.tell()
                if need > held:
                    return (f"array {info.filename[:-4]!r} declares shape {shape} of {dtype} "
                            f"({need} bytes), the file holds {held}")
    return None


def read_npz(path, source):
    """Every array of a .npz file as a dict, read with allow_pickle=False (a file cannot run code).
    A file that is no readable .npz (missing, damaged, another format, an array larger than the
    bytes that hold it) gets a ValueError that starts with `source`, the caller's name for it."""
    try:
        problem = _npz_problem(path)
        if problem is None:
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
    except Exception as e:                    # BadZipFile, EOFError, OSError, ValueError, ...
        problem = str(e) or type(e).__name__
    raise ValueError(f"{source}: cannot read it as a .npz file: {problem}")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def clean_leftovers(path):
    """Clean what a killed staged_folder left beside `path`: a '.<name>.staging-<pid>-*' folder
    of a dead process is removed; a '.<name>.old-*' folder is put back when `path` is missing
    (killed between the two renames of the swap), else removed. staged_folder calls it; call it
    yourself to recover before checks that may refuse to go on."""
    path = Path(path)
    for entry in path.parent.glob(f".{path.name}.old-*"):
        if not path.exists() and (entry / "x").is_dir():
            os.rename(entry / "x", path)
        shutil.rmtree(entry, ignore_errors=True)
    for entry in path.parent.glob(f".{path.name}.staging-*"):
        pid = entry.name[len(f".{path.name}.staging-"):].split("-")[0]
        if not pid.isdigit() or not _alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


@contextlib.contextmanager
def staged_folder(path, owned, what):
    """A folder of outputs written as one transaction. Yields a fresh hidden folder beside `path`
    to write into; when the block succeeds it replaces `path` whole (two renames); when it fails
    or is interrupted it is removed and `path` stays exactly as it was.

    owned(name) -> bool says which entries of an existing `path` this writer made: a `path`
    holding anything else is refused (a FileExistsError that starts with `what`, e.g. '--out
    DIR'), so a user's files are never swapped away. Hidden entries count as owned."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(path)
    if path.exists():
        if not path.is_dir():
            raise FileExistsError(f"{what}: {path} is a file, not a folder")
        foreign = sorted(e.name for e in path.iterdir() if not e.name.startswith(".") and not owned(e.name))
        if foreign:
            raise FileExistsError(f"{what}: {path} holds files this command did not write "
                                  f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); "
                                  f"choose a new or empty folder")
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.staging-{os.getpid()}-"))
    try:
        yield staging
        os.chmod(staging, 0o777 & ~_umask())
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old-"))
            try:
                os.rename(path, old / "x")     # mkdtemp reserves a unique name; move under it
                try:
                    os.rename(staging, path)
                except BaseException:
                    os.rename(old / "x", path)
                    raise
            finally:
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(staging, path)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
