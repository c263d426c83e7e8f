"""Hand-written layers: conv2d, max_pool2d, leaky_relu, linear, each as *_forward / *_backward.

Every forward returns (y, cache); every backward takes (dy, cache) and returns the gradients.
Nothing hides in objects: the cache is all that backward needs. Arrays may be NumPy or CuPy
(the output follows the input), float32 by default, float64 for gradient checks.

Shapes: N batch, C input channels, H W input size, F filters, KH KW kernel, OH OW output size.
"""
from . import conv
from .backend import get_array_module, is_gpu_array
from .conv import conv_geometry


def _check_shape(name, x, ndim, what):
    if x.ndim != ndim:
        raise ValueError(f"{name}: expected {what} ({ndim} dims), got shape {tuple(x.shape)}")


# ---- convolution: the definition ----------------------------------------------------------
#
# y[n, f, i, j] = b[f] + sum over c, u, v of w[f, c, u, v] * x[n, c, s*i + u, s*j + v]
#
# im2col: gather, for every output pixel, the C*KH*KW inputs its window covers into one column;
# the convolution is then one matrix product with w as an (F, C*KH*KW) matrix. Backward is the
# same product transposed, and col2im adds each column's gradient back where it came from.

def _im2col(xpad, KH, KW, stride, OH, OW):
    """xpad (N,C,Hp,Wp) -> cols (C*KH*KW, N*OH*OW), rows ordered as w.reshape(F, -1)."""
    xp = get_array_module(xpad)
    N, C = xpad.shape[:2]
    cols = xp.empty((C, KH, KW, N, OH, OW), dtype=xpad.dtype)
    for u in range(KH):
        for v in range(KW):
            cols[:, u, v] = xpad[:, :, u:u + stride * OH:stride, v:v + stride * OW:stride].transpose(1, 0, 2, 3)
    return cols.reshape(C * KH * KW, -1)


def conv2d_plain_forward(x, w, b, stride=1, pad=0):
    """The definition by im2col of the whole batch and one matrix product: x (N,C,H,W),
    w (F,C,KH,KW), b (F,) -> y (N,F,OH,OW), OH = (H + 2*pad - KH)//stride + 1."""
    N, C, H, W, F, KH, KW, OH, OW = conv_geometry(x, w, stride, pad)
    xp = get_array_module(x)
    xpad = xp.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    y = w.reshape(F, -1) @ _im2col(xpad, KH, KW, stride, OH, OW)             # (F, N*OH*OW)
    y = y.reshape(F, N, OH, OW).transpose(1, 0, 2, 3) + b.reshape(1, F, 1, 1)
    return y, (x, w, stride, pad)


def conv2d_plain_backward(dy, cache, input_grad=True):
    """dy (N,F,OH,OW) -> dx (N,C,H,W), dw (F,C,KH,KW), db (F,); dx is None without input_grad
    (a network's first layer: nothing needs the gradient of the image)."""
    x, w, stride, pad = cache
    xp = get_array_module(dy)
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    OH, OW = dy.shape[2:]
    xpad = xp.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    d2 = dy.transpose(1, 0, 2, 3).reshape(F, -1)                              # (F, N*OH*OW)
    dw = (d2 @ _im2col(xpad, KH, KW, stride, OH, OW).T).reshape(w.shape)
    if not input_grad:
        return None, dw, dy.sum(axis=(0, 2, 3))
    dcols = (w.reshape(F, -1).T @ d2).reshape(C, KH, KW, N, OH, OW)
    dxpad = xp.zeros_like(xpad)
    for u in range(KH):                                                       # col2im
        for v in range(KW):
            dxpad[:, :, u:u + stride * OH:stride, v:v + stride * OW:stride] += dcols[:, u, v].transpose(1, 0, 2, 3)
    return dxpad[:, :, pad:pad + H, pad:pad + W], dw, dy.sum(axis=(0, 2, 3))


# ---- convolution: what the networks call ----------------------------------------------------
#
# The same numbers (tested), computed the way each device does best. On a GPU: the definition,
# one large matrix product per pass, which cuBLAS runs near its peak, in a handful of kernel
# launches. On the CPU: ustudents/conv.py, which never builds the whole column matrix and reads
# each kernel offset's inputs in place, so the products stay in the CPU's caches.

def conv2d_forward(x, w, b, stride=1, pad=0):
    """Cross-correlation: x (N,C,H,W), w (F,C,KH,KW), b (F,) -> (y (N,F,OH,OW), cache),
    OH = (H + 2*pad - KH)//stride + 1. The cache keeps x, w and the geometry (on the CPU's
    Fourier and Winograd routes also x's spectrum, and w's where it is no bigger), nothing
    bigger."""
    if is_gpu_array(x):
        return conv2d_plain_forward(x, w, b, stride, pad)
    return conv.conv2d_forward(x, w, b, stride, pad)


def conv2d_backward(dy, cache, input_grad=True):
    """dy (N,F,OH,OW) -> dx (N,C,H,W), dw (F,C,KH,KW), db (F,). input_grad=False skips dx
    (returned as None): a network's first layer, whose input is the image."""
    if is_gpu_array(dy):
        return conv2d_plain_backward(dy, cache, input_grad)
    return conv.conv2d_backward(dy, cache, input_grad)

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
            win = x[:, :, i:i + stride * OH:stride, j:j + stride * OW:stride] == y
            xp.greater(win, taken, out=win)              # win and not taken
            taken |= win
            at = dx[:, :, i:i + stride * OH:stride, j:j + stride * OW:stride]
            if stride >= size:                           # windows apart: each dx gets one value
                xp.multiply(dy, win, out=at)
            else:
                at += dy * win
    return dx


# ---- leaky ReLU ----------------------------------------------------------------------------

def leaky_relu_forward(x, slope=5e-3):
    """y = x for x > 0, slope * x otherwise; any shape. The paper uses slope 5e-3."""
    if not 0 <= slope <= 1:
        raise ValueError(f"leaky_relu: slope must lie in [0, 1], got {slope}")
    xp = get_array_module(x)
    # max(x, slope*x) is the same for 0 <= slope <= 1, and several times faster than a where()
    y = x * x.dtype.type(slope)
    return xp.maximum(x, y, out=y), (x > 0, slope)


def leaky_relu_backward(dy, cache):
    """dx = dy where x > 0, slope * dy elsewhere: dy times a gain of 1 or slope. The gain is
    max(positive, slope) with positive as 0 or 1: exactly 1 or slope, in three plain passes
    (a where() on a mask is four times slower on the CPU)."""
    positive, slope = cache
    xp = get_array_module(dy)
    gain = positive.astype(dy.dtype)
    xp.maximum(gain, dy.dtype.type(slope), out=gain)
    return xp.multiply(dy, gain, out=gain)


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
