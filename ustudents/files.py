"""Writing files so that nothing is ever half written: write under a temporary name in the same
folder, then rename (os.replace is atomic on one file system). A crash leaves the old file or
none, never a torn one."""
import contextlib
import json
import os
import tempfile
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


def read_npz(path, source):
    """Every array of a .npz file as a dict, read with allow_pickle=False (a file cannot run code).
    A file that is no readable .npz (missing, damaged, another format) gets a ValueError that
    starts with `source`, the caller's name for it."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except Exception as e:                    # BadZipFile, EOFError, OSError, ValueError, ...
        raise ValueError(f"{source}: cannot read it as a .npz file: {e}") from e
