"""The column route of conv.py: convolutions with few input channels (the first layers).

A first layer (C = 3) has too few channels for one product per kernel offset: each would be
only 3 deep. Its column matrix is cheap instead, C*KH*KW rows (75 for a 5x5 kernel) against
the F = 128 channels it produces, and it is built straight from the NCHW input, with no layout
change on the way in or out: a strided view gives every window,
    windows[c, kh, kw, n, oh, ow] = xpad[n, c, oh*s + kh, ow*s + kw],
and a piece of it is copied into a block of columns small enough for the L2 cache. A piece is
a block of output rows of one image (big images: then W (F, C*KH*KW) @ columns is written
straight into y[n] as its rows) or several whole images (small ones: the product is then
transposed into y, in the cache). The stride is the view's, so strided layers (ImageNet's
stems) compute only the outputs they keep. The pieces are split over the threads forward;
backward, they go in two halves, one per core, and each piece gives both dW = dy @ columns^T
(the columns built again, not kept) and dX: W^T @ dy, added back window by window into the
padded input's gradient.
"""
import functools

from .backend import get_array_module
from .blas import addmul, in_pieces, run_parallel, threads

BLOCK = 2 ** 18                  # values of the column matrix of one piece (fits the L2 cache)


class Pieces:
    """The pieces of the column route for x (N,C,H,W), w (F,C,KH,KW), and their views."""

    def __init__(self, x, w, stride, pad):
        N, C, H, W = x.shape
        F, _, KH, KW = w.shape
        self.N, self.C, self.H, self.W, self.F, self.KH, self.KW = N, C, H, W, F, KH, KW
        self.stride, self.pad = stride, pad
        self.OH, self.OW = (H + 2 * pad - KH) // stride + 1, (W + 2 * pad - KW) // stride + 1
        self.depth = C * KH * KW
        rows = max(1, BLOCK // (self.depth * self.OW))           # output rows of one piece
        if rows < self.OH:                                        # pieces (n0, n1, r0, r1)
            self.pieces = [(n, n + 1, r0, min(r0 + rows, self.OH))
                           for n in range(N) for r0 in range(0, self.OH, rows)]
        else:
            count = -(-N // max(1, rows // self.OH))             # pieces of whole images,
            G = -(-N // count)                                    # as even as can be
            self.pieces = [(n0, min(n0 + G, N), 0, self.OH) for n0 in range(0, N, G)]
        self.L = max((n1 - n0) * (r1 - r0) * self.OW for n0, n1, r0, r1 in self.pieces)
        self.threads = threads()

    def padded(self, x):
        p = self.pad
        return get_array_module(x).pad(x, ((0, 0), (0, 0), (p, p), (p, p))) if p else x

    def windows(self, xpad):
        """The strided view (C, KH, KW, N, OH, OW) of every window of xpad (N, C, Hp, Wp)."""
        sN, sC, sH, sW = xpad.strides
        s = self.stride
        return get_array_module(xpad).lib.stride_tricks.as_strided(
            xpad, (self.C, self.KH, self.KW, self.N, self.OH, self.OW), (sC, sH, sW, sN, s * sH, s * sW),
            writeable=False)

    def columns(self, windows, piece, buf):
        """The piece's columns (C*KH*KW, L), copied into buf (C*KH*KW, >= L); L in (n, oh, ow) order."""
        n0, n1, r0, r1 = piece
        cols = buf[:, :(n1 - n0) * (r1 - r0) * self.OW]
        cols.reshape(self.C, self.KH, self.KW, n1 - n0, r1 - r0, self.OW)[...] = windows[:, :, :, n0:n1, r0:r1]
        return cols

    def rows(self, a, piece, buf):
        """a (N, F, OH, OW) over the piece as (F, L), L in (n, oh, ow) order: a view of one image's
        rows, or for several images a copy into buf (F, >= L)."""
        n0, n1, r0, r1 = piece
        if n1 - n0 == 1:
            return a[n0, :, r0:r1].reshape(a.shape[1], -1)
        out = buf[:, :(n1 - n0) * (r1 - r0) * self.OW]
        out.reshape(a.shape[1], n1 - n0, r1 - r0, self.OW)[...] = a[n0:n1, :, r0:r1].transpose(1, 0, 2, 3)
        return out

    def add_back(self, w2, d, piece, dxpad, buf):
        """dX of one piece, added into dxpad (N, C, Hp, Wp): the columns W^T @ dy (into buf,
        (C*KH*KW, >= L)), each window added back where it was cut from (col2im)."""
        n0, n1, r0, r1 = piece
        s = self.stride
        dc = addmul(w2.T, d, buf[:, :d.shape[1]], overwrite=True)
        dc = dc.reshape(self.C, self.KH, self.KW, n1 - n0, r1 - r0, self.OW).transpose(3, 0, 1, 2, 4, 5)
        for kh in range(self.KH):
            h = r0 * s + kh
            for kw in range(self.KW):
                dxpad[n0:n1, :, h:h + (r1 - r0 - 1) * s + 1:s, kw:kw + (self.OW - 1) * s + 1:s] += dc[:, :, kh, kw]


def forward(x, w, b, stride=1, pad=0):
    """conv.conv2d_forward's y (N,F,OH,OW) by the column route (no cache: backward needs only x)."""
    xp = get_array_module(x)
    g = Pieces(x, w, stride, pad)
    windows = g.windows(g.padded(x))
    w2 = w.reshape(g.F, g.depth)                                   # (c, kh, kw) order, as the columns
    y = xp.empty((g.N, g.F, g.OH, g.OW), dtype=x.dtype)

    def work(first, last):
        cols = xp.empty((g.depth, g.L), dtype=x.dtype)
        out = xp.empty((g.F, g.L), dtype=x.dtype)
        for n0, n1, r0, r1 in g.pieces[first:last]:
            c = g.columns(windows, (n0, n1, r0, r1), cols)
            if n1 - n0 == 1:                                       # straight into y[n]'s rows
                o = y[n0, :, r0:r1].reshape(g.F, -1)
                o[...] = b.reshape(-1, 1)
                addmul(w2, c, o)
            else:
                o = addmul(w2, c, out[:, :c.shape[1]], overwrite=True).reshape(g.F, n1 - n0, g.OH, g.OW)
                xp.add(o.transpose(1, 0, 2, 3), b.reshape(1, -1, 1, 1), out=y[n0:n1])
    in_pieces(len(g.pieces), g.threads, work)
    return y


def backward(dy, x, w, stride=1, pad=0, input_grad=True):
    """conv.conv2d_backward's (dx, dw, db) by the column route (dx None without input_grad).

    The pieces go in two halves, one per core, each with its own dW partial sum and its own
    padded dX (a first layer's input is a few channels, so that copy is small): a piece's dy
    rows, copied once, serve both dW = dy @ columns^T and dX's columns W^T @ dy. Two halves
    whatever the thread count, added in one order, so the result does not depend on it."""
    xp = get_array_module(dy)
    g = Pieces(x, w, stride, pad)
    xpad = g.padded(x)
    windows = g.windows(xpad)
    w2 = w.reshape(g.F, g.depth)
    middle = (len(g.pieces) + 1) // 2
    halves = [g.pieces[:middle], g.pieces[middle:]] if middle < len(g.pieces) else [g.pieces]

    def half(pieces):
        dw2 = xp.zeros((g.F, g.depth), dtype=dy.dtype)
        dxpad = xp.zeros(xpad.shape, dtype=dy.dtype) if input_grad else None
        cols, dbuf = xp.empty((g.depth, g.L), dtype=dy.dtype), xp.empty((g.F, g.L), dtype=dy.dtype)
        for piece in pieces:
            d = g.rows(dy, piece, dbuf)
            addmul(d, g.columns(windows, piece, cols).T, dw2)
            if input_grad:                                          # the columns are used: reuse
                g.add_back(w2, d, piece, dxpad, cols)
        return dw2, dxpad
    parts = run_parallel([functools.partial(half, pieces) for pieces in halves], g.threads)
    dw2, dxpad = parts[0]
    for dw_more, dx_more in parts[1:]:
        dw2 += dw_more
        if input_grad:
            dxpad += dx_more
    db = dy.sum(axis=(0, 2, 3))
    if not input_grad:
        return None, dw2.reshape(w.shape), db
    p = g.pad
    dx = xp.ascontiguousarray(dxpad[:, :, p:p + g.H, p:p + g.W]) if p else dxpad
    return dx, dw2.reshape(w.shape), db
