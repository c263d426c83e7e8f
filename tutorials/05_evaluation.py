"""Step 5: evaluation: the PRO curve, AU-PRO(0.3), pixel AUROC and image AUROC.

What it teaches: how MVTec AD scores a segmentation (paper §4; docs/method.md §6). The ground
truth of each image splits into regions, its 8-connected components. At a threshold t:

    FPR(t) = share of all anomaly-free pixels (of every test image) with score >= t
    PRO(t) = mean over all regions, each weighted equally, of the share of its pixels >= t

Sweeping t down over every distinct score traces PRO against FPR from (0, 0) to (1, 1);
AU-PRO(0.3) is the area up to FPR 0.3 (interpolated there), divided by 0.3: 1 is perfect, a
random map scores about 0.15. Pixel AUROC counts pixels (a large defect outweighs many small
ones) and runs to FPR 1; image AUROC ranks whole images by their map's maximum. First the
definitions by hand on the toy example of docs/method.md §6 (known answer 0.98456790), then on
real maps.

    python tutorials/05_evaluation.py [--device auto|cpu|cuda] [--quick]

Time on a 2-core CPU: 7-11 s with tutorial 03's students, 65 s
without (--quick: 3 s; on 32-pixel images its numbers mean little). GPU: not measured.
Reuses out/students/scale_33.npz from tutorials 03 and 04 (--quick:
out/quick/students/scale_17.npz), running tutorial 04 first if it lacks validation statistics.
Figure: out/05_evaluation.png. Last line printed, e.g. (after tutorials 01, 03 and 04):
    AU-PRO(0.3) 0.912 | pixel AUROC 0.987 | image AUROC 0.917
"""
import argparse
import os
import runpy
from pathlib import Path

import matplotlib
import numpy as np
from scipy.ndimage import label

from ustudents.backend import asnumpy, default_device, describe
from ustudents.data import load_category, load_test
from ustudents.metrics import au_pro, image_auroc, image_scores, pixel_auroc, pro_curve, roc_curve
from ustudents.scoring import anomaly_map
from ustudents.students import load_scale, scale_path

matplotlib.use("Agg")
import matplotlib.pyplot as plt                                 # noqa: E402  (after the backend)

LIMIT = 0.3                                                      # integrate PRO up to this FPR
# Where tutorials 03 and 04 put their data and students, and their patch size and seed.
P, CATEGORY, DATA, MODELS, SEED = 33, "nut", "out/data", "out/students", 0

ap = argparse.ArgumentParser(description="the PRO curve and AU-PRO, against AUROC")
ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
ap.add_argument("--quick", action="store_true", help="tutorial 03's --quick students")
args = ap.parse_args()
if args.quick:
    P, DATA, MODELS = 17, "out/quick/data", "out/quick/students"
device = default_device(args.device)
print(f"# 05_evaluation | {describe(device)} | device {device} | float32 | seed {SEED}")


def fpr_pro(t, maps, masks):
    """FPR and PRO at one threshold t, straight from the definitions."""
    normal = np.concatenate([m[~g] for m, g in zip(maps, masks)])
    overlaps = []
    for m, g in zip(maps, masks):
        regions, n = label(g, structure=np.ones((3, 3)))        # 8-connected components 1..n
        overlaps += [(m[regions == r] >= t).mean() for r in range(1, n + 1)]
    return (normal >= t).mean(), np.mean(overlaps)


# 1. The toy example: image 1 has a 2x2 region at the top left and a 1-pixel region at (3, 3).
toy_maps, toy_masks = np.zeros((2, 4, 4)), np.zeros((2, 4, 4), dtype=bool)
toy_masks[0, :2, :2] = toy_masks[0, 3, 3] = True
toy_maps[0, :2, :2] = [[0.9, 0.8], [0.7, 0.1]]
toy_maps[0, 3, 3], toy_maps[1, 2, 2] = 0.6, 0.5
curve = [(0.0, 0.0)] + [fpr_pro(t, toy_maps, toy_masks) for t in np.unique(toy_maps)[::-1]]
print(f"toy: {'threshold':>9} {'FPR':>7} {'PRO':>7}")
for t, (f, p) in zip(np.unique(toy_maps)[::-1], curve[1:]):
    print(f"toy: {t:9.2f} {f:7.4f} {p:7.4f}")
fx, py = np.array(curve).T
j = int(np.argmax(fx > LIMIT))                                 # the first point past the limit
y_cut = py[j - 1] + (py[j] - py[j - 1]) * (LIMIT - fx[j - 1]) / (fx[j] - fx[j - 1])
x, y = np.append(fx[:j], LIMIT), np.append(py[:j], y_cut)     # the curve cut at FPR = LIMIT
by_hand = np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2) / LIMIT    # trapezoids, normalised
print(f"toy: AU-PRO({LIMIT}) by hand {by_hand:.8f}, "
      f"metrics.au_pro {au_pro(toy_maps, toy_masks):.8f}")

# 2. Real maps: tutorial 03's students, with the validation statistics tutorial 04 stored (run
# it first if they are missing: it runs tutorial 03 in turn if need be), on the test set.
path = scale_path(MODELS, P)
if not os.path.exists(path) or load_scale(path).val_stats is None:
    print(f"# no validation statistics in {path}: running tutorial 04 first")
    runpy.run_path(str(Path(__file__).with_name("04_anomaly_maps.py")), run_name="__main__")
model = load_scale(path, device)
test = load_test(load_category(DATA, CATEGORY).test)
amaps = asnumpy(anomaly_map(model, test.images))                         # (N, H, W): ẽ + ṽ
masks, labels = test.masks, test.labels                                  # (N, H, W), (N,)
fprs, pros = pro_curve(amaps, masks)                                     # one point per score
scores, normal = amaps.ravel(), amaps[~masks]
print(f"# {len(masks)} test images, {sum(label(g, np.ones((3, 3)))[1] for g in masks)} regions, "
      f"{normal.size} anomaly-free pixels, {len(fprs)} curve points")
print(f"{'target FPR':>10} {'threshold':>10} {'FPR':>7} {'PRO':>7}   "
      f"pro_curve: {'FPR':>7} {'PRO':>7}")
for target in (0.01, 0.03, 0.1, LIMIT):
    t = np.quantile(normal, 1 - target)                # about `target` of normal pixels >= t
    f, p = fpr_pro(t, amaps, masks)
    k = len(np.unique(scores[scores >= t]))            # point k of the curve is threshold t
    print(f"{target:10.2f} {t:10.3f} {f:7.4f} {p:7.4f}   {'':>10} {fprs[k]:7.4f} {pros[k]:7.4f}")
noise = np.random.default_rng(SEED).random(amaps.shape)
print(f"# a random map: AU-PRO({LIMIT}) {au_pro(noise, masks):.3f}, "
      f"pixel AUROC {pixel_auroc(noise, masks):.3f}")
aupro, pixel = au_pro(amaps, masks), pixel_auroc(amaps, masks)
image = image_auroc(image_scores(amaps), labels)

# 3. The figure: the PRO curve with the integrated part shaded, and both ROC curves.
os.makedirs("out", exist_ok=True)
fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
inside = fprs <= LIMIT
axes[0].plot(fprs, pros, label=f"AU-PRO({LIMIT}) = {aupro:.3f}")
axes[0].fill_between(fprs[inside], pros[inside], alpha=0.2)
axes[0].axvline(LIMIT, color="gray", linestyle="--", linewidth=1)
axes[0].set(xlabel="FPR (anomaly-free pixels)", ylabel="PRO (mean overlap per region)",
            title="PRO curve")
axes[1].plot(*roc_curve(scores, masks.ravel()), label=f"pixels, AUROC {pixel:.3f}")
axes[1].plot(*roc_curve(image_scores(amaps), labels), label=f"images, AUROC {image:.3f}")
axes[1].plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1)
axes[1].set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curves")
for ax in axes:
    ax.set(xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="lower right")
fig.savefig("out/05_evaluation.png", dpi=90, bbox_inches="tight")
plt.close(fig)
print("figure: out/05_evaluation.png")
print(f"AU-PRO({LIMIT}) {aupro:.3f} | pixel AUROC {pixel:.3f} | image AUROC {image:.3f}")
