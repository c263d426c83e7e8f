"""fourier.py and winograd.py: the convolution by the Fourier transform, and by Winograd's for
2x2 kernels, equals the definition (im2col), forward and backward, on one tile and on many, with
padding, on images that are not square; its gradients pass the central-difference check; its
split over threads changes nothing."""
import numpy as np
import pytest

from ustudents import conv, fourier, tiles, winograd
from ustudents.gradcheck import numerical_grad, rel_error
from ustudents.layers import conv2d_plain_backward, conv2d_plain_forward

# (N, C, H, W, F, K, pad): a patch batch (one tile each), an image of many tiles, padding,
# a 4x4 and a 3x3 kernel, an image narrower than a tile; 2x2 kernels (Winograd's transform):
# one tile per image, many tiles, padding, and a padded patch small enough for the maps
CASES = [(4, 6, 12, 12, 5, 5, 0), (1, 3, 40, 37, 4, 5, 0), (3, 5, 12, 12, 6, 5, 1),
         (2, 2, 20, 30, 3, 4, 2), (2, 3, 9, 11, 4, 3, 0), (1, 2, 7, 26, 3, 5, 0),
         (4, 64, 4, 4, 64, 2, 0), (1, 3, 20, 17, 4, 2, 0), (2, 3, 9, 11, 4, 2, 1),
         (5, 4, 5, 5, 6, 2, 1)]


@pytest.mark.parametrize("case", CASES)
def test_fourier_equals_the_definition_forward_and_backward(case, rng):
    N, C, H, W, F, K, pad = case
    x, w, b = (rng.standard_normal(shape) for shape in [(N, C, H, W), (F, C, K, K), (F,)])
    y_plain, cache = conv2d_plain_forward(x, w, b, pad=pad)
    y, spectrum = fourier.forward(x, w, b, pad)
    assert y.shape == y_plain.shape and rel_error(y, y_plain) < 1e-12
    g = fourier.Tiling(N, C, H + 2 * pad, W + 2 * pad, F, K)
    assert (spectrum[1] is None) == (F > g.T)                        # the weights', if no bigger
    dy = rng.standard_normal(y.shape)
    kept, again = fourier.backward(dy, x, w, pad, spectrum), fourier.backward(dy, x, w, pad)
    for g, g_again, g_plain in zip(kept, again, conv2d_plain_backward(dy, cache)):
        assert g.shape == g_plain.shape and rel_error(g, g_plain) < 1e-12
        np.testing.assert_array_equal(g, g_again)                    # what is kept is x's and w's
    dx, dw, db = fourier.backward(dy, x, w, pad, spectrum, input_grad=False)
    assert dx is None                                                 # a first layer's: skipped
    np.testing.assert_array_equal(dw, kept[1])
    np.testing.assert_array_equal(db, kept[2])


def test_several_tiles_are_cut_and_added_back_where_they_overlap(rng):
    g = fourier.Tiling(1, 2, 40, 37, 4, 5)
    assert g.TH > 2 and g.TW > 2 and g.s < g.t                     # the case above has many
    x = rng.standard_normal((1, 2, 40, 37))
    cut = tiles.to_tiles(g, x, 0, 1)
    # the transpose property <cut(x), d> == <x, add_back(d)> of any d
    d = rng.standard_normal(cut.shape)
    assert abs((cut * d).sum() - (x * tiles.from_tiles(g, d, x.shape, 0, 1)).sum()) < 1e-9


@pytest.mark.parametrize("K", [4, 2])                                 # the DFT, Winograd's
def test_fourier_gradients_pass_the_central_difference_check(K, rng):
    x, w, b = rng.standard_normal((2, 3, 9, 10)), rng.standard_normal((4, 3, K, K)), rng.standard_normal(4)
    dy = rng.standard_normal((2, 4, 12 - K, 13 - K))                 # pad 1: 9+2-K+1, 10+2-K+1
    dx, dw, db = fourier.backward(dy, x, w, 1)
    assert rel_error(dx, numerical_grad(lambda v: fourier.forward(v, w, b, 1)[0], x, dy)) < 1e-7
    assert rel_error(dw, numerical_grad(lambda v: fourier.forward(x, v, b, 1)[0], w, dy)) < 1e-7
    assert rel_error(db, numerical_grad(lambda v: fourier.forward(x, w, v, 1)[0], b, dy)) < 1e-7


def test_fourier_in_float32_is_as_close_as_float32_rounding(rng):
    x = rng.standard_normal((1, 16, 30, 30)).astype(np.float32)
    w = (rng.standard_normal((16, 16, 5, 5)) * 0.1).astype(np.float32)
    b = np.zeros(16, np.float32)
    y, _ = fourier.forward(x, w, b, 0)
    exact, _ = conv2d_plain_forward(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64))
    assert y.dtype == np.float32 and np.abs(y - exact).max() < 1e-5 * np.abs(exact).max()


@pytest.mark.parametrize("t", [3, 4])
def test_winograd_in_float32_rounds_about_as_the_direct_convolution_does(t, rng, monkeypatch):
    count = fourier.Tiling.count
    monkeypatch.setattr(fourier.Tiling, "count", lambda g, side=None: count(g) if side is None else side != t)
    x = rng.standard_normal((4, 64, 36, 36)).astype(np.float32)
    w = (rng.standard_normal((32, 64, 2, 2)) * 0.1).astype(np.float32)
    b = np.zeros(32, np.float32)
    assert fourier.Tiling(4, 64, 36, 36, 32, 2).t == t
    y, _ = fourier.forward(x, w, b, 0)
    exact, _ = conv2d_plain_forward(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64))
    direct, _ = conv2d_plain_forward(x, w, b)
    assert y.dtype == np.float32
    assert np.abs(y - exact).max() < 4 * max(np.abs(direct - exact).max(), 1e-7 * np.abs(exact).max())


@pytest.mark.parametrize("t", [3, 4])
def test_winograd_in_one_dimension_is_the_cross_correlation_and_its_tables_hold_halves_at_most(t, rng):
    """y = A^T [(G g) . (B^T d)]: t multiplications give the t - 1 outputs of a 2-tap filter."""
    tab = winograd.tables(t, t - 1, 2, np.float64)
    B_T, A_T = tab["rows"], tab["back_rows"]
    G = tab["kernel"].reshape(t, t, 2, 2)[0, :, :, 0]                 # G[k1, u] G[0, 0], G[0, 0] = 1
    d, g = rng.standard_normal(t), rng.standard_normal(2)
    np.testing.assert_allclose(A_T @ ((G @ g) * (B_T @ d)), np.correlate(d, g, mode="valid"), rtol=1e-13)
    for name, m in tab.items():                                       # exact in binary
        assert set(np.unique(np.abs(m))) <= ({0, 0.25, 0.5, 1} if "both" in name else {0, 0.5, 1}), name
    tiles = rng.standard_normal((t, t, 7))                            # the 2-d transform in one product
    rows_then_columns = {k: v for k, v in tab.items() if "both" not in k}
    np.testing.assert_allclose(fourier._spectrum(tiles, tab, 1), fourier._spectrum(tiles, rows_then_columns, 1), rtol=1e-14)
    blocks = fourier._image(tiles, tab, 1)
    np.testing.assert_allclose(blocks, fourier._image(tiles, rows_then_columns, 1), rtol=1e-14)


@pytest.mark.parametrize("case", [(2, 5, 30, 23, 6, 5), (40, 5, 4, 4, 6, 2)])   # the second: the maps
def test_the_split_over_threads_equals_one_thread_to_the_bit(case, rng, monkeypatch):
    monkeypatch.setattr(fourier, "CHUNK", 64)                      # several chunks to share out
    N, C, H, W, F, K = case
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((F, C, K, K)).astype(np.float32)
    b = rng.standard_normal(F).astype(np.float32)
    results = []
    for n in (1, 3):
        monkeypatch.setattr(fourier, "threads", lambda n=n: n)
        y, spectrum = fourier.forward(x, w, b, 1)
        results.append([y, *fourier.backward(np.cos(y), x, w, 1, spectrum)])
    for one, split in zip(*results):
        np.testing.assert_array_equal(split, one)


@pytest.mark.parametrize("case", [(4, 64, 4, 4, 64, 0), (5, 4, 5, 5, 6, 1), (3, 2, 5, 7, 3, 0)])
def test_on_small_inputs_the_maps_are_the_tiles_cut_and_transformed(case, rng, monkeypatch):
    N, C, H, W, F, pad = case
    g = fourier.Tiling(N, C, H + 2 * pad, W + 2 * pad, F, 2)
    assert winograd.small(g, H, W)
    tab = winograd.tables(g.t, g.s, 2, np.float64().dtype.str)
    cut, put = winograd.maps(g.t, g.s, 2, H, W, pad, np.float64().dtype.str)
    x = rng.standard_normal((N, C, H, W))
    by_tiles = fourier._spectrum(tiles.to_tiles(g, x, pad, 1), tab, 1).reshape(g.bins, g.T, C)
    np.testing.assert_allclose((cut @ x.reshape(N * C, -1).T).reshape(g.bins, g.T, C), by_tiles, rtol=0, atol=1e-13)
    Y = rng.standard_normal((g.bins, g.T, F))
    y = np.zeros((N, F, g.OH, g.OW))
    tiles.blocks_to_image(g, fourier._image(Y.reshape(g.t2, g.t, -1), tab, 1).reshape(g.s, g.s, g.TH, g.TW, N, F), y, 1)
    np.testing.assert_allclose((Y.reshape(-1, N * F).T @ put).reshape(y.shape), y, rtol=0, atol=1e-13)
    w, b = rng.standard_normal((F, C, 2, 2)), rng.standard_normal(F)
    dy = rng.standard_normal(y.shape)
    y_maps, kept = fourier.forward(x, w, b, pad)
    grads_maps = fourier.backward(dy, x, w, pad, kept)
    monkeypatch.setattr(winograd, "MAP_ENTRIES", 0)                    # the tiles' route
    assert not winograd.small(g, H, W)
    y_tiles, kept = fourier.forward(x, w, b, pad)
    assert rel_error(y_maps, y_tiles) < 1e-13
    for a, c in zip(grads_maps, fourier.backward(dy, x, w, pad, kept)):
        assert a.shape == c.shape and rel_error(a, c) < 1e-13


def test_the_tile_side_is_the_one_of_fewest_multiplies():
    g = fourier.Tiling(1, 64, 139, 139, 64, 5)
    sides = [t for t in fourier.SIZES if 2 * 5 - 2 <= t <= 64]
    assert g.count() == min(g.count(t) for t in sides)
    assert g.TH * g.s >= g.OH and (g.TH - 1) * g.s < g.OH            # tiles cover the output, no more
    g = fourier.Tiling(16, 256, 36, 36, 256, 2)                        # Winograd's: sides 3 and 4
    assert g.winograd and g.count() == min(g.count(3), g.count(4)) and g.bins == g.t * g.t


def test_conv_takes_the_fourier_route_where_it_pays_and_gives_the_same_numbers(rng, monkeypatch):
    x = rng.standard_normal((1, 64, 60, 60)).astype(np.float32)
    w = (rng.standard_normal((64, 64, 5, 5)) * 0.05).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32)
    assert conv._by_fourier(x, w, 1, 0)
    assert not conv._by_fourier(x[:, :3], w[:, :3], 1, 0)         # 3 channels in: the transforms dominate
    assert not conv._by_fourier(x, w, 2, 0) and not conv._by_fourier(x, w[:, :, :1, :1], 1, 0)
    y, cache = conv.conv2d_forward(x, w, b)
    grads = conv.conv2d_backward(np.cos(y), cache)
    monkeypatch.setattr(conv, "FOURIER", False)
    y_direct, cache = conv.conv2d_forward(x, w, b)
    assert rel_error(y, y_direct) < 1e-5
    for g, g_direct in zip(grads, conv.conv2d_backward(np.cos(y_direct), cache)):
        assert rel_error(g, g_direct) < 1e-4


def test_conv_takes_winograds_route_for_2x2_kernels_with_many_channels(rng, monkeypatch):
    x = rng.standard_normal((4, 256, 20, 20)).astype(np.float32)
    w = (rng.standard_normal((256, 256, 2, 2)) * 0.05).astype(np.float32)
    b = rng.standard_normal(256).astype(np.float32)
    assert conv.route(x, w) == "winograd"
    assert conv.route(x[:, :64], w[:64, :64]) == "direct"             # 64 channels: the transforms outweigh
    assert conv.route(x[:, :3], w[:, :3]) == "columns"               # 3 channels in: not worth it
    y, cache = conv.conv2d_forward(x, w, b)
    grads = conv.conv2d_backward(np.cos(y), cache)
    monkeypatch.setattr(conv, "FOURIER", False)
    assert conv.route(x, w) == "direct"
    y_direct, cache = conv.conv2d_forward(x, w, b)
    assert rel_error(y, y_direct) < 1e-5
    for g, g_direct in zip(grads, conv.conv2d_backward(np.cos(y_direct), cache)):
        assert rel_error(g, g_direct) < 1e-4


def test_one_thread_takes_the_fourier_route_sooner_and_a_backward_follows_its_forward(rng, monkeypatch):
    x = rng.standard_normal((16, 32, 20, 20)).astype(np.float32)   # counts 1.21 : 1, direct : ours
    w = (rng.standard_normal((64, 32, 5, 5)) * 0.05).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32)
    g = fourier.Tiling(16, 32, 20, 20, 64, 5)
    assert fourier.MIN_GAIN_ONE_THREAD <= g.direct_count() / g.count() < fourier.MIN_GAIN
    monkeypatch.setattr(conv, "threads", lambda: 2)
    assert conv.route(x, w) == "direct"
    y, cache = conv.conv2d_forward(x, w, b)                        # direct, on two threads
    monkeypatch.setattr(conv, "threads", lambda: 1)
    assert conv.route(x, w) == "fourier"
    grads = conv.conv2d_backward(np.cos(y), cache)                 # on one: still direct's backward
    y_plain, plain_cache = conv2d_plain_forward(x, w, b)
    assert rel_error(y, y_plain) < 1e-5
    for grad, plain in zip(grads, conv2d_plain_backward(np.cos(y_plain), plain_cache)):
        assert rel_error(grad, plain) < 1e-4


@pytest.mark.parametrize("t", fourier.SIZES)
def test_the_dft_tables_hold_exact_zeros_where_a_cosine_or_sine_is_zero(t, monkeypatch):
    """np.exp gives cos(pi/2) as 6e-17; products of such near-zeros made subnormal numbers in
    training, which the CPU computes slowly. Every part of every entry is 0 or well away from it,
    and the tables are still np.exp's DFT to float32 rounding."""
    K = min(5, t // 2 + 1)
    tables = fourier._tables(t, t - K + 1, K, np.float32)
    monkeypatch.setattr(fourier, "_exact", lambda m: m)              # np.exp's own values
    exact = fourier._tables.__wrapped__(t, t - K + 1, K, np.float64)
    if t % 4 == 0:                                   # rows[1, t/4] = exp(-i pi/2) = -i, exactly
        assert tables["rows"][1, t // 4] == -1j
    for name, m in tables.items():
        parts = np.concatenate([m.real.ravel(), m.imag.ravel()])
        assert np.abs(parts[parts != 0]).min() > 1e-6, name
        np.testing.assert_allclose(m, exact[name], rtol=0, atol=1e-7)
