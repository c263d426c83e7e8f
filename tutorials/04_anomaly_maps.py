"""Step 4: anomaly maps from the students: regression error, predictive uncertainty, both.

What it teaches: where the students fail, something is new (paper §3.2, the anomaly scores;
docs/method.md §5). With the students' mean μ̄ = 1/M Σ_i μ^{S_i} at a pixel:

    regression error        e = ||μ̄ − (y^T − μ) ⊘ σ||²       the students miss the teacher
    predictive uncertainty  v = 1/M Σ_i ||μ^{S_i}||² − ||μ̄||²  the students disagree

On normal pixels both are small: the students learnt them. e and v come in different units, so
they are put on one scale with their mean and std over every pixel of anomaly-free validation
images (held out from training), then added: ẽ + ṽ = (e − e_mean)/e_std + (v − v_mean)/v_std.
A normal pixel then scores about 0, and a defect pixel how many validation stds it stands out.

    python tutorials/04_anomaly_maps.py [--device auto|cpu|cuda] [--quick]

Time on a 2-core CPU: 7-12 s with tutorial 03's students, 75 s
without (--quick: 3 s; on 32-pixel images its numbers mean little). GPU: not measured.
Reuses out/students/scale_33.npz from tutorial 03 (--quick: out/quick/students/scale_17.npz),
running tutorial 03 first if it is missing; stores the validation statistics in that file for
tutorials 05 and 06.
Figure: out/04_anomaly_maps.png.
Last line printed, e.g. (after tutorials 01 and 03, full runs):
    mean inside / outside the defects: e~ 26.91 / 0.97, v~ 6.94 / 0.34, e~+v~ 33.86 / 1.32
"""
import argparse
import os
import runpy
from pathlib import Path

import numpy as np

from ustudents import viz
from ustudents.backend import asnumpy, default_device, describe
from ustudents.data import load_category, load_images, load_test, train_val_split
from ustudents.scoring import combined, score_maps, validation_stats
from ustudents.students import load_scale, save_scale, scale_path

# Where tutorial 03 put its data and students, and its patch size and seed.
P, CATEGORY, DATA, MODELS, SEED = 33, "nut", "out/data", "out/students", 0

ap = argparse.ArgumentParser(description="regression error, uncertainty and their combination")
ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
ap.add_argument("--quick", action="store_true", help="tutorial 03's --quick students")
args = ap.parse_args()
if args.quick:
    P, DATA, MODELS = 17, "out/quick/data", "out/quick/students"
device = default_device(args.device)
print(f"# 04_anomaly_maps | {describe(device)} | device {device} | float32 | seed {SEED}")

# 1. Tutorial 03's students (run it first if it has not run, with these same flags), its
# held-out validation images, and the test set.
if not os.path.exists(scale_path(MODELS, P)):
    print(f"# no {scale_path(MODELS, P)}: running tutorial 03 first")
    runpy.run_path(str(Path(__file__).with_name("03_students.py")), run_name="__main__")
model = load_scale(scale_path(MODELS, P), device)
cat = load_category(DATA, CATEGORY)
_, val_paths = train_val_split(cat.train, 0.1, seed=SEED)            # the split tutorial 03 made
val_x, test = load_images(val_paths), load_test(cat.test)
print(f"# students p={P}: {scale_path(MODELS, P)}; {CATEGORY}: {len(val_x)} validation images, "
      f"{len(test.items)} test images ({int(test.labels.sum())} with defects)")

# 2. e and v at every pixel of every test image; one line per image, raw units.
maps = score_maps(model, test.images)
e, v = asnumpy(maps["error"]), asnumpy(maps["uncertainty"])                # (N, H, W) each
print(f"{'image':>22}  {'e inside':>9} {'outside':>9}  {'v inside':>9} {'outside':>9}")
for k, item in enumerate(test.items):
    gt = test.masks[k]                                                   # (H, W) bool
    cells = [f"{m[k][where].mean():9.3f}" if where.any() else f"{'-':>9}"
             for m in (e, v) for where in (gt, ~gt)]
    name = f"{item.defect}/{item.image.name}"
    print(f"{name:>22}  {cells[0]} {cells[1]}  {cells[2]} {cells[3]}")

# 3. The validation statistics: anomaly-free pixels the students never trained on.
stats = validation_stats(model, val_x)
model.set_val_stats(stats)
print("validation: " + "  ".join(f"{k} {val:.4g}" for k, val in stats.items()))
print(f"saved: {save_scale(model, MODELS)} (now with the validation statistics)")
e_n = (e - stats["e_mean"]) / stats["e_std"]                             # ẽ
v_n = (v - stats["v_mean"]) / stats["v_std"]                             # ṽ
both = asnumpy(combined(e, v, model))                                    # ẽ + ṽ

# 4. The figure: the test image with the largest defect, its ground truth, e, v and ẽ + ṽ.
k = int(np.argmax(test.masks.reshape(len(test.masks), -1).sum(axis=1)))
os.makedirs("out", exist_ok=True)
viz.save_score_figure("out/04_anomaly_maps.png", test.images[k],
                      {"ground truth": test.masks[k].astype(float), "regression error e": e[k],
                       "uncertainty v": v[k], "combined e~ + v~": both[k]},
                      title=f"p={P}, {test.items[k].defect}/{test.items[k].image.name}")
print("figure: out/04_anomaly_maps.png")
defect, normal = test.masks, ~test.masks
print("# e~, v~ = (e - e_mean) / e_std, (v - v_mean) / v_std: in validation stds")
print("mean inside / outside the defects: "
      + ", ".join(f"{name} {m[defect].mean():.2f} / {m[normal].mean():.2f}"
                  for name, m in (("e~", e_n), ("v~", v_n), ("e~+v~", both))))
