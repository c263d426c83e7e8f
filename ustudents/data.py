"""Reading anomaly-detection data laid out as MVTec AD ships it (docs/method.md §7).

    <root>/<category>/train/good/*.png
    <root>/<category>/test/<defect>/*.png                 (test/good holds the anomaly-free ones)
    <root>/<category>/ground_truth/<defect>/<id>_mask.png  (0 / 255; none for test/good)

Images come back as float32 (3, H, W) in [0, 1] (grayscale 'L' images repeated to three
channels), masks as bool (H, W). `synthetic.make_dataset` writes the same layout offline.

    cat = load_category(root, "weave")
    train, val = train_val_split(cat.train)
    x = load_images(train, size=256)                       # (N, 3, 256, 256)
    test = load_test(cat.test, size=256)                   # images, masks, labels, full_masks
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

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


def open_image(path):
    """Open and fully decode an image, naming the file if it is missing or not an image."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        img = Image.open(path)
        img.load()  # Image.open is lazy: decode now so a truncated file fails here, with its name
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e
    return img


def _image_size(path):
    """(H, W) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as img:
            w, h = img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e
    return h, w


def load_image(path, size=None):
    """Read an image file as float32 (3, H, W) in [0, 1].
    Grayscale ('L', 'I;16', '1', ...) is repeated to 3 channels, RGBA/palette become RGB.
    size: if given, resize to (size, size) with Pillow's bilinear filter."""
    img = open_image(path)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale: scale to 8 bit ourselves, Pillow's convert('L') clips instead
        a = np.asarray(img, dtype=np.float32)
        img = Image.fromarray((a * (255.0 / max(a.max(), 1.0))).astype(np.uint8), mode="L")
    img = img.convert("RGB")
    if size is not None:
        img = img.resize((size, size), Image.BILINEAR)
    x = np.asarray(img, dtype=np.float32) / 255.0   # (H, W, 3)
    return np.ascontiguousarray(x.transpose(2, 0, 1))  # (3, H, W)


def load_mask(path, size=None):
    """Read a 0/255 mask file as bool (H, W); size: nearest-neighbour resize to (size, size)."""
    img = open_image(path).convert("L")
    if size is not None:
        img = img.resize((size, size), Image.NEAREST)  # nearest keeps the mask binary
    return np.asarray(img) > 127


def _stack(images):
    shapes = {x.shape for x in images}
    if len(shapes) > 1:
        raise ValueError(f"images differ in size {sorted(shapes)}; pass size= to resize them")
    return np.stack(images)


def load_images(paths, size=None):
    """Read many images: (N, 3, S, S) float32 with size S (all images must share a size if None)."""
    if len(paths) == 0:
        raise ValueError("no image paths given")
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
    images, masks, full = [], [], []
    for it in items:
        fm = load_mask(it.mask) if it.mask is not None else np.zeros(it.size, dtype=bool)
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
