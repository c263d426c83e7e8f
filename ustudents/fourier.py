"""Convolution by a transform of tiles: the Fourier transform for the CPU's wide kernels (5x5,
4x4) with many channels, Winograd's (winograd.py) for its 2x2 ones.

A k x k convolution costs k^2 multiply-adds per output pixel and channel pair. In the frequency
domain it costs one complex multiply-add (4 real ones) per frequency, whatever k: the
cross-correlation y = w * x of a t x t tile becomes Y = X . conj(W), frequency by frequency, and
summing over the input channels makes it one complex matrix product per frequency q,

    Y[q] (T, F) = X[q] (T, C) @ conj(W[q])^T (C, F),    over the T tiles of the batch.

For a 5x5 kernel on a 30x30 input that is about 6x fewer multiplications than the direct
convolution; conv.py uses it where the count says it pays (`Tiling.worth_it`).

Tiles (overlap-save). A t x t transform is circular: outputs wrap around. Of a tile's t x t
cross-correlation only the first s = t - k + 1 rows and columns are free of the wrap, so the
padded input is cut into t x t tiles that start every s pixels (neighbours overlap by k - 1),
and each tile gives an s x s block of the output (tiles.py cuts them and puts the blocks back).
A patch (the teacher's batches) is one tile.

Every transform is a complex matrix product (BLAS), with the DFT written out as a matrix:
1. `_spectrum`: the tiles' 2-d DFT, along the tile's columns (only the t2 = t//2 + 1
   frequencies k2 <= t/2: the others are their conjugates), then along its rows. A spectrum
   is (t2, t, T*C): frequency (k2, k1), then the tiles and channels, so that each frequency's
   (T, C) matrix is contiguous. pocketfft (scipy.fft) would do fewer operations, but on tiles
   this small it spends about 1 us per transform on bookkeeping, 5x what the products take.
2. the weights' transform, conj(W) = E @ w with E the (t2*t, k*k) complex exponentials of the
   kernel's own k x k offsets, so F*C transforms cost one product; then the products above.
3. `_image`: the inverse DFT, again two products, at the s x s rows and columns kept only, and
   its real part.

On inputs of a few pixels (Winograd's, on a patch network's 5 x 5 map) steps 1 and 3 and the
cutting into tiles are one product each with the image (`winograd.maps`). Forward keeps the
spectrum X for backward, and conj(W) too where it is no bigger.

The backward pass is the transpose of each step, in reverse order. For a complex matrix M the
transpose of z -> M z (as a real linear map) is z -> M^H z; written for the conjugates of the
gradients, conj(M^H z) = M^T conj(z), every step is a plain transpose and nothing needs
conjugating: conj(dY) = the transposed step 3 of dy, conj(dX[q]) = conj(dY[q]) @ conj(W[q]),
conj(dW[q]) = conj(dY[q])^T @ X[q], dx = Re(the transposed step 1 of conj(dX)) with the tiles
added back where they overlap (`tiles.from_tiles`), dw = Re(E^T @ conj(dW)). As the computation is
linear in x and in w and equals the convolution, its exact gradient is the convolution's.

Rounding. The result equals the direct convolution up to float rounding (about 1e-7 of the
largest output in float32, 1e-15 in float64; tested), not bit for bit. Work is split over the
threads by frequencies, channels or fixed chunks of columns, each value computed by one thread in
one order, so the result does not depend on the number of threads. Backward shares out its
products whole: all those of conj(dX), then all those of conj(dW), as much work each (one
per thread on two), where sharing the frequencies, each with its two products, gave one thread
5 of 9 (a 2x2 layer's 3 x 3 tiles).
"""
from functools import lru_cache

import numpy as np

from . import winograd
from .blas import in_pieces, threads
from .tiles import blocks_to_image, from_tiles, image_to_blocks, to_tiles


def _smooth(n):
    """n has no prime factor above 5 (the tile sides considered; the old habit of FFT sizes)."""
    for q in (2, 3, 5):
        while n % q == 0:
            n //= q
    return n == 1


SIZES = [n for n in range(4, 65) if _smooth(n)]      # tile sides considered


TRANSFORM_WEIGHT = 3      # a transform's multiply-add costs about 3 of a product's (measured)
MIN_GAIN = 1.25           # take the Fourier route when the direct count is this many times ours
MIN_GAIN_ONE_THREAD = 1.0  # the same on one thread, where the direct route has no second core


class Tiling:
    """The tiles of a K x K convolution of N images of C channels, Hp x Wp (padded), into F
    channels: side t, step s, TH x TW tiles per image, T tiles in all, `bins` frequencies
    (t2 x t of them). The transform is the DFT, or Winograd's (`winograd`) for the kernel
    sides in winograd.KERNELS; the side is chosen for the fewest multiply-adds per pass
    (`count`)."""

    def __init__(self, N, C, Hp, Wp, F, K):
        self.N, self.C, self.F, self.K = N, C, F, K
        self.OH, self.OW = Hp - K + 1, Wp - K + 1
        self.winograd = K in winograd.KERNELS
        if self.winograd:
            sides = range(K + 1, len(winograd.POINTS) + 2)
        else:
            sides = [t for t in SIZES if 2 * K - 2 <= t and t - K + 1 < max(self.OH, self.OW) + 4] or [SIZES[-1]]
        self.t = min(sides, key=lambda t: (self.count(t), t))
        self.s = self.t - K + 1
        self.TH, self.TW = -(-self.OH // self.s), -(-self.OW // self.s)
        self.t2 = self.t if self.winograd else self.t // 2 + 1
        self.bins = self.t * self.t2
        self.T = N * self.TH * self.TW

    def count(self, t=None):
        """Multiply-adds of one pass with tiles of side t (default: the chosen one). The DFT's:
        4 per complex one in the products and the weights' transform, and the two products of
        each channel's transform (6 t^2 (t//2+1) per tile), weighted by TRANSFORM_WEIGHT.
        Winograd's: 1 per real one in the products, and t^4 per tile and input channel, s^2 t^2
        per output channel, in its transforms (one product each, `winograd.tables`), weighted
        by winograd.TRANSFORM_WEIGHT. Those products are t^2 deep, each value read and written
        for a few multiply-adds. At weight 3, on a 2-core AMD EPYC with AVX-512, the students'
        2x2 layers (64 channels) took this route on one thread, where the dense one ran 0.86x
        as fast as the direct route (the patch one 1.61x; on two threads 0.93x and 0.87x); at
        4 they stay direct, and the teachers' (256 channels: 1.30-1.73x as fast this way, on
        one thread and on two) still go this way."""
        t = t or self.t
        s, t2 = t - self.K + 1, t // 2 + 1
        T = self.N * -(-self.OH // s) * -(-self.OW // s)
        if self.winograd:
            products = t * t * (T + self.K ** 2) * self.F * self.C
            return products + winograd.TRANSFORM_WEIGHT * (t ** 4 * self.C + s * s * t * t * self.F) * T
        products = 4 * t * t2 * (T + self.K ** 2) * self.F * self.C
        transforms = 6 * t * t * t2 * T * (self.C + self.F)
        return products + TRANSFORM_WEIGHT * transforms

    def direct_count(self):
        """Multiply-adds of one pass of the direct convolution."""
        return self.K ** 2 * self.F * self.C * self.N * self.OH * self.OW

    def worth_it(self, threads):
        """Whether to take this route, on `threads` threads. The direct route splits its
        products over the cores almost perfectly, ours less well (its transforms are products
        too small to share), so one thread asks for less: on a 2-core AMD EPYC every 5x5 and
        4x4 layer measured with a count ratio (direct / ours) of 0.94 or more ran 1.15-2.4x
        faster this way on one thread, while on two some lost at 1.4 (benchmarks/README.md,
        "Routes")."""
        gain = MIN_GAIN_ONE_THREAD if threads <= 1 else MIN_GAIN
        return self.direct_count() >= gain * self.count()


# ---- the transforms, as matrices -----------------------------------------------------------

def _exact(m):
    """m with the parts that are 0 on paper set to 0: the cosines of odd multiples of pi/2 and
    the sines of multiples of pi (even tile sides only), which np.exp gives as about 6e-17 and
    1e-16. Multiplied by one another from one transform to the
    next and by small gradients, those near-zeros made subnormal numbers (below 1.2e-38 in
    float32), which x86 CPUs compute through a slow path: a p = 17 teacher's backward pass took
    222 ms in training against 76 ms with exact zeros (and 98-104 ms with subnormals flushed to
    zero in the CPU's control register; docs/teachers.md). Every other entry has a
    magnitude of at least sin(2 pi / 64) / 64^2, far above the cut."""
    return np.where(np.abs(m.real) < 1e-9, 0, m.real) + 1j * np.where(np.abs(m.imag) < 1e-9, 0, m.imag)


@lru_cache(maxsize=64)
def _tables(t, s, K, dtype):
    """The DFT matrices of a t x t tile in the complex dtype that goes with dtype (s: the
    output rows and columns kept): cols (t2, t) = exp(-2 pi i k2 b / t), rows (t, t) =
    exp(-2 pi i k1 a / t); back_rows (s, t) = exp(+2 pi i a k1 / t); back_cols (s, t2) =
    exp(+2 pi i b k2 / t) / t^2, twice for the k2 that stand for -k2 too; kernel (t2*t, K*K) =
    exp(+2 pi i (k1 u + k2 v) / t), conj(W) of a K x K kernel whose offset (u, v) is row u,
    column v."""
    t2 = t // 2 + 1
    k, a, first = np.arange(t2), np.arange(t), np.arange(s)
    turn = lambda i, j, sign: np.exp(sign * 2j * np.pi * (np.outer(i, j) % t) / t)
    twice = np.where((k == 0) | (2 * k == t), 1.0, 2.0) / (t * t)
    u = np.arange(K)
    phase = 2 * np.pi * ((k[:, None, None, None] * u + a[None, :, None, None] * u[:, None]) % t) / t
    cast = lambda m: np.ascontiguousarray(_exact(m), dtype=np.result_type(dtype, np.complex64))
    return dict(cols=cast(turn(k, a, -1)), rows=cast(turn(a, a, -1)), back_rows=cast(turn(first, a, 1)),
                back_cols=cast(turn(first, k, 1) * twice), kernel=cast(np.exp(1j * phase).reshape(t2 * t, K * K)))


CHUNK = 2 ** 14           # columns of one product in _product, whatever the threads


def _product(m, x, n, chunk=None):
    """m @ x, x (K, cols), as products of `chunk` (default CHUNK) columns shared out to the
    threads (BLAS may sum in another order for another width, so the widths never depend on
    the threads)."""
    chunk = chunk or CHUNK
    out = np.empty((m.shape[0], x.shape[1]), dtype=np.result_type(m, x))

    def chunks(lo, hi):
        for c in range(lo, hi):
            cols = slice(c * chunk, (c + 1) * chunk)
            np.matmul(m, x[:, cols], out=out[:, cols])
    in_pieces(-(-x.shape[1] // chunk), n, chunks)
    return out


def _rows(a, m, n, out, chunk=None):
    """out = a @ m, a (rows, K): _product's transpose, in chunks of rows."""
    chunk = chunk or CHUNK

    def chunks(lo, hi):
        for c in range(lo, hi):
            rows = slice(c * chunk, (c + 1) * chunk)
            np.matmul(a[rows], m, out=out[rows])
    in_pieces(-(-a.shape[0] // chunk), n, chunks)
    return out


def _stacked(m, z, n):
    """m @ z[k] for every k of z (k, A, cols): (k, rows of m, cols), the k shared out."""
    out = np.empty((z.shape[0], m.shape[0], z.shape[2]), dtype=z.dtype)
    in_pieces(z.shape[0], n, lambda lo, hi: np.matmul(m, z[lo:hi], out=out[lo:hi]))
    return out


def _spectrum(tiles, tab, n):
    """tiles (t, t, cols), column first -> (t2, t, cols): each tile's 2-d DFT (or Winograd's
    transform)."""
    t, cols = tiles.shape[0], tiles.shape[2]
    if "both" in tab:                                # one pass over memory instead of two
        return _product(tab["both"], tiles.reshape(t * t, cols), n).reshape(-1, t, cols)
    z = _product(tab["cols"], tiles.reshape(t, t * cols), n).reshape(-1, t, cols)
    return _stacked(tab["rows"], z, n)


def _spectrum_T(spec, tab, n):
    """The transpose of _spectrum: (t2, t, cols) -> (t, t, cols), complex."""
    t, cols = spec.shape[1], spec.shape[2]
    if "both" in tab:
        return _product(tab["both"].T, spec.reshape(-1, cols), n).reshape(t, t, cols)
    z = _stacked(tab["rows"].T, spec, n)
    return _product(tab["cols"].T, z.reshape(-1, t * cols), n).reshape(t, t, cols)


def _image(spec, tab, n):
    """(t2, t, cols) -> (s, s, cols) real: each tile's inverse DFT at rows, columns < s."""
    s, cols = tab["back_cols"].shape[0], spec.shape[2]
    if "back_both" in tab:
        return _product(tab["back_both"], spec.reshape(-1, cols), n).reshape(s, s, cols)
    z = _stacked(tab["back_rows"], spec, n)
    return _product(tab["back_cols"], z.reshape(-1, s * cols), n).real.reshape(s, s, cols)


def _image_T(y, tab, n):
    """The transpose of _image: (s, s, cols) real -> (t2, t, cols)."""
    s, cols = y.shape[0], y.shape[2]
    if "back_both" in tab:
        t = tab["back_rows"].shape[1]
        return _product(tab["back_both"].T, y.reshape(s * s, cols), n).reshape(-1, t, cols)
    z = _product(tab["back_cols"].T, y.reshape(s, s * cols), n).reshape(-1, s, cols)
    return _stacked(tab["back_rows"].T, z, n)


# ---- the convolution -----------------------------------------------------------------------

def _setup(x, w, pad):
    N, C, H, W = x.shape
    g = Tiling(N, C, H + 2 * pad, W + 2 * pad, w.shape[0], w.shape[2])
    return g, (winograd.tables if g.winograd else _tables)(g.t, g.s, g.K, x.dtype.str), threads()


def _weights(w, tab, n):
    """conj(W) (t2*t, F, C): the conjugated transform of w (F, C, K, K) zero-padded to the tile."""
    F, C, K, _ = w.shape
    return _product(tab["kernel"], w.reshape(F * C, K * K).T, n).reshape(-1, F, C)


def _input_spectrum(g, tab, x, pad, n):
    """X (bins, T, C): the transform of x's tiles, by the maps on small inputs."""
    N, C, H, W = x.shape
    if winograd.small(g, H, W):
        cut, _ = winograd.maps(g.t, g.s, g.K, H, W, pad, x.dtype.str)
        return _product(cut, x.reshape(N * C, H * W).T, n, CHUNK // 4).reshape(g.bins, g.T, C)
    return _spectrum(to_tiles(g, x, pad, n), tab, n).reshape(g.bins, g.T, C)


def forward(x, w, b, pad):
    """y (N, F, OH, OW) = the cross-correlation of x (N,C,H,W) with w (F,C,K,K), plus b; and
    what backward would otherwise compute again: the tiles' spectrum X, and the weights'
    transform where it is no bigger (F <= T)."""
    N, C, H, W = x.shape
    F, K = w.shape[0], w.shape[2]
    g, tab, n = _setup(x, w, pad)
    X = _input_spectrum(g, tab, x, pad, n)
    Wc = _weights(w, tab, n)
    Y = np.empty((g.bins, g.T, F), dtype=X.dtype)
    in_pieces(g.bins, n, lambda lo, hi: np.matmul(X[lo:hi], Wc[lo:hi].transpose(0, 2, 1), out=Y[lo:hi]))
    y = np.empty((N, F, H + 2 * pad - K + 1, W + 2 * pad - K + 1), dtype=x.dtype)
    if winograd.small(g, H, W):
        _, put = winograd.maps(g.t, g.s, K, H, W, pad, x.dtype.str)
        _rows(Y.reshape(-1, N * F).T, put, n, y.reshape(N * F, -1), CHUNK // 4)
        y += b.reshape(1, F, 1, 1)
    else:
        blocks = _image(Y.reshape(g.t2, g.t, -1), tab, n)
        blocks_to_image(g, blocks.reshape(g.s, g.s, g.TH, g.TW, N, F), y, n, bias=b)
    return y, (X, Wc if F <= g.T else None)


def backward(dy, x, w, pad, kept=(None, None), input_grad=True):
    """dy (N, F, OH, OW) -> dx (N,C,H,W), dw (F,C,K,K), db (F,) of forward(x, w, b, pad);
    kept: what forward returned beside y, if kept. input_grad=False: dx is None, not computed."""
    N, C, H, W = x.shape
    F, K = w.shape[0], w.shape[2]
    g, tab, n = _setup(x, w, pad)
    small = winograd.small(g, H, W)
    if small:
        cut, put = winograd.maps(g.t, g.s, K, H, W, pad, x.dtype.str)
        cdY = _product(put, dy.reshape(N * F, -1).T, n, CHUNK // 4).reshape(g.bins, g.T, F)
    else:
        cdY = _image_T(image_to_blocks(g, dy, n).reshape(g.s, g.s, -1), tab, n).reshape(g.bins, g.T, F)
    X, Wc = kept
    X = _input_spectrum(g, tab, x, pad, n) if X is None else X
    Wc = _weights(w, tab, n) if Wc is None else Wc
    cdX = np.empty_like(X) if input_grad else None
    cdW = np.empty_like(Wc)
    # The transposes of forward's products, each whole on one thread: all the cdX (if any),
    # then all the cdW, shared out in order (on two threads, one each: as much work).
    tasks = [lambda q: np.matmul(cdY[q], Wc[q], out=cdX[q])] * (g.bins if input_grad else 0) \
        + [lambda q: np.matmul(cdY[q].T, X[q], out=cdW[q])] * g.bins
    in_pieces(len(tasks), n, lambda lo, hi: [tasks[i](i % g.bins) for i in range(lo, hi)])
    del X, cdY
    dx = None
    if input_grad and small:
        dx = np.empty(x.shape, dtype=x.dtype)
        _rows(cdX.reshape(-1, N * C).T, cut, n, dx.reshape(N * C, -1), CHUNK // 4)
    elif input_grad:
        dx = from_tiles(g, _spectrum_T(cdX.reshape(g.t2, g.t, -1), tab, n).real, x.shape, pad, n)
    dw = _rows(cdW.reshape(g.bins, F * C).T, tab["kernel"], n,                  # (F*C, K*K)
               np.empty((F * C, K * K), dtype=cdW.dtype)).real
    return dx, np.ascontiguousarray(dw, dtype=w.dtype).reshape(w.shape), dy.sum(axis=(0, 2, 3))
