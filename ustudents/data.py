"""Reading anomaly-detection data laid out as MVTec AD ships it (docs/method.md §7).

    <root>/<category>/train/good/*.png
    <root>/<category>/test/<defect>/*.png                 (test/good holds the anomaly-free ones)
    <root>/<category>/ground_truth/<defect>/<id>_mask.png  (> 0 is defect; none for test/good)

Images come back as float32 (3, H, W) in [0, 1] (grayscale 'L' images repeated to three
channels), masks as bool (H, W). `synthetic.make_dataset` writes the same layout offline.

    cat = load_category(root, "weave")
    train, val = train_val_split(cat.train)
    x = load_images(train, size=256)                       # (N, 3, 256, 256)
    test = load_test(cat.test, size=256)                   # images, masks, labels, full_masks
"""
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .files import atomic_path

GOOD = "good"


@dataclass(frozen=True)
class TestItem:
    """One test image: where it is, its defect type ('good' for none), its mask file (None for
    'good') and its original size (H0, W0), for writing maps and scoring at full resolution."""
    __test__ = False  # the name starts with Test: tell pytest this is not a test class
    image: Path
    defect: str
    mask: Path | None
    size: tuple


@dataclass(frozen=True)
class Category:
    """The files of one category: `train` (sorted paths of train/good) and `test` (TestItems,
    sorted by defect then file name)."""
    root: Path
    name: str
    train: list
    test: list


@dataclass
class TestSet:
    """Loaded test images at a working size S, plus the masks at original size for evaluation.
    images (N, 3, S, S) float32, masks (N, S, S) bool, labels (N,) int64 (1 = defect),
    full_masks: list of N bool arrays (H0, W0), items: the N TestItems in the same order."""
    __test__ = False
    images: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    full_masks: list
    items: list


# 16-bit grayscale modes: scaled by their bit depth (v / 65535), never by an image's maximum
_16BIT = ("I;16", "I;16B", "I;16L", "I")


def _open_checked(path):
    """Open an image lazily (header only) and refuse it by name if it is missing, no image, a
    decompression bomb (more pixels than Pillow's Image.MAX_IMAGE_PIXELS) or would need more
    memory than the machine has. Returns the unloaded Pillow image."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with warnings.catch_warnings():     # the bomb warning becomes our refusal below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError as e:
        raise ValueError(f"refusing image {path}: {e}") from None
    except Exception as e:                  # UnidentifiedImageError, OSError, SyntaxError, ...
        raise ValueError(f"cannot read image {path}: {e}") from None
    w, h = img.size
    limit = Image.MAX_IMAGE_PIXELS
    if limit and w * h > limit:
        img.close()
        raise ValueError(f"refusing image {path}: {w}x{h} pixels is more than {limit} "
                         f"(Pillow's decompression-bomb limit); resize it first")
    _check_memory(f"image {path} ({w}x{h})", w * h * _BYTES_PER_PIXEL)
    return img


def _available_memory():
    """Bytes of memory free for us now (Linux: MemAvailable), or None where it cannot be told."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (AttributeError, ValueError, OSError):   # no sysconf (Windows): nothing to check
        return None


def _check_memory(what, nbytes):
    """Refuse, naming `what`, an allocation of nbytes larger than the memory free now."""
    free = _available_memory()
    if free is not None and nbytes > free:
        raise ValueError(f"{what} would need about {nbytes / 2**30:.1f} GiB, more than the "
                         f"{free / 2**30:.1f} GiB of memory free on this machine")


# bytes per pixel while one image is read: Pillow's decoded pixels (up to 4 bytes), the float32
# (H, W, 3) array and its (3, H, W) copy (12 each)
_BYTES_PER_PIXEL = 28


def _decode(path):
    """A fully decoded Pillow image, every error naming the file."""
    img = _open_checked(path)
    try:
        img.load()  # Image.open is lazy: decode now so a truncated file fails here, with its name
    except Exception as e:
        raise ValueError(f"cannot read image {path}: {e}") from None
    if img.mode == "I":                     # 16-bit PNGs may open as 'I': check the range
        lo, hi = img.getextrema()
        if lo < 0 or hi > 65535:
            raise ValueError(f"cannot read image {path}: 32-bit pixels ({lo} to {hi}) have no "
                             f"known bit depth; save it with 8 or 16 bits")
    if img.mode == "F":
        raise ValueError(f"cannot read image {path}: floating-point pixels have no known "
                         f"range; save it with 8 or 16 bits")
    return img


def open_image(path):
    """Open and fully decode an image, naming the file if it is missing, not an image, a
    decompression bomb or too large for memory. 16-bit grayscale comes back as 8-bit 'L',
    scaled by its bit depth (Pillow's own convert clips it at 255), so that convert('RGB')
    is right for every mode returned."""
    img = _decode(path)
    if img.mode in _16BIT:
        a = np.asarray(img, dtype=np.float32) * (255.0 / 65535.0)
        img = Image.fromarray(np.round(a).astype(np.uint8), mode="L")
    return img


def _image_size(path):
    """(H, W) from the file header, without decoding the pixels (bombs refused by name)."""
    with _open_checked(path) as img:
        w, h = img.size
    return h, w


def load_image(path, size=None):
    """Read an image file as float32 (3, H, W) in [0, 1].
    Grayscale ('L', 'I;16', '1', ...) is repeated to 3 channels, RGBA/palette become RGB;
    16-bit images are scaled by their bit depth (v / 65535), in float, not through 8 bits.
    size: if given, resize to (size, size) with Pillow's bilinear filter."""
    img = _decode(path)
    if img.mode in _16BIT:
        f = Image.fromarray(np.asarray(img, dtype=np.float32) / 65535.0, mode="F")
        if size is not None:
            f = f.resize((size, size), Image.BILINEAR)
        x = np.asarray(f, dtype=np.float32)                      # (H, W)
        return np.ascontiguousarray(np.broadcast_to(x, (3,) + x.shape))
    img = img.convert("RGB")
    if size is not None:
        img = img.resize((size, size), Image.BILINEAR)
    x = np.asarray(img, dtype=np.float32) / 255.0   # (H, W, 3)
    return np.ascontiguousarray(x.transpose(2, 0, 1))  # (3, H, W)


def load_mask(path, size=None):
    """Read a mask file as bool (H, W): every pixel > 0 is defect, as the official MVTec AD
    evaluation reads them (masks stored 0/255 and 0/1 both work). size: nearest-neighbour
    resize to (size, size)."""
    img = _decode(path)
    a = np.asarray(img if img.mode in ("1", "L", "P") + _16BIT else img.convert("L"))
    m = a > 0
    if size is not None:  # nearest keeps the mask binary
        m = np.asarray(Image.fromarray(m).resize((size, size), Image.NEAREST))
    return m


def _stack(images):
    shapes = {x.shape for x in images}
    if len(shapes) > 1:
        raise ValueError(f"images differ in size {sorted(shapes)}; pass size= to resize them")
    return np.stack(images)


def load_images(paths, size=None):
    """Read many images: (N, 3, S, S) float32 with size S (all images must share a size if None)."""
    if len(paths) == 0:
        raise ValueError("no image paths given")
    if size is not None:    # the list of (3, S, S) float32 arrays, their stack, one image read
        _check_memory(f"{len(paths)} images at size {size}",
                      (24 * len(paths) + _BYTES_PER_PIXEL) * size * size)
    return _stack([load_image(p, size) for p in paths])


def list_categories(root):
    """Sorted names of the sub-folders of root that have a train/good folder."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data root does not exist or is not a folder: {root}")
    return sorted(d.name for d in root.iterdir() if (d / "train" / GOOD).is_dir())


def _pngs(folder):
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png" and p.is_file())


def load_category(root, category):
    """Index one category: train paths and test items, checked for the mistakes that otherwise
    surface deep inside training (missing folders, missing or mis-sized masks, unreadable files)."""
    root = Path(root)
    names = list_categories(root)
    base = root / category
    if category not in names:
        raise FileNotFoundError(f"category {category!r} not found under {root} (no "
                                f"{base / 'train' / GOOD}); categories there: {names or 'none'}")
    train = _pngs(base / "train" / GOOD)
    if not train:
        raise ValueError(f"empty split: no .png files in {base / 'train' / GOOD}")

    test_dir = base / "test"
    if not test_dir.is_dir():
        raise FileNotFoundError(f"test folder missing: {test_dir}")
    items = []
    for defect_dir in sorted(d for d in test_dir.iterdir() if d.is_dir()):
        defect = defect_dir.name
        for img in _pngs(defect_dir):
            size = _image_size(img)
            mask = None
            if defect != GOOD:
                mask = base / "ground_truth" / defect / f"{img.stem}_mask.png"
                if not mask.is_file():
                    raise FileNotFoundError(f"defect image {img} has no mask (expected {mask})")
                msize = _image_size(mask)
                if msize != size:
                    raise ValueError(f"mask {mask} is {msize[0]}x{msize[1]} (HxW) but its image "
                                     f"{img} is {size[0]}x{size[1]}")
            items.append(TestItem(img, defect, mask, size))
    if not items:
        raise ValueError(f"empty split: no .png files in the folders of {test_dir}")
    return Category(root, category, train, items)


def load_test(items, size=None):
    """Load test items into a TestSet; masks of 'good' images are all False.
    size: working size S (images bilinear, masks nearest); None keeps the original size,
    which must then be the same for every image."""
    if size is not None:
        _check_memory(f"{len(items)} test images at size {size}",    # images and masks
                      (26 * len(items) + _BYTES_PER_PIXEL) * size * size)
    images, masks, full = [], [], []
    for it in items:
        fm = load_mask(it.mask) if it.mask is not None else np.zeros(it.size, dtype=bool)
        if it.mask is not None and not fm.any():
            raise ValueError(f"mask {it.mask} marks no defect pixel (none is > 0), but its image "
                             f"{it.image} is in the defect folder {it.defect!r}")
        if fm.shape != tuple(it.size):
            raise ValueError(f"mask {it.mask} is {fm.shape[0]}x{fm.shape[1]} (HxW) but its image "
                             f"{it.image} is {it.size[0]}x{it.size[1]}")
        images.append(load_image(it.image, size))
        masks.append(fm if size is None else
                     np.asarray(Image.fromarray(fm).resize((size, size), Image.NEAREST)))
        full.append(fm)
    labels = np.array([it.defect != GOOD for it in items], dtype=np.int64)
    return TestSet(_stack(images), np.stack(masks), labels, full, list(items))


def train_val_split(paths, val_fraction=0.1, seed=0):
    """Hold out a validation share of the anomaly-free training images (docs/method.md §5: the
    score statistics come from them). Deterministic for a seed; at least one image on each side.
    Returns (train, val), each a list in the input's order."""
    paths = list(paths)
    if len(paths) < 2:
        raise ValueError(f"need at least 2 training images to hold out validation, "
                         f"got {len(paths)}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = min(max(1, round(val_fraction * len(paths))), len(paths) - 1)
    chosen = set(np.random.default_rng(seed).permutation(len(paths))[:n_val].tolist())
    train = [p for i, p in enumerate(paths) if i not in chosen]
    val = [p for i, p in enumerate(paths) if i in chosen]
    return train, val


def write_png(array, path):
    """Write uint8 (H, W) or (H, W, 3) to a PNG atomically (a temp name, then os.replace), so a
    reader never sees half a file."""
    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(array, dtype=np.uint8)).save(tmp, format="PNG")
