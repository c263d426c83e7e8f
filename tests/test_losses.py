"""Losses: known answers worked out by hand, float64 gradient checks scaled by a random upstream
gradient, the anchor swap and the hinge, clear shape errors, and NumPy/CuPy agreement."""
import numpy as np
import pytest

from ustudents.backend import asnumpy
from ustudents.gradcheck import numerical_grad, rel_error
from ustudents.losses import compactness, distillation, regression, teacher_loss, triplet


def arrays(xp, *xs):
    return tuple(xp.asarray(np.asarray(x, dtype=np.float64)) for x in xs)


def check_grads(loss_fn, inputs, grads, rng, tol=1e-7):
    """Compare g * analytic gradient with central differences of g * loss for a random g."""
    g = float(rng.uniform(0.5, 2.0) * rng.choice([-1, 1]))
    for i, (x, dx) in enumerate(zip(inputs, grads)):
        def f(v, i=i):
            args = list(inputs)
            args[i] = v
            return g * loss_fn(*args)
        assert rel_error(g * dx, numerical_grad(f, x)) < tol, f"input {i}"


# ---- triplet -------------------------------------------------------------------------------

def test_triplet_of_1d_descriptors_matches_the_hand_computation(xp):
    # a=0, p=1, n=3: δ⁺ = 1, ||a−n||² = 9, ||p−n||² = 4, so δ⁻ = 4 (the swap) and with
    # margin 5 the loss is 5 + 1 − 4 = 2. By hand: d/da = 2(a−p) = −2,
    # d/dp = −2(a−p) − 2(p−n) = 2 + 4 = 6, d/dn = 2(p−n) = −4.
    a, p, n = arrays(xp, [[0.0]], [[1.0]], [[3.0]])
    loss, (da, dp, dn) = triplet(a, p, n, margin=5.0)
    assert float(loss) == 2.0
    assert asnumpy(da).tolist() == [[-2.0]] and asnumpy(dp).tolist() == [[6.0]]
    assert asnumpy(dn).tolist() == [[-4.0]]


def test_triplet_averages_the_hinge_over_the_batch(xp):
    # Sample 1: δ⁺ = 1, δ⁻ = min(4, 9) = 4, hinge 2 + 1 − 4 < 0 -> 0.
    # Sample 2: δ⁺ = 0.25, δ⁻ = min(1, 2.25) = 1, hinge 2 + 0.25 − 1 = 1.25. Mean 0.625.
    a, p, n = arrays(xp, [[0.0], [0.0]], [[1.0], [-0.5]], [[-2.0], [1.0]])
    loss, _ = triplet(a, p, n, margin=2.0)
    assert float(loss) == pytest.approx(0.625, abs=1e-15)


def test_anchor_swap_uses_the_positive_when_it_is_nearer_the_negative(xp):
    # ||p − n||² = 1 < ||a − n||² = 16: δ⁻ must be 1 (loss 1 + 4 − 1 = 4), not 16 (loss 0).
    a, p, n = arrays(xp, [[0.0, 0.0]], [[2.0, 0.0]], [[3.0, 0.0]])
    loss, (da, dp, dn) = triplet(a, p, n, margin=1.0)
    assert float(loss) == 4.0
    assert float(abs(dn).sum()) > 0              # the negative is pushed away from p


def test_triplet_tie_between_negatives_sends_the_gradient_through_the_anchor(xp):
    # a=0, p=2, n=1: ||a−n||² = ||p−n||² = 1. The rule: the anchor's distance wins, so
    # d/da = 2(a−p) − 2(a−n) = −2, d/dp = −2(a−p) = 4, d/dn = 2(a−n) = −2.
    a, p, n = arrays(xp, [[0.0]], [[2.0]], [[1.0]])
    loss, (da, dp, dn) = triplet(a, p, n, margin=1.0)
    assert float(loss) == 4.0
    assert [asnumpy(g).item() for g in (da, dp, dn)] == [-2.0, 4.0, -2.0]


def test_triplet_past_the_margin_gives_zero_loss_and_zero_gradients(xp, rng):
    # Row 0 by hand, just past the margin: δ⁺ = 1, δ⁻ = min(4, 9) = 4, hinge 2.9 + 1 − 4 = −0.1.
    # The other rows are far: δ⁻ ≈ 400 >> margin + δ⁺.
    a = rng.standard_normal((5, 1))
    p = a + 0.01 * rng.standard_normal((5, 1))
    n = a + 20.0
    a[0], p[0], n[0] = 0.0, 1.0, -2.0
    loss, grads = triplet(*arrays(xp, a, p, n), margin=2.9)
    assert float(loss) == 0.0
    assert all(float(abs(g).max()) == 0.0 for g in grads)


def triplet_case(rng, B=8, d=3, margin=3.0):
    """A batch where the hinge is active for some samples and not for others, and both swap
    branches occur among the active ones, every sample well away from the kinks."""
    a = rng.standard_normal((B, d))
    p = a + 0.6 * rng.standard_normal((B, d))
    n = a + 1.3 * rng.standard_normal((B, d))
    dpos = ((a - p) ** 2).sum(1)
    dan, dpn = ((a - n) ** 2).sum(1), ((p - n) ** 2).sum(1)
    hinge = margin + dpos - np.minimum(dan, dpn)
    active = hinge > 0
    assert np.abs(hinge).min() > 1e-2 and np.abs(dan - dpn).min() > 1e-2      # off the kinks
    assert 0 < active.sum() < B                                              # both sides
    assert (dpn < dan)[active].any() and (dpn > dan)[active].any()          # both branches
    return a, p, n, margin


def test_triplet_gradients_match_central_differences(xp):
    rng = np.random.default_rng(3)
    a, p, n, margin = triplet_case(rng)
    a, p, n = arrays(xp, a, p, n)
    _, grads = triplet(a, p, n, margin)
    check_grads(lambda a, p, n: triplet(a, p, n, margin)[0], (a, p, n), grads, rng)


def test_triplet_gradients_cancel_because_the_loss_ignores_translations(xp):
    a, p, n, margin = triplet_case(np.random.default_rng(3))
    _, (da, dp, dn) = triplet(*arrays(xp, a, p, n), margin)
    assert float(abs(da + dp + dn).max()) < 1e-12 and float(abs(da).max()) > 0


# ---- compactness ---------------------------------------------------------------------------

def test_perfectly_correlated_components_give_loss_one(xp):
    # Every column is ±(scale)·t + offset: every correlation is ±1, and so is its square.
    t = np.array([0.3, -1.2, 2.0, 0.5, -0.7])
    d = np.stack([t, -3 * t + 1, 0.5 * t - 2, 10 * t], axis=1)       # (5, 4)
    loss, dd = compactness(*arrays(xp, d))
    assert float(loss) == pytest.approx(1.0, abs=1e-6)


def test_decorrelated_components_give_zero_loss_and_zero_gradient(xp):
    # Orthogonal zero-mean columns (rows of a 4x4 Hadamard matrix): C is the identity.
    d = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=np.float64)
    loss, dd = compactness(*arrays(xp, 2 * d + 5))
    assert float(loss) == pytest.approx(0.0, abs=1e-15)
    assert float(abs(dd).max()) < 1e-15


def test_independent_components_give_about_one_over_B(xp, rng):
    B = 2000
    loss, _ = compactness(*arrays(xp, rng.standard_normal((B, 16))))
    assert 0.7 / B < float(loss) < 1.3 / B      # 120 pairs: relative spread ~ 0.13


def test_compactness_is_the_mean_square_not_the_plain_sum(xp):
    # Two components with correlation −1: the paper's plain sum of off-diagonal entries
    # would be −2, as low as it goes; the mean square says 1, maximally bad.
    t = np.array([1.0, 2.0, 4.0])
    loss, _ = compactness(*arrays(xp, np.stack([t, -t], axis=1)))
    assert float(loss) == pytest.approx(1.0, abs=1e-6)


def test_compactness_gradient_matches_central_differences(xp):
    rng = np.random.default_rng(4)
    d = rng.standard_normal((7, 5))
    d[:, 1] += 0.8 * d[:, 0]                        # some real correlation to remove
    d = arrays(xp, d)[0]
    _, dd = compactness(d)
    check_grads(lambda v: compactness(v)[0], (d,), (dd,), rng)


def test_a_constant_component_gives_no_nan(xp, rng):
    d = rng.standard_normal((6, 3))
    d[:, 2] = 4.0
    loss, dd = compactness(*arrays(xp, d))
    assert np.isfinite(float(loss)) and bool(xp.isfinite(dd).all())


# ---- distillation and regression -----------------------------------------------------------

def test_distillation_is_the_squared_norm_averaged_over_the_batch(xp):
    # ||(1,2)||² = 5, ||(3,4)||² = 25: mean 15. Gradient 2(y − target)/B = y.
    y, t = arrays(xp, [[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]])
    loss, dy = distillation(y, t)
    assert float(loss) == 15.0
    assert asnumpy(dy).tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_regression_sums_channels_and_averages_pixels_and_images(xp, rng):
    pred, target = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((2, 3, 4, 5))
    per_image = [sum(np.sum((pred[i, :, r, c] - target[i, :, r, c]) ** 2)
                     for r in range(4) for c in range(5)) / (4 * 5) for i in range(2)]
    loss, _ = regression(*arrays(xp, pred, target))
    assert float(loss) == pytest.approx(np.mean(per_image), rel=1e-13)


@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 2, 2)])
def test_squared_error_gradients_match_central_differences(shape, xp, rng):
    fn = distillation if len(shape) == 2 else regression
    y, t = arrays(xp, rng.standard_normal(shape), rng.standard_normal(shape))
    _, dy = fn(y, t)
    check_grads(lambda v: fn(v, t)[0], (y,), (dy,), rng)


# ---- combining, shapes, backends -----------------------------------------------------------

def test_teacher_loss_is_the_weighted_sum_and_needs_every_weight():
    terms = {"distillation": np.asarray(2.0), "compactness": np.asarray(0.5)}
    assert float(teacher_loss(terms, {"distillation": 1.0, "compactness": 4.0, "triplet": 9.0})) == 4.0
    with pytest.raises(ValueError, match="compactness"):
        teacher_loss(terms, {"distillation": 1.0})


def test_mismatched_shapes_raise_errors_that_name_them():
    x = np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(4, 2\)"):
        triplet(x, x, np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(5, 3\)"):
        distillation(x, np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"\(1, 2, 3, 4\).*\(1, 2, 3, 5\)"):
        regression(np.zeros((1, 2, 3, 4)), np.zeros((1, 2, 3, 5)))
    with pytest.raises(ValueError, match=r"\(4, 3, 1\)"):
        regression(np.zeros((4, 3, 1)), np.zeros((4, 3, 1)))
    with pytest.raises(ValueError, match=r"\(1, 3\)"):
        compactness(np.zeros((1, 3)))


def test_losses_keep_module_and_float32_and_agree_with_float64(xp):
    rng = np.random.default_rng(5)
    a, p, n, margin = triplet_case(rng)
    img = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((2, 3, 4, 4))
    cases = [(lambda *v: triplet(*v, margin), (a, p, n)), (compactness, (a,)),
             (distillation, (a, n)), (regression, img)]
    for fn, inputs in cases:
        ref_loss, ref_grads = fn(*inputs)
        loss, grads = fn(*(xp.asarray(v.astype(np.float32)) for v in inputs))
        grads = grads if isinstance(grads, tuple) else (grads,)
        ref_grads = ref_grads if isinstance(ref_grads, tuple) else (ref_grads,)
        assert isinstance(loss, xp.ndarray) and loss.ndim == 0 and loss.dtype == np.float32
        np.testing.assert_allclose(asnumpy(loss), ref_loss, rtol=1e-4)
        for g, ref in zip(grads, ref_grads):
            assert isinstance(g, xp.ndarray) and g.dtype == np.float32
            np.testing.assert_allclose(asnumpy(g), ref, rtol=1e-4, atol=1e-5)


def test_losses_do_not_change_their_inputs(rng):
    a, p, n = (rng.standard_normal((4, 3)) for _ in range(3))
    copies = [v.copy() for v in (a, p, n)]
    triplet(a, p, n, 5.0), compactness(a), distillation(a, p)
    assert all(np.array_equal(v, c) for v, c in zip((a, p, n), copies))
