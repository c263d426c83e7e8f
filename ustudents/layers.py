"""Hand-written layers: conv2d, max_pool2d, leaky_relu, linear, each as *_forward / *_backward.

Every forward returns (y, cache); every backward takes (dy, cache) and returns the gradients.
Nothing hides in objects: the cache is all that backward needs. Arrays may be NumPy or CuPy
(the output follows the input), float32 by default, float64 for gradient checks.

Shapes: N batch, C input channels, H W input size, F filters, KH KW kernel, OH OW output size.
"""
from .backend import get_array_module, is_gpu_array


def _check_shape(name, x, ndim, what):
    if x.ndim != ndim:
        raise ValueError(f"{name}: expected {what} ({ndim} dims), got shape {tuple(x.shape)}")


# ---- convolution ---------------------------------------------------------------------------

def _conv_geometry(x, w, stride, pad):
    _check_shape("conv2d", x, 4, "x of shape (N, C, H, W)")
    _check_shape("conv2d", w, 4, "w of shape (F, C, KH, KW)")
    N, C, H, W = x.shape
    F, Cw, KH, KW = w.shape
    if Cw != C:
        raise ValueError(f"conv2d: x has {C} channels but w of shape {tuple(w.shape)} expects {Cw}")
    OH, OW = (H + 2 * pad - KH) // stride + 1, (W + 2 * pad - KW) // stride + 1
    if OH < 1 or OW < 1:
        raise ValueError(f"conv2d: input {H}x{W} (pad {pad}) is smaller than the kernel {KH}x{KW}")
    return N, C, H, W, F, KH, KW, OH, OW


def _padded_cnhw(x, pad, extra_rows=0):
    """x (N,C,H,W) -> (C, N, H+2pad+extra_rows, W+2pad), zero-padded, channels first."""
    xp = get_array_module(x)
    N, C, H, W = x.shape
    xt = xp.zeros((C, N, H + 2 * pad + extra_rows, W + 2 * pad), dtype=x.dtype)
    xt[:, :, pad:pad + H, pad:pad + W] = x.transpose(1, 0, 2, 3)
    return xt


# How conv2d lays out its columns ("full-width" im2col, stride 1).
#
# Flatten each zero-padded image plane (Hp rows of Wp values, plus one spare row). The window of
# output pixel (oh, ow) at kernel offset (kh, kw) starts at flat index (oh + kh)*Wp + (ow + kw).
# So if we compute outputs for every column 0..Wp-1 of an output row, not just 0..OW-1, the slab
# of inputs for offset (kh, kw) and output rows r0..r1 is ONE contiguous run of (r1 - r0)*Wp
# values, starting at (r0 + kh)*Wp + kw: a memcpy instead of many short rows. The Wp - OW extra
# columns per row wrap into the next row; they are garbage, computed and cropped away
# (KW - 1 of every Wp columns: 6-15% extra work on the paper's shapes).
#
# The columns are built block by block (a few images, or a few rows of one image) so that each
# block stays in the CPU cache between the copy and the matrix product. Blocks only cost memory
# traffic, never change the result; on a GPU one big block is best.
#
# Stride s > 1 (only the ImageNet networks use it) = stride 1, then keep every s-th output.
# It costs s*s times the arithmetic of a dedicated path, for one path to read and test.

COLS_BLOCK = {"cpu": 2 ** 22, "gpu": 2 ** 28}   # values of the column matrix per block


def _blocks(N, OH, row_size, budget):
    """Split N images of OH output rows into (n0, n1, r0, r1) blocks of about `budget` values."""
    if OH * row_size <= budget:                      # whole images, several per block
        nb = max(1, budget // (OH * row_size))
        return [(n0, min(n0 + nb, N), 0, OH) for n0 in range(0, N, nb)]
    R = max(1, budget // row_size)                   # one image, R rows per block
    return [(n, n + 1, r0, min(r0 + R, OH)) for n in range(N) for r0 in range(0, OH, R)]


def _cols(xflat, KH, KW, Wp, block):
    """The columns of one block: xflat (C, N, (Hp+1)*Wp) -> (C*KH*KW, nb*R*Wp)."""
    xp = get_array_module(xflat)
    n0, n1, r0, r1 = block
    C, L = xflat.shape[0], (r1 - r0) * Wp
    cols = xp.empty((C, KH, KW, n1 - n0, L), dtype=xflat.dtype)
    for kh in range(KH):
        for kw in range(KW):
            start = (r0 + kh) * Wp + kw
            cols[:, kh, kw] = xflat[:, n0:n1, start:start + L]
    return cols.reshape(C * KH * KW, -1)


def _conv_plan(x, w, pad):
    """Padded, flattened input and the blocks for a stride-1 conv: shared by forward and backward."""
    xp = get_array_module(x)
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    Hp, Wp = H + 2 * pad, W + 2 * pad
    OH1 = Hp - KH + 1                                                # stride-1 output rows
    xflat = _padded_cnhw(x, pad, extra_rows=1).reshape(C, N, -1)     # (C, N, (Hp+1)*Wp)
    budget = COLS_BLOCK["gpu" if is_gpu_array(x) else "cpu"]
    return xflat, Wp, OH1, _blocks(N, OH1, C * KH * KW * Wp, budget)


def conv2d_forward(x, w, b, stride=1, pad=0):
    """Cross-correlation by im2col + matrix products.

    x (N,C,H,W), w (F,C,KH,KW), b (F,) -> y (N,F,OH,OW), OH = (H + 2*pad - KH)//stride + 1.
    The cache keeps x, not the columns: backward rebuilds them, so a forward pass holds no more
    memory than its activations.
    """
    N, C, H, W, F, KH, KW, OH, OW = _conv_geometry(x, w, stride, pad)
    xp = get_array_module(x)
    xflat, Wp, OH1, blocks = _conv_plan(x, w, pad)
    OW1 = Wp - KW + 1
    w2 = w.reshape(F, -1)                                            # (F, C*KH*KW)
    y = xp.empty((N, F, OH1, OW1), dtype=x.dtype)
    for n0, n1, r0, r1 in blocks:
        yb = (w2 @ _cols(xflat, KH, KW, Wp, (n0, n1, r0, r1)))       # (F, nb*R*Wp)
        yb = yb.reshape(F, n1 - n0, r1 - r0, Wp)[..., :OW1]          # crop the garbage columns
        xp.add(yb.transpose(1, 0, 2, 3), b.reshape(1, F, 1, 1), out=y[n0:n1, :, r0:r1])
    if stride > 1:
        y = xp.ascontiguousarray(y[:, :, ::stride, ::stride])        # (N, F, OH, OW)
    return y, (x, w, stride, pad)


def conv2d_backward(dy, cache):
    """dy (N,F,OH,OW) -> dx (N,C,H,W), dw (F,C,KH,KW), db (F,)."""
    x, w, stride, pad = cache
    xp = get_array_module(dy)
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    xflat, Wp, OH1, blocks = _conv_plan(x, w, pad)
    OW1 = Wp - KW + 1
    if stride > 1:                                                   # back to the stride-1 grid
        dy1 = xp.zeros((N, F, OH1, OW1), dtype=dy.dtype)
        dy1[:, :, ::stride, ::stride] = dy
        dy = dy1
    w2 = w.reshape(F, -1)
    dw = xp.zeros_like(w2)                                           # (F, C*KH*KW)
    dxflat = xp.zeros_like(xflat)                                    # (C, N, (Hp+1)*Wp)
    for n0, n1, r0, r1 in blocks:
        nb, L = n1 - n0, (r1 - r0) * Wp
        dyb = xp.zeros((F, nb, r1 - r0, Wp), dtype=dy.dtype)         # garbage columns get 0
        dyb[..., :OW1] = dy[n0:n1, :, r0:r1].transpose(1, 0, 2, 3)
        dyb = dyb.reshape(F, -1)                                     # (F, nb*R*Wp)
        dw += dyb @ _cols(xflat, KH, KW, Wp, (n0, n1, r0, r1)).T
        dcols = (w2.T @ dyb).reshape(C, KH, KW, nb, L)               # col2im: scatter-add back
        for kh in range(KH):
            for kw in range(KW):
                start = (r0 + kh) * Wp + kw
                dxflat[:, n0:n1, start:start + L] += dcols[:, kh, kw]
    dx = dxflat.reshape(C, N, -1, Wp)[:, :, pad:pad + H, pad:pad + W].transpose(1, 0, 2, 3)
    return xp.ascontiguousarray(dx), dw.reshape(w.shape), dy.sum(axis=(0, 2, 3))


# ---- max pooling ---------------------------------------------------------------------------

def max_pool2d_forward(x, size=2, stride=2):
    """Max pooling in floor mode (as PyTorch's default): x (N,C,H,W) -> y (N,C,OH,OW),
    OH = (H - size)//stride + 1; rows and columns that do not fill a window are dropped."""
    _check_shape("max_pool2d", x, 4, "x of shape (N, C, H, W)")
    xp = get_array_module(x)
    N, C, H, W = x.shape
    OH, OW = (H - size) // stride + 1, (W - size) // stride + 1
    if OH < 1 or OW < 1:
        raise ValueError(f"max_pool2d: input {H}x{W} is smaller than the window {size}x{size}")
    y = None
    for i in range(size):
        for j in range(size):
            v = x[:, :, i:i + stride * OH:stride, j:j + stride * OW:stride]
            y = v.copy() if y is None else xp.maximum(y, v, out=y)
    return y, (x, y, size, stride)


def max_pool2d_backward(dy, cache):
    """dy (N,C,OH,OW) -> dx (N,C,H,W): each output's gradient goes to the first window position
    holding the maximum (ties are broken like PyTorch: one winner, scanned row-major)."""
    x, y, size, stride = cache
    xp = get_array_module(dy)
    N, C, OH, OW = dy.shape
    dx = xp.zeros_like(x)
    taken = xp.zeros(y.shape, dtype=bool)                # an earlier position already won
    for i in range(size):
        for j in range(size):
            win = (x[:, :, i:i + stride * OH:stride, j:j + stride * OW:stride] == y) & ~taken
            dx[:, :, i:i + stride * OH:stride, j:j + stride * OW:stride] += xp.where(win, dy, 0)
            taken |= win
    return dx


# ---- leaky ReLU ----------------------------------------------------------------------------

def leaky_relu_forward(x, slope=5e-3):
    """y = x for x > 0, slope * x otherwise; any shape. The paper uses slope 5e-3."""
    xp = get_array_module(x)
    return xp.where(x > 0, x, x * x.dtype.type(slope)), (x > 0, slope)


def leaky_relu_backward(dy, cache):
    positive, slope = cache
    xp = get_array_module(dy)
    return xp.where(positive, dy, dy * dy.dtype.type(slope))


# ---- linear --------------------------------------------------------------------------------

def linear_forward(x, w, b):
    """y = x w^T + b: x (N,C), w (F,C), b (F,) -> y (N,F)."""
    _check_shape("linear", x, 2, "x of shape (N, C)")
    _check_shape("linear", w, 2, "w of shape (F, C)")
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"linear: x of shape {tuple(x.shape)} has {x.shape[1]} features "
                         f"but w of shape {tuple(w.shape)} expects {w.shape[1]}")
    return x @ w.T + b, (x, w)


def linear_backward(dy, cache):
    """dy (N,F) -> dx (N,C), dw (F,C), db (F,)."""
    x, w = cache
    return dy @ w, dy.T @ x, dy.sum(axis=0)
