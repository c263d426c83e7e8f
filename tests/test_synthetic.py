"""Synthetic anomaly data: layout the reader accepts, exact masks, determinism, caching."""
import numpy as np
import pytest
from PIL import Image

from ustudents.data import list_categories, load_category, load_images, load_test
from ustudents.synthetic import CATEGORIES, DEFECTS, defect_image, good_image, make_dataset


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """8 train and 6 test images of 64 x 64 per category."""
    return make_dataset(tmp_path_factory.mktemp("syn"), n_train=8, n_test=6, size=64)


def test_every_category_round_trips_through_the_reader(tiny):
    assert list_categories(tiny) == sorted(CATEGORIES)
    for c in CATEGORIES:
        cat = load_category(tiny, c)
        assert len(cat.train) == 8 and len(cat.test) == 6
        assert load_images(cat.train).shape == (8, 3, 64, 64)
        ts = load_test(cat.test)
        assert ts.labels.tolist().count(0) == 2 and ts.labels.sum() == 4
        assert {t.defect for t in cat.test} == {"good", *DEFECTS[c]}
        for m, y in zip(ts.masks, ts.labels):
            assert m.any() == bool(y)  # each defect image has a non-empty mask, good ones none


def test_felt_is_stored_grayscale_and_the_others_in_colour(tiny):
    modes = {c: Image.open(tiny / c / "train" / "good" / "000.png").mode for c in CATEGORIES}
    assert modes == {"weave": "RGB", "felt": "L", "nut": "RGB"}


def test_masks_are_exact_zero_or_255(tiny):
    for p in tiny.glob("*/ground_truth/*/*_mask.png"):
        a = np.asarray(Image.open(p))
        assert a.dtype == np.uint8 and set(np.unique(a)) == {0, 255}


@pytest.mark.parametrize("category", CATEGORIES)
def test_defects_change_only_masked_pixels_and_visibly(category):
    for kind in DEFECTS[category]:
        img, mask = defect_image(category, kind, np.random.default_rng(5), 64)
        good = good_image(category, np.random.default_rng(5), 64)  # the same draws, no defect
        diff = np.abs(img - good).max(axis=2)
        assert mask.dtype == bool and mask.sum() >= 8
        assert np.all(diff[~mask] == 0), kind
        assert diff[mask].mean() > 0.03, kind


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path):
    a = make_dataset(tmp_path / "a", ["nut"], n_train=2, n_test=2, size=48, seed=1)
    b = make_dataset(tmp_path / "b", ["nut"], n_train=2, n_test=2, size=48, seed=1)
    c = make_dataset(tmp_path / "c", ["nut"], n_train=2, n_test=2, size=48, seed=2)
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert files and files == sorted(p.relative_to(b) for p in b.rglob("*.png"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert (a / files[0]).read_bytes() != (c / files[0]).read_bytes()


def test_train_images_differ_from_each_other(tiny):
    x = load_images(load_category(tiny, "nut").train)
    assert np.abs(x[0] - x[1]).mean() > 0.01


def test_remaking_with_same_settings_keeps_files_and_other_settings_replace_them(tmp_path):
    kw = dict(categories=["felt"], n_train=2, n_test=1, size=32)
    make_dataset(tmp_path, **kw)
    png = tmp_path / "felt" / "train" / "good" / "000.png"
    stamp = png.stat().st_mtime_ns
    make_dataset(tmp_path, **kw)
    assert png.stat().st_mtime_ns == stamp
    make_dataset(tmp_path, **{**kw, "n_train": 3})
    assert len(list((tmp_path / "felt" / "train" / "good").glob("*.png"))) == 3


def test_a_folder_it_did_not_make_is_never_replaced(tmp_path):
    (tmp_path / "felt").mkdir()
    (tmp_path / "felt" / "precious.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="felt"):
        make_dataset(tmp_path, ["felt"], n_train=2, n_test=1, size=32)
    assert (tmp_path / "felt" / "precious.txt").read_text() == "keep"


def test_unknown_category_or_defect_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown synthetic category"):
        make_dataset(tmp_path, ["carpet"])
    with pytest.raises(ValueError, match="defects"):
        defect_image("felt", "missing", np.random.default_rng(0), 64)


def test_remaking_with_other_settings_deletes_only_the_files_it_made(tmp_path):
    kw = dict(categories=["felt"], n_train=3, n_test=5, size=32)
    make_dataset(tmp_path, **kw)
    base = tmp_path / "felt"
    (base / "notes.txt").write_text("mine")
    (base / "train" / "good" / "my_photo.png").write_bytes(b"mine too")
    make_dataset(tmp_path, **{**kw, "n_train": 2, "n_test": 1})
    assert (base / "notes.txt").read_text() == "mine"
    assert (base / "train" / "good" / "my_photo.png").read_bytes() == b"mine too"
    left = sorted(str(p.relative_to(base)) for p in base.rglob("*.png"))
    assert left == ["test/good/000.png", "train/good/000.png", "train/good/001.png",
                    "train/good/my_photo.png"]          # no stale image, mask or empty folder
    assert not (base / "ground_truth").exists()


def test_a_root_that_is_a_file_is_refused_by_name(tmp_path, capsys):
    from ustudents.cli import main
    path = tmp_path / "data.txt"
    path.write_text("not a folder")
    with pytest.raises(FileExistsError, match=r"data\.txt is a file, not a folder"):
        make_dataset(path / "sub", ["felt"], n_train=2, n_test=1, size=32)
    assert main(["make-data", "--out", str(path), "--categories", "felt"]) == 2
    assert "data.txt is a file, not a folder" in capsys.readouterr().err
