"""Tests for ustudents.metrics: known answers and naive references for PRO and AUROC, TIFF files."""
import os

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import label

from ustudents.metrics import (au_pro, au_pro_by_defect, image_auroc, image_scores, pixel_auroc,
                               pro_curve, resize_map, roc_curve, trapezoid,
                               write_tiff)


def known_answer_images():
    """docs/method.md §6: two 4x4 images, two regions in the first, none in the second."""
    map1, mask1 = np.zeros((4, 4)), np.zeros((4, 4), dtype=bool)
    mask1[:2, :2] = True
    mask1[3, 3] = True
    map1[0, 0], map1[0, 1], map1[1, 0], map1[1, 1], map1[3, 3] = 0.9, 0.8, 0.7, 0.1, 0.6
    map2, mask2 = np.zeros((4, 4)), np.zeros((4, 4), dtype=bool)
    map2[2, 2] = 0.5
    return [map1, map2], [mask1, mask2]


def naive_pro_curve(maps, masks):
    """One threshold at a time, straight from the definition."""
    scores = np.concatenate([m.ravel() for m in maps])
    normal = np.concatenate([(k == 0).ravel() for k in masks])
    regions = []
    for amap, mask in zip(maps, masks):
        labeled, n = label(mask, structure=np.ones((3, 3)))
        regions += [amap[labeled == r] for r in range(1, n + 1)]
    fprs, pros = [0.0], [0.0]
    for t in np.unique(scores)[::-1]:
        fprs.append(np.mean(scores[normal] >= t))
        pros.append(np.mean([np.mean(r >= t) for r in regions]))
    return np.array(fprs + [1.0]), np.array(pros + [1.0])


def naive_auroc(scores, labels):
    """Pairwise count over every (positive, negative) pair, ties counting one half."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (len(pos) * len(neg))


def random_set(rng, n=5, shape=(12, 10), levels=6):
    """Scores from a few levels (many ties), blobby masks with several regions per image."""
    maps = [rng.integers(0, levels, shape).astype(np.float64) for _ in range(n)]
    masks = [rng.random(shape) < 0.15 for _ in range(n)]
    return maps, masks


def test_au_pro_matches_the_known_answer():
    maps, masks = known_answer_images()
    assert au_pro(maps, masks, limit=0.3) == pytest.approx(0.98456790, abs=1e-7)


def test_known_answer_curve_has_one_point_per_distinct_score():
    fprs, pros = pro_curve(*known_answer_images())
    # scores 0.9 0.8 0.7 0.6 0.5 0.1 0: 7 distinct, plus the end points
    assert len(fprs) == len(pros) == 9
    np.testing.assert_allclose(pros[:7], [0, 1 / 8, 2 / 8, 3 / 8, 7 / 8, 7 / 8, 1])
    np.testing.assert_allclose(fprs[:7], [0, 0, 0, 0, 0, 1 / 27, 1 / 27])


def test_pro_curve_matches_the_naive_reference_with_ties(rng):
    maps, masks = random_set(rng)
    fprs, pros = pro_curve(maps, masks)
    ref_fprs, ref_pros = naive_pro_curve(maps, masks)
    np.testing.assert_allclose(fprs, ref_fprs, atol=1e-12)
    np.testing.assert_allclose(pros, ref_pros, atol=1e-12)


def test_pro_curve_accepts_images_of_different_sizes(rng):
    maps = [rng.random((5, 7)), rng.random((9, 4))]
    masks = [rng.random((5, 7)) < 0.3, rng.random((9, 4)) < 0.3]
    fprs, pros = pro_curve(maps, masks)
    ref_fprs, ref_pros = naive_pro_curve(maps, masks)
    np.testing.assert_allclose(fprs, ref_fprs, atol=1e-12)
    np.testing.assert_allclose(pros, ref_pros, atol=1e-12)


def test_regions_are_eight_connected_and_weighted_equally():
    # the diagonal pair is one region (4-connectivity would split it), (4, 4) another:
    # at the top score PRO = (1/2 + 0) / 2, not (1 + 0 + 0) / 3
    mask = np.zeros((5, 5), dtype=bool)
    mask[0, 0] = mask[1, 1] = mask[4, 4] = True
    amap = np.zeros((5, 5))
    amap[0, 0] = 1.0
    fprs, pros = pro_curve([amap], [mask])
    assert pros[1] == pytest.approx(0.25)


def test_perfect_map_gives_au_pro_one(rng):
    masks = [rng.random((16, 16)) < 0.1 for _ in range(4)]
    maps = [m + 0.1 * rng.random(m.shape) for m in masks]  # every anomaly above every normal
    assert au_pro(maps, masks) == pytest.approx(1.0)


def test_random_map_gives_au_pro_near_limit_over_two(rng):
    masks = [np.zeros((64, 64), dtype=bool) for _ in range(8)]
    for m in masks:
        r, c = rng.integers(0, 56, 2)
        m[r:r + 8, c:c + 8] = True
    maps = [rng.random(m.shape) for m in masks]
    # PRO(t) ~ FPR(t) for scores independent of the truth: area/limit ~ limit/2
    assert au_pro(maps, masks, limit=0.3) == pytest.approx(0.15, abs=0.02)


def test_au_pro_by_defect_scores_each_type_with_the_good_images(rng):
    masks = [np.zeros((32, 32), dtype=bool) for _ in range(6)]
    for m in masks[2:]:
        r, c = rng.integers(0, 24, 2)
        m[r:r + 8, c:c + 8] = True
    defects = ["good", "good", "scratch", "scratch", "stain", "stain"]
    maps = [rng.random(m.shape) for m in masks]
    for k in (2, 3):                                       # scratches found, stains not
        maps[k] = maps[k] + 2 * masks[k]
    by_defect = au_pro_by_defect(maps, masks, defects)
    assert sorted(by_defect) == ["scratch", "stain"]
    assert by_defect["scratch"] == pytest.approx(1.0)
    assert by_defect["stain"] == pytest.approx(au_pro([maps[k] for k in (0, 1, 4, 5)],
                                                      [masks[k] for k in (0, 1, 4, 5)]))
    assert by_defect["stain"] < 0.5


def test_au_pro_by_defect_wants_one_name_per_image(rng):
    masks = [rng.random((8, 8)) < 0.2 for _ in range(3)]
    with pytest.raises(ValueError, match="3 maps, 3 masks and 2 defect names"):
        au_pro_by_defect([m.astype(float) for m in masks], masks, ["good", "stain"])


def test_constant_map_gives_the_diagonal(rng):
    masks = [rng.random((8, 8)) < 0.2 for _ in range(3)]
    maps = [np.full((8, 8), 0.5) for _ in masks]
    fprs, pros = pro_curve(maps, masks)
    np.testing.assert_allclose(fprs, [0, 1, 1])
    np.testing.assert_allclose(pros, [0, 1, 1])
    assert au_pro(maps, masks, limit=0.3) == pytest.approx(0.15)


def test_pro_curve_takes_a_stack_and_float32(rng):
    maps, masks = random_set(rng, n=3)
    stacked = pro_curve(np.stack(maps).astype(np.float32), np.stack(masks).astype(np.uint8))
    listed = pro_curve(maps, masks)
    np.testing.assert_allclose(stacked[0], listed[0])
    np.testing.assert_allclose(stacked[1], listed[1])


def test_trapezoid_interpolates_at_the_limit():
    x, y = np.array([0.0, 0.2, 0.6]), np.array([0.0, 0.2, 0.6])
    assert trapezoid(x, y, x_max=0.4) == pytest.approx(0.08)
    assert trapezoid(x, y, x_max=0.2) == pytest.approx(0.02)
    assert trapezoid(x, y) == pytest.approx(0.18)


@pytest.mark.parametrize("maps, masks, match", [
    ([np.zeros((2, 2))], [np.zeros((2, 2)), np.zeros((2, 2))], "1 anomaly maps but 2 masks"),
    ([np.zeros((2, 2)), np.zeros((3, 2))], [np.ones((2, 2)), np.zeros((3, 3))], r"image 1.*\(3, 2\).*\(3, 3\)"),
    ([np.zeros((2, 2))], [np.zeros((2, 2))], "no anomalous pixels"),
    ([np.zeros((2, 2))], [np.ones((2, 2))], "no anomaly-free pixels"),
    ([np.full((2, 2), np.nan)], [np.eye(2)], "NaN"),
    ([], [], "no images"),
])
def test_pro_curve_rejects_bad_input(maps, masks, match):
    with pytest.raises(ValueError, match=match):
        pro_curve(maps, masks)


def test_au_pro_rejects_a_limit_outside_zero_one():
    with pytest.raises(ValueError, match="limit"):
        au_pro(*known_answer_images(), limit=0.0)


def test_pixel_auroc_matches_the_pairwise_count_with_ties(rng):
    maps, masks = random_set(rng, n=3, shape=(8, 8), levels=4)
    scores = np.concatenate([m.ravel() for m in maps])
    labels = np.concatenate([k.ravel() for k in masks]).astype(int)
    assert pixel_auroc(maps, masks) == pytest.approx(naive_auroc(scores, labels), abs=1e-12)


def test_image_auroc_matches_the_pairwise_count_with_ties(rng):
    scores = rng.integers(0, 5, 40).astype(float)
    labels = rng.integers(0, 2, 40)
    assert image_auroc(scores, labels) == pytest.approx(naive_auroc(scores, labels), abs=1e-12)


def test_auroc_is_one_for_separated_and_half_for_constant_scores():
    labels = np.array([0, 0, 1, 1])
    assert image_auroc(np.array([0.1, 0.2, 0.3, 0.4]), labels) == 1.0
    assert image_auroc(np.ones(4), labels) == 0.5


def test_auroc_rejects_a_single_class():
    with pytest.raises(ValueError, match="no anomalous"):
        image_auroc(np.arange(3.0), np.zeros(3))
    with pytest.raises(ValueError, match="no anomaly-free"):
        pixel_auroc([np.zeros((2, 2))], [np.ones((2, 2))])


def test_roc_curve_area_equals_image_auroc(rng):
    scores = rng.integers(0, 6, 50).astype(float)
    labels = rng.integers(0, 2, 50)
    fprs, tprs = roc_curve(scores, labels)
    assert (fprs[0], tprs[0], fprs[-1], tprs[-1]) == (0, 0, 1, 1)
    assert len(fprs) == len(np.unique(scores)) + 1
    assert trapezoid(fprs, tprs) == pytest.approx(image_auroc(scores, labels), abs=1e-12)


def test_image_scores_are_the_maxima_of_a_list_or_a_stack(rng):
    maps = [rng.random((4, 5)), rng.random((6, 3))]
    np.testing.assert_array_equal(image_scores(maps), [maps[0].max(), maps[1].max()])
    stack = rng.random((3, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(image_scores(stack), stack.max(axis=(1, 2)))


def test_tiff_round_trip_keeps_float32_exactly(rng, tmp_path):
    amap = (rng.standard_normal((13, 17)) * 1e3).astype(np.float32)
    path = str(tmp_path / "cat" / "test" / "crack" / "000.tiff")
    assert write_tiff(path, amap) == path
    with Image.open(path) as img:                              # as any TIFF reader sees it
        back = np.asarray(img)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, amap)
    assert os.listdir(os.path.dirname(path)) == ["000.tiff"]  # no temporary file left behind


def test_resize_map_keeps_the_shape_and_constants(rng):
    assert resize_map(rng.random((16, 16)), (37, 23)).shape == (37, 23)
    assert resize_map(rng.random((40, 30)), (7, 9)).shape == (7, 9)
    np.testing.assert_allclose(resize_map(np.full((8, 6), 2.5), (20, 15)), 2.5, rtol=1e-6)
    np.testing.assert_allclose(resize_map(np.full((20, 15), -1.0), (8, 6)), -1.0, rtol=1e-6)
