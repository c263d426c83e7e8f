"""Natural images and patch sampling for teacher pretraining."""

import numpy as np
import pytest
from PIL import Image

from ustudents.natural import DEFAULT_PHOTOS, dead_leaves, natural_images, sample_photo
from ustudents.patches import Augment, PatchSampler, resize_batch, rotation


@pytest.fixture(scope="module")
def default_images():
    return natural_images(n=3, size=64, seed=0)


def test_default_images_are_float32_chw_in_unit_range(default_images):
    x = default_images
    assert x.shape == (3, 3, 64, 64) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert all(im.std() > 0.05 for im in x)  # structure, not a flat colour


def test_default_images_end_with_the_matplotlib_photo(default_images):
    assert np.array_equal(default_images[-1], sample_photo(64))


def test_default_images_are_dead_leaves_then_the_sample_photos():
    x = natural_images(n=4, size=32, seed=3)
    leaves = len(x) - len(DEFAULT_PHOTOS)
    for k in range(leaves):
        assert np.array_equal(x[k], dead_leaves(np.random.default_rng([3, k]), 32))
    for k, name in enumerate(DEFAULT_PHOTOS):
        photo = x[leaves + k]
        assert np.array_equal(photo, sample_photo(32, name))
        assert not any(np.allclose(photo, leaf, atol=0.1) for leaf in x[:leaves])
    with pytest.raises(ValueError, match="n >= "):
        natural_images(n=len(DEFAULT_PHOTOS), size=32)


def test_sample_photos_are_photos_of_the_asked_size():
    for name in DEFAULT_PHOTOS:
        photo = sample_photo(48, name)
        assert photo.shape == (3, 48, 48) and photo.dtype == np.float32
        assert 0.0 <= photo.min() and photo.max() <= 1.0
        assert photo.std() > 0.05 and not np.array_equal(photo[0], photo[1])  # colour, structure


def test_dead_leaves_are_deterministic_for_a_seed():
    a = dead_leaves(np.random.default_rng(1), 48)
    assert np.array_equal(a, dead_leaves(np.random.default_rng(1), 48))
    assert not np.array_equal(a, dead_leaves(np.random.default_rng(2), 48))


def test_folder_of_grayscale_and_rgb_photos_of_any_size(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (50, 80), dtype=np.uint8), "L").save(tmp_path / "g.png")
    (tmp_path / "sub").mkdir()
    rgb = rng.integers(0, 256, (90, 40, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "sub" / "c.PNG")
    x = natural_images(tmp_path, size=32)
    assert x.shape == (2, 3, 32, 32) and x.dtype == np.float32
    gray = x[0]  # sorted paths: g.png before sub/c.PNG
    assert np.array_equal(gray[0], gray[1]) and np.array_equal(gray[0], gray[2])
    assert natural_images(tmp_path, n=1, size=32, seed=4).shape == (1, 3, 32, 32)


def test_empty_or_missing_folder_and_unreadable_file_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="no image files"):
        natural_images(tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        natural_images(tmp_path / "nowhere")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        natural_images(tmp_path)


def test_triplet_shapes_dtypes_and_range(default_images):
    a, p, n = PatchSampler(default_images, 17, seed=0).triplet(8, jitter=0.1)
    for t in (a, p, n):
        assert t.shape == (8, 3, 17, 17) and t.dtype == np.float32
        assert 0.0 <= t.min() and t.max() <= 1.0


def test_sampling_is_deterministic_for_a_seed(default_images):
    t1 = PatchSampler(default_images, 17, seed=5).triplet(4)
    t2 = PatchSampler(default_images, 17, seed=5).triplet(4)
    t3 = PatchSampler(default_images, 17, seed=6).triplet(4)
    assert all(np.array_equal(u, v) for u, v in zip(t1, t2))
    assert not np.array_equal(t1[0], t3[0])


def test_negatives_come_from_another_image():
    images = np.stack([np.full((3, 20, 20), k / 4, np.float32) for k in range(5)])  # image k = k/4
    a, p, n = PatchSampler(images, 9, seed=0).triplet(64, noise=0.0)
    src_a, src_n = a[:, 0, 0, 0] * 4, n[:, 0, 0, 0] * 4
    assert np.all(np.round(src_a) != np.round(src_n))
    assert np.array_equal(a, p)  # constant images: a shifted window is the same patch


def test_positive_without_shift_or_noise_is_the_anchor(default_images):
    a, p, _ = PatchSampler(default_images, 17, seed=0).triplet(8, shift=0, noise=0.0)
    assert np.array_equal(a, p)


def test_positives_are_closer_to_anchors_than_negatives(default_images):
    a, p, n = PatchSampler(default_images, 33, seed=0).triplet(64, shift=2, noise=0.02)
    assert np.abs(a - p).mean() < 0.5 * np.abs(a - n).mean()


def test_patches_have_the_patch_shape(default_images):
    x = PatchSampler(default_images, 33, seed=0).patches(5)
    assert x.shape == (5, 3, 33, 33) and x.dtype == np.float32


def test_sampler_rejects_one_image_or_images_smaller_than_p(default_images):
    with pytest.raises(ValueError, match="at least 2"):
        PatchSampler(default_images[:1], 17)
    with pytest.raises(ValueError, match="H, W >= 65"):
        PatchSampler(default_images, 65)


def test_resize_batch_matches_known_upsampling_and_keeps_constants():
    x = np.array([0.0, 1.0], np.float32).reshape(1, 1, 1, 2).repeat(2, axis=2)  # (1, 1, 2, 2)
    y = resize_batch(x, 4)
    assert y.shape == (1, 1, 4, 4) and y.dtype == np.float32
    assert np.allclose(y[0, 0, 0], [0.0, 0.25, 0.75, 1.0])  # pixel centres aligned, as torch
    assert np.allclose(resize_batch(np.full((2, 3, 7, 9), 0.3, np.float32), 5), 0.3)


def test_resize_batch_matches_a_naive_reference():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(2, 3, 9, 9))
    y = resize_batch(x, 5)

    def ref(img, r, c):  # bilinear at the source point of output pixel (r, c)
        sy, sx = max((r + 0.5) * 9 / 5 - 0.5, 0), max((c + 0.5) * 9 / 5 - 0.5, 0)
        y0, x0 = int(sy), int(sx)
        y1, x1 = min(y0 + 1, 8), min(x0 + 1, 8)
        fy, fx = sy - y0, sx - x0
        return ((1 - fy) * ((1 - fx) * img[y0, x0] + fx * img[y0, x1])
                + fy * ((1 - fx) * img[y1, x0] + fx * img[y1, x1]))

    for r in range(5):
        for c in range(5):
            assert np.isclose(y[1, 2, r, c], ref(x[1, 2], r, c))


# -- augmentation -------------------------------------------------------------------------------

NO_COLOUR = dict(gain=0.0, hue=0.0, saturation=(1.0, 1.0), grey=0.0, brightness=0.0,
                 contrast=(1.0, 1.0))


@pytest.fixture(scope="module")
def photos():
    """Three 64 x 64 images with structure at every place: the default set."""
    return natural_images(n=3, size=64, seed=1)


def test_augmented_patches_keep_shape_dtype_and_range_and_differ_from_crops(photos):
    for p in (9, 17, 64):                       # 64: the images' own size, as for whole crops
        plain = PatchSampler(photos, p, seed=0).patches(6)
        x = PatchSampler(photos, p, seed=0, augment=True).patches(6)
        assert x.shape == (6, 3, p, p) and x.dtype == np.float32
        assert 0.0 <= x.min() and x.max() <= 1.0
        assert not np.allclose(x, plain, atol=0.05)
        for t in PatchSampler(photos, p, seed=0, augment=True).triplet(6, shift=3, jitter=0.1):
            assert t.shape == (6, 3, p, p) and t.dtype == np.float32
            assert 0.0 <= t.min() and t.max() <= 1.0


def test_augmented_sampling_is_deterministic_for_a_seed_and_resumes_from_rng_state(photos):
    s1, s2 = (PatchSampler(photos, 17, seed=3, augment=True) for _ in range(2))
    assert np.array_equal(s1.patches(5), s2.patches(5))
    s1.triplet(4)                                # s1 moves on; s2 takes its generator's state
    s2.rng.bit_generator.state = s1.rng.bit_generator.state
    assert all(np.array_equal(u, v) for u, v in zip(s1.triplet(4), s2.triplet(4)))
    other = PatchSampler(photos, 17, seed=4, augment=True)
    again = PatchSampler(photos, 17, seed=3, augment=True)
    assert not np.array_equal(again.patches(5), other.patches(5))


def test_warp_with_the_identity_is_the_plain_crop_exactly(photos):
    s, p = PatchSampler(photos, 17, augment=True), 17
    c = (p - 1) / 2
    corners = [(0, 0, 0), (1, 47, 47), (2, 20, 5), (0, 47, 0)]   # 47 = 64 - p: last row and column
    k = [kk for kk, _, _ in corners]
    centre = [(y + c, x + c) for _, y, x in corners]
    x = s.warp(k, centre, np.broadcast_to(np.eye(2), (4, 2, 2)))
    for b, (kk, y, xx) in enumerate(corners):
        assert np.array_equal(x[b], photos[kk][:, y:y + p, xx:xx + p])


def test_warp_rotates_mirrors_and_zooms_as_numpy_does(photos):
    s, p = PatchSampler(photos, 16, augment=True), 16         # even p: centre between pixels
    crop = photos[1][:, 30:46, 10:26]
    centre = [(30 + 7.5, 10 + 7.5)]
    quarter = s.warp([1], centre, rotation(np.ones(1), np.array([-np.pi / 2]), np.zeros(1, bool)))
    assert np.allclose(quarter[0], np.rot90(crop, axes=(1, 2)), atol=1e-5)
    mirrored = s.warp([1], centre, rotation(np.ones(1), np.zeros(1), np.ones(1, bool)))
    assert np.array_equal(mirrored[0], crop[:, :, ::-1])
    half = rotation(np.full(1, 0.5), np.zeros(1), np.zeros(1, bool))
    shrunk = s.warp([1], [(3 + 15, 4 + 15)], half)
    assert np.array_equal(shrunk[0], photos[1][:, 3:34:2, 4:35:2])     # zoom 1/2: every other pixel


def test_warp_interpolates_bilinearly_between_pixels(photos):
    s = PatchSampler(photos, 5, augment=True)
    x = s.warp([2], [(10.25 + 2, 20.5 + 2)], np.eye(2)[None])  # a quarter row, half a column on
    img = photos[2]
    ref = (0.75 * (0.5 * img[:, 10:15, 20:25] + 0.5 * img[:, 10:15, 21:26])
           + 0.25 * (0.5 * img[:, 11:16, 20:25] + 0.5 * img[:, 11:16, 21:26]))
    assert np.allclose(x[0], ref, atol=1e-6)


def test_views_stay_inside_their_images_for_any_patch_size():
    images = [np.zeros((3, 40, 40), np.float32), np.zeros((3, 33, 50), np.float32)]
    for p, margin in ((9, 0), (17, 4), (33, 4)):                       # 33: the smaller side
        s = PatchSampler(images, p, seed=0, augment=True)
        src, centre, A, _ = s._draw_views(np.arange(200) % 2, margin)
        r = (p - 1) / 2 + margin
        for dy, dx in ((-r, -r), (-r, r), (r, -r), (r, r)):             # the grown window's corners
            point = centre + A @ np.array([dy, dx])
            assert np.all(point >= -1e-9) and np.all(point <= s._hw[src] - 1 + 1e-9)


def test_the_positive_is_the_anchor_moved_in_the_patch_frame(photos):
    p, shift = 17, 3
    a, pos, neg = PatchSampler(photos, p, seed=0, augment=True).triplet(12, shift=shift, noise=0.0)

    def best_overlap_error(u, v):   # min over shifts (dy, dx) of max |v[i, j] - u[i + dy, j + dx]|
        errors = []
        for dy in range(-shift, shift + 1):
            for dx in range(-shift, shift + 1):
                uu = u[:, max(dy, 0):p + min(dy, 0), max(dx, 0):p + min(dx, 0)]
                vv = v[:, max(-dy, 0):p - max(dy, 0), max(-dx, 0):p - max(dx, 0)]
                errors.append(np.abs(uu - vv).max())
        return min(errors)

    assert all(best_overlap_error(a[b], pos[b]) == 0 for b in range(12))
    assert all(best_overlap_error(a[b], neg[b]) > 1e-3 for b in range(12))


def test_zooming_out_averages_fine_detail_instead_of_aliasing():
    board = (np.indices((64, 64)).sum(0) % 2).astype(np.float32)       # 1-px checkerboard
    images = [np.stack([board] * 3), np.stack([1 - board] * 3)]
    aug = Augment(scale=(0.5, 0.5), rotate=False, flip=False, **NO_COLOUR)
    x = PatchSampler(images, 9, seed=0, augment=aug).patches(8)
    assert np.allclose(x, 0.5, atol=1e-6)         # every other pixel would read a flat 0 or 1


def test_colour_changes_map_channels_and_grey_removes_chroma(photos):
    geometry = dict(scale=(1.0, 1.0), rotate=False, flip=False)
    plain = PatchSampler(photos, 17, seed=0, augment=Augment(**geometry, **NO_COLOUR)).patches(6)
    greyed = Augment(**geometry, **dict(NO_COLOUR, grey=1.0))
    grey = PatchSampler(photos, 17, seed=0, augment=greyed).patches(6)
    coloured = PatchSampler(photos, 17, seed=0, augment=Augment(**geometry)).patches(6)
    assert np.allclose(grey[:, 0], grey[:, 1], atol=1e-6)
    assert np.allclose(grey[:, 1], grey[:, 2], atol=1e-6)
    assert np.allclose(grey[:, 0], plain.mean(axis=1), atol=1e-6)     # grey: the channels' mean
    assert not np.allclose(coloured, plain, atol=0.01)


def test_augment_settings_are_checked(photos):
    with pytest.raises(ValueError, match="scale"):
        Augment(scale=(2.0, 0.5))
    with pytest.raises(ValueError, match="augment must be"):
        PatchSampler(photos, 17, augment="yes")
    with pytest.raises(ValueError, match="augment=True"):
        PatchSampler(photos, 17).warp([0], [(8, 8)], np.eye(2)[None])
    with pytest.raises(ValueError, match="outside its image"):
        PatchSampler(photos, 17, augment=True).warp([0], [(7.5, 8)], np.eye(2)[None])


def test_recoloured_negatives_are_the_anchor_moved_by_one_colour_step():
    """recolour=1: every negative is its anchor plus one RGB offset of length recolour_step
    (mid-grey images, so nothing is clipped); the anchors and positives do not change."""
    rng = np.random.default_rng(3)
    images = (0.3 + 0.4 * rng.random((4, 3, 40, 40))).astype(np.float32)
    plain = PatchSampler(images, 9, seed=1).triplet(32, noise=0.0)
    a, p, n = PatchSampler(images, 9, seed=1).triplet(32, noise=0.0, recolour=1.0, recolour_step=0.08)
    assert np.array_equal(a, plain[0]) and np.array_equal(p, plain[1])
    step = (n - a).reshape(32, 3, -1)
    np.testing.assert_allclose(step, step[:, :, :1].repeat(81, axis=2), atol=1e-6)   # one offset
    np.testing.assert_allclose(np.linalg.norm(step[:, :, 0], axis=1), 0.08, rtol=1e-4)
    directions = step[:, :, 0] / 0.08
    assert np.abs(directions.mean(axis=0)).max() < 0.5          # random directions, not one


def test_recolouring_a_share_of_the_negatives_leaves_the_rest_as_they_were():
    rng = np.random.default_rng(4)
    images = (0.3 + 0.4 * rng.random((4, 3, 40, 40))).astype(np.float32)
    sampler = PatchSampler(images, 9, seed=2)
    a, p, n = sampler.triplet(200, noise=0.0)
    kept = n.copy()
    picked = sampler.recolour(a, n, 0.25, 0.1)
    assert 25 < len(picked) < 75                                  # about a quarter of 200
    others = np.setdiff1d(np.arange(200), picked)
    assert np.array_equal(n[others], kept[others])
    assert np.allclose(np.linalg.norm((n[picked] - a[picked])[:, :, 0, 0], axis=1), 0.1, rtol=1e-4)
    for share, step in ((1.5, 0.1), (-0.1, 0.1), (0.5, 0.0)):
        with pytest.raises(ValueError, match="recolour must lie in"):
            sampler.recolour(a, n, share, step)
