"""The real-photo check: its layout, held-out test crops, exact masks, and the baseline."""
import json

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter

from ustudents.data import list_categories, load_category, load_images, load_test
from ustudents.metrics import au_pro
from ustudents.photocheck import (DEFECTS, MIN_CHANGE, RECORD, add_defect, baseline_scores,
                                  local_statistics_maps, make_photo_check, photo_blocks)
from ustudents.synthetic import _blob

S = 32          # crop size
N_TRAIN, N_TEST = 4, 10


def _photo(rng, h, w, sigma):
    """A textured RGB photo, (h, w, 3) uint8: smoothed noise per channel."""
    x = gaussian_filter(rng.standard_normal((h, w, 3)), sigma=(sigma, sigma, 0))
    x = 0.5 + 0.18 * x / x.std()
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def check(tmp_path_factory):
    """Two photos (2 x 3 and 3 x 2 blocks of 40 px) made into a check of 32 px crops."""
    tmp = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    photos = []
    for name, (h, w), sigma in (("bark", (80, 125), 0.5), ("moss", (120, 90), 0.7)):
        path = tmp / f"{name}.png"
        Image.fromarray(_photo(rng, h, w, sigma)).save(path)
        photos.append(path)
    root = make_photo_check(photos, tmp / "check", size=S, n_train=N_TRAIN, n_test=N_TEST, block=40)
    return root, {p.stem: np.asarray(Image.open(p)) for p in photos}


def _record(root, category):
    return json.loads((root / category / RECORD).read_text())


def test_each_photo_is_a_category_the_reader_loads(check):
    root, _ = check
    assert list_categories(root) == ["bark", "moss"]
    for c in ("bark", "moss"):
        cat = load_category(root, c)
        assert load_images(cat.train).shape == (N_TRAIN, 3, S, S)
        test = load_test(cat.test)
        assert test.images.shape == (N_TEST, 3, S, S) and test.masks.shape == (N_TEST, S, S)
        assert {it.defect for it in cat.test} == {"good", *DEFECTS}
        assert test.labels.tolist().count(0) == round(N_TEST / 4)


def test_the_blocks_tile_the_photo_as_a_checkerboard():
    blocks = photo_blocks(85, 130, 40)                   # 2 rows, 3 columns
    cover = np.zeros((85, 130), int)
    for b in blocks:
        assert b["y1"] - b["y0"] >= 40 and b["x1"] - b["x0"] >= 40
        cover[b["y0"]:b["y1"], b["x0"]:b["x1"]] += 1
    assert (cover == 1).all()
    assert [b["part"] for b in blocks] == ["train", "test", "train", "test", "train", "test"]


def _crop_of(photo, c):
    crop = np.rot90(photo[c["y"]:c["y"] + S, c["x"]:c["x"] + S], c["turns"])
    return crop[:, ::-1] if c["flip"] else crop


def test_every_crop_is_where_its_record_says_and_tests_never_touch_training_blocks(check):
    root, photos = check
    for c in ("bark", "moss"):
        rec = _record(root, c)
        train_px = np.zeros(rec["photo_size"], bool)
        for b in rec["blocks"]:
            if b["part"] == "train":
                train_px[b["y0"]:b["y1"], b["x0"]:b["x1"]] = True
        for crop in rec["crops"]:
            img = np.asarray(Image.open(root / c / crop["file"]))
            expected = _crop_of(photos[c], crop)
            footprint = train_px[crop["y"]:crop["y"] + S, crop["x"]:crop["x"] + S]
            assert footprint.shape == (S, S)
            if crop["file"].startswith("train"):
                assert footprint.all() and (img == expected).all()
                continue
            assert not footprint.any()                   # no test pixel from a training block
            mask = np.asarray(Image.open(root / c / crop["mask"])) > 0 if "mask" in crop else 0
            assert (img == expected)[~np.broadcast_to(mask, (S, S))].all()  # only the defect differs
            if "donor" in crop:                          # foreign texture: another photo's test part
                d = crop["donor"]
                other = _record(root, d["category"])["blocks"][d["block"]]
                assert d["category"] != c and other["part"] == "test"
                assert other["x0"] <= d["x"] <= other["x1"] - S


def test_defect_masks_are_nonempty_binary_and_good_images_have_none(check):
    root, _ = check
    for c in ("bark", "moss"):
        assert not (root / c / "ground_truth" / "good").exists()
        for it in load_category(root, c).test:
            if it.defect == "good":
                assert it.mask is None
                continue
            m = np.asarray(Image.open(it.mask))
            assert m.dtype == np.uint8 and set(np.unique(m)) == {0, 255}


def test_a_defect_changes_its_region_visibly_and_nothing_else():
    rng = np.random.default_rng(1)
    crop = _photo(rng, 48, 48, 1.0) / 255.0
    donor = np.full((48, 48, 3), 0.9)
    for kind in DEFECTS:
        img, mask = add_defect(crop, kind, rng, donor if kind == "foreign" else None)
        assert mask.any() and (img[~mask] == crop[~mask]).all()
        assert np.abs(img - crop)[mask].mean() >= MIN_CHANGE


def test_a_smudge_on_a_flat_crop_is_refused():
    with pytest.raises(ValueError, match="flat"):
        add_defect(np.full((48, 48, 3), 0.5), "smudge", np.random.default_rng(0))


def _flat_set(rng, n, bright_blob):
    """n images (n, 3, 48, 48) of fine grey noise; with bright_blob, each has a blob at +0.4."""
    x = 0.5 + 0.03 * rng.standard_normal((n, 3, 48, 48))
    masks = np.zeros((n, 48, 48), bool)
    if bright_blob:
        for k in range(n):
            masks[k] = _blob(rng, 48, *rng.integers(12, 36, 2), 6)
            x[k][:, masks[k]] += 0.4
    return x.astype(np.float32), masks


def test_the_baseline_finds_a_bright_blob_and_random_maps_do_not():
    rng = np.random.default_rng(2)
    train, _ = _flat_set(rng, 4, False)
    test, masks = _flat_set(rng, 6, True)
    maps = local_statistics_maps(train, test, window=5)
    assert maps.shape == (6, 48, 48) and maps.dtype == np.float32
    assert au_pro(list(maps), list(masks)) > 0.5
    assert au_pro(list(rng.random(maps.shape)), list(masks)) < 0.5   # the bar can fail


def test_the_baseline_scores_a_training_image_near_the_feature_count_on_average():
    # squared Mahalanobis distances of the fitted pixels average to the number of features
    rng = np.random.default_rng(3)
    train, _ = _flat_set(rng, 3, False)
    assert local_statistics_maps(train, train, window=5).mean() == pytest.approx(6, rel=1e-3)


def test_the_baseline_takes_device_arrays_and_answers_on_the_host(xp):
    rng = np.random.default_rng(4)
    train, _ = _flat_set(rng, 2, False)
    test, _ = _flat_set(rng, 1, True)
    maps = local_statistics_maps(xp.asarray(train), xp.asarray(test), window=5)
    assert isinstance(maps, np.ndarray)
    np.testing.assert_allclose(maps, local_statistics_maps(train, test, window=5), rtol=1e-5)


def test_baseline_scores_give_the_au_pro_of_the_maps_on_the_loaded_category(check):
    root, _ = check
    cat = load_category(root, "bark")
    test = load_test(cat.test, S)
    maps = local_statistics_maps(load_images(cat.train, S), test.images, window=5)
    expected = au_pro(list(maps), test.full_masks, limit=0.3)
    assert baseline_scores(root, "bark", size=S, window=5)["au_pro"] == pytest.approx(expected)


def test_bad_input_is_refused_by_name(tmp_path):
    small = tmp_path / "tiny.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(small)
    with pytest.raises(ValueError, match="tiny.png"):
        make_photo_check([small], tmp_path / "out", size=32)
    with pytest.raises(ValueError, match="distinct"):
        make_photo_check([small, tmp_path / "sub" / "tiny.png"], tmp_path / "out", size=32)
    with pytest.raises(ValueError, match="window"):
        local_statistics_maps(np.zeros((1, 3, 8, 8)), np.zeros((1, 3, 8, 8)), window=1)
    with pytest.raises(ValueError, match="channels"):
        local_statistics_maps(np.zeros((1, 3, 8, 8)), np.zeros((1, 1, 8, 8)))


def test_a_folder_it_did_not_make_is_left_alone(tmp_path):
    rng = np.random.default_rng(5)
    photo = tmp_path / "bark.png"
    Image.fromarray(_photo(rng, 40, 80, 1.0)).save(photo)
    mine = tmp_path / "out" / "bark" / "notes.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("mine")
    with pytest.raises(FileExistsError, match="not made by make_photo_check"):
        make_photo_check([photo], tmp_path / "out", size=32, n_train=2, n_test=4, block=40)
    assert mine.read_text() == "mine"
    make_photo_check([photo], tmp_path / "again", size=32, n_train=2, n_test=4, block=40)
    make_photo_check([photo], tmp_path / "again", size=32, n_train=2, n_test=4, block=40)  # remade
    assert len(load_category(tmp_path / "again", "bark").test) == 4
