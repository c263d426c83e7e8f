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

Time on a 2-core CPU (another job on one core): about 7 s with tutorial 03's students, 75 s
without (--quick: 3 s; on 32-pixel images its numbers mean little). GPU: not measured.
Reuses out/students/scale_33.npz from tutorial 03 (--quick: out/quick/students/scale_17.npz) or
trains and saves it; stores the validation statistics in that file for tutorials 05 and 06.
Figure: out/04_anomaly_maps.png.
Last line printed, e.g. (after tutorials 01 and 03, full runs):
    mean inside / outside the defects: e~ 19.09 / 0.72, v~ 7.53 / 0.33, e~+v~ 26.62 / 1.05
"""
import os

import numpy as np

import steps
from ustudents import viz
from ustudents.backend import asnumpy
from ustudents.data import load_images, load_test
from ustudents.scoring import combined, score_maps, validation_stats
from ustudents.students import save_scale

cfg = steps.start("04_anomaly_maps", "regression error, uncertainty and their combination")

# 1. The data of tutorial 03: training images, the held-out validation images, the test set.
train_paths, val_paths, test_items = steps.data(cfg)
val_x, test = load_images(val_paths), load_test(test_items)
print(f"# {cfg.CATEGORY}: {len(val_x)} validation images, {len(test.items)} test images "
      f"({int(test.labels.sum())} with defects), {cfg.SIZE}x{cfg.SIZE}")
model = steps.students_for(cfg, cfg.P, train_paths)             # tutorial 03's, or trained here

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
print(f"saved: {save_scale(model, cfg.MODELS)} (now with the validation statistics)")
e_n = (e - stats["e_mean"]) / stats["e_std"]                             # ẽ
v_n = (v - stats["v_mean"]) / stats["v_std"]                             # ṽ
both = asnumpy(combined(e, v, model))                                    # ẽ + ṽ

# 4. The figure: the test image with the largest defect, its ground truth, e, v and ẽ + ṽ.
k = int(np.argmax(test.masks.reshape(len(test.masks), -1).sum(axis=1)))
os.makedirs("out", exist_ok=True)
viz.save_score_figure("out/04_anomaly_maps.png", test.images[k],
                      {"ground truth": test.masks[k].astype(float), "regression error e": e[k],
                       "uncertainty v": v[k], "combined e~ + v~": both[k]},
                      title=f"p={cfg.P}, {test.items[k].defect}/{test.items[k].image.name}")
print("figure: out/04_anomaly_maps.png")
defect, normal = test.masks, ~test.masks
print("# e~, v~ = (e - e_mean) / e_std, (v - v_mean) / v_std: in validation stds")
print("mean inside / outside the defects: "
      + ", ".join(f"{name} {m[defect].mean():.2f} / {m[normal].mean():.2f}"
                  for name, m in (("e~", e_n), ("v~", v_n), ("e~+v~", both))))
