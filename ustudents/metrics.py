"""Evaluation: the PRO curve, AU-PRO, ROC AUC, and float32 TIFF maps (docs/method.md §6).

The **per-region overlap (PRO)** curve is the MVTec AD measure for segmentation (Bergmann et
al., CVPR 2020, §4.2). Pixel AUROC lets a large defect outweigh many small ones; PRO does not:

1. The ground truth of each image splits into *regions*, its 8-connected components.
2. At a threshold t, a region's overlap is the share of its pixels with score >= t.
   PRO(t) is the mean overlap over all regions of all test images, each region weighted equally.
3. FPR(t) is the share of all anomaly-free pixels (of every image, defect images included)
   with score >= t.
4. Sweeping t down over every distinct score traces the curve from (0, 0) to (1, 1).
   AU-PRO(limit) is its trapezoid area for FPR in [0, limit] divided by limit (so 1 is
   perfect; a random map scores about limit / 2, i.e. 0.15 for the usual limit 0.3).

Everything here runs on host arrays: inputs go through `asnumpy` once, at this edge.
Maps are (H, W) float arrays, masks (H, W) arrays with nonzero = anomalous; each image may have
its own size, so lists of arrays and (N, H, W) stacks both work.
"""
import numpy as np
from PIL import Image
from scipy.ndimage import label
from scipy.stats import rankdata

from .backend import asnumpy
from .files import atomic_path

_EIGHT_CONNECTED = np.ones((3, 3), dtype=int)


def _pixels(maps, masks):
    """Validate and flatten all images.

    maps, masks: N arrays (H_i, W_i) -> scores (P,) float64, region (P,) int64, n_regions,
    with P = sum H_i * W_i; region is 0 on anomaly-free pixels, 1..n_regions on ground truth,
    numbered across the whole set so that regions of different images stay distinct.
    """
    maps, masks = list(maps), list(masks)
    if len(maps) != len(masks):
        raise ValueError(f"got {len(maps)} anomaly maps but {len(masks)} masks")
    if not maps:
        raise ValueError("no images: need at least one anomaly map and mask")
    scores, regions, n_regions = [], [], 0
    for i, (amap, mask) in enumerate(zip(maps, masks)):
        amap, mask = asnumpy(amap), asnumpy(mask)
        if amap.ndim != 2 or amap.shape != mask.shape:
            raise ValueError(f"image {i}: anomaly map {amap.shape} and mask {mask.shape} "
                             "must be 2-D arrays of the same shape")
        if not np.all(np.isfinite(amap)):
            raise ValueError(f"image {i}: the anomaly map holds NaN or infinite scores")
        labeled, n = label(mask != 0, structure=_EIGHT_CONNECTED)
        regions.append(np.where(labeled > 0, labeled + n_regions, 0).ravel())
        scores.append(amap.astype(np.float64).ravel())
        n_regions += n
    return np.concatenate(scores), np.concatenate(regions), n_regions


def _check_both_classes(n_positive, n_negative, what):
    if n_positive == 0:
        raise ValueError(f"no anomalous {what}: the measure is undefined without positives")
    if n_negative == 0:
        raise ValueError(f"no anomaly-free {what}: the measure is undefined without negatives")


def _last_of_each_score(sorted_desc):
    """Mask (P,) that is True at the last position of each run of equal scores, so that a tie
    becomes one curve point that already counts every pixel at that score."""
    return np.append(sorted_desc[1:] != sorted_desc[:-1], True)


def pro_curve(maps, masks):
    """The PRO curve over a whole test set.

    maps: N anomaly maps (H_i, W_i), higher = more anomalous; masks: N ground truths (H_i, W_i).
    Returns fprs, pros: (K + 2,) float64, nondecreasing, one point per distinct score (K of
    them) plus the end points (0, 0) and (1, 1).
    """
    scores, region, n_regions = _pixels(maps, masks)
    normal = region == 0
    n_normal = int(normal.sum())
    _check_both_classes(n_regions, n_normal, "pixels")

    # A pixel of a region of size A adds 1 / (n_regions * A) to PRO once the threshold passes
    # it: each region then contributes its overlap share, each region weighted equally.
    sizes = np.bincount(region, minlength=n_regions + 1)        # (n_regions + 1,), [0] = normal
    weight = np.where(normal, 0.0, 1.0 / (n_regions * sizes[region]))

    order = np.argsort(scores, kind="stable")[::-1]              # (P,) descending scores
    keep = _last_of_each_score(scores[order])                    # (P,) -> K True
    fprs = np.cumsum(normal[order])[keep] / n_normal
    pros = np.cumsum(weight[order])[keep]
    np.minimum(pros, 1.0, out=pros)                              # cumsum rounding may pass 1
    return np.concatenate(([0.0], fprs, [1.0])), np.concatenate(([0.0], pros, [1.0]))


def trapezoid(x, y, x_max=None):
    """Trapezoid area under y(x) for x in [x[0], x_max].

    x (K,) nondecreasing (repeated values allowed: vertical steps), y (K,).
    When x_max falls between two samples, y at x_max is interpolated linearly between them.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x {x.shape} and y {y.shape} must be 1-D and of the same length")
    if np.any(np.diff(x) < 0):
        raise ValueError("x must be sorted in nondecreasing order")
    if x_max is not None:
        inside = int(np.searchsorted(x, x_max, side="right"))   # x[:inside] <= x_max
        if inside == 0:
            return 0.0
        if inside < len(x) and x[inside - 1] < x_max:
            x0, x1, y0, y1 = x[inside - 1], x[inside], y[inside - 1], y[inside]
            y_at = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
            x, y = np.append(x[:inside], x_max), np.append(y[:inside], y_at)
        else:
            x, y = x[:inside], y[:inside]
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


def au_pro(maps, masks, limit=0.3):
    """Normalised area under the PRO curve up to FPR = limit (in (0, 1]); 1 is perfect.

    maps, masks: N arrays (H_i, W_i) as for `pro_curve` -> float.
    """
    if not 0 < limit <= 1:
        raise ValueError(f"limit must lie in (0, 1], got {limit}")
    fprs, pros = pro_curve(maps, masks)
    return trapezoid(fprs, pros, x_max=limit) / limit


def au_pro_by_defect(maps, masks, defects, limit=0.3, good="good"):
    """AU-PRO of each defect type on its own: the images of that type together with all the
    anomaly-free ones (so the false positives of normal images still count). Not part of the
    official evaluation, which scores a category as a whole; it shows which defects a model
    misses. maps, masks: N arrays as for `au_pro`; defects: N type names -> {type: float}."""
    defects = list(defects)
    if len(defects) != len(maps) or len(maps) != len(masks):
        raise ValueError(f"au_pro_by_defect: {len(maps)} maps, {len(masks)} masks and "
                         f"{len(defects)} defect names; need one of each per image")
    result = {}
    for kind in sorted(set(defects) - {good}):
        pick = [k for k, d in enumerate(defects) if d in (good, kind)]
        result[kind] = au_pro([maps[k] for k in pick], [masks[k] for k in pick], limit)
    return result


def _auroc(scores, positive):
    """ROC AUC as the Mann-Whitney U statistic: the chance that a random positive outscores a
    random negative, ties counting 1/2 (average ranks make that exact).
    scores (P,) float, positive (P,) bool -> float."""
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    _check_both_classes(n_pos, n_neg, "samples")
    ranks = rankdata(scores)                                     # (P,) 1-based, ties averaged
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def pixel_auroc(maps, masks):
    """ROC AUC over every pixel of every image. maps, masks: N arrays (H_i, W_i) -> float."""
    scores, region, _ = _pixels(maps, masks)
    return _auroc(scores, region > 0)


def _scores_and_labels(scores, labels):
    scores = asnumpy(scores).astype(np.float64).ravel()
    labels = asnumpy(labels).ravel() != 0
    if scores.shape != labels.shape:
        raise ValueError(f"got {scores.size} scores but {labels.size} labels")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores hold NaN or infinite values")
    return scores, labels


def image_auroc(scores, labels):
    """ROC AUC of image-level scores. scores (N,) float, labels (N,) with nonzero = defective."""
    return _auroc(*_scores_and_labels(scores, labels))


def image_scores(maps):
    """The image-level score: each map's maximum, as the official evaluation takes it
    (docs/method.md §5). maps: N arrays (H_i, W_i), or a stack (N, H, W) -> (N,) float64."""
    return np.array([float(asnumpy(m).max()) for m in maps], dtype=np.float64)


def roc_curve(scores, labels):
    """ROC curve for plotting, one point per distinct score.

    scores (P,), labels (P,) nonzero = positive -> fprs, tprs (K + 1,) from (0, 0) to (1, 1);
    its trapezoid area equals `image_auroc(scores, labels)`.
    """
    scores, positive = _scores_and_labels(scores, labels)
    n_pos = int(positive.sum())
    _check_both_classes(n_pos, positive.size - n_pos, "samples")
    order = np.argsort(scores, kind="stable")[::-1]
    keep = _last_of_each_score(scores[order])
    tprs = np.cumsum(positive[order])[keep] / n_pos
    fprs = np.cumsum(~positive[order])[keep] / (positive.size - n_pos)
    return np.concatenate(([0.0], fprs)), np.concatenate(([0.0], tprs))


def write_tiff(path, amap):
    """Write one anomaly map (H, W) as a single-channel float32 TIFF (Pillow mode 'F').

    The file appears atomically: it is written under a temporary name in the same folder and
    renamed, so a crash never leaves a half-written map for the official script to read.
    Missing folders are made. Returns the path.
    """
    amap = np.ascontiguousarray(asnumpy(amap), dtype=np.float32)
    if amap.ndim != 2:
        raise ValueError(f"an anomaly map must be 2-D (H, W), got shape {amap.shape}")
    with atomic_path(path) as tmp:
        Image.fromarray(amap).save(tmp, format="TIFF")
    return path


def resize_map(amap, size):
    """Bilinear resize of a map (h, w) to size = (H0, W0), e.g. back to the original image size.

    Pillow's float ('F') resize keeps float32 precision and uses pixel-centre alignment, the
    convention of image libraries; when shrinking it widens the filter, so no pixel is skipped.
    Returns (H0, W0) float32.
    """
    amap = np.ascontiguousarray(asnumpy(amap), dtype=np.float32)
    if amap.ndim != 2:
        raise ValueError(f"an anomaly map must be 2-D (H, W), got shape {amap.shape}")
    height, width = (int(s) for s in size)
    if height <= 0 or width <= 0:
        raise ValueError(f"size must be two positive integers (H0, W0), got {size}")
    if amap.shape == (height, width):
        return amap.copy()
    resized = Image.fromarray(amap).resize((width, height), resample=Image.BILINEAR)
    return np.asarray(resized, dtype=np.float32).copy()
