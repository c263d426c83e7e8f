"""Numerical gradients for checking hand-written backward passes.

For a function f(x) -> y and an upstream gradient dy, the gradient of the scalar <f(x), dy>
with respect to x is what every backward pass returns. Central differences estimate it:

    d<f, dy>/dx_i ~ (<f(x + h e_i), dy> - <f(x - h e_i), dy>) / (2h)

Use float64 (float32 round-off swamps the differences) and a *random* dy: an upstream gradient
of ones hides backward passes that forget a term.
"""
import numpy as np

from .backend import asnumpy, get_array_module


def rel_error(a, b):
    """max |a - b| / max(|a| + |b|, tiny): 0 for identical arrays, ~1 for unrelated ones."""
    a, b = asnumpy(a).astype(np.float64), asnumpy(b).astype(np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a) + np.abs(b)), 1e-300))


def numerical_grad(f, x, dy=None, h=1e-5):
    """Central-difference gradient of <f(x), dy> with respect to every element of x.

    f maps an array shaped like x to an array (or a scalar when dy is None). x is perturbed in
    place and restored. Costs two evaluations of f per element: fine for a few hundred elements.
    """
    if not x.flags.c_contiguous:
        raise ValueError("numerical_grad perturbs x through a flat view: pass a contiguous array")
    xp = get_array_module(x)
    grad = xp.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)     # views into x and grad

    def value(v):
        return float((v * dy).sum()) if dy is not None else float(v)

    for i in range(flat.size):
        old = float(flat[i])
        flat[i] = old + h
        plus = value(f(x))
        flat[i] = old - h
        minus = value(f(x))
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * h)
    return grad


def directional_check(f, xs, grads, dy=None, n_dirs=3, h=1e-5, seed=0):
    """Check analytic gradients along a few random directions; for inputs too big for full
    central differences.

    xs: list of arrays that f reads (perturbed in place, restored); grads: their analytic
    gradients of <f(), dy>. For a random direction u (one array per x), compare
    sum_k <grad_k, u_k> with (<f(x + h u), dy> - <f(x - h u), dy>) / (2h).
    Returns the worst relative error over the directions.
    """
    rng = np.random.default_rng(seed)
    xp = get_array_module(*xs)

    def value():
        v = f()
        return float((v * dy).sum()) if dy is not None else float(v)

    worst = 0.0
    for _ in range(n_dirs):
        us = [xp.asarray(rng.standard_normal(x.shape)).astype(x.dtype) for x in xs]
        analytic = sum(float((g * u).sum()) for g, u in zip(grads, us))
        for x, u in zip(xs, us):
            x += h * u
        plus = value()
        for x, u in zip(xs, us):
            x -= 2 * h * u
        minus = value()
        for x, u in zip(xs, us):
            x += h * u
        numeric = (plus - minus) / (2 * h)
        worst = max(worst, abs(analytic - numeric) / max(abs(analytic) + abs(numeric), 1e-300))
    return worst
