"""Dense feature extraction (docs/method.md §3) against its definition: the patch network applied to
the patch centred at every pixel; multipool and unwarp on their own; gradients in float64."""
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from ustudents.backend import asnumpy
from ustudents.dense import (crop_corners, crop_window, dense_backward, dense_features,
                             dense_forward, multipool_backward,
                             multipool_forward, padding, unwarp_backward, unwarp_forward, warp)
from ustudents.gradcheck import directional_check, numerical_grad, rel_error
from ustudents.layers import max_pool2d_forward
from ustudents.models import PatchNet

SMALL = dict(out_dim=8, width=0.0625)
SIDES = {17: (9, 7), 33: (6, 7), 65: (10, 9)}          # for 33, 65: not multiples of S = 4, 8


def device_of(xp):
    return "cpu" if xp is np else "cuda"


def patches(images, p):
    """Every p x p patch centred on a pixel (zeros outside): (N,3,H,W) -> (N*H*W, 3, p, p)."""
    N, C, H, W = images.shape
    x = np.pad(images, ((0, 0), (0, 0), (p // 2, (p - 1) // 2), (p // 2, (p - 1) // 2)))
    win = sliding_window_view(x, (p, p), axis=(2, 3))                  # (N, C, H, W, p, p)
    return np.ascontiguousarray(win.transpose(0, 2, 3, 1, 4, 5).reshape(-1, C, p, p))


def patchwise(net, images):
    """The definition of the dense output, one patch at a time: (N,3,H,W) -> (N,d,H,W)."""
    N, _, H, W = images.shape
    y, _ = net.forward(patches(images, net.p))                           # (N*H*W, d, 1, 1)
    return y.reshape(N, H, W, -1).transpose(0, 3, 1, 2)


def setup(p, seed=0, N=2, sides=None, **kw):
    """A float64 network on the host and N random images (N, 3, *sides)."""
    net = PatchNet(p, seed=seed, **(kw or SMALL)).to(dtype=np.float64)
    return net, np.random.default_rng(seed).standard_normal((N, 3) + (sides or SIDES[p]))


def test_padding_centres_the_patch_and_rounds_up_to_the_stride_product():
    assert padding(65, 8, 10, 16) == ((32, 32 + 6), (32, 32))
    assert padding(33, 4, 6, 7) == ((16, 16 + 2), (16, 16 + 1))
    assert padding(4, 1, 5, 5) == ((2, 1), (2, 1))                      # even p: one more before


@pytest.mark.parametrize("p", [17, 33, 65])
def test_dense_output_is_the_patch_network_at_every_pixel(p, xp):
    net, images = setup(p)
    net.to(device_of(xp))
    y, _ = dense_forward(net, xp.asarray(images))
    reference = patchwise(net.to("cpu"), images)
    assert y.shape == (2, 8) + SIDES[p]
    assert np.abs(asnumpy(y) - reference).max() <= 1e-10


@pytest.mark.parametrize("p, sides", [(17, (3, 2)), (33, (5, 3)), (65, (3, 2))])
def test_dense_output_at_full_width_matches_too(p, sides):
    net, images = setup(p, N=1, sides=sides, out_dim=128, width=1.0)
    y, _ = dense_forward(net, images)
    assert np.abs(y - patchwise(net, images)).max() <= 1e-10


def test_float32_dense_output_agrees_across_backends(xp):
    net = PatchNet(65, out_dim=16, width=0.25, seed=4)
    images = np.random.default_rng(4).standard_normal((1, 3, 13, 11)).astype(np.float32)
    host = dense_features(net, images)
    y = dense_features(net.to(device_of(xp)), xp.asarray(images))
    assert y.dtype == xp.float32
    assert np.allclose(asnumpy(y), host, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("p, tile", [(33, 5), (65, 8), (17, 4)])
def test_tiled_inference_is_identical_to_the_untiled_pass(p, tile, xp):
    net, images = setup(p, sides=(19, 13))
    net.to(device_of(xp))
    images = xp.asarray(images)
    y, _ = dense_forward(net, images)
    tiled, untiled = dense_features(net, images, tile=tile), dense_features(net, images, tile=None)
    # The same sums per pixel, but BLAS may add them in another order for another matrix shape or
    # alignment (cuBLAS, and OpenBLAS's AVX-512 kernels, do): equal to float64 rounding.
    assert rel_error(tiled, y) < 1e-12 and rel_error(untiled, y) < 1e-12


def inside_patches(images, p):
    """Every p x p patch that lies wholly inside the images: (N,3,H,W) -> (N*(H-p+1)*(W-p+1), 3, p, p)."""
    win = sliding_window_view(images, (p, p), axis=(2, 3))             # (N, C, H-p+1, W-p+1, p, p)
    return np.ascontiguousarray(win.transpose(0, 2, 3, 1, 4, 5).reshape(-1, 3, p, p))


@pytest.mark.parametrize("p, inside", [(17, (3, 2)), (33, (4, 8)), (65, (8, 8))])
def test_unpadded_dense_output_and_its_backward_are_the_patches_wholly_inside(p, inside, xp, rng):
    net, images = setup(p, seed=3, N=2, sides=(inside[0] + p - 1, inside[1] + p - 1))
    net.to(device_of(xp))
    y, cache = dense_forward(net, xp.asarray(images), pad=False)
    assert y.shape == (2, 8) + inside
    dy = rng.standard_normal(y.shape)
    grads = dense_backward(xp.asarray(dy), cache)
    net.to("cpu")
    reference, patch_cache = net.forward(inside_patches(images, p))        # (N*h*w, d, 1, 1)
    expected = reference.reshape(2, *inside, -1).transpose(0, 3, 1, 2)
    assert np.abs(asnumpy(y) - expected).max() <= 1e-10
    _, ref_grads = net.backward(dy.transpose(0, 2, 3, 1).reshape(-1, 8, 1, 1), patch_cache)
    for k in grads:
        assert rel_error(grads[k], ref_grads[k]) < 1e-10, k


@pytest.mark.parametrize("p, side", [(17, 5), (33, 4), (65, 8)])
def test_a_crop_window_gives_the_whole_image_output_at_the_crop(p, side, xp):
    net, images = setup(p, seed=4, N=2, sides=(13, 11))
    net.to(device_of(xp))
    images = xp.asarray(images)
    whole, _ = dense_forward(net, images)
    corners = crop_corners(13, 11, side)
    for r, c in corners + [(3, 2)]:                       # the grid, and a crop off it
        y, _ = dense_forward(net, crop_window(net, images, r, c, side), pad=False)
        assert np.abs(asnumpy(y) - asnumpy(whole[:, :, r:r + side, c:c + side])).max() <= 1e-12, (r, c)
    covered = np.zeros((13, 11), int)
    for r, c in corners:
        covered[r:r + side, c:c + side] += 1
    assert covered.min() >= 1                             # every pixel lies in a crop


def test_crops_that_do_not_fit_are_refused_by_name():
    net = PatchNet(33, **SMALL)
    with pytest.raises(ValueError, match=r"multiple of 4 for p=33"):
        crop_window(net, np.zeros((1, 3, 16, 16)), 0, 0, 6)
    with pytest.raises(ValueError, match=r"side 20 does not fit a 16 x 16"):
        crop_corners(16, 16, 20)


def test_unpadded_dense_names_a_size_that_is_not_a_multiple_of_the_strides():
    with pytest.raises(ValueError, match=r"pad=False.*multiple of 4"):
        dense_forward(PatchNet(33, **SMALL), np.zeros((1, 3, 38, 40), np.float32), pad=False)


def test_dense_rejects_images_that_are_not_n_3_h_w():
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        dense_forward(PatchNet(17, **SMALL), np.zeros((3, 8, 8), np.float32))


def test_multipool_then_unwarp_is_a_stride_one_pool(xp, rng):
    x = xp.asarray(rng.standard_normal((2, 3, 9, 8)))
    y, _ = multipool_forward(x, 2)                                       # (4*2, 3, 4, 3)
    assert y.shape == (8, 3, 4, 3)
    out, _ = unwarp_forward(y, [2])                                      # (2, 3, 8, 6)
    stride_one, _ = max_pool2d_forward(x, 2, 1)                          # (2, 3, 8, 7)
    assert np.array_equal(asnumpy(out), asnumpy(stride_one)[:, :, :8, :6])


@pytest.mark.parametrize("strides", [[], [2], [2, 2], [2, 2, 2], [3, 2]])
def test_warp_and_unwarp_undo_each_other(strides, xp, rng):
    S = int(np.prod(strides))
    y = xp.asarray(rng.standard_normal((S * S * 2, 3, 2, 3)))
    out, cache = unwarp_forward(y, strides)
    assert out.shape == (2, 3, 2 * S, 3 * S)
    assert np.array_equal(asnumpy(warp(out, strides)), asnumpy(y))
    assert np.array_equal(asnumpy(unwarp_forward(warp(out, strides), strides)[0]), asnumpy(out))


def test_unwarp_puts_the_newest_shift_outermost():
    # strides [2, 2]: batch (i2, j2, i1, j1); row r = (r*·2 + i2)·2 + i1, column alike
    y = np.arange(16.0).reshape(16, 1, 1, 1)
    out, _ = unwarp_forward(y, [2, 2])
    i2, j2, i1, j1 = 1, 0, 0, 1
    assert out[0, 0, i2 * 2 + i1, j2 * 2 + j1] == ((i2 * 2 + j2) * 2 + i1) * 2 + j1


@pytest.mark.parametrize("stride", [2, 3])
def test_multipool_backward_matches_central_differences(stride, xp, rng):
    x = xp.asarray(rng.standard_normal((2, 2, 7, 8)))
    y, cache = multipool_forward(x, stride)
    dy = xp.asarray(rng.standard_normal(y.shape))
    dx = multipool_backward(dy, cache)
    assert rel_error(dx, numerical_grad(lambda v: multipool_forward(v, stride)[0], x, dy)) < 1e-7


def test_unwarp_backward_matches_central_differences(xp, rng):
    y = xp.asarray(rng.standard_normal((16 * 2, 2, 2, 3)))
    out, cache = unwarp_forward(y, [2, 2])
    dout = xp.asarray(rng.standard_normal(out.shape))
    num = numerical_grad(lambda v: unwarp_forward(v, [2, 2])[0], y, dout)
    assert rel_error(unwarp_backward(dout, cache), num) < 1e-7


@pytest.mark.parametrize("p", [17, 33, 65])
def test_dense_backward_is_the_sum_of_patchwise_backward_passes(p, xp, rng):
    net, images = setup(p, seed=1, N=1)
    net.to(device_of(xp))
    y, cache = dense_forward(net, xp.asarray(images))
    dy = rng.standard_normal(y.shape)                                    # (N, d, H, W)
    grads = dense_backward(xp.asarray(dy), cache)
    assert list(grads) == list(net.params)
    net.to("cpu")
    _, patch_cache = net.forward(patches(images, p))
    dy_patches = dy.transpose(0, 2, 3, 1).reshape(-1, dy.shape[1], 1, 1)
    _, reference = net.backward(dy_patches, patch_cache)
    for k in grads:
        assert rel_error(grads[k], reference[k]) < 1e-10, k


@pytest.mark.parametrize("p", [33, 65])
def test_dense_backward_matches_central_differences(p, xp, rng):
    net, images = setup(p, seed=2, N=1)
    net.to(device_of(xp))
    images = xp.asarray(images)
    y, cache = dense_forward(net, images)
    dy = xp.asarray(rng.standard_normal(y.shape))
    grads = dense_backward(dy, cache)
    err = directional_check(lambda: dense_forward(net, images)[0], list(net.params.values()),
                            list(grads.values()), dy, n_dirs=3, h=1e-6)
    assert err < 1e-5
