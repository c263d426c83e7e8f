"""Natural images and patch sampling for teacher pretraining."""
import time

import numpy as np
import pytest
from PIL import Image

from ustudents.natural import PatchSampler, dead_leaves, natural_images, resize_batch, sample_photo


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


def test_resize_batch_is_fast_for_a_distillation_batch():
    x = np.random.default_rng(0).uniform(size=(64, 3, 65, 65)).astype(np.float32)
    resize_batch(x, 64)
    t = time.perf_counter()
    resize_batch(x, 64)
    assert time.perf_counter() - t < 0.05  # a few ms on 2 cores; generous for a busy machine
