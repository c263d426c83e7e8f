"""Convolution by the Fourier transform: the CPU's wide kernels (5x5, 4x4) with many channels.

A k x k convolution costs k^2 multiply-adds per output pixel and channel pair. In the frequency
domain it costs one complex multiply-add (4 real ones) per frequency, whatever k: the
cross-correlation y = w * x of a t x t tile becomes Y = conj(W) . X, frequency by frequency, and
summing over the input channels makes it one complex matrix product per frequency b,

    Y[b] (F, T) = conj(W[b]) (F, C) @ X[b] (C, T),    over the T tiles of the batch.

For a 5x5 kernel on a 30x30 input that is about 6x fewer multiplications than the direct
convolution; conv.py uses it where the count says it pays (`Tiling.multiplies`).

Tiles (overlap-save). A t x t transform is circular: outputs wrap around. Of a tile's t x t
cross-correlation only the first s = t - k + 1 rows and columns are free of the wrap, so the
padded input is cut into t x t tiles that start every s pixels (neighbours overlap by k - 1),
and each tile gives an s x s block of the output. A patch (the teacher's batches) is one tile.

Every step is a real matrix product (BLAS), with complex numbers kept as two planes, real and
imaginary, side by side: a spectrum is (bins, 2, C, T), bins = t * (t//2 + 1) frequencies
(k1 over the whole circle, k2 over half of it, the other half being their conjugates):
1. `_spectrum`: the 2-d DFT of the tiles as two products, along the tile's columns (real to
   complex, `_along_columns`) and along its rows (complex, `_along_rows`). pocketfft (scipy.fft)
   would do fewer operations, but on tiles this small it spends about 1 us per transform on
   bookkeeping, 5x what the products take.
2. the weights' transform, conj(W) = E @ w with E the (bins, k*k) complex exponentials of the
   kernel's own k x k offsets, so F*C transforms cost one product; then per frequency
   [Yr; Yi] = [[Wr, -Wi], [Wi, Wr]] @ [Xr; Xi], one (2F, 2C) @ (2C, T) product (`_products`).
3. `_image`: the inverse DFT, again two products, at the s x s rows and columns kept only.

The backward pass is the transpose of each step, in reverse order: dY = the transposed step 3 of
dy, dX = the transposed block matrix @ dY, dx = the transposed steps 1 of dX, its tiles added
back where they overlap (`_from_tiles`), and dW from dY and X per frequency, then E^T. As the
computation is linear in x and in w and equals the convolution, its exact gradient is the
convolution's.

Rounding. The result equals the direct convolution up to float rounding (about 1e-7 of the
largest output in float32, 1e-15 in float64; tested), not bit for bit. Work is split over the
threads by frequencies, rows or channels, each value computed by one thread in one order, so the
result does not depend on the number of threads.
"""
from functools import lru_cache

import numpy as np

from .blas import addmul, run_parallel, threads


def _smooth(n):
    """n has no prime factor above 5 (the tile sides considered; the old habit of FFT sizes)."""
    for q in (2, 3, 5):
        while n % q == 0:
            n //= q
    return n == 1


SIZES = [n for n in range(4, 65) if _smooth(n)]      # tile sides considered


TRANSFORM_WEIGHT = 3      # a transform's multiply-add costs about 3 of a product's (measured)
MIN_GAIN = 1.25           # the direct convolution's count over ours from which we are faster


class Tiling:
    """The tiles of a K x K convolution of N images of C channels, Hp x Wp (padded), into F
    channels: side t, step s, TH x TW tiles per image, T tiles in all, `bins` frequencies.
    The side is chosen for the fewest multiply-adds per pass (`count`)."""

    def __init__(self, N, C, Hp, Wp, F, K):
        self.N, self.C, self.F, self.K = N, C, F, K
        self.OH, self.OW = Hp - K + 1, Wp - K + 1
        sides = [t for t in SIZES if 2 * K - 2 <= t and t - K + 1 < max(self.OH, self.OW) + 4] or [SIZES[-1]]
        self.t = min(sides, key=lambda t: (self.count(t), t))
        self.s = self.t - K + 1
        self.TH, self.TW = -(-self.OH // self.s), -(-self.OW // self.s)
        self.bins = self.t * (self.t // 2 + 1)
        self.T = N * self.TH * self.TW

    def count(self, t=None):
        """Multiply-adds of one pass with tiles of side t (default: the chosen one): 4 per
        complex one in the products and the weights' transform, and the two products of each
        channel's transform (6 t^2 (t//2+1) per tile, weighted by TRANSFORM_WEIGHT)."""
        t = t or self.t
        s, t2 = t - self.K + 1, t // 2 + 1
        T = self.N * -(-self.OH // s) * -(-self.OW // s)
        products = 4 * t * t2 * (T + self.K ** 2) * self.F * self.C
        transforms = 6 * t * t * t2 * T * (self.C + self.F)
        return products + TRANSFORM_WEIGHT * transforms

    def direct_count(self):
        """Multiply-adds of one pass of the direct convolution."""
        return self.K ** 2 * self.F * self.C * self.N * self.OH * self.OW

    def worth_it(self):
        return self.direct_count() >= MIN_GAIN * self.count()


# ---- the transforms, as matrices -----------------------------------------------------------
#
# Layouts. Tiles are (t_b, t_a, cols): column b of the tile first, row a, then the channels and
# tiles (cols). A spectrum is (t2, 2, t, cols): frequency k2 along the tile's columns (half the
# circle, t2 = t//2 + 1), the real or imaginary plane, frequency k1 along its rows, then cols. So
# the transform along the columns is one product, (2*t2, t) @ (t, t*cols), and the one along the
# rows is one product per k2, [[R, -I], [I, R]] (2t, 2t) @ [real; imaginary] (2t, cols).

@lru_cache(maxsize=64)
def _tables(t, s, K, dtype):
    """The transforms of a t x t tile as matrices, in dtype (s: the output rows kept):
    cols (2*t2, t): real columns to complex, rows (k2, re/im) = cos, -sin of 2 pi k2 b / t;
    rows (2t, 2t): the complex DFT along the rows, in planes;
    back_rows (2s, 2t): its inverse at the rows a < s;
    back_cols (s, 2*t2): complex to real at the columns b < s, each k2 weighted for the
    missing half of the circle and by 1 / t^2;
    kernel: cos, sin (bins, K*K) of 2 pi (k1 u + k2 v) / t, bins in (k2, k1) order: conj(W) of
    a K x K kernel, whose offset (u, v) is row u, column v."""
    t2 = t // 2 + 1
    k, a, first = np.arange(t2), np.arange(t), np.arange(s)
    angle = lambda i, j: 2 * np.pi * (np.outer(i, j) % t) / t

    def planes(re, im):                              # the complex matrix re + i im, on planes
        return np.block([[re, -im], [im, re]])
    cols = np.stack([np.cos(angle(k, a)), -np.sin(angle(k, a))], axis=1).reshape(2 * t2, t)
    rows = planes(np.cos(angle(a, a)), -np.sin(angle(a, a)))
    back_rows = planes(np.cos(angle(first, a)), np.sin(angle(first, a)))
    twice = np.where((k == 0) | (2 * k == t), 1.0, 2.0) / (t * t)     # k2 stands for k2 and -k2
    back_cols = np.stack([np.cos(angle(first, k)) * twice, -np.sin(angle(first, k)) * twice],
                         axis=2).reshape(s, 2 * t2)
    u = np.arange(K)
    phase = 2 * np.pi * ((k[:, None, None, None] * u + a[None, :, None, None] * u[:, None]) % t) / t
    kernel = (np.cos(phase).reshape(t2 * t, K * K), np.sin(phase).reshape(t2 * t, K * K))
    cast = lambda m: np.ascontiguousarray(m, dtype=dtype)
    return dict(cols=cast(cols), rows=cast(rows), back_rows=cast(back_rows), back_cols=cast(back_cols),
                kernel=tuple(map(cast, kernel)))


def _split(count, n, work):
    """work(lo, hi) on up to n even runs of range(count), one per thread (blas.run_parallel)."""
    n = max(1, min(n, count))
    run_parallel([lambda i=i: work(count * i // n, count * (i + 1) // n) for i in range(n)], n)


CHUNK = 2 ** 14           # columns of one product in _product, whatever the threads


def _product(m, x, n):
    """m @ x, x (K, cols), as products of CHUNK columns shared out to the threads (BLAS may sum
    in another order for another width, so the widths never depend on the threads)."""
    out = np.empty((m.shape[0], x.shape[1]), dtype=x.dtype)

    def chunks(lo, hi):
        for c in range(lo, hi):
            cols = slice(c * CHUNK, (c + 1) * CHUNK)
            addmul(m, x[:, cols], out[:, cols], overwrite=True)
    _split(-(-x.shape[1] // CHUNK), n, chunks)
    return out


def _along_rows(m, z, n):
    """m (2A', 2A) on planes applied along the rows of z (t2, 2, A, cols): (t2, 2, A', cols)."""
    t2, _, A, cols = z.shape
    out = np.empty((t2, m.shape[0], cols), dtype=z.dtype)
    z = z.reshape(t2, 2 * A, cols)

    def apply(k0, k1):
        for k in range(k0, k1):
            addmul(m, z[k], out[k], overwrite=True)
    _split(t2, n, apply)
    return out.reshape(t2, 2, -1, cols)


def _spectrum(tiles, tab, n):
    """tiles (t, t, cols) -> (t2, 2, t, cols): each tile's 2-d DFT."""
    t, cols = tiles.shape[0], tiles.shape[2]
    z = _product(tab["cols"], tiles.reshape(t, t * cols), n).reshape(-1, 2, t, cols)
    return _along_rows(tab["rows"], z, n)


def _spectrum_T(spec, tab, n):
    """The transpose of _spectrum: (t2, 2, t, cols) -> (t, t, cols)."""
    t, cols = spec.shape[2], spec.shape[3]
    z = _along_rows(tab["rows"].T, spec, n)
    return _product(tab["cols"].T, z.reshape(-1, t * cols), n).reshape(t, t, cols)


def _image(spec, tab, n):
    """(t2, 2, t, cols) -> (s, s, cols): each tile's inverse DFT at its rows, columns < s."""
    s, cols = tab["back_cols"].shape[0], spec.shape[3]
    z = _along_rows(tab["back_rows"], spec, n)
    return _product(tab["back_cols"], z.reshape(-1, s * cols), n).reshape(s, s, cols)


def _image_T(y, tab, n):
    """The transpose of _image: (s, s, cols) -> (t2, 2, t, cols)."""
    s, cols = y.shape[0], y.shape[2]
    z = _product(tab["back_cols"].T, y.reshape(s, s * cols), n).reshape(-1, 2, s, cols)
    return _along_rows(tab["back_rows"].T, z, n)


# ---- tiles ---------------------------------------------------------------------------------
#
# Tiles are (t_b, t_a, TH, TW, N, C): channels last, so that each tile is a copy of whole runs of
# N*C values of the padded input, itself kept as (W, H, N, C); a spectrum's (C, T) plane of one
# frequency is then a transposed matrix, which BLAS reads as it is.

def _padded(g, x, pad, n):
    """x (N,C,H,W) -> (Wn, Hn, N, C), zero-padded to the tiles' extent."""
    N, C, H, W = x.shape
    xe = np.zeros(((g.TW - 1) * g.s + g.t, (g.TH - 1) * g.s + g.t, N, C), dtype=x.dtype)

    def copy(c0, c1):
        xe[pad:pad + W, pad:pad + H, :, c0:c1] = x[:, c0:c1].transpose(3, 2, 0, 1)
    _split(C, n, copy)
    return xe


def _windows(g):
    """(i, j, columns, rows) of every tile: its window of the padded input."""
    return [(i, j, slice(j * g.s, j * g.s + g.t), slice(i * g.s, i * g.s + g.t))
            for i in range(g.TH) for j in range(g.TW)]


def _to_tiles(g, x, pad, n):
    """x (N,C,H,W) -> tiles (t_b, t_a, TH*TW*N*C): tile (i, j, n) is the zero-padded input's
    window at rows i*s .. i*s+t-1 and columns j*s .. j*s+t-1, column first."""
    xe = _padded(g, x, pad, n)
    if g.TH == g.TW == 1:
        return xe.reshape(g.t, g.t, -1)
    N, C = x.shape[:2]
    tiles = np.empty((g.t, g.t, g.TH, g.TW, N, C), dtype=x.dtype)

    def cut(c0, c1):
        for i, j, cols, rows in _windows(g):
            tiles[:, :, i, j, :, c0:c1] = xe[cols, rows, :, c0:c1]
    _split(C, n, cut)
    return tiles.reshape(g.t, g.t, -1)


def _from_tiles(g, tiles, shape, pad, n):
    """The transpose of _to_tiles: tiles (t_b, t_a, TH*TW*N*C) added back where they were cut,
    then cropped to the unpadded input's shape (N, C, H, W)."""
    N, C, H, W = shape
    tiles = tiles.reshape(g.t, g.t, g.TH, g.TW, N, C)
    if g.TH == g.TW == 1:
        xe = tiles[:, :, 0, 0]
    else:
        xe = np.zeros(((g.TW - 1) * g.s + g.t, (g.TH - 1) * g.s + g.t, N, C), dtype=tiles.dtype)

        def add(c0, c1):
            for i, j, cols, rows in _windows(g):
                xe[cols, rows, :, c0:c1] += tiles[:, :, i, j, :, c0:c1]
        _split(C, n, add)
    dx = np.empty(shape, dtype=tiles.dtype)

    def copy(c0, c1):
        dx[:, c0:c1] = xe[pad:pad + W, pad:pad + H, :, c0:c1].transpose(2, 3, 1, 0)
    _split(C, n, copy)
    return dx


def _blocks_to_image(g, blocks, out, n, bias=None):
    """blocks (s_b, s_a, TH, TW, N, F) -> out (N, F, OH, OW), each tile's s x s block in place
    (the last ones cropped), plus bias (F,) if given."""
    N, F, OH, OW = out.shape

    def copy(f0, f1):
        for i in range(g.TH):
            h = min(g.s, OH - i * g.s)
            for j in range(g.TW):
                w = min(g.s, OW - j * g.s)
                block = blocks[:w, :h, i, j, :, f0:f1].transpose(2, 3, 1, 0)
                target = out[:, f0:f1, i * g.s:i * g.s + h, j * g.s:j * g.s + w]
                if bias is None:
                    target[...] = block
                else:
                    np.add(block, bias[f0:f1].reshape(1, -1, 1, 1), out=target)
    _split(F, n, copy)


def _image_to_blocks(g, dy, n):
    """The transpose of _blocks_to_image: dy (N, F, OH, OW) -> (s_b, s_a, TH, TW, N, F), zero
    beyond the output."""
    N, F, OH, OW = dy.shape
    blocks = np.zeros((g.s, g.s, g.TH, g.TW, N, F), dtype=dy.dtype)

    def copy(f0, f1):
        for i in range(g.TH):
            h = min(g.s, OH - i * g.s)
            for j in range(g.TW):
                w = min(g.s, OW - j * g.s)
                blocks[:w, :h, i, j, :, f0:f1] = dy[:, f0:f1, i * g.s:i * g.s + h,
                                                    j * g.s:j * g.s + w].transpose(3, 2, 0, 1)
    _split(F, n, copy)
    return blocks


# ---- the convolution -----------------------------------------------------------------------

def _weights(w, tab):
    """Wr, Wi (bins, F, C): the real and imaginary parts of conj(W), W = the transform of
    w (F, C, K, K) zero-padded to the tile."""
    F, C, K, _ = w.shape
    w2 = w.transpose(2, 3, 0, 1).reshape(K * K, F * C)
    return [(m @ w2).reshape(-1, F, C) for m in tab["kernel"]]


def _setup(x, w, pad):
    N, C, H, W = x.shape
    g = Tiling(N, C, H + 2 * pad, W + 2 * pad, w.shape[0], w.shape[2])
    return g, _tables(g.t, g.s, g.K, x.dtype.str), threads()


def _planes(spec, C, T):
    """A spectrum (t2, 2, t, T*C) as a list over the frequencies, in (k2, k1) order, of views of
    their real and imaginary planes (T, C)."""
    t2, _, t, _ = spec.shape
    spec = spec.reshape(t2, 2, t, T, C)
    return [(spec[k2, 0, k1], spec[k2, 1, k1]) for k2 in range(t2) for k1 in range(t)]


def forward(x, w, b, pad):
    """y (N, F, OH, OW) = the cross-correlation of x (N,C,H,W) with w (F,C,K,K), plus b."""
    N, C, H, W = x.shape
    F, K = w.shape[0], w.shape[2]
    g, tab, n = _setup(x, w, pad)
    X = _planes(_spectrum(_to_tiles(g, x, pad, n), tab, n), C, g.T)
    wr, wi = _weights(w, tab)
    Y = np.empty((g.t // 2 + 1, 2, g.t, g.T * F), dtype=x.dtype)
    Yp = _planes(Y, F, g.T)

    def products(lo, hi):      # Y = conj(W) X, transposed: Yr = Xr Wr' - Xi Wi', Yi = Xr Wi' + Xi Wr'
        for q in range(lo, hi):
            (xr, xi), (yr, yi) = X[q], Yp[q]
            addmul(xr, wr[q].T, yr, overwrite=True)
            addmul(xi, wi[q].T, yr, alpha=-1.0)
            addmul(xr, wi[q].T, yi, overwrite=True)
            addmul(xi, wr[q].T, yi)
    _split(g.bins, n, products)
    del X, Yp
    y = np.empty((N, F, H + 2 * pad - K + 1, W + 2 * pad - K + 1), dtype=x.dtype)
    _blocks_to_image(g, _image(Y, tab, n).reshape(g.s, g.s, g.TH, g.TW, N, F), y, n, bias=b)
    return y


def backward(dy, x, w, pad):
    """dy (N, F, OH, OW) -> dx (N,C,H,W), dw (F,C,K,K), db (F,) of forward(x, w, b, pad)."""
    N, C, H, W = x.shape
    F, K = w.shape[0], w.shape[2]
    g, tab, n = _setup(x, w, pad)
    dY = _planes(_image_T(_image_to_blocks(g, dy, n).reshape(g.s, g.s, -1), tab, n), F, g.T)
    X = _planes(_spectrum(_to_tiles(g, x, pad, n), tab, n), C, g.T)
    wr, wi = _weights(w, tab)
    dX = np.empty((g.t // 2 + 1, 2, g.t, g.T * C), dtype=x.dtype)
    dXp = _planes(dX, C, g.T)
    dwr, dwi = np.empty((g.bins, F, C), dtype=x.dtype), np.empty((g.bins, F, C), dtype=x.dtype)

    def products(lo, hi):                        # the transposes of forward's four products
        for q in range(lo, hi):
            (xr, xi), (dyr, dyi), (dxr, dxi) = X[q], dY[q], dXp[q]
            addmul(dyr, wr[q], dxr, overwrite=True)
            addmul(dyi, wi[q], dxr)
            addmul(dyi, wr[q], dxi, overwrite=True)
            addmul(dyr, wi[q], dxi, alpha=-1.0)
            addmul(dyr.T, xr, dwr[q], overwrite=True)
            addmul(dyi.T, xi, dwr[q])
            addmul(dyi.T, xr, dwi[q], overwrite=True)
            addmul(dyr.T, xi, dwi[q], alpha=-1.0)
    _split(g.bins, n, products)
    del X, dY, dXp
    dx = _from_tiles(g, _spectrum_T(dX, tab, n), x.shape, pad, n)
    cos, sin = tab["kernel"]
    dw = cos.T @ dwr.reshape(g.bins, F * C)
    addmul(sin.T, dwi.reshape(g.bins, F * C), dw)
    dw = dw.reshape(K, K, F, C).transpose(2, 3, 0, 1)
    return dx, np.ascontiguousarray(dw), dy.sum(axis=(0, 2, 3))
