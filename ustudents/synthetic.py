"""Offline synthetic anomaly data in the MVTec AD layout (docs/method.md §7), for tests, tutorials
and the demo. Nothing is downloaded: every image is drawn here from a seed.

Categories (stored as MVTec stores them: colour as RGB PNG, grayscale as 8-bit 'L' PNG)
    weave  colour texture: red and cream threads in a plain weave, slightly rotated per image
    felt   grayscale texture: horizontal fibres over a cloudy base, like carpet or felt
    nut    colour object: a bronze hexagon nut on a plain background, random shift and rotation
Defect kinds (each category uses four; every defect image has an exact 0/255 mask: the
defect's region, and no pixel outside it differs from the anomaly-free image)
    scratch  a thin curved line, lighter or darker
    stain    a blob tinted towards a colour
    smudge   a blob blurred
    missing  structure removed in a blob (warp threads pulled, a chip knocked out of the nut)
    foreign  a blob of a different texture pasted in (vertical felt in felt, weave on the nut)

Defects vary in size (about 5-15 % of the image side) and are blended, not painted at full
contrast, so a weak model scores visibly worse than a good one.

    make_dataset("data/synthetic")                  # 3 categories, 40 train + 20 test, 128 px
"""
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy.ndimage import gaussian_filter

from ustudents.data import write_png
from ustudents.files import write_json

CATEGORIES = ("weave", "felt", "nut")
DEFECTS = {
    "weave": ("scratch", "stain", "missing", "smudge"),
    "felt": ("scratch", "smudge", "stain", "foreign"),
    "nut": ("scratch", "stain", "missing", "foreign"),
}
_MARKER = ".ustudents_synthetic.json"  # marks a folder as ours, so regenerating may replace it
_VERSION = 1  # bump when the drawings change, so old folders are remade


def _grid(S):
    y, x = np.mgrid[0:S, 0:S].astype(np.float32)
    return y, x


def _weave(rng, S, period=9.0):
    """Plain weave: thread (i, j) shows the warp on top when i + j is even.
    Returns (img (S, S, 3), weft_only (S, S, 3): the same cloth with its warp threads pulled)."""
    f = S / 128
    y, x = _grid(S)
    th = np.deg2rad(rng.uniform(-3, 3))
    p = period * f * rng.uniform(0.95, 1.05)
    u = (x * np.cos(th) + y * np.sin(th)) / p + rng.uniform(0, 1)
    v = (-x * np.sin(th) + y * np.cos(th)) / p + rng.uniform(0, 1)
    i, j = np.floor(u).astype(int), np.floor(v).astype(int)
    warp = np.array([0.70, 0.25, 0.20]) + 0.04 * rng.standard_normal((64, 3))  # per-thread dye
    weft = np.array([0.85, 0.80, 0.60]) + 0.04 * rng.standard_normal((64, 3))
    on_top = ((i + j) % 2 == 0)[..., None]
    # a thread is a cylinder: bright along its middle, dark at its edges (sin profile)
    shade_u = (0.45 + 0.55 * np.sin(np.pi * (u - i)))[..., None]
    shade_v = (0.45 + 0.55 * np.sin(np.pi * (v - j)))[..., None]
    weft_only = weft[j % 64] * shade_v
    img = np.where(on_top, warp[i % 64] * shade_u, weft_only)
    noise = 0.02 * rng.standard_normal(img.shape)
    return img + noise, weft_only + noise


def _felt(rng, S):
    """Fibres (noise smoothed far more along x than y) over a cloudy base. Returns (S, S, 1)."""
    f = S / 128
    fib = gaussian_filter(rng.standard_normal((S, S)), sigma=(0.7 * f, 3.5 * f))
    cloud = gaussian_filter(rng.standard_normal((S, S)), sigma=5 * f)
    img = 0.5 + 0.10 * fib / fib.std() + 0.06 * cloud / cloud.std()
    return img[..., None]


def _nut_background(rng, S):
    return np.array([0.18, 0.20, 0.24]) + 0.01 * rng.standard_normal((S, S, 3))


def _nut(rng, S):
    """A hexagon nut with a round hole; pose (shift, rotation) random. Returns (img (S,S,3),
    body (S,S) bool, background (S,S,3): what shows where the nut is missing)."""
    y, x = _grid(S)
    cy, cx = S / 2 + rng.uniform(-0.04, 0.04, 2) * S
    dy, dx = y - cy, x - cx
    r = np.hypot(dy, dx)
    apothem = 0.30 * S * rng.uniform(0.97, 1.03)
    angles = rng.uniform(0, np.pi / 3) + np.arange(3) * np.pi / 3
    hexagon = np.max([np.abs(dx * np.cos(a) + dy * np.sin(a)) for a in angles], axis=0) <= apothem
    body = hexagon & (r <= 1.08 * apothem) & (r > 0.13 * S)   # corners slightly rounded
    light = 0.78 + 0.22 * (dx - dy) / (1.5 * apothem)          # lit from the top right
    chamfer = np.where(r < 0.19 * S, 1.15, 1.0)                # a bright bevel round the hole
    metal = np.array([0.78, 0.58, 0.32]) * (light * chamfer)[..., None]
    metal = metal + 0.015 * rng.standard_normal(metal.shape)
    bg = _nut_background(rng, S)
    return np.where(body[..., None], metal, bg), body, bg


def _render(category, rng, S):
    """(img (S,S,C) float, region where defects go (S,S) bool, background for 'missing')."""
    if category == "weave":
        img, weft_only = _weave(rng, S)
        return img, np.ones((S, S), bool), weft_only
    if category == "felt":
        return _felt(rng, S), np.ones((S, S), bool), None
    if category == "nut":
        return _nut(rng, S)
    raise ValueError(f"unknown synthetic category {category!r}; choose from {CATEGORIES}")


def _foreign(category, rng, S):
    """Texture from elsewhere: vertical felt inside felt, a coarse weave on the nut."""
    if category == "felt":
        return _felt(rng, S).transpose(1, 0, 2)
    return _weave(rng, S, period=5.0)[0]


def _blob(rng, S, cy, cx, radius):
    """An irregular closed shape: an ellipse whose radius wobbles with angle. (S, S) bool."""
    y, x = _grid(S)
    rot, aspect = rng.uniform(0, np.pi), rng.uniform(0.5, 1.0)
    u = (x - cx) * np.cos(rot) + (y - cy) * np.sin(rot)
    v = (-(x - cx) * np.sin(rot) + (y - cy) * np.cos(rot)) / aspect
    ang = np.arctan2(v, u)
    wobble = 1 + sum(rng.uniform(-0.12, 0.12) * np.cos(k * ang + rng.uniform(0, 2 * np.pi))
                     for k in (2, 3, 5))
    return np.hypot(u, v) < radius * wobble


def _scratch(rng, S, cy, cx):
    """A thin quadratic Bezier curve, 1-2.5 px wide at 128 px, drawn by Pillow. (S, S) bool."""
    f = S / 128
    length = rng.uniform(0.2, 0.45) * S
    a = rng.uniform(0, np.pi)
    d = np.array([np.cos(a), np.sin(a)]) * length / 2
    c = np.array([cx, cy])
    ctrl = c + np.array([-d[1], d[0]]) * rng.uniform(-0.6, 0.6)
    t = np.linspace(0, 1, 64)[:, None]
    pts = (1 - t) ** 2 * (c - d) + 2 * t * (1 - t) * ctrl + t ** 2 * (c + d)
    canvas = Image.new("L", (S, S), 0)
    ImageDraw.Draw(canvas).line([tuple(p) for p in pts], fill=255,
                                width=max(1, round(rng.uniform(1, 2.5) * f)), joint="curve")
    return np.asarray(canvas) > 0


def defect_image(category, kind, rng, S):
    """One defect image: (img (S,S,C) float in [0,1], mask (S,S) bool: the defect's region).
    With the same rng state, good_image draws the same image without the defect."""
    if kind not in DEFECTS[category]:
        raise ValueError(f"category {category!r} has defects {DEFECTS[category]}, not {kind!r}")
    img, region, bg = _render(category, rng, S)
    img = np.clip(img, 0, 1)
    min_px = max(6, int(0.002 * S * S))
    for _ in range(100):  # redraw shapes that miss the object or come out too small
        cy, cx = np.unravel_index(rng.choice(np.flatnonzero(region)), region.shape)
        radius = rng.uniform(0.05, 0.13) * S
        shape = _scratch(rng, S, cy, cx) if kind == "scratch" else _blob(rng, S, cy, cx, radius)
        mask = shape & region
        if mask.sum() >= min_px:
            break
    else:
        raise RuntimeError(f"could not place a {kind} defect on {category} at size {S}")

    if kind == "scratch":
        target = float(rng.integers(0, 2))                  # white or black
        new = img + rng.uniform(0.3, 0.55) * (target - img)
    elif kind == "stain":
        # the candidate colour farthest from the local mean, so a stain never blends in
        local = img[mask].mean(axis=0)
        cands = rng.uniform(0, 1, (4, img.shape[2]))
        colour = cands[np.argmax(np.abs(cands - local).sum(axis=1))]
        new = img + rng.uniform(0.3, 0.55) * (colour - img)
    elif kind == "smudge":
        s = rng.uniform(1.5, 3.0) * S / 128
        new = gaussian_filter(img, sigma=(s, s, 0))
    elif kind == "missing":
        new = bg
    else:  # foreign
        new = _foreign(category, rng, S)
    return np.clip(np.where(mask[..., None], new, img), 0, 1), mask


def good_image(category, rng, S):
    """One anomaly-free image: (S, S, C) float in [0, 1], C = 1 for grayscale categories."""
    return np.clip(_render(category, rng, S)[0], 0, 1)


def _to_uint8(img):
    a = np.round(img * 255).astype(np.uint8)
    return a[..., 0] if a.shape[2] == 1 else a  # (S, S) for 'L', (S, S, 3) for 'RGB'


def _test_names(category, n_test):
    """(kind, name) of each of the n_test test images, in drawing order: a quarter (at least
    one) 'good', the rest spread over the defect kinds, numbered per kind."""
    kinds = DEFECTS[category]
    n_good = max(1, round(n_test / 4))
    counts = dict.fromkeys(("good",) + kinds, 0)
    out = []
    for k in range(n_test):
        kind = "good" if k < n_good else kinds[(k - n_good) % len(kinds)]
        out.append((kind, f"{counts[kind]:03d}"))
        counts[kind] += 1
    return out


def _written_files(category, n_train, n_test):
    """The paths, relative to the category folder, that _write_category writes: what
    regenerating may delete (the user's own files there are left alone)."""
    files = [Path("train", "good", f"{i:03d}.png") for i in range(n_train)]
    for kind, name in _test_names(category, n_test):
        files.append(Path("test", kind, f"{name}.png"))
        if kind != "good":
            files.append(Path("ground_truth", kind, f"{name}_mask.png"))
    return files


def _write_category(base, category, n_train, n_test, S, seed):
    cid = CATEGORIES.index(category)
    for i in range(n_train):
        rng = np.random.default_rng([seed, cid, 0, i])    # one stream per image: order-free
        write_png(_to_uint8(good_image(category, rng, S)), base / "train" / "good" / f"{i:03d}.png")
    for k, (kind, name) in enumerate(_test_names(category, n_test)):
        rng = np.random.default_rng([seed, cid, 1, k])
        if kind == "good":
            img = good_image(category, rng, S)
            write_png(_to_uint8(img), base / "test" / "good" / f"{name}.png")
            continue
        img, mask = defect_image(category, kind, rng, S)
        write_png(_to_uint8(img), base / "test" / kind / f"{name}.png")
        write_png(mask.astype(np.uint8) * 255, base / "ground_truth" / kind / f"{name}_mask.png")


def _remove_generated(base, category, old):
    """Delete the files that make_dataset wrote with the settings `old` (the marker's), then
    the folders they leave empty; anything else in base stays."""
    files = _written_files(category, int(old["n_train"]), int(old["n_test"]))
    for f in files:
        (base / f).unlink(missing_ok=True)
    for d in sorted({p for f in files for p in f.parents if p != Path(".")},
                    key=lambda p: -len(p.parts)):     # deepest first
        if (base / d).is_dir() and not any((base / d).iterdir()):
            (base / d).rmdir()


def _read_marker(marker):
    try:
        old = json.loads(marker.read_text())
        int(old["n_train"]), int(old["n_test"])
    except (ValueError, KeyError, TypeError, OSError) as e:
        raise ValueError(f"{marker} is damaged ({type(e).__name__}: {e}); remove the folder "
                         f"{marker.parent} yourself if it holds nothing of yours") from None
    return old


def make_dataset(root, categories=None, n_train=40, n_test=20, size=128, seed=0):
    """Write synthetic categories under root in the MVTec AD layout; returns root as a Path.

    Deterministic for (n_train, n_test, size, seed). A category folder already made with the
    same settings is kept as it is; one made with other settings has the files it wrote replaced
    (files of the user's own in it stay). A folder that this function did not make is never
    touched: it raises FileExistsError instead, as it does when root is a file.
    Test images: a quarter (at least one) in test/good, the rest spread over the defect kinds."""
    root = Path(root)
    categories = CATEGORIES if categories is None else tuple(categories)
    for c in categories:
        if c not in CATEGORIES:
            raise ValueError(f"unknown synthetic category {c!r}; choose from {CATEGORIES}")
    if n_train < 2 or n_test < 1 or size < 32:
        raise ValueError(f"need n_train >= 2, n_test >= 1, size >= 32; "
                         f"got {n_train}, {n_test}, {size}")
    for folder in (root, *root.parents):          # mkdir's NotADirectoryError names no setting
        if folder.exists():
            if not folder.is_dir():
                raise FileExistsError(f"{folder} is a file, not a folder: the synthetic data "
                                      f"needs a folder at {root}")
            break
    settings = dict(n_train=n_train, n_test=n_test, size=size, seed=seed, version=_VERSION)
    for c in categories:
        base = root / c
        marker = base / _MARKER
        if base.exists():
            if not marker.is_file():
                raise FileExistsError(f"{base} exists and was not made by make_dataset; "
                                      "choose another root or remove it")
            old = _read_marker(marker)
            if old == {**settings, "complete": True}:
                continue
            _remove_generated(base, c, old)
        base.mkdir(parents=True, exist_ok=True)
        write_json(marker, {**settings, "complete": False})
        _write_category(base, c, n_train, n_test, size, seed)
        write_json(marker, {**settings, "complete": True})
    return root
