"""Atomic writes: all or nothing, with the usual file mode. Reading .npz files from outside:
bounded before anything is allocated."""
import io
import os
import stat
import struct
import zipfile

import numpy as np
import pytest

from ustudents.files import (DEFLATE_MAX_RATIO, atomic_path, read_npz, write_json,
                             zip_member_problem)


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


# ---- read_npz: files from outside -------------------------------------------------------------

def _npz_with_header(path, shape, payload=b"", compress=zipfile.ZIP_STORED):
    """A .npz whose one array 'a' declares `shape` (float32) but holds only `payload`."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": shape})
    with zipfile.ZipFile(path, "w", compression=compress) as z:
        z.writestr("a.npy", header.getvalue() + payload)
    return path


def test_read_npz_returns_every_array(tmp_path):
    np.savez(tmp_path / "ok.npz", a=np.arange(3.0), b=np.eye(2, dtype=np.float32))
    data = read_npz(tmp_path / "ok.npz", "ok")
    assert sorted(data) == ["a", "b"] and data["b"].dtype == np.float32
    np.testing.assert_array_equal(data["a"], np.arange(3.0))


def test_random_bytes_are_refused_as_no_npz_without_numpys_pickle_advice(tmp_path):
    path = tmp_path / "teacher.pth"
    path.write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(ValueError, match=r"^my teacher: cannot read it as a \.npz file: "
                                         r"a \.npz is a zip archive") as e:
        read_npz(path, "my teacher")
    assert "allow_pickle" not in str(e.value)


def test_an_array_larger_than_its_bytes_is_refused_before_numpy_allocates_it(tmp_path):
    path = _npz_with_header(tmp_path / "big.npz", (100000, 100000), payload=bytes(16))
    with pytest.raises(ValueError, match=r"big: cannot read it as a \.npz file: array 'a' "
                                         r"declares shape \(100000, 100000\)"):
        read_npz(path, "big")


def _forge_sizes(path, size):
    """Make the zip directory claim `size` bytes, stored and compressed, for the first member."""
    raw = bytearray(path.read_bytes())
    c = raw.index(b"PK\x01\x02")                 # the central directory entry
    raw[c + 20:c + 28] = struct.pack("<II", size, size)
    path.write_bytes(bytes(raw))
    return path


def test_a_member_whose_directory_claims_more_bytes_than_the_archive_is_refused(tmp_path):
    path = _npz_with_header(tmp_path / "forged.npz", (30000, 30000), payload=bytes(16))
    _forge_sizes(path, 128 + 30000 * 30000 * 4)     # the header and 3.6 GB: what it declares
    with pytest.raises(ValueError, match=r"forged: cannot read it as a \.npz file: member "
                                         r"'a.npy' claims 3600000128 compressed"):
        read_npz(path, "forged")


def test_a_deflated_npz_reads_and_a_member_claiming_more_than_deflate_allows_does_not(tmp_path):
    np.savez_compressed(tmp_path / "z.npz", a=np.zeros(1 << 20, dtype=np.float32))
    assert read_npz(tmp_path / "z.npz", "z")["a"].shape == (1 << 20,)
    with zipfile.ZipFile(tmp_path / "z.npz") as z:
        info = z.getinfo("a.npy")
    assert zip_member_problem(info, 1 << 30) is None
    info.file_size = DEFLATE_MAX_RATIO * info.compress_size + 2048
    assert "more than its" in zip_member_problem(info, 1 << 30)
