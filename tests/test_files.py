"""Atomic writes: all or nothing, with the usual file mode."""
import os
import stat

import pytest

from ustudents.files import atomic_path, write_json


def test_a_failed_write_leaves_neither_the_file_nor_a_temporary(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "a" / "x.json") as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("crash mid-write")
    assert list((tmp_path / "a").iterdir()) == []


def test_a_written_file_appears_whole_with_the_umask_mode(tmp_path):
    path = write_json(tmp_path / "m.json", {"a": 1})
    assert path.read_text().strip() == '{\n "a": 1\n}'
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
