"""Natural images for pretraining the teacher (docs/method.md §1 and §7).

The paper pretrains on ImageNet patches. Any folder of photos works here (ImageNet, your own);
offline, the default is procedural "dead leaves" images (random occluding discs and rectangles
at all scales, flat, shaded, striped or grainy: the edge and size statistics of natural scenes)
plus matplotlib's bundled sample photo. The synthetic anomaly textures of synthetic.py are kept
out on purpose: texture close-ups that may serve as evaluation data must not be seen in teacher
pretraining.

    images = natural_images()                       # (64, 3, 256, 256) float32 in [0, 1]

patches.py cuts the teacher's training patches out of them.
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


# The photographs among matplotlib's sample data. The rest of it is no photo: a clip-art icon
# (Minduka_Present_Blue_Pack.png), matplotlib's logo, an MRI slice (s1045.ima.gz), elevation
# grids (jacksboro_fault_dem.npz, topobathy.npz), a sampled function and tables.
DEFAULT_PHOTOS = ("grace_hopper.jpg",)


def sample_photo(size=256, name="grace_hopper.jpg"):
    """A photo of matplotlib's sample data (default: Grace Hopper), (3, size, size) float32
    in [0, 1]."""
    from matplotlib.cbook import get_sample_data  # only here: data reading, no pyplot
    return _fit(open_image(get_sample_data(name, asfileobj=False)), size)


def natural_images(folder=None, n=64, size=256, seed=0):
    """Natural images as (N, 3, size, size) float32 in [0, 1].

    folder: any folder of photos (searched recursively, any size, RGB or grayscale); each is
    resized so its shorter side is `size` and centre-cropped. If it holds more than n images,
    n of them are picked at random (seeded); n=None takes all.
    folder=None: the offline default, n - len(DEFAULT_PHOTOS) dead-leaves images followed by
    matplotlib's sample photos (DEFAULT_PHOTOS)."""
    rng = np.random.default_rng(seed)
    if folder is None:
        if n is None or n <= len(DEFAULT_PHOTOS):
            raise ValueError(f"the default images need n >= {len(DEFAULT_PHOTOS) + 1} "
                             f"(dead leaves and {len(DEFAULT_PHOTOS)} photos), got {n}")
        leaves = [dead_leaves(np.random.default_rng([seed, k]), size)
                  for k in range(n - len(DEFAULT_PHOTOS))]
        return np.stack(leaves + [sample_photo(size, name) for name in DEFAULT_PHOTOS])
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder does not exist: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    if n is not None and len(files) > n:
        files = [files[i] for i in sorted(rng.choice(len(files), n, replace=False))]
    return np.stack([_fit(open_image(p), size) for p in files])
