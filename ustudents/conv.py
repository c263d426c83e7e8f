"""The fast convolution: the same result as layers.conv2d_plain_*, without its whole column matrix.

Six routes, chosen per call, in this order:
- a kernel that covers its whole (unpadded) input, as the last layers of the patch networks do
  on their 4x4 or 1x1 maps: one product over the batch, a linear layer (`_whole`, below);
- a 1x1 kernel on a bigger image: one product per image (`_pointwise`, below);
- a square kernel with stride 1 where a transform of tiles (fourier.py) needs at most
  1/MIN_GAIN of the direct convolution's multiply-adds, transforms included, on several
  threads, and at most as many on one (`fourier.Tiling.worth_it`): the Fourier transform for
  the 5x5 and 4x4 layers with 32 channels or more ("fourier"), Winograd's for the teachers'
  2x2 layers, of 256 channels ("winograd"; the students', of 64, stay direct);
- few input channels (C < IN_PLACE_MIN_C: the first layers, 3 channels in): the column matrix,
  in cache-sized pieces built straight from the NCHW input (columns.py);
- everything else: the direct convolution described here.

Layout (the direct route). The padded input is kept channels first, batch last:
x4 (C, Hp+1, Wp, N), one spare zero row at the bottom. Flattened to xf (C, (Hp+1)*Wp*N), output
pixel (oh, ow, n) at kernel offset (kh, kw) reads xf[:, j + ((kh*Wp) + kw)*N], j = (oh*Wp +
ow)*N + n its own flat index: every offset is a SHIFT of one flat plane. So for a run of output
pixels the inputs of one offset are one contiguous run of each channel's plane, a (C, L) matrix
with the plane as row stride, which BLAS reads in place. Two kinds of run:

- "full width": output rows r0..r1, every column 0..Wp-1 (the last KW-1 of each row wrap into
  the next row: garbage, computed, then cropped), L = (r1-r0)*Wp*N. Used while the garbage is a
  small share of a row (FULL_WIDTH_MAX_WASTE): dense layers on wide images.
- "exact": one output row, columns 0..OW-1 only, L = OW*N; for narrow inputs (patches), where
  the garbage would be a large share. The batch as the fastest axis keeps these runs long.

The products. The convolution is KH*KW products (F, C) @ (C, L) summed into the output run;
dW[:, :, kh, kw] is dy_run @ x_run^T and dX adds W[:, :, kh, kw]^T @ dy_run into the shifted
run of the input's gradient: nothing is copied but the product itself. (With few channels such
products are too shallow for BLAS to run near its peak: those layers take the column route.)

Each product adds into its output run inside BLAS (blas.addmul: C += A @ B), with no temporary
and no extra pass over the run.

Blocks: the full-width runs are split into blocks of rows whose output fits in BLOCK values, so
a block stays in the CPU cache while the KH*KW products add into it. Blocks, widths and the
choice of products change the order of the additions only, never the result (tested).

Threads. Each product is too small for BLAS to split well over cores, so with T BLAS threads
the work is split here into T pieces that share no output (blas.run_parallel): the forward pass
gives each thread its own blocks of output rows, the backward pass computes dW on one thread and
dX on another. Every sum is added in the same order as on one thread: the result is the same
to the bit (tested).
"""
from . import columns, fourier, winograd
from .backend import get_array_module, is_gpu_array
from .blas import addmul, holding, in_pieces, run_parallel, threads

FULL_WIDTH_MAX_WASTE = 0.2       # garbage share of a row up to which full-width runs are used
IN_PLACE_MIN_C = 32              # channels from which each offset is its own in-place product
BLOCK = {"cpu": 2 ** 18, "gpu": 2 ** 28}   # output values (F * L) of one block of runs
POINTWISE_MIN_PIXELS = 64        # 1x1 kernels on images at least this big: one product per image
SMALL_PRODUCT = 2 ** 24          # multiply-adds below which a product runs on one thread
FOURIER = True                   # wide kernels with many channels by the Fourier transform


def conv_geometry(x, w, stride, pad):
    """Check shapes; return N, C, H, W, F, KH, KW, OH, OW."""
    for name, a, what in (("x", x, "(N, C, H, W)"), ("w", w, "(F, C, KH, KW)")):
        if a.ndim != 4:
            raise ValueError(f"conv2d: expected {name} of shape {what} (4 dims), got shape {tuple(a.shape)}")
    N, C, H, W = x.shape
    F, Cw, KH, KW = w.shape
    if Cw != C:
        raise ValueError(f"conv2d: x has {C} channels but w of shape {tuple(w.shape)} expects {Cw}")
    OH, OW = (H + 2 * pad - KH) // stride + 1, (W + 2 * pad - KW) // stride + 1
    if OH < 1 or OW < 1:
        raise ValueError(f"conv2d: input {H}x{W} (pad {pad}) is smaller than the kernel {KH}x{KW}")
    return N, C, H, W, F, KH, KW, OH, OW


class _Plan:
    """What forward and backward share for a stride-1 conv of x (N,C,H,W) with w (F,C,KH,KW)."""

    def __init__(self, x, w, pad):
        N, C, H, W = x.shape
        F, _, KH, KW = w.shape
        self.N, self.C, self.F, self.KH, self.KW = N, C, F, KH, KW
        self.Hp, self.Wp = H + 2 * pad, W + 2 * pad
        self.OH, self.OW = self.Hp - KH + 1, self.Wp - KW + 1
        self.full = (self.Wp - self.OW) / self.Wp <= FULL_WIDTH_MAX_WASTE
        self.OWc = self.Wp if self.full else self.OW                  # computed columns per row
        device = "gpu" if is_gpu_array(x) else "cpu"
        row = self.OWc * N                                            # values of one output row
        R = max(1, BLOCK[device] // F // row) if self.full else 1
        self.threads = threads() if device == "cpu" else 1          # pieces run at once
        count = -(-self.OH // R)
        count = -(-count // self.threads) * self.threads              # so each thread gets as many
        R = -(-self.OH // count)
        self.blocks = [(r0, min(r0 + R, self.OH)) for r0 in range(0, self.OH, R)]

    def pad_input(self, x, pad):
        """x (N,C,H,W) -> x4 (C, Hp+1, Wp, N), zero-padded, plus a spare zero row."""
        xp = get_array_module(x)
        N, C, H, W = x.shape
        x4 = xp.zeros((C, self.Hp + 1, self.Wp, N), dtype=x.dtype)

        def copy(c0, c1):
            x4[c0:c1, pad:pad + H, pad:pad + W] = x[:, c0:c1].transpose(1, 2, 3, 0)
        in_pieces(C, self.threads, copy)
        return x4

    def runs(self, x4, r0, r1):
        """The inputs of output rows r0..r1 at every kernel offset, as (C, L) views of x4 in the
        order (kh, kw); writing into a view writes into x4."""
        C, Wp, N = self.C, self.Wp, self.N
        if self.full:
            xf = x4.reshape(C, -1)
            L = (r1 - r0) * Wp * N
            return [xf[:, ((r0 + kh) * Wp + kw) * N:((r0 + kh) * Wp + kw) * N + L]
                    for kh in range(self.KH) for kw in range(self.KW)]
        return [x4[:, r0 + kh, kw:kw + self.OW].reshape(C, -1)            # r1 == r0 + 1
                for kh in range(self.KH) for kw in range(self.KW)]

    def out_run(self, y4, r0, r1):
        """Output rows r0..r1 of y4 (F, OH, OWc, N) as an (F, L) view."""
        return y4[:, r0:r1].reshape(self.F, -1)


def _offset_weights(w):
    """w (F,C,KH,KW) -> (KH*KW, F, C): the (F, C) matrix of each offset, contiguous."""
    F, C, KH, KW = w.shape
    return get_array_module(w).ascontiguousarray(w.transpose(2, 3, 0, 1)).reshape(KH * KW, F, C)


def route(x, w, stride=1, pad=0, fourier_ok=True):
    """Which route conv2d_forward takes for x (N,C,H,W) and w (F,C,KH,KW): "whole",
    "pointwise", "fourier", "winograd", "columns" or "direct" (the rules: the module's
    docstring). The transforms' rule depends on the threads at hand, so the backward pass of a
    forward that did not go that way asks with fourier_ok=False."""
    if _whole(x, w, stride, pad):
        return "whole"
    if _pointwise(x, w, stride, pad):
        return "pointwise"
    if fourier_ok and _by_fourier(x, w, stride, pad):
        return "winograd" if w.shape[2] in winograd.KERNELS else "fourier"
    return "columns" if x.shape[1] < IN_PLACE_MIN_C else "direct"


@holding
def conv2d_forward(x, w, b, stride=1, pad=0):
    """Cross-correlation: x (N,C,H,W), w (F,C,KH,KW), b (F,) -> y (N,F,OH,OW),
    OH = (H + 2*pad - KH)//stride + 1. The cache keeps x (on the transforms' routes also
    x's spectrum, and w's where it is no bigger), nothing bigger.

    Stride s > 1 (only the ImageNet networks use it): on the direct route, stride 1, then every
    s-th output; the column route computes only the outputs it keeps.
    """
    N, C, H, W, F, KH, KW, OH, OW = conv_geometry(x, w, stride, pad)
    xp = get_array_module(x)
    way = route(x, w, stride, pad)
    if way in ("fourier", "winograd"):
        y, kept = fourier.forward(x, w, b, pad)
        return y, (x, w, stride, pad, kept)
    if way != "direct":
        return _FORWARD[way](x, w, b, stride, pad), (x, w, stride, pad)
    plan = _Plan(x, w, pad)
    x4 = plan.pad_input(x, pad)
    y4 = xp.empty((F, plan.OH, plan.OWc, N), dtype=x.dtype)
    wk = _offset_weights(w)                                            # (KH*KW, F, C)

    def products(first, last):
        for r0, r1 in plan.blocks[first:last]:
            out = plan.out_run(y4, r0, r1)                             # (F, L)
            for k, run in enumerate(plan.runs(x4, r0, r1)):
                addmul(wk[k], run, out, overwrite=k == 0)
    in_pieces(len(plan.blocks), plan.threads, products)
    y = xp.empty((N, F, plan.OH, plan.OW), dtype=x.dtype)             # crop, NCHW, bias: one pass
    in_pieces(F, plan.threads, lambda f0, f1: xp.add(y4[f0:f1, :, :plan.OW].transpose(3, 0, 1, 2),
                                                      b[f0:f1].reshape(1, -1, 1, 1), out=y[:, f0:f1]))
    if stride > 1:
        y = xp.ascontiguousarray(y[:, :, ::stride, ::stride])
    return y, (x, w, stride, pad)


@holding
def conv2d_backward(dy, cache, input_grad=True):
    """dy (N,F,OH,OW) -> dx (N,C,H,W), dw (F,C,KH,KW), db (F,); input_grad=False skips dx
    (None): every route then computes dW and db alone."""
    x, w, stride, pad, *kept = cache
    xp = get_array_module(dy)
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    if kept:
        return fourier.backward(dy, x, w, pad, kept[0], input_grad)
    way = route(x, w, stride, pad, fourier_ok=False)
    if way != "direct":
        return _BACKWARD[way](dy, x, w, stride, pad, input_grad)
    plan = _Plan(x, w, pad)
    x4 = plan.pad_input(x, pad)
    db = dy.sum(axis=(0, 2, 3))
    dy4 = xp.zeros((F, plan.OH, plan.OWc, N), dtype=dy.dtype)         # garbage columns get 0

    def copy_dy(f0, f1):                                               # stride > 1: the rest 0
        dy4[f0:f1, ::stride, :plan.OW:stride] = dy[:, f0:f1].transpose(1, 2, 3, 0)
    in_pieces(F, plan.threads, copy_dy)
    dx4 = xp.zeros_like(x4) if input_grad else None
    wk = _offset_weights(w)                                            # (KH*KW, F, C)
    dwk = xp.zeros((KH * KW, F, C), dtype=dy.dtype)

    def weight_grad():
        for r0, r1 in plan.blocks:
            d = plan.out_run(dy4, r0, r1)                              # (F, L)
            for k, run in enumerate(plan.runs(x4, r0, r1)):
                addmul(d, run.T, dwk[k])

    def image_grad():
        for r0, r1 in plan.blocks:
            d = plan.out_run(dy4, r0, r1)
            for k, drun in enumerate(plan.runs(dx4, r0, r1)):
                addmul(wk[k].T, d, drun)
    run_parallel([weight_grad, image_grad] if input_grad else [weight_grad], plan.threads)
    dw = dwk.reshape(KH, KW, F, C).transpose(2, 3, 0, 1)
    if not input_grad:
        return None, xp.ascontiguousarray(dw), db
    dx = xp.empty(x.shape, dtype=dy.dtype)

    def copy_dx(c0, c1):
        dx[:, c0:c1] = dx4[c0:c1, pad:pad + H, pad:pad + W].transpose(3, 0, 1, 2)
    in_pieces(C, plan.threads, copy_dx)
    return dx, xp.ascontiguousarray(dw), db


def _by_fourier(x, w, stride, pad):
    """The transforms' rule (fourier.py): square kernels, stride 1, on NumPy arrays, where
    their count of multiply-adds is well below the direct convolution's."""
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    return FOURIER and KH == KW and stride == 1 and not is_gpu_array(x) \
        and fourier.Tiling(N, C, H + 2 * pad, W + 2 * pad, F, KH).worth_it(threads())


# ---- 1x1 kernels ---------------------------------------------------------------------------
#
# A 1x1 convolution is one matrix product per image, y[n] = W @ x[n] with x[n] as (C, H*W),
# straight in the NCHW layout: no padding, no layout change. The images are split over the
# threads forward. Backward, each half of the batch is one piece of work: dW summed over its
# images (in order), and their dX; dW is then the sum of the two halves. dW on one thread beside
# dX on the other took 17.4 against 13.8 ms (64 images of 256 channels, 16 x 16, into 128), so
# the halves share the work more evenly; there are two of them whatever the threads, so the
# sum does not depend on those. With few
# pixels per image (a patch network's last 1x1 layer sees one) the products would be too thin;
# there the general path's one product over the whole batch is faster.

def _pointwise(x, w, stride, pad):
    return w.shape[2] == w.shape[3] == 1 and stride == 1 and pad == 0 \
        and x.shape[2] * x.shape[3] >= POINTWISE_MIN_PIXELS


def _pointwise_forward(x, w, b, stride=1, pad=0):
    xp = get_array_module(x)
    N, C, H, W = x.shape
    F = w.shape[0]
    w2, xs = w.reshape(F, C), x.reshape(N, C, H * W)
    y = xp.empty((N, F, H * W), dtype=x.dtype)
    y[...] = b.reshape(1, F, 1)

    def images(n0, n1):
        for n in range(n0, n1):
            addmul(w2, xs[n], y[n])
    in_pieces(N, 1 if is_gpu_array(x) else threads(), images)
    return y.reshape(N, F, H, W)


def _pointwise_backward(dy, x, w, stride=1, pad=0, input_grad=True):
    xp = get_array_module(dy)
    N, C, H, W = x.shape
    F = w.shape[0]
    w2, xs, ds = w.reshape(F, C), x.reshape(N, C, H * W), dy.reshape(N, F, H * W)
    halves = [(0, N // 2), (N // 2, N)] if N > 1 else [(0, N)]
    dws = xp.zeros((len(halves), F, C), dtype=dy.dtype)
    dx = xp.empty((N, C, H * W), dtype=dy.dtype) if input_grad else None

    def half(k):                   # dW over these images (a partial sum), and their dX
        for n in range(*halves[k]):
            addmul(ds[n], xs[n].T, dws[k])
            if input_grad:
                addmul(w2.T, ds[n], dx[n], overwrite=True)
    run_parallel([lambda k=k: half(k) for k in range(len(halves))], 1 if is_gpu_array(dy) else threads())
    dw = dws.sum(axis=0)
    return dx.reshape(x.shape) if input_grad else None, dw.reshape(w.shape), dy.sum(axis=(0, 2, 3))


# ---- kernels that cover the whole input ---------------------------------------------------
#
# When the kernel is as big as its unpadded input (KH = H, KW = W, pad 0: one output pixel),
# each image's input, flattened in its own (C, KH, KW) order, is already its row of the column
# matrix. The layer is then a linear layer: y = X @ W^T + b with X (N, C*KH*KW) and W
# (F, C*KH*KW), both reshapes, nothing copied. Backward is dW = dY^T @ X beside dX = dY @ W.
# Forward splits the images over the threads; backward runs dW beside dX, as for 1x1 kernels.

def _whole(x, w, stride, pad):
    return pad == 0 and w.shape[2:] == x.shape[2:]


def _whole_threads(x, w):
    """Threads for a whole-input product: one below SMALL_PRODUCT multiply-adds, where handing
    the pieces to threads costs more than the product."""
    small = x.size * w.shape[0] < SMALL_PRODUCT or is_gpu_array(x)
    return 1 if small else threads()


def _whole_forward(x, w, b, stride=1, pad=0):
    xp = get_array_module(x)
    N, F = x.shape[0], w.shape[0]
    x2, w2 = x.reshape(N, -1), w.reshape(F, -1)
    y = xp.empty((N, F), dtype=x.dtype)
    y[...] = b

    def images(n0, n1):
        addmul(x2[n0:n1], w2.T, y[n0:n1])
    in_pieces(N, _whole_threads(x, w), images)
    return y.reshape(N, F, 1, 1)


def _whole_backward(dy, x, w, stride=1, pad=0, input_grad=True):
    xp = get_array_module(dy)
    N, F = x.shape[0], w.shape[0]
    x2, w2, d2 = x.reshape(N, -1), w.reshape(F, -1), dy.reshape(N, F)
    dw = xp.empty_like(w2)
    dx = xp.empty_like(x2)

    def weight_grad():
        addmul(d2.T, x2, dw, overwrite=True)

    def image_grad():
        addmul(d2, w2, dx, overwrite=True)
    run_parallel([weight_grad, image_grad] if input_grad else [weight_grad], _whole_threads(x, w))
    return dx.reshape(x.shape) if input_grad else None, dw.reshape(w.shape), d2.sum(axis=0)


_FORWARD = {"whole": _whole_forward, "pointwise": _pointwise_forward, "columns": columns.forward}
_BACKWARD = {"whole": _whole_backward, "pointwise": _pointwise_backward, "columns": columns.backward}
