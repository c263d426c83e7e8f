"""Natural-image patches for pretraining the teacher (docs/method.md §1 and §7).

The paper pretrains on ImageNet patches. Any folder of photos works here (ImageNet, your own);
offline, the default is procedural "dead leaves" images (random occluding discs and rectangles
at all scales, flat, shaded, striped or grainy: the edge and size statistics of natural scenes)
plus matplotlib's bundled sample photo. The synthetic anomaly textures of synthetic.py are kept
out on purpose: texture close-ups that may serve as evaluation data must not be seen in teacher
pretraining.

    images = natural_images()                       # (64, 3, 256, 256) float32 in [0, 1]
    sampler = PatchSampler(images, p=33, seed=0)
    a, pos, neg = sampler.triplet(64)               # each (64, 3, 33, 33)
    x64 = resize_batch(a, 64)                       # (64, 3, 64, 64), the ImageNet network's input
"""
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import distance_transform_edt, gaussian_filter

from ustudents.backend import get_array_module
from ustudents.data import open_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def _fit(img, size):
    """A Pillow image -> (3, size, size) float32: shorter side resized to size, centre crop."""
    img = img.convert("RGB")
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.BILINEAR, reducing_gap=3.0)  # reducing_gap: fast on big photos
    left, top = (nw - size) // 2, (nh - size) // 2
    img = img.crop((left, top, left + size, top + size))
    return np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0


def _leaf_fill(rng, yy, xx, r, S):
    """The look of one leaf on its bounding box: (h, w, 3). Colours are muted (a grey level plus
    a little chroma), as in photos; the leaf is flat, shaded, striped or grainy."""
    col = rng.uniform(0.05, 0.95) + rng.normal(0, 0.12, 3)
    kind = rng.uniform()
    if kind < 0.5:
        return np.broadcast_to(col, yy.shape + (3,))
    if kind < 0.75:
        g = rng.uniform(-1, 1, 2) * 0.4 / max(r, 1)
        return col + (yy * g[0] + xx * g[1])[..., None] * rng.uniform(0.3, 1, 3)
    if kind < 0.9:
        th, period = rng.uniform(0, np.pi), rng.uniform(2, 12) * S / 256 + 1
        wave = np.sin(2 * np.pi * (xx * np.cos(th) + yy * np.sin(th)) / period)
        return col + 0.2 * wave[..., None] * rng.uniform(-1, 1, 3)
    return col + rng.uniform(0.03, 0.15) * rng.standard_normal(yy.shape + (1,))


def dead_leaves(rng, size=256):
    """One dead-leaves image, (3, size, size) float32 in [0, 1].

    Discs and rotated rectangles fall one behind the other (front to back: each paints only
    what is still uncovered) until 99.8 % of the image is covered. Radii follow p(r) ~ r^-2.5
    between 2 px (at 256 px) and 0.3 * size: many small leaves, a few large ones, every scale."""
    S = size
    img = np.zeros((S, S, 3))
    covered = np.zeros((S, S), bool)
    rmin, rmax = 2.0 * S / 256, 0.3 * S
    n_max = int(5000 * (S / 256) ** 2) + 100
    u = rng.uniform(0, 1, n_max)
    radii = (rmin ** -1.5 - u * (rmin ** -1.5 - rmax ** -1.5)) ** (-1 / 1.5)  # inverse CDF
    centres = rng.uniform(-radii, S + radii, (2, n_max)).T   # (n_max, 2): leaves may overhang
    for k, (r, (cy, cx)) in enumerate(zip(radii, centres)):
        if k % 100 == 0 and covered.mean() > 0.998:
            break
        y0, y1 = max(0, int(cy - 1.5 * r)), min(S, int(cy + 1.5 * r) + 2)
        x0, x1 = max(0, int(cx - 1.5 * r)), min(S, int(cx + 1.5 * r) + 2)
        if y0 >= y1 or x0 >= x1 or covered[y0:y1, x0:x1].all():
            continue  # entirely hidden behind leaves in front: nothing to draw
        yy = np.arange(y0, y1, dtype=np.float32)[:, None] - cy    # (h, 1)
        xx = np.arange(x0, x1, dtype=np.float32)[None, :] - cx    # (1, w)
        yy, xx = np.broadcast_arrays(yy, xx)                      # (h, w) views, no copies
        if rng.uniform() < 0.6:
            shape = yy ** 2 + xx ** 2 < r ** 2
        else:  # a rotated rectangle of random aspect
            th, asp = rng.uniform(0, np.pi), rng.uniform(0.3, 1.0)
            uu, vv = xx * np.cos(th) + yy * np.sin(th), -xx * np.sin(th) + yy * np.cos(th)
            shape = (np.abs(uu) < r) & (np.abs(vv) < r * asp)
        free = shape & ~covered[y0:y1, x0:x1]
        if free.any():
            img[y0:y1, x0:x1][free] = _leaf_fill(rng, yy, xx, r, S)[free]
            covered[y0:y1, x0:x1] |= shape
    # the last specks of gap take the colour of the nearest leaf (far cheaper than more leaves)
    nearest = distance_transform_edt(~covered, return_distances=False, return_indices=True)
    img = img[nearest[0], nearest[1]]
    # a slight blur stands in for a lens (no perfectly sharp edges), a little sensor noise
    img = gaussian_filter(img, sigma=(0.6, 0.6, 0)) + 0.01 * rng.standard_normal(img.shape)
    return np.clip(img, 0, 1).astype(np.float32).transpose(2, 0, 1)


def sample_photo(size=256):
    """matplotlib's bundled photo (Grace Hopper), (3, size, size) float32 in [0, 1]."""
    from matplotlib.cbook import get_sample_data  # only here: data reading, no pyplot
    return _fit(open_image(get_sample_data("grace_hopper.jpg", asfileobj=False)), size)


def natural_images(folder=None, n=64, size=256, seed=0):
    """Natural images as (N, 3, size, size) float32 in [0, 1].

    folder: any folder of photos (searched recursively, any size, RGB or grayscale); each is
    resized so its shorter side is `size` and centre-cropped. If it holds more than n images,
    n of them are picked at random (seeded); n=None takes all.
    folder=None: the offline default, n - 1 dead-leaves images and the matplotlib sample photo."""
    rng = np.random.default_rng(seed)
    if folder is None:
        if n is None or n < 2:
            raise ValueError(f"the default images need n >= 2, got {n}")
        leaves = [dead_leaves(np.random.default_rng([seed, k]), size) for k in range(n - 1)]
        return np.stack(leaves + [sample_photo(size)])
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder does not exist: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    if n is not None and len(files) > n:
        files = [files[i] for i in sorted(rng.choice(len(files), n, replace=False))]
    return np.stack([_fit(open_image(p), size) for p in files])


class PatchSampler:
    """Random p x p patches of a set of images, and triplets for metric learning (docs/method.md §1).

    images: (N, 3, H, W) array or a list of (3, H_i, W_i) float arrays, N >= 2 (negatives
    come from another image), every side >= p. Returns NumPy float32; move it to the device."""

    def __init__(self, images, p, seed=0):
        self.images = [np.asarray(im, dtype=np.float32) for im in images]
        if len(self.images) < 2:
            raise ValueError(f"need at least 2 images (negatives come from another image), "
                             f"got {len(self.images)}")
        for k, im in enumerate(self.images):
            if im.ndim != 3 or im.shape[0] != 3 or min(im.shape[1:]) < p:
                raise ValueError(f"image {k} has shape {im.shape}; need (3, H, W) with H, W >= {p}")
        self.p = p
        self.sizes = np.array([im.shape[1:] for im in self.images])    # (N, 2): H, W of each
        self.rng = np.random.default_rng(seed)

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

    def patches(self, batch):
        """(B, 3, p, p) patches at random images and places."""
        k = self.rng.integers(len(self.images), size=batch)
        y, x, _, _ = self._corners(k)
        return self._crops(k, y, x)

    def triplet(self, batch, shift=4, noise=0.02, jitter=0.0):
        """(anchor, positive, negative), each (B, 3, p, p) float32 in [0, 1].
        positive: the anchor's window moved by up to +-shift px, plus N(0, noise^2) per pixel,
        and with jitter > 0 a brightness offset in +-jitter and a contrast factor in 1 +- jitter.
        negative: a random patch of a different image."""
        N = len(self.images)
        k = self.rng.integers(N, size=batch)
        y, x, my, mx = self._corners(k, shift)                   # anchors, room to move by shift
        a = self._crops(k, y, x)
        pos = self._crops(k, y + self.rng.integers(-my, my + 1), x + self.rng.integers(-mx, mx + 1))
        j = (k + self.rng.integers(1, N, size=batch)) % N         # any image but k
        neg = self._crops(j, *self._corners(j)[:2])
        if jitter > 0:
            mean = pos.mean(axis=(1, 2, 3), keepdims=True)
            contrast = self.rng.uniform(1 - jitter, 1 + jitter, (batch, 1, 1, 1))
            bright = self.rng.uniform(-jitter, jitter, (batch, 1, 1, 1))
            pos = ((pos - mean) * contrast + mean + bright).astype(np.float32)
        if noise > 0:                                  # float32 draws: half the work of float64
            pos += np.float32(noise) * self.rng.standard_normal(pos.shape, dtype=np.float32)
        return a, np.clip(pos, 0, 1, out=pos), neg


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
