"""Students: streaming channel statistics, training, and the ScaleModel file."""
import os

import numpy as np
import pytest

from ustudents.backend import asnumpy
from ustudents.dense import dense_features
from ustudents.losses import regression
from ustudents.models import PatchNet
from ustudents.scoring import score_maps
from ustudents.students import (ScaleModel, channel_stats, load_scale,
                                 make_students, normalise, save_scale, scale_path,
                                 train_students)

P, WIDTH = 17, 0.0625          # hidden channels 8, 16, 16: tiny and fast


def tiny_teacher(xp, dtype=np.float64, seed=0):
    net = PatchNet(P, width=WIDTH, seed=seed)
    net.params = {k: xp.asarray(v, dtype=dtype) for k, v in net.params.items()}
    return net


def test_channel_stats_equal_those_of_the_stacked_teacher_output(xp, rng):
    teacher = tiny_teacher(xp)
    images = rng.random((3, 3, 12, 10))
    mu, sigma = channel_stats(teacher, images, batch=2)        # batches of 2 and 1
    y = asnumpy(dense_features(teacher, xp.asarray(images)))   # (3, 128, 12, 10)
    assert mu.shape == sigma.shape == (128,)
    np.testing.assert_allclose(asnumpy(mu), y.mean(axis=(0, 2, 3)), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(asnumpy(sigma), y.std(axis=(0, 2, 3)), rtol=1e-10)


def test_students_differ_from_each_other_and_follow_the_teacher(xp):
    teacher = tiny_teacher(xp)
    students = make_students(teacher, 3, seed=0)
    w = [asnumpy(s.params["conv1.w"]) for s in students]
    assert not np.array_equal(w[0], w[1]) and not np.array_equal(w[1], w[2])
    assert not np.array_equal(w[0], asnumpy(teacher.params["conv1.w"]))
    for s in students:
        assert (s.p, s.width, s.out_dim) == (teacher.p, teacher.width, teacher.out_dim)
        assert s.params["conv1.w"].dtype == teacher.params["conv1.w"].dtype
    again = make_students(teacher, 3, seed=0)
    assert np.array_equal(asnumpy(again[2].params["conv4.w"]), asnumpy(students[2].params["conv4.w"]))


def test_training_lowers_the_regression_loss_of_every_student(xp, rng):
    teacher = tiny_teacher(xp, np.float32)
    images = rng.random((2, 3, 20, 20)).astype(np.float32)
    lines = []
    model = train_students(teacher, images, n_students=2, epochs=6, batch=1, lr=1e-3,
                           seed=0, log=lines.append)
    assert isinstance(model, ScaleModel) and model.p == P and len(model.students) == 2
    history = np.array(model.history)                            # (epochs, M)
    assert history.shape == (6, 2)
    assert np.all(history[-1] < 0.99 * history[0]), history
    assert len(lines) == 7 and "images/s" in lines[-1]


def test_training_is_deterministic_for_a_seed(rng):
    teacher = tiny_teacher(np, np.float32)
    images = rng.random((2, 3, 16, 16)).astype(np.float32)
    runs = [train_students(teacher, images, n_students=1, epochs=2, seed=3, log=lambda s: None)
            for _ in range(2)]
    for k in runs[0].students[0].params:
        assert np.array_equal(runs[0].students[0].params[k], runs[1].students[0].params[k])


def test_students_trained_at_once_on_two_threads_equal_students_trained_on_one_core(rng, monkeypatch):
    import ustudents.blas as blas
    import ustudents.students as students
    teacher = tiny_teacher(np, np.float32)
    images = rng.random((3, 3, 16, 16)).astype(np.float32)
    train = lambda: train_students(teacher, images, n_students=3, epochs=2, crop=8, seed=3,
                                   log=lambda s: None)
    monkeypatch.setattr(students, "threads", lambda: 2)        # interleaved, whatever the machine
    together = train()

    def one_core(jobs, n):                  # round-robin on this thread, each step split no further
        blas._local.inside = True
        try:
            blas.interleave(jobs, 1)
        finally:
            blas._local.inside = False
    monkeypatch.setattr(students, "interleave", one_core)
    alone = train()
    assert together.history == alone.history
    for a, b in zip(together.students, alone.students):
        for k in a.params:
            np.testing.assert_array_equal(a.params[k], b.params[k])


def test_students_that_start_alike_stay_alike_for_they_see_the_same_crops(rng, monkeypatch):
    import copy
    import ustudents.students as students
    teacher = tiny_teacher(np, np.float32)
    images = rng.random((3, 3, 16, 16)).astype(np.float32)
    first = students.make_students(teacher, 1)[0]
    monkeypatch.setattr(students, "make_students", lambda t, n, w, s: [copy.deepcopy(first) for _ in range(n)])
    monkeypatch.setattr(students, "threads", lambda: 2)
    model = train_students(teacher, images, n_students=3, epochs=3, crop=8, log=lambda s: None)
    assert all(len(set(losses)) == 1 for losses in model.history)
    for net in model.students[1:]:
        for k in net.params:
            np.testing.assert_array_equal(net.params[k], model.students[0].params[k])


def test_each_image_is_trained_on_each_of_its_crops_once_every_len_corners_epochs(rng, monkeypatch):
    """Four 8 x 8 crops tile a 16 x 16 image: in epochs 1-4, and again in 5-8, every image is
    trained on each of them once (drawn at random, an image would miss one in most runs)."""
    import ustudents.students as students
    teacher = tiny_teacher(np, np.float32)
    images = rng.random((3, 3, 16, 16)).astype(np.float32)
    seen, crop_window = [], students.crop_window

    def recording(net, x, r, c, side):
        image = int(np.flatnonzero(images[:, 0, 0, 0] == x[0, 0, 0, 0])[0])
        seen.append((image, r, c))
        return crop_window(net, x, r, c, side)
    monkeypatch.setattr(students, "crop_window", recording)
    train_students(teacher, images, n_students=1, epochs=8, crop=8, log=lambda s: None)
    assert len(seen) == 8 * 3
    corners = {(0, 0), (0, 8), (8, 0), (8, 8)}
    for half in (seen[:12], seen[12:]):
        for image in range(3):
            assert sorted((r, c) for i, r, c in half if i == image) == sorted(corners)


def test_targets_recomputed_per_batch_train_the_same_as_cached_ones(rng):
    teacher = tiny_teacher(np)
    images = rng.random((2, 3, 16, 16))
    cached, uncached = (train_students(teacher, images, n_students=1, epochs=2, cache_bytes=c,
                                       log=lambda s: None) for c in (2 ** 30, 0))
    np.testing.assert_allclose(cached.history, uncached.history, rtol=1e-12)


def test_cached_targets_give_channel_stats_own_mu_and_sigma_to_the_bit(rng, monkeypatch):
    """The statistics of the cached targets go batch by batch, as channel_stats does: the same
    numbers, and never a float64 copy of every target at once."""
    import ustudents.students as students
    teacher = tiny_teacher(np)
    images = rng.random((6, 3, 16, 16))                              # two batches of 4
    seen = []
    monkeypatch.setattr(students, "ScaleModel", lambda teacher, nets, mu, sigma, **kw: seen.append((mu, sigma)))
    train_students(teacher, images, n_students=1, epochs=1, log=lambda s: None)
    mu, sigma = channel_stats(teacher, images, batch=4)
    np.testing.assert_array_equal(seen[0][0], mu)
    np.testing.assert_array_equal(seen[0][1], sigma)


def test_saved_and_loaded_model_gives_identical_maps(xp, tmp_path, rng):
    teacher = tiny_teacher(xp)
    images = rng.random((2, 3, 14, 14))
    model = ScaleModel(teacher, make_students(teacher, 2), *channel_stats(teacher, images),
                       history=[[1.0, 2.0]])
    model.set_val_stats({"e_mean": 1.0, "e_std": 2.0, "v_mean": 0.5, "v_std": 0.25})
    path = save_scale(model, tmp_path)
    assert path == scale_path(tmp_path, P) and os.listdir(tmp_path) == [f"scale_{P}.npz"]
    loaded = load_scale(path, device="cpu" if xp is np else "cuda")
    before, after = score_maps(model, images), score_maps(loaded, images)
    for k in before:
        assert np.array_equal(asnumpy(before[k]), asnumpy(after[k]))
    assert loaded.val_stats == model.val_stats and loaded.history == model.history


def test_a_model_without_validation_stats_loads_without_them(tmp_path):
    teacher = tiny_teacher(np, np.float32)
    model = ScaleModel(teacher, make_students(teacher, 1), np.zeros(128), np.ones(128))
    assert load_scale(save_scale(model, tmp_path)).val_stats is None


def test_a_missing_or_damaged_file_gives_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="scale_17.npz"):
        load_scale(scale_path(tmp_path, 17))
    bad = tmp_path / "scale_17.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="cannot read"):
        load_scale(bad)
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not a ustudents scale file"):
        load_scale(tmp_path / "other.npz")


def test_training_on_crops_of_the_whole_image_is_training_on_the_image(rng):
    teacher = tiny_teacher(np)
    images = rng.random((2, 3, 14, 14))
    whole, crops = (train_students(teacher, images, n_students=1, epochs=2, crop=crop,
                                   log=lambda s: None) for crop in (None, 14))
    np.testing.assert_allclose(whole.history, crops.history, rtol=1e-12)
    for k, v in whole.students[0].params.items():
        np.testing.assert_allclose(crops.students[0].params[k], v, rtol=1e-10, atol=1e-14)


def test_training_on_crops_lowers_the_loss_on_whole_images_and_says_so(xp, rng):
    teacher = tiny_teacher(xp, np.float32)
    images = xp.asarray(rng.random((2, 3, 20, 20)).astype(np.float32))
    lines = []
    model = train_students(teacher, images, n_students=1, epochs=16, lr=1e-3, crop=10,
                           log=lines.append)
    target = normalise(dense_features(teacher, images), model.mu, model.sigma)
    before = make_students(teacher, 1, seed=0)[0]                # train_students' own start
    losses = [float(regression(dense_features(net, images), target)[0])
              for net in (before, model.students[0])]
    assert losses[1] < 0.99 * losses[0], losses
    assert "crops 10x10" in lines[0]
    assert model.image_size == (20, 20)                  # the model is still the whole image's
