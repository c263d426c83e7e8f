"""Step 6: several scales: one student ensemble per patch size, their maps averaged.

What it teaches: a patch size p fixes what the students can see (paper §3.3;
docs/method.md §5). Small patches catch fine defects (a thin scratch) but miss what only a wider
context reveals; large patches see context but blur small defects. The method trains a teacher and M students
for each p, normalises each scale's e and v with that scale's own validation statistics (raw
errors of different networks are not comparable; in validation stds they are), and averages:

    multi-scale map = 1/L Σ_(scales l) (ẽ_l + ṽ_l)

Here p = 17 and p = 33 (the paper adds p = 65 on 256-pixel images), each scored by AU-PRO(0.3)
alone and together. The mean need not beat the best single scale, but where the scales miss
different defects it does: after tutorial 01's full run, p = 17 (the shipped teacher) and p = 33
(tutorial 01's) each score about 0.91 on these 64-pixel nuts, and their mean 0.94.

    python tutorials/06_multiscale.py [--device auto|cpu|cuda] [--quick]

Time on a 2-core CPU: 75-92 s after tutorial 03 (it trains p = 17
here), 2.5 minutes from scratch (--quick: 4 s; its numbers mean little). GPU: not measured. Reuses
out/students/scale_<p>.npz (--quick: out/quick/students/) or trains them with tutorial 03's
settings, and saves them.
Figure: out/06_multiscale.png. Last line printed, e.g. (after tutorials 01 and 03-05):
    AU-PRO(0.3): p=17 0.902 | p=33 0.912 | multi-scale 0.944
"""
import argparse
import os
import time

import matplotlib
import numpy as np

from ustudents import models
from ustudents.backend import asnumpy, default_device, describe
from ustudents.data import load_category, load_images, load_test, train_val_split
from ustudents.metrics import au_pro, image_auroc, image_scores, pixel_auroc
from ustudents.scoring import anomaly_map, multiscale, validation_stats
from ustudents.students import load_scale, save_scale, scale_path, train_students
from ustudents.synthetic import make_dataset

matplotlib.use("Agg")
import matplotlib.pyplot as plt                                 # noqa: E402  (after the backend)

SCALES = (17, 33)      # patch sizes
SHOWN = 4              # defect images in the figure, one per kind of defect
# Tutorial 03's data and training settings, for the scales it has not trained.
STUDENTS, WIDTH, EPOCHS, LR = 3, 0.25, 10, 1e-3
CATEGORY, N_TRAIN, N_TEST, SIZE = "nut", 20, 16, 64
DATA, MODELS, SEED = "out/data", "out/students", 0

ap = argparse.ArgumentParser(description="multi-scale anomaly maps")
ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
ap.add_argument("--quick", action="store_true", help="tutorial 03's --quick settings")
args = ap.parse_args()
if args.quick:
    STUDENTS, WIDTH, EPOCHS, N_TRAIN, N_TEST, SIZE = 2, 0.125, 3, 5, 4, 32
    DATA, MODELS = "out/quick/data", "out/quick/students"
device = default_device(args.device)
print(f"# 06_multiscale | {describe(device)} | device {device} | float32 | seed {SEED}")

make_dataset(DATA, [CATEGORY], n_train=N_TRAIN, n_test=N_TEST, size=SIZE, seed=SEED)
cat = load_category(DATA, CATEGORY)
train_paths, val_paths = train_val_split(cat.train, 0.1, seed=SEED)
test = load_test(cat.test)
print(f"# {CATEGORY}: {len(test.items)} test images ({int(test.labels.sum())} with defects), "
      f"{SIZE}x{SIZE}, scales {list(SCALES)}")


def students_for(p):
    """The students saved for p (tutorial 03's, or one this tutorial saved), else
    trained here as tutorial 03 trains them; with validation statistics, saved."""
    path = scale_path(MODELS, p)
    if os.path.exists(path):
        print(f"# students p={p}: {path}")
        model = load_scale(path, device)
    else:
        teacher = (models.load(f"out/teacher_p{p}.npz", p=p, device=device)   # tutorial 01's
                   if os.path.exists(f"out/teacher_p{p}.npz") else models.pretrained(p).to(device))
        print(f"# no {path}: training the students here")
        model = train_students(teacher, load_images(train_paths), n_students=STUDENTS,
                               epochs=EPOCHS, lr=LR, seed=SEED, width=WIDTH)
    if model.val_stats is None:
        model.set_val_stats(validation_stats(model, load_images(val_paths)))
    save_scale(model, MODELS)
    return model


def scores(amaps):
    """AU-PRO(0.3), pixel AUROC and image AUROC of maps (N, H, W) on the test set."""
    return (au_pro(amaps, test.masks), pixel_auroc(amaps, test.masks),
            image_auroc(image_scores(amaps), test.labels))


# 1. One ensemble per scale, each map in its own validation stds; then their mean.
ensembles = {p: students_for(p) for p in SCALES}
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
