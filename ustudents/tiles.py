"""Tiles for fourier.py: the padded input cut into overlapping t x t tiles, and the tiles'
s x s output blocks put back into an image, for a fourier.Tiling g (its t, s, TH, TW).

Tiles are (t_b, t_a, TH, TW, N, C): channels last, so that a spectrum's (T, C) plane of one
frequency is a contiguous matrix. Tile (i, j, n, c) holds rows i*s .. i*s+t-1 and columns
j*s .. j*s+t-1 of the zero-padded input. The input is first copied, channels last, into a
zero array (N, Eh, Ew, C) as big as the tiles reach (`_extent`), and all the tiles together
are then one strided view of that (`_grid`): one copy cuts every tile, with no loop over tiles
(a copy per tile cost about a third of a layer's time on a student's 64 x 64 training crop),
and its innermost run is a pixel's C channels, contiguous on both sides. Cut straight from
the (N, C, H, W) input, whose channels lie a plane apart, the same copy took 1.1-2.3x as long
as the two copies (2-core AMD EPYC with AVX-512, five layers of 128-256 channels). The output
blocks (s_b, s_a, TH, TW, N, F) are the same view with side s instead of t, of the output's
channels-last copy.
"""
import numpy as np

from .blas import in_pieces


def _grid(a, s, rows, cols, TH, TW):
    """The view (cols, rows, TH, TW, N, C) of a (N, H, W, C) whose element [b, r, i, j, n, c] is
    a[n, i*s + r, j*s + b, c]: the first rows x cols of TH x TW windows that start every s
    pixels; writing into it writes into a. The windows must lie inside a (checked)."""
    N, H, W, C = a.shape
    if (TH - 1) * s + rows > H or (TW - 1) * s + cols > W:
        raise ValueError(f"_grid: {TH} x {TW} windows of {rows} x {cols} every {s} exceed {H} x {W}")
    st = a.strides
    return np.lib.stride_tricks.as_strided(
        a, (cols, rows, TH, TW, N, C), (st[2], st[1], st[1] * s, st[2] * s, st[0], st[3]), writeable=True)


def _extent(g, N, C, dtype):
    """A zero (N, Eh, Ew, C) array, channels last, as far as the tiles reach."""
    return np.zeros((N, (g.TH - 1) * g.s + g.t, (g.TW - 1) * g.s + g.t, C), dtype=dtype)


def _copy(dst, src, n, plus=None):
    """dst[...] = src (+ plus, broadcast along the last axis), split over n threads along the
    first axis, or the second where the first is shorter than n (one image)."""
    axis = 0 if dst.shape[0] >= n else 1

    def part(lo, hi):
        index = (slice(None),) * axis + (slice(lo, hi),)
        if plus is None:
            dst[index] = src[index]
        else:
            np.add(src[index], plus, out=dst[index])
    in_pieces(dst.shape[axis], n, part)


def to_tiles(g, x, pad, n):
    """x (N,C,H,W) -> tiles (t_b, t_a, TH*TW*N*C): tile (i, j, n) is the zero-padded input's
    window at rows i*s .. i*s+t-1 and columns j*s .. j*s+t-1, column first."""
    N, C, H, W = x.shape
    if g.TH == g.TW == 1:                                       # one tile per image: a transpose
        tiles = np.zeros((g.t, g.t, N, C), dtype=x.dtype)

        def copy(c0, c1):
            tiles[pad:pad + W, pad:pad + H, :, c0:c1] = x[:, c0:c1].transpose(3, 2, 0, 1)
        in_pieces(C, n, copy)
        return tiles.reshape(g.t, g.t, -1)
    xe = _extent(g, N, C, x.dtype)
    _copy(xe[:, pad:pad + H, pad:pad + W], x.transpose(0, 2, 3, 1), n)
    tiles = np.empty((g.t, g.t, g.TH, g.TW, N, C), dtype=x.dtype)
    _copy(tiles, _grid(xe, g.s, g.t, g.t, g.TH, g.TW), n)
    return tiles.reshape(g.t, g.t, -1)


def from_tiles(g, tiles, shape, pad, n):
    """The transpose of to_tiles: tiles (t_b, t_a, TH*TW*N*C) added back where they were cut,
    then cropped to the unpadded input's shape (N, C, H, W).

    Neighbouring tiles overlap by t - s < s rows (and columns). The tile offsets a < s and
    a >= s each write every row at most once, so each of the (up to) 2 x 2 groups of offsets is
    one strided addition. The groups run from the last offsets to the first, so that every
    pixel adds its tiles in the order of the tiles, (i, j) row by row, as a loop over them would.
    Winograd's tiles (t <= 4) take one addition per offset instead, in the same order: on a 2x2
    layer's 16 images of 256 channels, 36 x 36, they took 11.4 ms against 17.9 by groups. The
    DFT's tiles stay by groups: of side 12-24 (144-576 offsets), they took 1.8-2.5x as long by
    offsets on three of four layers measured, though 0.7x on the fourth (one 135 x 135 image of
    256 channels, side 15)."""
    N, C, H, W = shape
    tiles = tiles.reshape(g.t, g.t, g.TH, g.TW, N, C)
    dx = np.empty(shape, dtype=tiles.dtype)
    if g.TH == g.TW == 1:                                       # one tile per image: no overlap
        def copy(c0, c1):
            dx[:, c0:c1] = tiles[pad:pad + W, pad:pad + H, 0, 0, :, c0:c1].transpose(2, 3, 1, 0)
        in_pieces(C, n, copy)
        return dx
    xe = _extent(g, N, C, tiles.dtype)
    if g.winograd:
        groups = [(a, a + 1) for a in reversed(range(g.t))]
    else:
        groups = [(g.s, g.t), (0, g.s)] if g.t > g.s else [(0, g.t)]
    by_images = N >= n                         # else by channels: shorter runs, as many threads

    def add(lo, hi):
        images, channels = (slice(lo, hi), slice(None)) if by_images else (slice(None), slice(lo, hi))
        for a0, a1 in groups:
            for b0, b1 in groups:
                windows = _grid(xe[images, a0:, b0:, channels], g.s, a1 - a0, b1 - b0, g.TH, g.TW)
                windows += tiles[b0:b1, a0:a1, :, :, images, channels]
    in_pieces(N if by_images else C, n, add)
    _copy(dx.transpose(0, 2, 3, 1), xe[:, pad:pad + H, pad:pad + W], n)
    return dx


def blocks_to_image(g, blocks, out, n, bias=None):
    """blocks (s_b, s_a, TH, TW, N, F) -> out (N, F, OH, OW), each tile's s x s block in place
    (the last ones cropped), plus bias (F,) if given."""
    N, F, OH, OW = out.shape
    ye = np.empty((N, g.TH * g.s, g.TW * g.s, F), dtype=blocks.dtype)       # channels last
    _copy(_grid(ye, g.s, g.s, g.s, g.TH, g.TW), blocks, n)
    _copy(out.transpose(0, 2, 3, 1), ye[:, :OH, :OW], n, plus=bias)


def image_to_blocks(g, dy, n):
    """The transpose of blocks_to_image: dy (N, F, OH, OW) -> (s_b, s_a, TH, TW, N, F), zero
    beyond the output."""
    N, F, OH, OW = dy.shape
    ye = np.zeros((N, g.TH * g.s, g.TW * g.s, F), dtype=dy.dtype)
    _copy(ye[:, :OH, :OW], dy.transpose(0, 2, 3, 1), n)
    blocks = np.empty((g.s, g.s, g.TH, g.TW, N, F), dtype=dy.dtype)
    _copy(blocks, _grid(ye, g.s, g.s, g.s, g.TH, g.TW), n)
    return blocks
