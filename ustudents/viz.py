"""Figures as PNG files: anomaly maps over their images, PRO and ROC curves.

Matplotlib runs with the Agg backend (no display needed, safe on servers and in tests); every
function writes its PNG under a temporary name in the target folder, renames it into place (a
reader never sees half a file), closes its figure, and returns the path.

Images are (H, W, 3) floats in [0, 1] (uint8 and (3, H, W) are accepted) or (H, W) gray;
masks and maps are (H, W) and must match the image's size (see `metrics.resize_map`).
"""
import matplotlib

matplotlib.use("Agg")  # before pyplot: never open a window, work without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .backend import asnumpy  # noqa: E402
from .files import atomic_path  # noqa: E402
from .metrics import trapezoid  # noqa: E402

_DPI = 100


def _save(fig, path, tight=True):
    """Write fig to path as PNG atomically, close it, return path. tight: crop the margins to
    what is drawn (bbox_inches="tight", which draws the figure twice); the panels of images set
    their margins themselves instead, which takes a third less time per figure."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=_DPI, bbox_inches="tight" if tight else None)
    finally:
        plt.close(fig)  # figures live in pyplot's registry until closed: a loop would leak them
    return path


def _display_image(image):
    """(H, W, 3) / (3, H, W) / (H, W), float or uint8 -> (H, W, 3) or (H, W) float in [0, 1]."""
    image = asnumpy(image)
    if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
        image = image.transpose(1, 2, 0)                         # (C, H, W) -> (H, W, C)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]                                    # (H, W, 1) -> (H, W)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] != 3):
        raise ValueError(f"image must be (H, W, 3), (3, H, W) or (H, W), got {image.shape}")
    image = image / 255.0 if image.dtype == np.uint8 else image.astype(np.float64)
    return np.clip(image, 0.0, 1.0)


def _panels(n, wspace=0.12):
    """A figure of n image panels in a row, margins set so that nothing is cropped or wasted
    (wspace: the gap between panels, as a share of a panel's width; a colour bar needs more)."""
    fig, axes = plt.subplots(1, n, figsize=(3.0 * n, 3.3))
    fig.subplots_adjust(left=0.01, right=0.95, bottom=0.02, top=0.84, wspace=wspace)
    return fig, np.atleast_1d(axes)


def _show_image(ax, image):
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1)
    ax.set_axis_off()


def _check_size(name, array, image):
    if array.shape != image.shape[:2]:
        raise ValueError(f"{name} {array.shape} does not match the image size {image.shape[:2]}; "
                         "resize it first (ustudents.metrics.resize_map)")


def save_anomaly_figure(path, image, mask, amap, title=None):
    """Three panels: the image, its ground truth (red outline and tint), the anomaly map as a
    jet overlay. mask may be None for an anomaly-free image. Returns path."""
    image = _display_image(image)
    amap = asnumpy(amap).astype(np.float64)
    _check_size("anomaly map", amap, image)
    mask = None if mask is None else asnumpy(mask) != 0
    if mask is not None:
        _check_size("mask", mask, image)

    fig, axes = _panels(3)
    _show_image(axes[0], image)
    axes[0].set_title("image")
    _show_image(axes[1], image)
    if mask is not None and mask.any():
        axes[1].imshow(np.ma.masked_where(~mask, mask), cmap="autumn", alpha=0.35)
        axes[1].contour(mask, levels=[0.5], colors="red", linewidths=1.0)
    axes[1].set_title("ground truth" if mask is not None and mask.any() else "ground truth: none")
    _show_image(axes[2], image)
    overlay = axes[2].imshow(amap, cmap="jet", alpha=0.5)
    fig.colorbar(overlay, ax=axes[2], fraction=0.046, pad=0.04)
    axes[2].set_title("anomaly map")
    if title:
        fig.suptitle(title)
    return _save(fig, path, tight=False)


def save_score_figure(path, image, panels, title=None):
    """The image beside several (H, W) maps, e.g. {"error": e, "uncertainty": v, "combined": s},
    each with its own colour scale. Returns path."""
    image = _display_image(image)
    panels = {name: asnumpy(m).astype(np.float64) for name, m in panels.items()}
    for name, m in panels.items():
        _check_size(f"panel {name!r}", m, image)

    fig, axes = _panels(1 + len(panels), wspace=0.4)
    _show_image(axes[0], image)
    axes[0].set_title("image")
    for ax, (name, m) in zip(axes[1:], panels.items()):
        shown = ax.imshow(m, cmap="jet")
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
        ax.set_title(name)
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    return _save(fig, path, tight=False)


def save_pro_figure(path, fprs, pros, limit=0.3, label=None):
    """The PRO curve (fprs, pros: (K,) from `metrics.pro_curve`), the integration range shaded
    and AU-PRO(limit) in the legend. Returns path."""
    fprs, pros = asnumpy(fprs).astype(np.float64), asnumpy(pros).astype(np.float64)
    score = trapezoid(fprs, pros, x_max=limit) / limit
    name = f"{label}: " if label else ""

    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    ax.plot(fprs, pros, color="C0", label=f"{name}AU-PRO({limit:g}) = {score:.3f}")
    inside = fprs <= limit
    ax.fill_between(fprs[inside], pros[inside], color="C0", alpha=0.15)
    ax.axvline(limit, color="gray", linestyle="--", linewidth=1.0)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="false positive rate", ylabel="per-region overlap",
           title="PRO curve")
    ax.legend(loc="lower right")
    return _save(fig, path)


def save_roc_figure(path, fprs, tprs, auc=None):
    """A ROC curve (fprs, tprs: (K,) from `metrics.roc_curve`) with the chance diagonal.
    Returns path."""
    fprs, tprs = asnumpy(fprs), asnumpy(tprs)
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    ax.plot(fprs, tprs, color="C1", label=None if auc is None else f"AUROC = {auc:.3f}")
    ax.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1.0)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="false positive rate", ylabel="true positive rate",
           title="ROC curve")
    if auc is not None:
        ax.legend(loc="lower right")
    return _save(fig, path)
