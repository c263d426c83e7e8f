"""Adam: the first steps against values worked out by hand, and against torch.optim.Adam when
PyTorch happens to be installed (it is no dependency)."""
import numpy as np
import pytest

from ustudents.backend import asnumpy
from ustudents.optim import Adam


def test_first_step_moves_each_weight_by_lr_against_its_gradient_sign(xp):
    # Step 1: m_hat = g, v_hat = g^2, so the update is lr * g / (|g| + eps) ~ lr * sign(g).
    p = {"w": xp.asarray([1.0, -2.0, 0.5])}
    Adam(lr=0.1).step(p, {"w": xp.asarray([3.0, -0.01, 0.0])})
    np.testing.assert_allclose(asnumpy(p["w"]), [1.0 - 0.1 * 3 / (3 + 1e-8), -2.0 + 0.1 * 0.01 / (0.01 + 1e-8), 0.5], rtol=1e-12)


def test_two_steps_worked_out_by_hand():
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    p = {"w": np.array([0.0])}
    opt = Adam(lr=lr, betas=(b1, b2), eps=eps)
    opt.step(p, {"w": np.array([1.0])})
    opt.step(p, {"w": np.array([-2.0])})
    # by hand: m1 = 0.1, v1 = 0.001 -> step1 = -lr * 1 / (1 + eps)
    # m2 = 0.09 - 0.2 = -0.11, v2 = 0.000999 + 0.004 = 0.004999
    # m_hat = -0.11 / 0.19, v_hat = 0.004999 / 0.001999
    step1 = -lr * 1.0 / (1.0 + eps)
    step2 = -lr * (-0.11 / 0.19) / (np.sqrt(0.004999 / 0.001999) + eps)
    np.testing.assert_allclose(p["w"], [step1 + step2], rtol=1e-12)


def test_weight_decay_is_added_to_the_gradient():
    # g_eff = g + wd * p = 0 + 0.5 * 2 = 1 > 0, so the weight shrinks by ~lr.
    p = {"w": np.array([2.0])}
    Adam(lr=0.1, weight_decay=0.5).step(p, {"w": np.array([0.0])})
    np.testing.assert_allclose(p["w"], [1.9], rtol=1e-7)


@pytest.mark.slow                 # seconds on 2 cores: with the slow tests (.ci/run runs them)
def test_matches_torch_adam_for_twenty_steps_in_float64(rng):
    torch = pytest.importorskip("torch")
    w0 = rng.standard_normal((4, 3))
    grads = [rng.standard_normal((4, 3)) for _ in range(20)]
    ours = {"w": w0.copy()}
    opt = Adam(lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2)
    wt = torch.tensor(w0, requires_grad=True)
    topt = torch.optim.Adam([wt], lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2)
    for g in grads:
        opt.step(ours, {"w": g})
        wt.grad = torch.tensor(g)
        topt.step()
    np.testing.assert_allclose(ours["w"], wt.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_step_rejects_a_missing_or_misshapen_gradient():
    opt = Adam()
    with pytest.raises(ValueError, match="no gradient for \\['b'\\]"):
        opt.step({"w": np.zeros(2), "b": np.zeros(1)}, {"w": np.zeros(2)})
    with pytest.raises(ValueError, match=r"'w' has shape \(3,\), parameter has \(2,\)"):
        opt.step({"w": np.zeros(2)}, {"w": np.zeros(3)})
