"""The teacher's training patches, cut from natural images (natural.py; docs/method.md §1, §7).

    sampler = PatchSampler(images, p=33, seed=0)
    a, pos, neg = sampler.triplet(64)               # each (64, 3, 33, 33)
    x64 = resize_batch(a, 64)                       # (64, 3, 64, 64), the ImageNet network's input

With few photos, augment=True reads every patch from its own randomly zoomed, rotated, mirrored
and recoloured view of its image, so that a few photos give many distinct patches:

    sampler = PatchSampler(images, p=33, seed=0, augment=True)   # or augment=Augment(...)
"""
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ustudents.backend import get_array_module


@dataclass(frozen=True)
class Augment:
    """The ranges of PatchSampler's per-patch random transforms (PatchSampler(augment=True)
    uses these defaults). Each patch gets its own draw of every one.

    scale: (lo, hi), the zoom, log-uniform: 2 shows the image twice as large (the patch covers
        p/2 source pixels), 0.5 half as large (2p pixels). Where a window would not fit its image
        (large p, small image, rotated), the range starts at the smallest zoom that fits.
    rotate: any angle, uniform (False: none).   flip: mirror half the patches.
    gain: per-channel gain, log-uniform in exp(+-gain).
    hue: a rotation of the colours about the grey axis, uniform in +-hue radians.
    saturation: (lo, hi), the chroma's factor, uniform; grey: the probability of no chroma.
    brightness: an offset, uniform in +-brightness.
    contrast: (lo, hi), a factor about mid-grey 0.5, log-uniform."""
    scale: tuple = (0.5, 2.0)
    rotate: bool = True
    flip: bool = True
    gain: float = 0.1
    hue: float = 0.5
    saturation: tuple = (0.6, 1.4)
    grey: float = 0.1
    brightness: float = 0.1
    contrast: tuple = (0.7, 1.4)

    def __post_init__(self):
        lo, hi = self.scale
        if not 0 < lo <= hi:
            raise ValueError(f"Augment.scale must be (lo, hi) with 0 < lo <= hi, got {self.scale}")
        if not 0 < self.contrast[0] <= self.contrast[1]:
            raise ValueError(f"Augment.contrast must be (lo, hi) with 0 < lo <= hi, "
                             f"got {self.contrast}")
        if not 0 <= self.saturation[0] <= self.saturation[1]:
            raise ValueError(f"Augment.saturation must be (lo, hi) with 0 <= lo <= hi, "
                             f"got {self.saturation}")
        if not 0 <= self.grey <= 1:
            raise ValueError(f"Augment.grey is a probability, got {self.grey}")


def rotation(scale, angle, flip):
    """The (B, 2, 2) map from a patch's frame to its image: a patch pixel at offset (dy, dx) from
    the patch centre is read at centre + A @ (dy, dx). scale, angle (radians), flip: (B,) each;
    flip mirrors the patch left-right (in the patch frame, before the rotation)."""
    c, s = np.cos(angle) / scale, np.sin(angle) / scale
    f = np.where(flip, -1.0, 1.0)
    return np.stack([np.stack([c, -s * f], -1), np.stack([s, c * f], -1)], -2)


class Places(NamedTuple):
    """Where a batch of anchor patches is cut (PatchSampler.places). k: the images (B,).
    at: plain crops: the corners (y, x) and the room (my, mx) each has to move; with augment:
    the views (src, centre, A, colour) that PatchSampler.warp reads. margin: the room asked for
    (the triplet's shift)."""
    k: np.ndarray
    at: tuple
    margin: int = 0

    def take(self, rows):
        """The places of the anchors `rows` (an index array)."""
        return Places(self.k[rows], tuple(a[rows] for a in self.at), self.margin)


class PatchSampler:
    """Random p x p patches of a set of images, and triplets for metric learning (docs/method.md §1).

    images: (N, 3, H, W) array or a list of (3, H_i, W_i) float arrays, N >= 2 (negatives
    come from another image), every side >= p. Returns NumPy float32; move it to the device.

    augment: False (plain crops), True (the ranges of Augment()) or an Augment. Then each patch
    is read from a randomly zoomed, rotated and mirrored copy of its image (bilinear, from a
    half-resolution copy where the zoom is below 1/sqrt(2), so that shrinking does not alias),
    and its colours are mapped by a random gain, hue, saturation, contrast and brightness; the
    source window always lies inside the image (no padding). A few photos then give many
    distinct patches. All randomness is self.rng's (a checkpoint saves and restores it)."""

    CHUNK = 32768   # pixels per step of the augmented gather

    def __init__(self, images, p, seed=0, augment=False):
        self.images = [np.asarray(im, dtype=np.float32) for im in images]
        if len(self.images) < 2:
            raise ValueError(f"need at least 2 images (negatives come from another image), "
                             f"got {len(self.images)}")
        smallest = max(p, 2) if augment else p
        for k, im in enumerate(self.images):
            if im.ndim != 3 or im.shape[0] != 3 or min(im.shape[1:]) < smallest:
                raise ValueError(f"image {k} has shape {im.shape}; "
                                 f"need (3, H, W) with H, W >= {smallest}")
        self.p = p
        self.sizes = np.array([im.shape[1:] for im in self.images])    # (N, 2): H, W of each
        self.rng = np.random.default_rng(seed)
        if augment is True:
            augment = Augment()
        if not (augment is None or augment is False or isinstance(augment, Augment)):
            raise ValueError(f"augment must be False, True or an Augment, got {augment!r}")
        self.augment = augment or None
        if self.augment is not None:
            self._pack()

    def _corners(self, k, margin=0):
        """Top-left corners (y, x) of patches in images k (B,), each at least `margin` px from
        the image's edges where the image allows it, and those margins (my, mx); all (B,)."""
        H, W = self.sizes[k, 0], self.sizes[k, 1]
        my, mx = np.minimum(margin, (H - self.p) // 2), np.minimum(margin, (W - self.p) // 2)
        return self.rng.integers(my, H - self.p - my + 1), self.rng.integers(mx, W - self.p - mx + 1), my, mx

    def _crops(self, k, y, x):
        """(B, 3, p, p): the patches of images k at corners (y, x)."""
        out = np.empty((len(k), 3, self.p, self.p), dtype=np.float32)
        for b, (kb, yb, xb) in enumerate(zip(k, y, x)):
            out[b] = self.images[kb][:, yb:yb + self.p, xb:xb + self.p]
        return out

    # -- augmentation: every source image's pixels in one table, read by one gather per tap ----

    def _pack(self):
        """Build the pixel table of the sources: source k < N is image k, source N + k its
        half-resolution copy (2 x 2 means). One row per pixel, (R, G, B, 1) float32, so that a
        pixel is one 16-byte item (one complex128) for np.take, and the constant 1 carries the
        colour map's offset through the interpolation. Each source has a 1-px border (copies of
        its edge pixels), so that every point of the source, edges included, is read with its
        four taps inside the source's rows: exactly where the point is a pixel."""
        halves = []
        for im, (h, w) in zip(self.images, self.sizes // 2):
            even = im[:, :2 * h, :2 * w]
            halves.append(0.25 * (even[:, 0::2, 0::2] + even[:, 0::2, 1::2]
                                  + even[:, 1::2, 0::2] + even[:, 1::2, 1::2]))
        sources = self.images + halves
        self._hw = np.array([s.shape[1:] for s in sources])              # (2N, 2): H, W
        counts = (self._hw[:, 0] + 2) * (self._hw[:, 1] + 2)            # pixels with the border
        first = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self._origin = first + self._hw[:, 1] + 3                       # (2N,) row of pixel (0, 0)
        table = np.ones((counts.sum(), 4), np.float32)
        for s, o, n in zip(sources, first, counts):
            table[o:o + n, :3] = np.pad(s, ((0, 0), (1, 1), (1, 1)), mode="edge").reshape(3, n).T
        self._table = table.view(np.complex128).reshape(-1)             # (rows,): one item a pixel

    def _gather(self, src, centre, A, q):
        """(B, q, q, 4): (R, G, B, 1) of sources src (B,) at centre + A @ offset, bilinear, for
        the offsets (i - c, j - c) of a q x q patch, c = (q - 1) / 2. Every point must lie in
        its source (up to rounding: the border takes that)."""
        u = np.arange(q) - (q - 1) / 2                            # (q,) offsets from the centre
        A, dy, dx = A[:, :, :, None, None], u[:, None], u[None, :]
        sy = (centre[:, 0, None, None] + A[:, 0, 0] * dy) + A[:, 0, 1] * dx       # (B, p, p)
        sx = (centre[:, 1, None, None] + A[:, 1, 0] * dy) + A[:, 1, 1] * dx
        i0, j0 = np.floor(sy), np.floor(sx)                # the taps' top-left pixel
        wy = np.empty(sy.shape + (1,), np.float32)         # (B, q, q, 1) weights of the taps below
        wx = np.empty(sy.shape + (1,), np.float32)         # and to the right
        np.subtract(sy, i0, out=wy[..., 0])
        np.subtract(sx, j0, out=wx[..., 0])
        stride = self._hw[src, 1, None, None] + 2          # (B, 1, 1): table rows per image row
        i0 *= stride
        i0 += j0
        i0 += self._origin[src, None, None]                # integers, exact in float64
        row = i0.astype(np.int64)
        taps = [np.take(self._table, row + d).view(np.float32).reshape(sy.shape + (4,))
                for d in (0, 1, stride, stride + 1)]  # top-left, top-right, bottom-left, -right
        top, bottom = taps[0], taps[2]
        taps[1] -= top; taps[1] *= wx; top += taps[1]                    # in place: no temporaries
        taps[3] -= bottom; taps[3] *= wx; bottom += taps[3]
        bottom -= top; bottom *= wy; top += bottom
        return top

    def _draw_views(self, k, margin=0):
        """Random views of images k (B,): (src, centre, A, colour). The view's window, grown by
        `margin` px on each side in the patch's own frame, lies inside the source image;
        colour: (B, 3, 4), the map from (R, G, B, 1) to the patch's colours."""
        aug, rng, B = self.augment, self.rng, len(k)
        angle = rng.uniform(0, 2 * np.pi, B) if aug.rotate else np.zeros(B)
        flip = rng.random(B) < 0.5 if aug.flip else np.zeros(B, bool)
        # the window's half-size in the image at zoom 1 (a rotated square's bounding box)
        reach = ((self.p - 1) / 2 + margin) * (np.abs(np.cos(angle)) + np.abs(np.sin(angle)))
        fits = 2 * reach / (self.sizes[k].min(axis=1) - 1)          # the smallest zoom that fits
        lo = np.maximum(aug.scale[0], fits)
        scale = np.exp(rng.uniform(np.log(lo), np.log(np.maximum(aug.scale[1], lo))))
        half = (scale < 2 ** -0.5) & (self.sizes[k].min(axis=1) >= 4)
        src = np.where(half, k + len(self.images), k)
        scale = np.where(half, 2 * scale, scale)                        # the zoom on the half copy
        hw = self._hw[src]
        scale = np.maximum(scale, 2 * reach / (hw.min(axis=1) - 1))     # its sizes round down
        extent = (reach / scale)[:, None]                     # (B, 1): half-size in the source
        centre = rng.uniform(extent, np.maximum(hw - 1 - extent, extent))          # (B, 2)
        return src, centre, rotation(scale, angle, flip), self._draw_colours(B)

    def _draw_colours(self, B):
        """(B, 3, 4) colour maps: rgb -> contrast * gain * (hue, saturation)(rgb) + offset."""
        aug, rng = self.augment, self.rng
        grey = np.full((3, 3), 1 / 3)                          # projection onto the grey axis
        cross = np.array([[0, -1, 1], [1, 0, -1], [-1, 1, 0]]) / np.sqrt(3)  # v -> n x v, n grey
        hue = rng.uniform(-aug.hue, aug.hue, B)[:, None, None]
        sat = rng.uniform(*aug.saturation, B) * (rng.random(B) >= aug.grey)
        chroma = np.cos(hue) * (np.eye(3) - grey) + np.sin(hue) * cross  # turn about grey axis
        mix = grey + sat[:, None, None] * chroma                        # (B, 3, 3)
        gain = np.exp(rng.uniform(-aug.gain, aug.gain, (B, 3)))
        contrast = np.exp(rng.uniform(*np.log(aug.contrast), B))
        bright = rng.uniform(-aug.brightness, aug.brightness, B)
        colour = np.empty((B, 3, 4))
        colour[:, :, :3] = (contrast[:, None] * gain)[:, :, None] * mix
        colour[:, :, 3] = (0.5 * (1 - contrast) + bright)[:, None]
        return colour.astype(np.float32)

    def warp(self, src, centre, A, colour=None, q=None):
        """(B, 3, q, q) float32 in [0, 1]: view pixel (i, j) of source src[b] read bilinearly at
        centre[b] + A[b] @ (i - c, j - c), c = (q - 1) / 2 (the view's centre), then through
        its colour map. src: (B,) ints, the images 0..N-1 (N..2N-1: their half-resolution
        copies); centre: (B, 2) (y, x) in that source's pixels; A: (B, 2, 2); colour: (B, 3, 4)
        maps (R, G, B, 1) -> RGB, None for none; q: the side, default p. Every point read must
        lie in its source (0 <= y <= H - 1, 0 <= x <= W - 1). Needs augment on. In chunks of
        about CHUNK pixels, which stay in the CPU's cache from gather to colour map."""
        if self.augment is None:
            raise ValueError("PatchSampler.warp reads the augmentation's pixel table: make the "
                             "sampler with augment=True")
        src, centre, A = np.asarray(src), np.asarray(centre, np.float64), np.asarray(A, np.float64)
        q = self.p if q is None else q
        r = (q - 1) / 2
        corners = centre[:, None] + np.einsum("bij,cj->bci", A, [[-r, -r], [-r, r], [r, -r], [r, r]])
        if np.any(corners < -1e-6) or np.any(corners > self._hw[src, None] - 1 + 1e-6):
            raise ValueError("PatchSampler.warp: a patch reaches outside its image (points must "
                             "lie in 0 <= y <= H - 1, 0 <= x <= W - 1)")
        if colour is None:                                     # (R, G, B, 1) -> (R, G, B)
            colour = np.broadcast_to(np.eye(3, 4, dtype=np.float32), (len(src), 3, 4))
        B, n = len(src), q * q
        out = np.empty((B, 3, n), np.float32)
        step = max(1, self.CHUNK // n)
        for b in range(0, B, step):
            e = slice(b, b + step)
            x = self._gather(src[e], centre[e], A[e], q).reshape(-1, n, 4)   # (b, q * q, 4)
            np.matmul(colour[e], x.transpose(0, 2, 1), out=out[e])
        return np.clip(out, 0, 1, out=out).reshape(B, 3, q, q)

    # -- sampling ------------------------------------------------------------------------------

    def places(self, batch, margin=0):
        """Where `batch` anchors will be cut (a Places): random images, and random places in
        them (random views, with augment), each with room to move by `margin` px (the
        triplet's shift). patches_at and triplet cut the patches; a pool of places can be drawn
        once and cut again and again (targets.TargetPool)."""
        k = self.rng.integers(len(self.images), size=batch)
        if self.augment is not None:
            return Places(k, self._draw_views(k, margin), margin)
        return Places(k, self._corners(k, margin), margin)

    def patches_at(self, places):
        """(B, 3, p, p): the anchors at `places`."""
        if self.augment is not None:
            return self.warp(*places.at)
        y, x, _, _ = places.at
        return self._crops(places.k, y, x)

    def patches(self, batch):
        """(B, 3, p, p) patches at random images and places (and random views, with augment)."""
        return self.patches_at(self.places(batch))

    def triplet(self, batch, shift=4, noise=0.02, jitter=0.0, places=None, recolour=0.0,
                recolour_step=0.1):
        """(anchor, positive, negative), each (B, 3, p, p) float32 in [0, 1].
        positive: the anchor's window moved by up to +-shift px, plus N(0, noise^2) per pixel,
        and with jitter > 0 a brightness offset in +-jitter and a contrast factor in 1 +- jitter.
        negative: a random patch of a different image; with recolour > 0, each negative is
        instead, with that probability, the anchor itself recoloured: every pixel moved by one
        step of length recolour_step in a random direction of RGB (so that the teacher must
        tell a patch from the same patch in another colour, which the paper's negatives,
        other images' patches, seldom ask for).
        With augment, the anchor is a random view (zoom, rotation, mirror, colours) and the
        positive the same view moved by an integer (dy, dx) in +-shift px in the patch's own
        frame: both are cut from one view grown by shift px a side. The negative is a view of
        its own. places: the anchors' places, drawn by places(batch, margin=shift) (None: drawn
        here); positives and negatives are drawn afresh either way."""
        N, p = len(self.images), self.p
        if places is None:
            places = self.places(batch, margin=shift)
        if places.margin != shift:
            raise ValueError(f"PatchSampler.triplet: the places were drawn with room for a shift "
                             f"of {places.margin} px, not {shift}")
        k, batch = places.k, len(places.k)
        if self.augment is not None:
            grown = self.warp(*places.at, q=p + 2 * shift)
            a = np.ascontiguousarray(grown[:, :, shift:shift + p, shift:shift + p])
            y, x = self.rng.integers(0, 2 * shift + 1, (2, batch))      # shift + (dy, dx)
            pos = np.empty_like(a)
            for b, (yb, xb) in enumerate(zip(y, x)):
                pos[b] = grown[b, :, yb:yb + p, xb:xb + p]
            j = (k + self.rng.integers(1, N, size=batch)) % N            # any image but k
            neg = self.warp(*self._draw_views(j))
        else:
            y, x, my, mx = places.at                              # anchors, room to move by shift
            a = self._crops(k, y, x)
            dy, dx = self.rng.integers(-my, my + 1), self.rng.integers(-mx, mx + 1)
            pos = self._crops(k, y + dy, x + dx)
            j = (k + self.rng.integers(1, N, size=batch)) % N         # any image but k
            neg = self._crops(j, *self._corners(j)[:2])
        if jitter > 0:
            mean = pos.mean(axis=(1, 2, 3), keepdims=True)
            contrast = self.rng.uniform(1 - jitter, 1 + jitter, (batch, 1, 1, 1))
            bright = self.rng.uniform(-jitter, jitter, (batch, 1, 1, 1))
            pos = ((pos - mean) * contrast + mean + bright).astype(np.float32)
        if recolour > 0:
            self.recolour(a, neg, recolour, recolour_step)
        if noise > 0:                                  # float32 draws: half the work of float64
            pos += np.float32(noise) * self.rng.standard_normal(pos.shape, dtype=np.float32)
        return a, np.clip(pos, 0, 1, out=pos), neg

    def recolour(self, a, neg, share, step):
        """Replace about `share` of the negatives neg (in place) by their anchors a, each moved
        by a step of length `step` in a random direction of RGB, clipped to [0, 1]."""
        check_recolour(share, step)
        pick = np.flatnonzero(self.rng.random(len(a)) < share)
        u = self.rng.standard_normal((len(pick), 3))
        u *= step / np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12)
        neg[pick] = np.clip(a[pick] + u[:, :, None, None].astype(np.float32), 0, 1)
        return pick


def check_recolour(share, step):
    """Refuse a recolouring share outside [0, 1] or a step that is not positive, by name."""
    if not 0 <= share <= 1 or not step > 0:
        raise ValueError(f"recolour must lie in [0, 1] (got {share}) and recolour_step be "
                         f"positive (got {step})")


def _bilinear_taps(n_in, n_out, xp, dtype):
    """Source indices and weights along one axis, pixel centres aligned (align_corners=False,
    as torch's F.interpolate), so a distillation target matches a PyTorch reference."""
    src = (xp.arange(n_out, dtype=xp.float64) + 0.5) * (n_in / n_out) - 0.5
    src = xp.clip(src, 0, n_in - 1)
    i0 = xp.floor(src).astype(xp.int64)
    i1 = xp.minimum(i0 + 1, n_in - 1)
    w1 = (src - i0).astype(dtype)
    return i0, i1, 1 - w1, w1


def resize_batch(x, size):
    """Bilinear resize of a batch: (B, C, H, W) -> (B, C, size, size), NumPy or CuPy.
    Separable: rows first, then columns; no antialiasing (as torch's default)."""
    xp = get_array_module(x)
    B, C, H, W = x.shape
    i0, i1, w0, w1 = _bilinear_taps(H, size, xp, x.dtype)
    x = x[:, :, i0, :] * w0[:, None] + x[:, :, i1, :] * w1[:, None]      # (B, C, size, W)
    j0, j1, v0, v1 = _bilinear_taps(W, size, xp, x.dtype)
    return x[:, :, :, j0] * v0 + x[:, :, :, j1] * v1                     # (B, C, size, size)
