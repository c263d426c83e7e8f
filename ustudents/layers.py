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


# How conv2d lays out its columns (stride 1).
#
# Pad each image plane with zeros (and one spare row at the bottom). Output pixel (oh, ow) at
# kernel offset (kh, kw) reads input (oh + kh, ow + kw). The column matrix holds, for each
# (c, kh, kw), the inputs that offset meets for every output pixel: rows (c, kh, kw) like
# w.reshape(F, -1), one column per output pixel. Two ways to gather them:
#
# - "full width": compute every column 0..Wp-1 of each output row, not just 0..OW-1. Then the
#   inputs of offset (kh, kw) for output rows r0..r1 are ONE contiguous run of (r1 - r0)*Wp
#   values of the flattened plane, starting at (r0 + kh)*Wp + kw: a memcpy instead of many
#   short rows. The last KW - 1 columns of each row wrap into the next row: garbage, computed,
#   then cropped. Worth it while they are a small share of the row (wide images: dense layers).
# - "exact": copy the (r1 - r0) x OW window itself; for narrow inputs (patches), where the
#   garbage would be a large share.
#
# The columns are built block by block (a few images, or a few rows of one image) so that each
# block stays in the CPU cache between the copy and the matrix product. Blocks and widths only
# change the order of the work, never the result; on a GPU one big block is best.
#
# Stride s > 1 (only the ImageNet networks use it) = stride 1, then keep every s-th output.
# It costs s*s times the arithmetic of a dedicated path, for one path to read and test.

COLS_BLOCK = {"cpu": 2 ** 22, "gpu": 2 ** 28}   # values of the column matrix per block
FULL_WIDTH_MAX_WASTE = 0.2                       # garbage share up to which full width is used


def _blocks(N, OH, row_size, budget):
    """Split N images of OH output rows into (n0, n1, r0, r1) blocks of about `budget` values."""
    if OH * row_size <= budget:                      # whole images, several per block
        nb = max(1, budget // (OH * row_size))
        return [(n0, min(n0 + nb, N), 0, OH) for n0 in range(0, N, nb)]
    R = max(1, budget // row_size)                   # one image, R rows per block
    return [(n, n + 1, r0, min(r0 + R, OH)) for n in range(N) for r0 in range(0, OH, R)]


def _window(x4, kh, kw, block, OWc):
    """The inputs that kernel offset (kh, kw) meets in a block, as a view (C, nb, R, OWc) of
    x4 (C, N, Hp+1, Wp); writing into the view writes into x4 (col2im relies on it)."""
    n0, n1, r0, r1 = block
    C, N, Hq, Wp = x4.shape
    if OWc == Wp:                                    # full width: one run per image
        start = (r0 + kh) * Wp + kw
        run = x4.reshape(C, N, Hq * Wp)[:, n0:n1, start:start + (r1 - r0) * Wp]
        return run.reshape(C, n1 - n0, r1 - r0, Wp)
    return x4[:, n0:n1, r0 + kh:r1 + kh, kw:kw + OWc]


def _cols(x4, KH, KW, block, OWc):
    """im2col of one block: x4 (C, N, Hp+1, Wp) -> cols (C*KH*KW, nb*R*OWc)."""
    xp = get_array_module(x4)
    n0, n1, r0, r1 = block
    C = x4.shape[0]
    cols = xp.empty((C, KH, KW, n1 - n0, r1 - r0, OWc), dtype=x4.dtype)
    for kh in range(KH):
        for kw in range(KW):
            cols[:, kh, kw] = _window(x4, kh, kw, block, OWc)
    return cols.reshape(C * KH * KW, -1)


def _conv_plan(x, w, pad):
    """What forward and backward share for a stride-1 conv: the padded input x4
    (C, N, Hp+1, Wp), the stride-1 output size (OH1, OW1), the column width OWc, the blocks."""
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    Hp, Wp = H + 2 * pad, W + 2 * pad
    OH1, OW1 = Hp - KH + 1, Wp - KW + 1
    OWc = Wp if (Wp - OW1) / Wp <= FULL_WIDTH_MAX_WASTE else OW1
    x4 = _padded_cnhw(x, pad, extra_rows=1)
    budget = COLS_BLOCK["gpu" if is_gpu_array(x) else "cpu"]
    return x4, OH1, OW1, OWc, _blocks(N, OH1, C * KH * KW * OWc, budget)


def conv2d_forward(x, w, b, stride=1, pad=0):
    """Cross-correlation by im2col + matrix products.

    x (N,C,H,W), w (F,C,KH,KW), b (F,) -> y (N,F,OH,OW), OH = (H + 2*pad - KH)//stride + 1.
    The cache keeps x, not the columns: backward rebuilds them, so a forward pass holds no more
    memory than its activations.
    """
    N, C, H, W, F, KH, KW, OH, OW = _conv_geometry(x, w, stride, pad)
    xp = get_array_module(x)
    x4, OH1, OW1, OWc, blocks = _conv_plan(x, w, pad)
    w2 = w.reshape(F, -1)                                            # (F, C*KH*KW)
    y = xp.empty((N, F, OH1, OW1), dtype=x.dtype)
    for n0, n1, r0, r1 in blocks:
        yb = w2 @ _cols(x4, KH, KW, (n0, n1, r0, r1), OWc)           # (F, nb*R*OWc)
        yb = yb.reshape(F, n1 - n0, r1 - r0, OWc)[..., :OW1]         # crop any garbage columns
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
    x4, OH1, OW1, OWc, blocks = _conv_plan(x, w, pad)
    if stride > 1:                                                   # back to the stride-1 grid
        dy1 = xp.zeros((N, F, OH1, OW1), dtype=dy.dtype)
        dy1[:, :, ::stride, ::stride] = dy
        dy = dy1
    w2 = w.reshape(F, -1)
    dw = xp.zeros_like(w2)                                           # (F, C*KH*KW)
    dx4 = xp.zeros_like(x4)                                          # (C, N, Hp+1, Wp)
    for block in blocks:
        n0, n1, r0, r1 = block
        dyb = xp.zeros((F, n1 - n0, r1 - r0, OWc), dtype=dy.dtype)   # garbage columns get 0
        dyb[..., :OW1] = dy[n0:n1, :, r0:r1].transpose(1, 0, 2, 3)
        dyb = dyb.reshape(F, -1)                                     # (F, nb*R*OWc)
        dw += dyb @ _cols(x4, KH, KW, block, OWc).T
        dcols = (w2.T @ dyb).reshape(C, KH, KW, n1 - n0, r1 - r0, OWc)
        for kh in range(KH):                                         # col2im: scatter-add back
            for kw in range(KW):
                _window(dx4, kh, kw, block, OWc)[...] += dcols[:, kh, kw]
    dx = dx4[:, :, pad:pad + H, pad:pad + W].transpose(1, 0, 2, 3)
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
    if not 0 <= slope <= 1:
        raise ValueError(f"leaky_relu: slope must lie in [0, 1], got {slope}")
    xp = get_array_module(x)
    # max(x, slope*x) is the same for 0 <= slope <= 1, and several times faster than a where()
    return xp.maximum(x, x * x.dtype.type(slope)), (x > 0, slope)


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
