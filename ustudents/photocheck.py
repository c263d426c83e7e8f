"""A held-out anomaly check on real photos, in the MVTec AD layout (docs/method.md §7), and a
classical baseline to compare students against.

Each photo becomes one category, named after its file stem. The photo is cut into a grid of
blocks, each at least `block` pixels a side (default 1.25 x the crop size), coloured like a
checkerboard: the training crops (train/good) come from the blocks of one colour, the test
crops (good and defective) from the others, each crop inside one block, so no test pixel is
ever seen in training, while both parts sample the whole photo (a left/right split of a scene
would train on one half's content and test on the other's). Crops are size x size, at random
places, each turned by a random multiple of 90 degrees and flipped at random (training and test
crops alike), so one photo yields many distinct crops. Use photos that the teacher never saw in
pretraining (ustudents.natural's defaults are dead-leaves images and matplotlib's sample photo)
and no reserved data set.

Defects (DEFECTS) are the synthetic kinds of ustudents.synthetic drawn onto a real crop, with
synthetic.py's shapes (its curved scratch and wobbly blob):
    scratch  a thin curved line blended towards white or black
    stain    a blob tinted towards a colour far from the crop's mean there
    smudge   a blob blurred
    foreign  a blob of another texture pasted in: a crop of another photo's test part (with a
             single photo, synthetic.py's coarse weave)
A defect is redrawn elsewhere until it changes its region visibly (a mean absolute change of
at least MIN_CHANGE per channel), so a mask never marks pixels that look as they did; no pixel
outside the mask changes. Where no place on a crop works (a smudge on a flat, out-of-focus
part), another test crop is drawn: so smudged crops come from the textured parts of a photo.

Every category folder holds a record, `.ustudents_photocheck.json`: the photo, its blocks
(y0, y1, x0, x1, part) and each crop's place (its block; x, y of its top-left corner in the
photo; its quarter turns and flip; for 'foreign', the donor crop's place too).

The baseline (local_statistics_maps) is the classical one: at each pixel, the mean and the
standard deviation of each channel over a window, 2C features; a Gaussian (mean, covariance)
fitted to the features of every training pixel; a test pixel scores its squared Mahalanobis
distance. It runs in NumPy on the host only (device arrays are copied to the host first).

    make_photo_check(["china.jpg", "flower.jpg"], "out/photocheck/data")   # categories china, flower
    baseline_scores("out/photocheck/data", "china", size=128)["au_pro"]
"""
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter, uniform_filter

from .backend import asnumpy
from .data import GOOD, load_category, load_images, load_test, open_image, write_png
from .files import staged_folder, write_json
from .pipeline import evaluate_maps
from .synthetic import _blob, _scratch, _weave

DEFECTS = ("scratch", "stain", "smudge", "foreign")
MIN_CHANGE = 0.04     # least mean |defect - crop| over the defect's pixels, per channel, in [0, 1]
RECORD = ".ustudents_photocheck.json"
_LAYOUT = ("train", "test", "ground_truth")


def _crop(photo, x, y, size, turns, flip):
    """photo (H, W, 3) -> the (size, size, 3) crop at top-left (x, y), turned by `turns`
    quarter turns (np.rot90) and then, if flip, mirrored left to right."""
    c = np.rot90(photo[y:y + size, x:x + size], turns)
    return np.ascontiguousarray(c[:, ::-1] if flip else c)


def _random_crop(rng, photo, blocks, part, size):
    """A random crop inside one of the blocks of `part` ('train' or 'test'; blocks as
    photo_blocks makes them), the block picked uniformly: (crop (size, size, 3), its place as a
    dict, `block` its index in blocks)."""
    b = int(rng.choice([i for i, bl in enumerate(blocks) if bl["part"] == part]))
    y0, y1, x0, x1 = (blocks[b][k] for k in ("y0", "y1", "x0", "x1"))
    place = dict(block=b, x=int(rng.integers(x0, x1 - size + 1)),
                 y=int(rng.integers(y0, y1 - size + 1)),
                 turns=int(rng.integers(0, 4)), flip=bool(rng.integers(0, 2)))
    crop = _crop(photo, place["x"], place["y"], size, place["turns"], place["flip"])
    return crop, place


def _defect_pixels(crop, mask, kind, rng, donor):
    """What the defect region shows: (S, S, 3) float, used where mask is True."""
    if kind == "scratch":
        target = float(rng.integers(0, 2))                   # white or black
        return crop + rng.uniform(0.3, 0.55) * (target - crop)
    if kind == "stain":
        # of four random colours the one farthest from the region's mean, so it never blends in
        local = crop[mask].mean(axis=0)
        cands = rng.uniform(0, 1, (4, crop.shape[2]))
        colour = cands[np.argmax(np.abs(cands - local).sum(axis=1))]
        return crop + rng.uniform(0.3, 0.55) * (colour - crop)
    if kind == "smudge":
        s = rng.uniform(1.5, 3.0) * crop.shape[0] / 128
        return gaussian_filter(crop, sigma=(s, s, 0))
    return donor                                             # foreign


def _try_defect(crop, kind, rng, donor, tries=200):
    """add_defect's drawing: (img, mask), or None when `tries` placements all fail."""
    S = crop.shape[0]
    min_px = max(6, int(0.002 * S * S))
    for _ in range(tries):
        cy, cx = rng.integers(0, S, 2)
        mask = (_scratch(rng, S, cy, cx) if kind == "scratch"
                else _blob(rng, S, cy, cx, rng.uniform(0.05, 0.13) * S))
        if mask.sum() < min_px:
            continue
        new = np.clip(_defect_pixels(crop, mask, kind, rng, donor), 0, 1)
        if np.abs(new - crop)[mask].mean() >= MIN_CHANGE:
            return np.where(mask[..., None], new, crop), mask
    return None


def add_defect(crop, kind, rng, donor=None):
    """Draw a defect of `kind` (one of DEFECTS) onto a real crop.

    crop: (S, S, 3) float in [0, 1]; donor: (S, S, 3) float, the texture a 'foreign' defect
    pastes in (default: synthetic.py's coarse weave). The shape is synthetic.py's: a scratch
    for 'scratch', a blob of 5-13 % of S in radius otherwise, placed at random and redrawn (up
    to 200 times) until it covers at least max(6, 0.2 % of S * S) pixels and changes them by at
    least MIN_CHANGE on average. Returns (img (S, S, 3) float in [0, 1], mask (S, S) bool); img
    equals crop outside the mask. A ValueError says when no placement works (a smudge on a
    crop without texture)."""
    crop = np.asarray(crop, dtype=np.float64)
    if kind not in DEFECTS:
        raise ValueError(f"unknown defect kind {kind!r}; choose from {DEFECTS}")
    if crop.ndim != 3 or crop.shape[2] != 3 or crop.shape[0] != crop.shape[1]:
        raise ValueError(f"a crop must be (S, S, 3), got shape {crop.shape}")
    if kind == "foreign":
        donor = _weave_donor(rng, crop.shape[0]) if donor is None else donor
        if np.shape(donor) != crop.shape:
            raise ValueError(f"the donor of a foreign defect must be {crop.shape}, got {np.shape(donor)}")
    drawn = _try_defect(crop, kind, rng, donor)
    if drawn is None:
        raise ValueError(f"could not draw a visible {kind} on this {crop.shape[0]}x{crop.shape[0]} "
                         f"crop in 200 tries: is it flat (a smudge changes nothing there) or saturated?")
    return drawn


def _test_kinds(n_test):
    """The kind of each of n_test test images: a quarter (at least one) 'good', the rest
    spread over DEFECTS in turn."""
    n_good = max(1, round(n_test / 4))
    return [GOOD if k < n_good else DEFECTS[(k - n_good) % len(DEFECTS)] for k in range(n_test)]


def photo_blocks(height, width, block):
    """The checkerboard of a height x width photo: as many rows and columns of blocks as fit
    with each block at least `block` pixels a side (edges from np.linspace, so the blocks
    differ by at most a pixel). Block (r, c) is 'train' when r + c is even, else 'test'.
    Returns a list of dicts y0, y1, x0, x1 (half-open), part; rows first."""
    rows, cols = height // block, width // block
    ys = np.linspace(0, height, rows + 1).astype(int) if rows else []
    xs = np.linspace(0, width, cols + 1).astype(int) if cols else []
    return [dict(y0=int(ys[r]), y1=int(ys[r + 1]), x0=int(xs[c]), x1=int(xs[c + 1]),
                 part="train" if (r + c) % 2 == 0 else "test")
            for r in range(rows) for c in range(cols)]


def _read_photo(path, block):
    """(photo (H, W, 3) float in [0, 1], its blocks); refused by name if it holds fewer than
    two blocks (one for training, one for testing)."""
    photo = np.asarray(open_image(path).convert("RGB"), dtype=np.float64) / 255.0
    h, w = photo.shape[:2]
    blocks = photo_blocks(h, w, block)
    if len(blocks) < 2:
        raise ValueError(f"photo {path} is {w}x{h} (WxH): it must hold two blocks of {block}x{block} "
                         f"px side by side or one above the other (one to train on, one to test "
                         f"on); use a larger photo or a smaller size")
    return photo, blocks


def _to_uint8(img):
    return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)


def _weave_donor(rng, S):
    """The texture a 'foreign' defect pastes in when no other photo gives one: synthetic.py's
    coarse weave, (S, S, 3) in [0, 1]."""
    return np.clip(_weave(rng, S, period=5.0)[0], 0, 1)


def _defect_crop(rng, photo, blocks, donors, size, kind, crops_to_try=50):
    """A test crop with a visible defect of `kind`: fresh crops of the test blocks until one
    takes it (a smudge needs texture). donors: (category, photo, blocks) of the other photos,
    whose test blocks give 'foreign' its texture. Returns (img, mask, place) with the place of
    the crop used (and of its donor)."""
    for _ in range(crops_to_try):
        crop, place = _random_crop(rng, photo, blocks, "test", size)
        donor = None
        if kind == "foreign":
            if donors:
                name, other, other_blocks = donors[int(rng.integers(0, len(donors)))]
                donor, donor_place = _random_crop(rng, other, other_blocks, "test", size)
                place["donor"] = dict(category=name, **donor_place)
            else:
                donor = _weave_donor(rng, size)
        try:
            img, mask = add_defect(crop, kind, rng, donor)   # kind and donor are ours: valid
        except ValueError:                                   # no visible placement on this crop
            continue
        return img, mask, place
    raise ValueError(f"could not draw a visible {kind} on any of {crops_to_try} test crops of "
                     f"{size}x{size}: the photo's test blocks look flat")


def _write_category(staging, k, photo, blocks, donors, size, n_train, n_test, seed):
    """Write one category's crops under staging; returns the list of crop records."""
    crops = []
    for i in range(n_train):
        rng = np.random.default_rng([seed, k, 0, i])         # one stream per image: order-free
        img, place = _random_crop(rng, photo, blocks, "train", size)
        name = Path("train", GOOD, f"{i:03d}.png")
        write_png(_to_uint8(img), staging / name)
        crops.append(dict(file=str(name), **place))
    counts = {}
    for i, kind in enumerate(_test_kinds(n_test)):
        rng = np.random.default_rng([seed, k, 1, i])
        stem = f"{counts.setdefault(kind, 0):03d}"
        counts[kind] += 1
        name = Path("test", kind, f"{stem}.png")
        if kind == GOOD:
            img, place = _random_crop(rng, photo, blocks, "test", size)
        else:
            img, mask, place = _defect_crop(rng, photo, blocks, donors, size, kind)
            place["mask"] = str(Path("ground_truth", kind, f"{stem}_mask.png"))
            write_png(mask.astype(np.uint8) * 255, staging / place["mask"])
        write_png(_to_uint8(img), staging / name)
        crops.append(dict(file=str(name), **place))
    return crops


def make_photo_check(photos, root, size=128, n_train=20, n_test=16, seed=0, block=None):
    """Write one category per photo under root in the MVTec AD layout; returns root as a Path.

    photos: image paths (any size; grayscale is read as RGB), each with its own file stem, the
    category's name. n_train crops from a photo's training blocks go to train/good; n_test from
    its test blocks go to test/ (a quarter, at least one, in test/good, the others spread over
    DEFECTS, with ground_truth/<kind>/<id>_mask.png, 0/255). block: the blocks' least side
    (default ceil(1.25 * size); at least size). Deterministic for (photos, size, n_train,
    n_test, seed, block). Each category folder is written whole under a hidden name and
    swapped in (files.staged_folder); an existing folder is replaced only if this function
    made it (it holds RECORD), otherwise FileExistsError."""
    photos = [Path(p) for p in photos]
    root = Path(root)
    if not photos:
        raise ValueError("no photos given: pass one or more image files")
    stems = [p.stem for p in photos]
    if len(set(stems)) < len(stems):
        raise ValueError(f"photos must have distinct file names (each names a category): {stems}")
    if size < 32 or n_train < 2 or n_test < 1:
        raise ValueError(f"need size >= 32, n_train >= 2, n_test >= 1; got {size}, {n_train}, {n_test}")
    block = int(np.ceil(1.25 * size)) if block is None else block
    if block < size:
        raise ValueError(f"block {block} is smaller than the crop size {size}")
    read = [_read_photo(p, block) for p in photos]            # every photo checked first
    for stem in stems:
        base = root / stem
        if base.exists() and not (base / RECORD).is_file() and any(base.iterdir()):
            raise FileExistsError(f"{base} exists and was not made by make_photo_check; "
                                  f"choose another root or remove it")
    for k, (path, stem, (photo, blocks)) in enumerate(zip(photos, stems, read)):
        donors = [(s, ph, bl) for j, (s, (ph, bl)) in enumerate(zip(stems, read)) if j != k]
        with staged_folder(root / stem, lambda name: name in _LAYOUT,
                           f"photo check {root / stem}") as staging:
            crops = _write_category(staging, k, photo, blocks, donors, size, n_train, n_test, seed)
            write_json(staging / RECORD, dict(
                photo=str(path), photo_size=list(photo.shape[:2]), size=size, n_train=n_train,
                n_test=n_test, seed=seed, block=block, blocks=blocks, crops=crops))
    return root


def local_statistics(images, window):
    """images (N, C, H, W), NumPy -> (N, 2C, H, W) float64: each channel's mean, then its standard
    deviation, over the window x window neighbourhood of every pixel (edges mirrored)."""
    x = np.asarray(images, dtype=np.float64)
    size = (1, 1, window, window)
    mean = uniform_filter(x, size=size, mode="reflect")
    var = uniform_filter(x * x, size=size, mode="reflect") - mean ** 2
    return np.concatenate([mean, np.sqrt(np.maximum(var, 0))], axis=1)


def _check_images(images, what):
    shape = np.shape(images)
    if len(shape) != 4 or shape[0] == 0:
        raise ValueError(f"{what} must be a non-empty (N, C, H, W) array, got shape {shape}")
    return shape


def local_statistics_maps(train_images, test_images, window=17):
    """Anomaly maps of the local-statistics baseline (module docstring), NumPy on the host.

    train_images (N, C, H, W), anomaly-free; test_images (M, C, H', W'), same C. window: the
    side of the neighbourhood (default 17, the patch of the p = 17 students). The features'
    mean and covariance come from every training pixel, accumulated image by image; the
    covariance gets a ridge of 1e-6 of its mean variance, so a constant feature does not make
    it singular. Returns (M, H', W') float32: squared Mahalanobis distances."""
    train_images, test_images = asnumpy(train_images), asnumpy(test_images)    # host from here on
    tr, te = _check_images(train_images, "train_images"), _check_images(test_images, "test_images")
    if tr[1] != te[1]:
        raise ValueError(f"train_images have {tr[1]} channels, test_images {te[1]}")
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 2:
        raise ValueError(f"window must be a whole number of at least 2 pixels, got {window!r}")
    n_features = 2 * tr[1]
    total, outer, count = np.zeros(n_features), np.zeros((n_features, n_features)), 0
    for img in train_images:                      # one image at a time: memory of one
        f = local_statistics(img[None], window)[0].reshape(n_features, -1)
        total += f.sum(axis=1)
        outer += f @ f.T
        count += f.shape[1]
    mean = total / count
    cov = outer / count - np.outer(mean, mean)
    cov += (1e-6 * np.trace(cov) / n_features + 1e-12) * np.eye(n_features)
    precision = np.linalg.inv(cov)
    maps = np.empty((te[0],) + tuple(te[2:]), dtype=np.float32)
    for k, img in enumerate(test_images):
        d = local_statistics(img[None], window)[0] - mean[:, None, None]
        maps[k] = np.einsum("fhw,fg,ghw->hw", d, precision, d)
    return maps


def baseline_scores(root, category, size=128, window=17):
    """The baseline on one category of an MVTec AD layout at working size `size`: fitted on
    every train/good image, scored on test/, maps resized back to each test image's own size
    and measured as the pipeline measures students (AU-PRO up to FPR 0.3, pixel and image
    AUROC, AU-PRO per defect type). Returns that dict."""
    cat = load_category(root, category)
    train = load_images(cat.train, size)
    test = load_test(cat.test, size)
    return evaluate_maps(local_statistics_maps(train, test.images, window), test)[1]
