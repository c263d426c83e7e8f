"""Scoring: regression error, predictive uncertainty, validation statistics, combination."""
import numpy as np
import pytest

from ustudents.backend import asnumpy
from ustudents.models import PatchNet
from ustudents.scoring import (anomaly_map, combined, multiscale,
                               predictive_uncertainty, regression_error, score_maps,
                               validation_stats)
from ustudents.students import ScaleModel, channel_stats, make_students

M, N, D, H, W = 3, 2, 5, 4, 6


def tiny_model(xp, images, n_students=2):
    teacher = PatchNet(17, width=0.0625, seed=0)
    teacher.params = {k: xp.asarray(v, dtype=xp.float64) for k, v in teacher.params.items()}
    return ScaleModel(teacher, make_students(teacher, n_students), *channel_stats(teacher, images))


def test_regression_error_matches_the_formula_pixel_by_pixel(xp, rng):
    outs, t = rng.standard_normal((M, N, D, H, W)), rng.standard_normal((N, D, H, W))
    e = asnumpy(regression_error(xp.asarray(outs), xp.asarray(t)))
    assert e.shape == (N, H, W)
    n, r, c = 1, 2, 3
    mean = sum(outs[i, n, :, r, c] for i in range(M)) / M
    assert e[n, r, c] == pytest.approx(np.sum((mean - t[n, :, r, c]) ** 2), rel=1e-12)


def test_uncertainty_matches_the_papers_formula(xp, rng):
    outs = rng.standard_normal((M, N, D, H, W))
    v = asnumpy(predictive_uncertainty(xp.asarray(outs)))
    mean = outs.mean(axis=0)
    paper = (outs ** 2).sum(axis=2).mean(axis=0) - (mean ** 2).sum(axis=1)
    np.testing.assert_allclose(v, paper, rtol=1e-10, atol=1e-12)


def test_a_list_of_student_outputs_works_like_the_stacked_array(rng):
    outs, t = rng.standard_normal((M, N, D, H, W)), rng.standard_normal((N, D, H, W))
    assert np.array_equal(regression_error(list(outs), t), regression_error(outs, t))
    assert np.array_equal(predictive_uncertainty(list(outs)), predictive_uncertainty(outs))


def test_uncertainty_is_zero_for_identical_students_and_never_negative(xp, rng):
    one = rng.standard_normal((N, D, H, W)).astype(np.float32)
    assert np.all(asnumpy(predictive_uncertainty(xp.asarray(np.stack([one] * M)))) == 0)
    # nearly identical students far from 0: the paper's difference form rounds below zero
    close = 1e3 + one + 1e-4 * rng.standard_normal((M, N, D, H, W)).astype(np.float32)
    paper = (close ** 2).sum(axis=2).mean(axis=0) - (close.mean(axis=0) ** 2).sum(axis=1)
    assert np.any(paper < 0)
    assert np.all(asnumpy(predictive_uncertainty(xp.asarray(close))) >= 0)


def test_validation_stats_equal_the_stacked_ones(xp, rng):
    images = rng.random((3, 3, 10, 12))
    model = tiny_model(xp, images)
    stats = validation_stats(model, images, batch=2)
    maps = {k: asnumpy(v) for k, v in score_maps(model, images).items()}
    assert stats["e_mean"] == pytest.approx(maps["error"].mean(), rel=1e-10)
    assert stats["e_std"] == pytest.approx(maps["error"].std(), rel=1e-10)
    assert stats["v_mean"] == pytest.approx(maps["uncertainty"].mean(), rel=1e-10)
    assert stats["v_std"] == pytest.approx(maps["uncertainty"].std(), rel=1e-10)


def test_combined_terms_have_zero_mean_and_unit_std_on_the_validation_images(rng):
    images = rng.random((2, 3, 12, 12))
    model = tiny_model(np, images).set_val_stats(validation_stats(tiny_model(np, images), images))
    e, v = score_maps(model, images).values()
    e_term = combined(e, np.full_like(v, model.v_mean), model)
    v_term = combined(np.full_like(e, model.e_mean), v, model.val_stats)
    for term in (e_term, v_term):
        assert abs(term.mean()) < 1e-10 and term.std() == pytest.approx(1, rel=1e-10)
    assert abs(anomaly_map(model, images).mean()) < 1e-10


def test_combined_needs_validation_stats_and_skips_a_constant_term(rng):
    e, v = rng.random((2, 4, 4)), np.zeros((2, 4, 4))
    model = ScaleModel(None, [], None, None)
    with pytest.raises(ValueError, match="validation_stats"):
        combined(e, v, model)
    stats = {"e_mean": 0.5, "e_std": 2.0, "v_mean": 0.0, "v_std": 0.0}   # one student: v == 0
    np.testing.assert_allclose(combined(e, v, stats), (e - 0.5) / 2.0)


def test_multiscale_averages_the_maps(rng):
    a, b = rng.random((2, 5, 5)), rng.random((2, 5, 5))
    np.testing.assert_allclose(multiscale([a, b]), (a + b) / 2)
    np.testing.assert_allclose(multiscale({17: a, 33: b}), (a + b) / 2)


def test_students_score_at_once_each_on_one_core_as_one_core_alone_would(rng, monkeypatch):
    """On a CPU with several cores the students' dense passes run side by side, each on one
    thread (blas.run_parallel); the maps are those of a one-core machine, to the bit."""
    import threading

    import ustudents.blas as blas
    import ustudents.scoring as scoring
    images = rng.random((2, 3, 20, 20)).astype(np.float32)
    model = tiny_model(np, images, n_students=3)
    model.teacher.params = {k: v.astype(np.float32) for k, v in model.teacher.params.items()}
    seen, main = [], threading.get_ident()

    def recording(net, x, tile=256):
        seen.append((net is model.teacher, blas.threads(), threading.get_ident() == main))
        return dense_features(net, x, tile)
    from ustudents.dense import dense_features
    monkeypatch.setattr(scoring, "dense_features", recording)
    monkeypatch.setattr(scoring, "threads", lambda: 2)        # side by side, whatever the machine
    together = score_maps(model, images)
    students = [s for s in seen if not s[0]]
    assert len(students) == 3 and all(t == 1 for _, t, _ in students)
    if blas.have_cblas():                                     # run_parallel's pool needs it
        assert not any(on_main for _, _, on_main in students)

    blas._local.inside = True                                 # one core: everything on this thread
    try:
        alone = score_maps(model, images)
    finally:
        blas._local.inside = False
    for key in ("error", "uncertainty"):
        np.testing.assert_array_equal(together[key], alone[key])
