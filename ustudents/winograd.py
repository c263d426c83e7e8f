"""Winograd's transform, for the CPU's 2x2 kernels on the tiles of fourier.py, and on small inputs
its maps.

Winograd's transform (Lavin and Gray, "Fast algorithms for convolutional neural networks", 2016)
is for the 2x2 kernels, where the DFT's count is about the direct convolution's: the same tiles
and products as fourier.py's, with real transforms. In one dimension, a tile of t inputs d gives
s = t - K + 1 outputs y = A^T [(G g) . (B^T d)]: t multiplications instead of s K. It is the
transpose of a polynomial product. The product of a kernel g (K coefficients) and h (s) has t
coefficients, fixed by its values at t - 1 points and its top coefficient. With V_k (t, k) the
Vandermonde matrix that takes k coefficients to those t values (the top one as the value "at
infinity"), the product is V_t^-1 [(V_K g) . (V_s h)], and the cross-correlation, its transpose
in h, is A = V_s, G = V_K, B = V_t^-1. In two dimensions the transforms act on the rows and then
the columns, and each of the t x t "frequencies" is one real product (T, C) @ (C, F): one
multiply-add per frequency and channel pair. The points are 0, 1 and -1 (POINTS), tiles of side
3 or 4, whose matrices hold 0, +-1 and +-1/2 only: at side 4, 16 multiplications per 9 outputs
instead of 36. A fourth point (2 or 1/2) gave tiles of side 5 that rounded 10x worse in float32
(4e-6 of the largest output against 4e-7, measured on a 2x2 layer of 64 channels).

Small inputs (`maps`). The tiles' transform is linear in the input, and so is the cutting into
tiles: on an input of a few pixels (a patch network's 5 x 5 map) the two together are one
(bins*TH*TW, H*W) matrix, `cut`, that takes each image's channel, its H*W pixels as they lie in
NCHW, straight to its bins*TH*TW transformed values. One product with the (N*C, H*W) input, read
in place, then replaces the channels-last copy, the strided copy of the tiles and the transform.
Likewise `put`, (bins*TH*TW, OH*OW), takes a channel's transformed output to its OH x OW pixels:
the inverse transform and the putting back of blocks. The maps' entries grow with the square of
the pixels, the tiled transform's work only with the pixels. Forward + backward of a 2x2 layer
on 64 images of 256 channels, into 256 (2-core AMD EPYC with AVX-512): the maps took 13.5
against 16.0 ms at 5 x 5 (900 entries), 48 against 58 ms at 10 x 10 (14,400), 87 against 88 at
12 x 12 (36,864) and 171 against 144 at 16 x 16. They are taken up to MAP_ENTRIES.
"""
from functools import lru_cache

import numpy as np

KERNELS = (2,)            # kernel sides that take Winograd's transform instead of the DFT
POINTS = (0, 1, -1)       # the interpolation points besides infinity: tiles up to side 4
TRANSFORM_WEIGHT = 4      # a transform's multiply-add, in products' (fourier.Tiling.count)
MAP_ENTRIES = 2 ** 14     # the most entries of the maps (below)


@lru_cache(maxsize=64)
def tables(t, s, K, dtype):
    """Winograd's transforms of a t x t tile, as real matrices under fourier._tables' names:
    cols = rows = B^T (t, t), back_rows = back_cols = A^T (s, t), kernel (t*t, K*K) = G (x) G,
    with G (t, K) (the module's docstring). Also both = B^T (x) B^T (t*t, t*t) and back_both =
    A^T (x) A^T (s*s, t*t): on tiles this small each 2-d transform is one product, one pass over
    memory, where the rows and then the columns would take two (and the DFT's big tiles take the two:
    its Kronecker products would cost t/2 times the multiply-adds). Entries that are 0 on paper
    are set to 0 (np.linalg.inv leaves about 1e-17 there)."""
    points = POINTS[:t - 1]

    def vandermonde(k):          # (t, k): k coefficients -> the values at the points, and the top one
        return np.array([[p ** j for j in range(k)] for p in points] + [[0] * (k - 1) + [1]], dtype=float)
    B_T = np.linalg.inv(vandermonde(t)).T
    G = vandermonde(K)
    cast = lambda m: np.ascontiguousarray(np.where(np.abs(m) < 1e-9, 0, m), dtype=dtype)
    A_T = vandermonde(s).T
    return dict(cols=cast(B_T), rows=cast(B_T), back_rows=cast(A_T), back_cols=cast(A_T),
                both=cast(np.kron(B_T, B_T)), back_both=cast(np.kron(A_T, A_T)),
                kernel=cast(np.einsum("au,bv->bauv", G, G).reshape(t * t, K * K)))


@lru_cache(maxsize=64)
def maps(t, s, K, H, W, pad, dtype):
    """cut (bins*TH*TW, H*W) and put (bins*TH*TW, OH*OW) of Winograd's tiles of side t and
    step s on an H x W input with padding pad; rows in the spectrum's order (bin, tile i,
    tile j). Entry cut[(q, i, j), (h, w)] is the weight of pixel (h, w) in bin q of tile
    (i, j): tab["both"][q, b*t + a] where (a, b) = (h + pad - i*s, w + pad - j*s) is the pixel's
    row and column in the tile, if it lies there (the tile's padding is zero); put's entry
    for output pixel (i*s + r, j*s + c) is tab["back_both"][c*s + r, q]."""
    tab = tables(t, s, K, dtype)
    OH, OW = H + 2 * pad - K + 1, W + 2 * pad - K + 1
    TH, TW = -(-OH // s), -(-OW // s)
    cut = np.zeros((t * t, TH, TW, H, W), dtype=dtype)
    put = np.zeros((t * t, TH, TW, OH, OW), dtype=dtype)
    for i in range(TH):
        for j in range(TW):
            for a in range(t):
                for b in range(t):
                    h, w = i * s + a - pad, j * s + b - pad
                    if 0 <= h < H and 0 <= w < W:
                        cut[:, i, j, h, w] = tab["both"][:, b * t + a]
            for r in range(min(s, OH - i * s)):
                for c in range(min(s, OW - j * s)):
                    put[:, i, j, i * s + r, j * s + c] = tab["back_both"][c * s + r]
    return cut.reshape(-1, H * W), put.reshape(-1, OH * OW)


def small(g, H, W):
    """Whether to take the maps (above) for the tiling g (a fourier.Tiling) of an H x W input."""
    return g.winograd and g.bins * g.TH * g.TW * H * W <= MAP_ENTRIES
