"""Fast dense feature extraction (Bailer et al., BMVC 2017): a PatchNet at every pixel of an
image in one pass, docs/method.md §3. The teacher's targets come from it, and the students train
through it (docs/method.md §4).

For an image H x W, the output O (N, d, H, W) holds at O[:, :, r, c] what the patch network
gives for the p x p patch centred at (r, c), zeros beyond the image's border. Evaluating the
network patch by patch repeats almost all the work of neighbouring patches; here every layer
runs once on the whole image:

1. Pad: top/left by ceil((p-1)/2), bottom/right by floor((p-1)/2), and bottom/right by a few
   more rows/columns so that the sides are multiples of S, the product of the pool strides.
2. Convolutions and leaky ReLUs run unchanged, on larger maps.
3. Each stride-s pool becomes a multipool: s*s pools of the input shifted by (i, j),
   i in 0..s-1 outer, j inner, stacked into the batch axis. A pool of stride s keeps only
   every s-th window; the s*s shifted copies keep all of them, between them.
4. Unwarp: after n pools the batch axis holds (i_n, j_n, ..., i_1, j_1, N), newest shift
   outermost, and output row r = ((r*·s_n + i_n)·s_{n-1} + ...)·s_1 + i_1 (columns alike).
   One transpose + reshape puts every descriptor at its pixel; then crop to H x W.

Multipool and unwarp have backward passes (unwarp's is its inverse, `warp`), so
dense_backward gives the gradient of any loss on O with respect to the network's parameters.

Shapes: N images, d descriptor channels, S = product of strides, B batch (shifted copies).
"""
import math

import numpy as np

from .backend import get_array_module
from .blas import holding
from .layers import max_pool2d_backward, max_pool2d_forward
from .models import layer_backward, layer_forward


def padding(p, S, H, W):
    """Zero padding ((top, bottom), (left, right)) that centres a p x p patch on every pixel of
    an H x W image and makes the padded-over sides multiples of S (a pixel's patch is rows
    r .. r+p-1 of the padded image)."""
    before, after = p // 2, (p - 1) // 2                  # ceil((p-1)/2), floor((p-1)/2)
    return (before, after + (-H) % S), (before, after + (-W) % S)


# ---- multipool -----------------------------------------------------------------------------

def multipool_forward(x, stride=2):
    """All s*s phases of a stride-s, size-s max pool, stacked into the batch axis.

    x (B,C,H,W) -> y (s*s*B, C, OH, OW), OH = (H - s + 1) // s, OW alike.
    y[(i*s + j)*B + b] = max_pool2d(x[b, :, i:, j:]), every copy cut to the same OH x OW.
    The s*s pools together cover every window, so we take the stride-1 pool once, as a max
    over s columns then s rows (contiguous, cheap), and deal its pixels out to the copies.
    The cache keeps only x: backward recomputes each copy's pool.
    """
    s = stride
    xp = get_array_module(x)
    B, C, H, W = x.shape
    OH, OW = (H - s + 1) // s, (W - s + 1) // s
    if OH < 1 or OW < 1:
        raise ValueError(f"multipool: input {H}x{W} is too small for stride {s}")
    cols = x[..., :W - s + 1]
    for b in range(1, s):
        cols = xp.maximum(cols, x[..., b:W - s + 1 + b])           # (B, C, H, W-s+1)
    pool1 = cols[:, :, :H - s + 1]
    for a in range(1, s):
        pool1 = xp.maximum(pool1, cols[:, :, a:H - s + 1 + a])      # (B, C, H-s+1, W-s+1)
    del cols                                                       # freed before y: lower peak
    y = xp.empty((s, s, B, C, OH, OW), dtype=x.dtype)
    for i in range(s):
        for j in range(s):
            y[i, j] = pool1[:, :, i:i + s * OH:s, j:j + s * OW:s]
    return y.reshape(s * s * B, C, OH, OW), (x, s)


def multipool_backward(dy, cache):
    """dy (s*s*B, C, OH, OW) -> dx (B,C,H,W): each copy's pool backward, added at its shift.
    The pools of layers.py route each gradient, ties included, as the patch network does."""
    x, s = cache
    xp = get_array_module(dy)
    B, OH, OW = x.shape[0], dy.shape[2], dy.shape[3]
    dx = xp.zeros(x.shape, dtype=dy.dtype)
    for k in range(s * s):
        i, j = divmod(k, s)
        _, pool_cache = max_pool2d_forward(x[:, :, i:i + s * OH, j:j + s * OW], s, s)
        dpool = max_pool2d_backward(dy[k * B:(k + 1) * B], pool_cache)    # (B, C, s*OH, s*OW)
        dx[:, :, i:i + s * OH, j:j + s * OW] += dpool
    return dx


# ---- unwarp --------------------------------------------------------------------------------

def _unwarp_axes(n):
    """The transpose that takes (i_n, j_n, ..., i_1, j_1, N, d, h, w), axes 0..2n+3, to
    (N, d, h, i_n, ..., i_1, w, j_n, ..., j_1): row digits, most significant first, then columns."""
    rows = [2 * n + 2] + list(range(0, 2 * n, 2))
    cols = [2 * n + 3] + list(range(1, 2 * n, 2))
    return tuple([2 * n, 2 * n + 1] + rows + cols)


def unwarp_forward(y, strides):
    """Put every shifted copy's values back at their pixels.

    y (S*S*N, d, h, w), batch axis (i_n, j_n, ..., i_1, j_1, N) -> out (N, d, h*S, w*S).
    strides: the pool strides in network order [s_1, ..., s_n]; [] is the identity.
    """
    n, S = len(strides), math.prod(strides)
    B, d, h, w = y.shape
    if B % (S * S):
        raise ValueError(f"unwarp: batch {B} is not a multiple of {S * S} shifted copies")
    N = B // (S * S)
    digits = [s for s in reversed(strides) for _ in "ij"]         # s_n, s_n, ..., s_1, s_1
    out = y.reshape(*digits, N, d, h, w).transpose(_unwarp_axes(n))
    return out.reshape(N, d, h * S, w * S), list(strides)


def warp(out, strides):
    """The inverse of unwarp: out (N, d, h*S, w*S) -> y (S*S*N, d, h, w)."""
    n, S = len(strides), math.prod(strides)
    N, d, HS, WS = out.shape
    if HS % S or WS % S:
        raise ValueError(f"warp: sides {HS}x{WS} are not multiples of {S}")
    rev = list(reversed(strides))
    inverse = tuple(int(a) for a in np.argsort(_unwarp_axes(n)))
    y = out.reshape(N, d, HS // S, *rev, WS // S, *rev).transpose(inverse)
    return y.reshape(S * S * N, d, HS // S, WS // S)


def unwarp_backward(dout, cache):
    """dout (N, d, h*S, w*S) -> dy (S*S*N, d, h, w): unwarp only moves values, so its backward
    moves the gradients back: warp."""
    return warp(dout, cache)


# ---- the dense network ---------------------------------------------------------------------

def _check_images(images):
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"dense: expected images of shape (N, 3, H, W), got {tuple(images.shape)}")


def _pad(net, images):
    """images (N,3,H,W) -> padded (N, 3, Hs+p-1, Ws+p-1), Hs and Ws multiples of S."""
    xp = get_array_module(images)
    rows, cols = padding(net.p, math.prod(net.strides), *images.shape[2:])
    return xp.pad(images, ((0, 0), (0, 0), rows, cols))


def crop_corners(H, W, side):
    """The top-left corners (r, c) of side x side crops that tile an H x W image: every `side`
    pixels, the last row and column of crops flush with the border (overlapping the one before
    where side does not divide the image), so every pixel lies in at least one crop."""
    if not 1 <= side <= min(H, W):
        raise ValueError(f"crop_corners: a crop of side {side} does not fit a {H} x {W} image")
    def starts(n):
        return sorted({*range(0, n - side, side), n - side})
    return [(r, c) for r in starts(H) for c in starts(W)]


def crop_window(net, images, r, c, side):
    """The part of the zero-padded images that the outputs at rows r..r+side-1, columns
    c..c+side-1 see: images (N,3,H,W) -> (N, 3, side+p-1, side+p-1), contiguous. Its
    dense_forward(net, window, pad=False) is exactly dense_forward(net, images)'s output at
    those pixels (tested): training on a crop trains on those pixels of the whole image.
    side must be a multiple of S, the product of the pool strides."""
    H, W = images.shape[2:]
    S = math.prod(net.strides)
    if side % S or not (0 <= r <= H - side and 0 <= c <= W - side):
        raise ValueError(f"crop_window: a crop of side {side} at ({r}, {c}) of a {H} x {W} image; "
                         f"it must lie inside the image and be a multiple of {S} for p={net.p}")
    xp = get_array_module(images)
    before, k = net.p // 2, side + net.p - 1              # _pad's padding before; the window's side
    window = xp.zeros(images.shape[:2] + (k, k), dtype=images.dtype)
    r0, r1 = max(0, r - before), min(H, r - before + k)   # the image's rows and columns in it
    c0, c1 = max(0, c - before), min(W, c - before + k)
    window[:, :, r0 - r + before:r1 - r + before, c0 - c + before:c1 - c + before] = images[:, :, r0:r1, c0:c1]
    return window


def _run(net, x, keep):
    """The layers on a padded image, pools as multipools: x (N,3,Hs+p-1,Ws+p-1) -> the warped
    output (S*S*N, d, >= Hs/S, >= Ws/S) and the layer caches (only if keep)."""
    caches = []
    for layer in net.layers:
        if layer.kind == "pool":
            x, cache = multipool_forward(x, layer.k)
        else:
            x, cache = layer_forward(layer, net.params, x)
        if keep:
            caches.append(cache)
        del cache                       # a conv's cache holds its input: let inference free it
    return x, caches


def dense_forward(net, images, pad=True):
    """The network at every pixel, keeping the caches for dense_backward (training).

    images (N,3,H,W) -> y (N,d,H,W), cache. Any H, W >= 1. For inference without caches,
    and in tiles for large images, use dense_features.
    pad=False: only the patches that lie wholly inside the images, no zero padding:
    y (N, d, H-p+1, W-p+1), y[:, :, r, c] the patch images[:, :, r:r+p, c:c+p]; H-p+1 and
    W-p+1 must be multiples of S (teacher pretraining crops images to such sizes).
    """
    _check_images(images)
    H, W = images.shape[2:]
    if pad:
        x = _pad(net, images)
    else:
        S = math.prod(net.strides)
        H, W = H - net.p + 1, W - net.p + 1
        if H < 1 or W < 1 or H % S or W % S:
            raise ValueError(f"dense_forward(pad=False): images {tuple(images.shape[2:])} give "
                             f"{H} x {W} patches of {net.p} px; each side must be a positive "
                             f"multiple of {S}")
        x = images
    warped, caches = _run(net, x, keep=True)
    full, _ = unwarp_forward(warped, net.strides)                 # (N, d, >= Hs, >= Ws)
    y = get_array_module(full).ascontiguousarray(full[:, :, :H, :W])
    return y, (net.layers, net.strides, list(net.params), caches, full.shape)


def dense_backward(dy, cache):
    """dy (N,d,H,W) -> grads, a dict with the keys (and order) of net.params."""
    layers, strides, keys, caches, full_shape = cache
    xp = get_array_module(dy)
    dfull = xp.zeros(full_shape, dtype=dy.dtype)                  # cropped pixels get no gradient
    dfull[:, :, :dy.shape[2], :dy.shape[3]] = dy
    d = unwarp_backward(dfull, strides)                           # (S*S*N, d, h, w)
    grads = {}
    for i, (layer, layer_cache) in enumerate(zip(reversed(layers), reversed(caches))):
        if layer.kind == "pool":
            d = multipool_backward(d, layer_cache)
        else:                                                     # the image needs no gradient
            d = layer_backward(layer, d, layer_cache, grads, input_grad=i < len(layers) - 1)
    return {k: grads[k] for k in keys}


@holding
def dense_features(net, images, tile=256):
    """Inference: dense_forward's output, without caches, one image and one tile at a time.

    images (N,3,H,W) -> y (N,d,H,W). tile: output pixels per tile side (rounded up to a
    multiple of S); each tile reads its (tile + p - 1)^2 window of the padded image, so it
    computes exactly what the untiled pass computes for those pixels. Memory: about one
    tile's activations (p = 65, tile 256: about 350 MB in float32), not the image's. Time: the
    p - 1 pixel halo is computed twice (p = 65, tile 256: about 1.5x the untiled pass).
    tile=None: all images in one untiled pass (fastest on a GPU for batches of small images).
    """
    _check_images(images)
    xp = get_array_module(images)
    N, _, H, W = images.shape
    p, S = net.p, math.prod(net.strides)
    x = _pad(net, images)
    Hs, Ws = x.shape[2] - p + 1, x.shape[3] - p + 1
    T = max(Hs, Ws) if tile is None else -(-tile // S) * S
    batch = N if tile is None else 1
    y = None
    for n in range(0, N, batch):
        for r0 in range(0, H, T):
            for c0 in range(0, W, T):
                th, tw = min(T, Hs - r0), min(T, Ws - c0)          # multiples of S
                piece = x[n:n + batch, :, r0:r0 + th + p - 1, c0:c0 + tw + p - 1]
                full, _ = unwarp_forward(_run(net, piece, keep=False)[0], net.strides)
                h, w = min(th, H - r0), min(tw, W - c0)
                if y is None:                                        # dtype: images' and params'
                    y = xp.empty((N, full.shape[1], H, W), dtype=full.dtype)
                y[n:n + batch, :, r0:r0 + h, c0:c0 + w] = full[:, :, :h, :w]
    return y
