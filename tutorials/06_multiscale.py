"""Step 6: several scales: one student ensemble per patch size, their maps averaged.

What it teaches: a patch size p fixes what the students can see (paper §3.3; docs/method.md
§5). Small patches catch fine defects (a thin scratch) but miss what only a wider context reveals;
large patches see context but blur small defects. The method trains a teacher and M students
for each p, normalises each scale's e and v with that scale's own validation statistics (raw
errors of different networks are not comparable; in validation stds they are), and averages:

    multi-scale map = 1/L Σ_(scales l) (ẽ_l + ṽ_l)

Here p = 17 and p = 33 (the paper adds p = 65 on 256-pixel images), each scored by AU-PRO(0.3)
alone and together. The mean need not beat the best single scale (with an earlier, less trained
p = 33 teacher it did not), but where the scales miss different defects it does: after
tutorial 01's full run, p = 17 (the shipped teacher) and p = 33 (tutorial 01's) each score about
0.91 on these 64-pixel nuts, and their mean 0.94.

    python tutorials/06_multiscale.py [--device auto|cpu|cuda] [--quick]

Time on a 2-core CPU (another job on one core): about 75 s after tutorial 03 (it trains p = 17
here), 2.5 minutes from scratch (--quick: 4 s; its numbers mean little). GPU: not measured. Reuses
out/students/scale_<p>.npz (--quick: out/quick/students/) or trains and saves them.
Figure: out/06_multiscale.png. Last line printed, e.g. (after tutorials 01 and 03-05):
    AU-PRO(0.3): p=17 0.915 | p=33 0.904 | multi-scale 0.940
"""
import os
import time

import matplotlib
import numpy as np

import steps
from ustudents.backend import asnumpy
from ustudents.data import load_test
from ustudents.metrics import au_pro, image_auroc, pixel_auroc
from ustudents.scoring import anomaly_map, image_score, multiscale

matplotlib.use("Agg")
import matplotlib.pyplot as plt                                 # noqa: E402  (after the backend)

SCALES = (17, 33)      # patch sizes; the other settings are tutorial 03's (steps.SETTINGS)
SHOWN = 4              # defect images in the figure, one per kind of defect

cfg = steps.start("06_multiscale", "multi-scale anomaly maps")
train_paths, val_paths, test_items = steps.data(cfg)
test = load_test(test_items)
print(f"# {cfg.CATEGORY}: {len(test.items)} test images ({int(test.labels.sum())} with defects), "
      f"{cfg.SIZE}x{cfg.SIZE}, scales {list(SCALES)}")


def scores(amaps):
    """AU-PRO(0.3), pixel AUROC and image AUROC of maps (N, H, W) on the test set."""
    return (au_pro(amaps, test.masks), pixel_auroc(amaps, test.masks),
            image_auroc(image_score(amaps), test.labels))


# 1. One ensemble per scale, each map in its own validation stds; then their mean.
ensembles = {p: steps.students_for(cfg, p, train_paths, val_paths, saved_by=None) for p in SCALES}
print(f"{'scale':>11} {'AU-PRO':>7} {'pixel AUROC':>11} {'image AUROC':>11} {'map s':>6}  "
      "validation e_mean, e_std, v_mean, v_std")
per_scale, aupro = {}, {}
for p, model in ensembles.items():
    start = time.perf_counter()
    per_scale[p] = asnumpy(anomaly_map(model, test.images))             # (N, H, W)
    seconds = time.perf_counter() - start
    name = f"p={p}"
    aupro[name], pixel, image = scores(per_scale[p])
    stats = ", ".join(f"{v:.3g}" for v in model.val_stats.values())
    print(f"{name:>11} {aupro[name]:7.3f} {pixel:11.3f} {image:11.3f} {seconds:6.1f}  {stats}")
combined = multiscale(per_scale)                                        # (N, H, W)
aupro["multi-scale"], pixel, image = scores(combined)
print(f"{'multi-scale':>11} {aupro['multi-scale']:7.3f} {pixel:11.3f} {image:11.3f} {'':>6}  "
      "(the mean of the maps above)")

# 2. The figure: a defect image of each kind, its ground truth, the map of each scale and their
# mean, one colour range per row (all maps are in validation stds).
first_of_kind = {}
for k in np.flatnonzero(test.labels):
    first_of_kind.setdefault(test.items[k].defect, k)
shown = list(first_of_kind.values())[:SHOWN]
columns = ["image", "ground truth"] + [f"p={p}" for p in SCALES] + ["multi-scale"]
fig, axes = plt.subplots(len(shown), len(columns), figsize=(2.6 * len(columns), 2.6 * len(shown)),
                         squeeze=False)
for row, k in zip(axes, shown):
    maps = [per_scale[p][k] for p in SCALES] + [combined[k]]
    lo, hi = min(m.min() for m in maps), max(m.max() for m in maps)
    row[0].imshow(test.images[k].transpose(1, 2, 0))
    row[1].imshow(test.masks[k], cmap="gray")
    for ax, m in zip(row[2:], maps):
        ax.imshow(m, cmap="jet", vmin=lo, vmax=hi)
    row[0].set_ylabel(test.items[k].defect)
    for ax in row:
        ax.set_xticks([])
        ax.set_yticks([])
for ax, title in zip(axes[0], columns):
    ax.set_title(title)
os.makedirs("out", exist_ok=True)
fig.savefig("out/06_multiscale.png", dpi=90, bbox_inches="tight")
plt.close(fig)
print("figure: out/06_multiscale.png")
print("AU-PRO(0.3): " + " | ".join(f"{name} {value:.3f}" for name, value in aupro.items()))
