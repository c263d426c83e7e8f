"""Layers: float64 gradient checks with a random upstream gradient, known answers, a naive
reference for convolution, clear shape errors, and NumPy/CuPy agreement."""
import numpy as np
import pytest

from ustudents.backend import asnumpy
from ustudents.gradcheck import numerical_grad, rel_error
from ustudents.layers import (conv2d_backward, conv2d_forward, conv2d_plain_backward,
                              conv2d_plain_forward, leaky_relu_backward,
                              leaky_relu_forward, linear_backward, linear_forward,
                              max_pool2d_backward, max_pool2d_forward)


def naive_conv(x, w, b, stride, pad):
    """Four loops over the definition: y[n,f,i,j] = b[f] + sum_c,u,v w[f,c,u,v] x[n,c,s*i+u,s*j+v]."""
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    xp_ = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    OH, OW = (H + 2 * pad - KH) // stride + 1, (W + 2 * pad - KW) // stride + 1
    y = np.empty((N, F, OH, OW))
    for i in range(OH):
        for j in range(OW):
            win = xp_[:, :, i * stride:i * stride + KH, j * stride:j * stride + KW]
            y[:, :, i, j] = np.tensordot(win, w, axes=([1, 2, 3], [1, 2, 3])) + b
    return y


CONV_CASES = [  # (N, C, H, W, F, KH, KW, stride, pad)
    (2, 3, 7, 6, 4, 3, 3, 1, 0),
    (1, 2, 8, 9, 3, 5, 2, 1, 2),
    (2, 3, 9, 8, 2, 3, 3, 2, 1),
    (1, 2, 11, 10, 3, 7, 7, 2, 3),
    (2, 4, 5, 5, 3, 1, 1, 1, 0),
    (3, 4, 4, 5, 6, 4, 5, 1, 0),     # the kernel covers the input: one linear layer
    (2, 3, 1, 1, 4, 1, 1, 1, 0),     # 1x1 on 1x1, the p = 65 network's last layer
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_forward_matches_the_naive_definition(case, xp, rng):
    N, C, H, W, F, KH, KW, s, p = case
    x, w, b = rng.standard_normal((N, C, H, W)), rng.standard_normal((F, C, KH, KW)), rng.standard_normal(F)
    y, _ = conv2d_forward(xp.asarray(x), xp.asarray(w), xp.asarray(b), stride=s, pad=p)
    assert rel_error(y, naive_conv(x, w, b, s, p)) < 1e-12


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_backward_matches_central_differences(case, xp, rng):
    N, C, H, W, F, KH, KW, s, p = case
    x, w, b = (xp.asarray(rng.standard_normal(shape)) for shape in [(N, C, H, W), (F, C, KH, KW), (F,)])
    y, cache = conv2d_forward(x, w, b, stride=s, pad=p)
    dy = xp.asarray(rng.standard_normal(y.shape))
    dx, dw, db = conv2d_backward(dy, cache)
    assert rel_error(dx, numerical_grad(lambda v: conv2d_forward(v, w, b, s, p)[0], x, dy)) < 1e-7
    assert rel_error(dw, numerical_grad(lambda v: conv2d_forward(x, v, b, s, p)[0], w, dy)) < 1e-7
    assert rel_error(db, numerical_grad(lambda v: conv2d_forward(x, w, v, s, p)[0], b, dy)) < 1e-7


def test_conv_of_a_delta_image_spells_out_the_flipped_kernel():
    # Cross-correlation of a single 1 with w gives w rotated by 180 degrees around the 1.
    x = np.zeros((1, 1, 5, 5))
    x[0, 0, 2, 2] = 1.0
    w = np.arange(9.0).reshape(1, 1, 3, 3)
    y, _ = conv2d_forward(x, w, np.array([0.5]), pad=1)
    np.testing.assert_array_equal(y[0, 0, 1:4, 1:4], w[0, 0, ::-1, ::-1] + 0.5)
    assert y[0, 0, 0, 0] == 0.5


def test_conv_keeps_float32(rng):
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    y, cache = conv2d_forward(x, np.ones((4, 3, 3, 3), np.float32), np.zeros(4, np.float32))
    grads = conv2d_backward(np.ones_like(y), cache)
    assert y.dtype == np.float32 and all(g.dtype == np.float32 for g in grads)


@pytest.mark.parametrize("block", [10 ** 9, 5 * 12 * 3 * 2, 1])    # one block, a few rows, one row
@pytest.mark.parametrize("full_width", [0.0, 1.0])                 # exact runs, full-width runs
@pytest.mark.parametrize("in_place_min_c", [1, 10 ** 9])           # per-offset products, columns
@pytest.mark.parametrize("stride", [1, 2])
def test_conv_blocks_run_widths_and_products_do_not_change_the_result(block, full_width, in_place_min_c,
                                                                     stride, rng, monkeypatch):
    import ustudents.columns as columns
    import ustudents.conv as conv
    x, w, b = rng.standard_normal((3, 4, 12, 10)), rng.standard_normal((5, 4, 3, 3)), rng.standard_normal(5)
    y, cache = conv2d_plain_forward(x, w, b, stride=stride, pad=1)
    dy = rng.standard_normal(y.shape)
    grads = conv2d_plain_backward(dy, cache)
    monkeypatch.setitem(conv.BLOCK, "cpu", block)
    monkeypatch.setattr(columns, "BLOCK", block)        # pieces of rows of one image, or of images
    monkeypatch.setattr(conv, "FULL_WIDTH_MAX_WASTE", full_width)
    monkeypatch.setattr(conv, "IN_PLACE_MIN_C", in_place_min_c)
    y2, cache2 = conv2d_forward(x, w, b, stride=stride, pad=1)
    assert rel_error(y2, naive_conv(x, w, b, stride, 1)) < 1e-12
    for g, g2 in zip(grads, conv2d_backward(dy, cache2)):
        assert rel_error(g2, g) < 1e-12


FAST_CASES = CONV_CASES + [(3, 40, 9, 8, 6, 3, 3, 1, 1), (2, 33, 12, 30, 4, 5, 5, 1, 0),
                           (2, 36, 11, 10, 3, 3, 2, 2, 1),   # C >= 32: the in-place products
                           (3, 5, 9, 8, 4, 1, 1, 1, 0)]      # 1x1 on 72 pixels: one product per image


@pytest.mark.parametrize("case", [(3, 4, 4, 5, 6, 4, 5, 1, 0), (2, 3, 1, 1, 4, 1, 1, 1, 0)])
def test_a_kernel_covering_its_input_takes_the_linear_route(case, rng, monkeypatch):
    import ustudents.conv as conv

    def no_plan(*args):
        raise AssertionError("the general route was taken")
    monkeypatch.setattr(conv, "_Plan", no_plan)
    N, C, H, W, F, KH, KW, s, p = case
    x, w, b = rng.standard_normal((N, C, H, W)), rng.standard_normal((F, C, KH, KW)), rng.standard_normal(F)
    y, cache = conv2d_forward(x, w, b)
    assert y.shape == (N, F, 1, 1) and rel_error(y, naive_conv(x, w, b, 1, 0)) < 1e-12
    dy = rng.standard_normal(y.shape)
    _, cache_plain = conv2d_plain_forward(x, w, b)
    for g, g_plain in zip(conv2d_backward(dy, cache), conv2d_plain_backward(dy, cache_plain)):
        assert rel_error(g, g_plain) < 1e-12


@pytest.mark.parametrize("case", FAST_CASES)
def test_the_fast_conv_equals_the_plain_im2col_definition(case, xp, rng):
    N, C, H, W, F, KH, KW, s, p = case
    x, w, b = (xp.asarray(rng.standard_normal(shape)) for shape in [(N, C, H, W), (F, C, KH, KW), (F,)])
    y_plain, cache_plain = conv2d_plain_forward(x, w, b, stride=s, pad=p)
    y_fast, cache_fast = conv2d_forward(x, w, b, stride=s, pad=p)
    assert rel_error(y_fast, y_plain) < 1e-12
    dy = xp.asarray(rng.standard_normal(y_plain.shape))
    for g_fast, g_plain in zip(conv2d_backward(dy, cache_fast), conv2d_plain_backward(dy, cache_plain)):
        assert g_fast.shape == g_plain.shape and rel_error(g_fast, g_plain) < 1e-12


@pytest.mark.parametrize("case", FAST_CASES)
def test_without_the_input_gradient_every_route_gives_the_same_weight_gradients(case, xp, rng):
    N, C, H, W, F, KH, KW, s, p = case
    x, w, b = (xp.asarray(rng.standard_normal(shape)) for shape in [(N, C, H, W), (F, C, KH, KW), (F,)])
    dy = xp.asarray(rng.standard_normal(conv2d_plain_forward(x, w, b, stride=s, pad=p)[0].shape))
    for forward, backward in ((conv2d_forward, conv2d_backward),
                              (conv2d_plain_forward, conv2d_plain_backward)):
        cache = forward(x, w, b, stride=s, pad=p)[1]
        dx, dw, db = backward(dy, cache, input_grad=False)
        _, dw_all, db_all = backward(dy, cache)
        assert dx is None
        assert bool((dw == dw_all).all()) and bool((db == db_all).all())


def test_the_plain_conv_matches_the_naive_definition(rng):
    for N, C, H, W, F, KH, KW, s, p in CONV_CASES:
        x, w, b = rng.standard_normal((N, C, H, W)), rng.standard_normal((F, C, KH, KW)), rng.standard_normal(F)
        assert rel_error(conv2d_plain_forward(x, w, b, s, p)[0], naive_conv(x, w, b, s, p)) < 1e-12


def test_conv_rejects_bad_shapes_naming_them():
    x, w, b = np.zeros((2, 3, 8, 8)), np.zeros((4, 2, 3, 3)), np.zeros(4)
    with pytest.raises(ValueError, match=r"3 channels.*\(4, 2, 3, 3\)"):
        conv2d_forward(x, w, b)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\).*\(3, 8, 8\)"):
        conv2d_forward(np.zeros((3, 8, 8)), np.zeros((4, 3, 3, 3)), b)
    with pytest.raises(ValueError, match="smaller than the kernel"):
        conv2d_forward(np.zeros((1, 3, 2, 2)), np.zeros((4, 3, 3, 3)), b)


def test_max_pool_known_answer_drops_the_odd_row_and_column():
    x = np.arange(25.0).reshape(1, 1, 5, 5)
    y, _ = max_pool2d_forward(x)
    np.testing.assert_array_equal(y[0, 0], [[6, 8], [16, 18]])


def test_max_pool_backward_matches_central_differences(xp, rng):
    # A permutation of well-separated values: no ties, no kink within h.
    x = xp.asarray(rng.permutation(2 * 3 * 7 * 6).reshape(2, 3, 7, 6) * 0.1)
    y, cache = max_pool2d_forward(x)
    dy = xp.asarray(rng.standard_normal(y.shape))
    dx = max_pool2d_backward(dy, cache)
    assert rel_error(dx, numerical_grad(lambda v: max_pool2d_forward(v)[0], x, dy)) < 1e-7


def test_max_pool_sends_a_tied_gradient_to_one_position_only():
    x = np.ones((1, 1, 2, 2))
    y, cache = max_pool2d_forward(x)
    dx = max_pool2d_backward(np.full((1, 1, 1, 1), 3.0), cache)
    np.testing.assert_array_equal(dx[0, 0], [[3.0, 0.0], [0.0, 0.0]])


def test_leaky_relu_known_answer_and_gradient(xp, rng):
    y, _ = leaky_relu_forward(xp.asarray([-2.0, 0.0, 3.0]), slope=0.1)
    np.testing.assert_allclose(asnumpy(y), [-0.2, 0.0, 3.0])
    x = xp.asarray(rng.standard_normal((3, 4, 5)))
    x = xp.where(abs(x) < 1e-3, 0.5, x)                      # away from the kink at 0
    y, cache = leaky_relu_forward(x)
    dy = xp.asarray(rng.standard_normal(y.shape))
    dx = leaky_relu_backward(dy, cache)
    assert rel_error(dx, numerical_grad(lambda v: leaky_relu_forward(v)[0], x, dy)) < 1e-7


def test_leaky_relu_backward_leaves_the_upstream_gradient_alone(rng):
    x, dy = rng.standard_normal(10), rng.standard_normal(10)
    before = dy.copy()
    leaky_relu_backward(dy, leaky_relu_forward(x)[1])
    np.testing.assert_array_equal(dy, before)


def test_leaky_relu_backward_is_exactly_dy_or_slope_times_dy_in_float32(rng):
    x = np.concatenate([rng.standard_normal(1000), [0.0, -0.0]]).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    for slope in (5e-3, 0.3, 0.0, 1.0):
        dx = leaky_relu_backward(dy, leaky_relu_forward(x, slope)[1])
        assert dx.dtype == np.float32
        np.testing.assert_array_equal(dx, np.where(x > 0, dy, dy * np.float32(slope)))


def test_linear_known_answer_and_gradients(xp, rng):
    y, _ = linear_forward(xp.asarray([[1.0, 2.0]]), xp.asarray([[3.0, 4.0], [5.0, 6.0]]), xp.asarray([0.5, -1.0]))
    np.testing.assert_allclose(asnumpy(y), [[11.5, 16.0]])
    x, w, b = (xp.asarray(rng.standard_normal(s)) for s in [(4, 6), (3, 6), (3,)])
    y, cache = linear_forward(x, w, b)
    dy = xp.asarray(rng.standard_normal(y.shape))
    dx, dw, db = linear_backward(dy, cache)
    assert rel_error(dx, numerical_grad(lambda v: linear_forward(v, w, b)[0], x, dy)) < 1e-7
    assert rel_error(dw, numerical_grad(lambda v: linear_forward(x, v, b)[0], w, dy)) < 1e-7
    assert rel_error(db, numerical_grad(lambda v: linear_forward(x, w, v)[0], b, dy)) < 1e-7


def test_linear_rejects_mismatched_features():
    with pytest.raises(ValueError, match=r"\(2, 5\).*\(3, 4\)"):
        linear_forward(np.zeros((2, 5)), np.zeros((3, 4)), np.zeros(3))


def test_cupy_float32_agrees_with_numpy_float32(xp, rng):
    if xp is np:
        pytest.skip("compares CuPy against NumPy")
    x = rng.standard_normal((2, 8, 20, 20)).astype(np.float32)
    w = rng.standard_normal((16, 8, 5, 5)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    y_np, c_np = conv2d_forward(x, w, b)
    y_cp, c_cp = conv2d_forward(xp.asarray(x), xp.asarray(w), xp.asarray(b))
    assert type(y_cp) is not np.ndarray                      # no silent host copy
    np.testing.assert_allclose(asnumpy(y_cp), y_np, rtol=1e-4, atol=1e-4)
    dy = rng.standard_normal(y_np.shape).astype(np.float32)
    for g_np, g_cp in zip(conv2d_backward(dy, c_np), conv2d_backward(xp.asarray(dy), c_cp)):
        np.testing.assert_allclose(asnumpy(g_cp), g_np, rtol=1e-4, atol=1e-3)
