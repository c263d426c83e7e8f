"""MVTec-layout reader: images, masks, indexing, splits and the errors that name the file."""
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from ustudents.data import (TestItem, list_categories, load_category, load_image, load_images,
                            load_mask, load_test, open_image, train_val_split, write_png)


def _img(path, h=12, w=16, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(path)
    return path


def _mask(path, h=12, w=16):
    m = np.zeros((h, w), np.uint8)
    m[2:5, 3:9] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(m).save(path)
    return path


@pytest.fixture
def root(tmp_path):
    """A category 'thing': 3 train images, test/good/000, test/crack/000 with its mask."""
    base = tmp_path / "thing"
    for i in range(3):
        _img(base / "train" / "good" / f"{i:03d}.png", seed=i)
    _img(base / "test" / "good" / "000.png", seed=10)
    _img(base / "test" / "crack" / "000.png", seed=11)
    _mask(base / "ground_truth" / "crack" / "000_mask.png")
    return tmp_path


def test_load_image_returns_float32_chw_in_unit_range(tmp_path):
    x = load_image(_img(tmp_path / "a.png"))
    assert x.dtype == np.float32 and x.shape == (3, 12, 16)
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_grayscale_image_is_repeated_to_three_channels(tmp_path):
    x = load_image(_img(tmp_path / "g.png", mode="L"))
    assert x.shape == (3, 12, 16)
    assert np.array_equal(x[0], x[1]) and np.array_equal(x[0], x[2])


def test_rgba_image_becomes_rgb_and_resizes_to_a_square(tmp_path):
    _img(tmp_path / "a.png")
    Image.open(tmp_path / "a.png").convert("RGBA").save(tmp_path / "rgba.png")
    x = load_image(tmp_path / "rgba.png", size=8)
    assert x.shape == (3, 8, 8) and x.dtype == np.float32


def test_load_mask_is_bool_and_stays_binary_when_resized(tmp_path):
    m = load_mask(_mask(tmp_path / "m.png"))
    assert m.dtype == bool and m.shape == (12, 16) and m.sum() == 18
    small = load_mask(tmp_path / "m.png", size=6)
    assert small.dtype == bool and small.shape == (6, 6) and 0 < small.sum() < 36


def test_corrupt_image_error_names_the_file(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="bad.png"):
        load_image(bad)


def test_truncated_image_error_names_the_file(tmp_path):
    p = _img(tmp_path / "cut.png", 64, 64)
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(ValueError, match="cut.png"):
        load_image(p)


def test_missing_image_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_image(tmp_path / "nope.png")


def test_list_categories_finds_folders_with_train_good(root):
    (root / "not_a_category").mkdir()
    assert list_categories(root) == ["thing"]


def test_missing_root_raises_with_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_categories(tmp_path / "nowhere")


def test_missing_category_lists_the_existing_ones(root):
    with pytest.raises(FileNotFoundError, match="thing"):
        load_category(root, "other")


def test_load_category_indexes_train_and_test(root):
    cat = load_category(root, "thing")
    assert [p.name for p in cat.train] == ["000.png", "001.png", "002.png"]
    assert [(t.defect, t.mask is None, t.size) for t in cat.test] == [
        ("crack", False, (12, 16)), ("good", True, (12, 16))]


def test_empty_train_split_raises(root):
    for p in (root / "thing" / "train" / "good").iterdir():
        p.unlink()
    with pytest.raises(ValueError, match="empty split"):
        load_category(root, "thing")


def test_defect_image_without_mask_is_named(root):
    (root / "thing" / "ground_truth" / "crack" / "000_mask.png").unlink()
    with pytest.raises(FileNotFoundError, match="crack.000.png"):
        load_category(root, "thing")


def test_mask_of_the_wrong_size_names_both_files_and_sizes(root):
    _mask(root / "thing" / "ground_truth" / "crack" / "000_mask.png", h=10, w=16)
    with pytest.raises(ValueError, match=r"000_mask.png is 10x16.*000.png is 12x16"):
        load_category(root, "thing")


def test_corrupt_test_image_is_named_when_indexing(root):
    (root / "thing" / "test" / "good" / "000.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="000.png"):
        load_category(root, "thing")


def test_load_test_gives_resized_arrays_labels_and_full_size_masks(root):
    ts = load_test(load_category(root, "thing").test, size=8)
    assert ts.images.shape == (2, 3, 8, 8) and ts.images.dtype == np.float32
    assert ts.masks.shape == (2, 8, 8) and ts.masks.dtype == bool
    assert ts.labels.tolist() == [1, 0]
    assert ts.full_masks[0].shape == (12, 16) and ts.full_masks[0].sum() == 18
    assert not ts.full_masks[1].any() and not ts.masks[1].any()


def test_load_test_rejects_an_item_whose_mask_size_differs(root, tmp_path):
    item = TestItem(root / "thing" / "test" / "crack" / "000.png", "crack",
                    _mask(tmp_path / "m_mask.png", 9, 9), (12, 16))
    with pytest.raises(ValueError, match="m_mask.png is 9x9"):
        load_test([item])


def test_load_images_stacks_and_needs_size_for_mixed_shapes(tmp_path):
    a, b = _img(tmp_path / "a.png"), _img(tmp_path / "b.png", 10, 10)
    assert load_images([a, b], size=6).shape == (2, 3, 6, 6)
    with pytest.raises(ValueError, match="differ in size"):
        load_images([a, b])


def test_train_val_split_is_deterministic_disjoint_and_holds_one_out():
    paths = [f"{i}.png" for i in range(25)]
    train, val = train_val_split(paths, 0.1, seed=3)
    assert (train, val) == train_val_split(paths, 0.1, seed=3)
    assert len(val) == 2 and sorted(train + val) == sorted(paths)
    assert train_val_split(["a", "b"], 0.1) in ((["a"], ["b"]), (["b"], ["a"]))
    with pytest.raises(ValueError, match="at least 2"):
        train_val_split(["a"])


def test_write_png_is_atomic_and_leaves_no_temp_file(tmp_path):
    write_png(np.full((4, 5), 255, np.uint8), tmp_path / "sub" / "x.png")
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["x.png"]
    assert load_mask(tmp_path / "sub" / "x.png").all()


# ---- files from outside: bombs, memory, bit depth, masks --------------------------------------

def _png_header_only(path, w, h):
    """A ~70-byte PNG whose header claims w x h 8-bit RGB pixels (a decompression bomb's start)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))
    return path


def test_a_decompression_bomb_is_refused_by_name_in_train_test_and_any_image(root):
    train_bomb = _png_header_only(root / "thing" / "train" / "good" / "bomb.png", 20000, 20000)
    with pytest.raises(ValueError, match=r"refusing image .*train/good/bomb\.png"):
        load_images([train_bomb])
    test_bomb = _png_header_only(root / "thing" / "test" / "good" / "001.png", 20000, 20000)
    with pytest.raises(ValueError, match=r"refusing image .*test/good/001\.png"):
        load_category(root, "thing")            # indexing reads the header of each test image
    with pytest.raises(ValueError, match=r"refusing image .*bomb\.png"):
        open_image(train_bomb)                  # what natural_images reads a photo folder with


def test_images_and_sizes_beyond_the_machines_memory_are_refused_before_decoding(root):
    path = root / "thing" / "train" / "good" / "000.png"
    with pytest.raises(ValueError, match=r"1 images at size 1000000 would need about .* GiB, "
                                         r"more than the .* GiB of memory free"):
        load_images([path], size=1_000_000)


def _png16(path, values):
    Image.fromarray(np.asarray(values, dtype=np.uint16)).save(path)
    assert Image.open(path).mode in ("I;16", "I")
    return path


def test_16_bit_images_scale_by_bit_depth_not_by_their_maximum(tmp_path):
    a = load_image(_png16(tmp_path / "a.png", [[1000, 4000]]))
    b = load_image(_png16(tmp_path / "b.png", [[1000, 65535]]))
    assert a.shape == (3, 1, 2)
    np.testing.assert_allclose([a[0, 0, 0], b[0, 0, 0]], 1000 / 65535, rtol=1e-6)
    np.testing.assert_allclose(b[:, 0, 1], 1.0)
    # open_image (natural_images' reader) hands on 8 bits scaled the same way, not clipped at 255
    assert np.asarray(open_image(tmp_path / "a.png")).tolist() == [[4, 16]]


def test_masks_stored_as_0_and_1_read_as_defect_where_above_0(tmp_path):
    m = np.zeros((6, 8), np.uint8)
    m[1:3, 2:5] = 1
    Image.fromarray(m).save(tmp_path / "m01.png")
    np.testing.assert_array_equal(load_mask(tmp_path / "m01.png"), m > 0)


def test_an_empty_mask_in_a_defect_folder_is_refused_by_name(root):
    Image.fromarray(np.zeros((12, 16), np.uint8)).save(
        root / "thing" / "ground_truth" / "crack" / "000_mask.png")
    with pytest.raises(ValueError, match=r"mask .*crack/000_mask\.png marks no defect pixel"):
        load_test(load_category(root, "thing").test)
