"""Step 4: anomaly maps from the students: regression error, predictive uncertainty, both.

What it teaches: where the students fail, something is new (paper §3.2, the anomaly scores;
DESIGN.md §1 item 4). With the students' mean μ̄ = 1/M Σ_i μ^{S_i} at a pixel:

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
Last line printed, e.g.:
    mean inside / outside the defects: e~ 9.53 / 0.48, v~ 11.52 / 0.53, e~+v~ 21.05 / 1.01
"""
import argparse
import os

import numpy as np

from ustudents import models, viz
from ustudents.backend import asnumpy, default_device, describe
from ustudents.data import load_category, load_images, load_test, train_val_split
from ustudents.scoring import combined, score_maps, validation_stats
from ustudents.students import load_scale, save_scale, scale_path, train_students
from ustudents.synthetic import make_dataset

P, STUDENTS, WIDTH, EPOCHS, LR = 33, 3, 0.25, 10, 1e-3           # as in tutorial 03
CATEGORY = "nut"
N_TRAIN, N_TEST, SIZE = 20, 16, 64
TEACHER_WIDTH = 1.0
DATA, MODELS = "out/data", "out/students"
SEED = 0
QUICK = dict(P=17, STUDENTS=2, WIDTH=0.125, EPOCHS=3, N_TRAIN=5, N_TEST=4, SIZE=32,
             TEACHER_WIDTH=0.25, DATA="out/quick/data", MODELS="out/quick/students")

ap = argparse.ArgumentParser(description="regression error, uncertainty and their combination")
ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
ap.add_argument("--quick", action="store_true", help="tiny images, narrow students, a few epochs")
args = ap.parse_args()
if args.quick:
    P, STUDENTS, WIDTH, EPOCHS = QUICK["P"], QUICK["STUDENTS"], QUICK["WIDTH"], QUICK["EPOCHS"]
    N_TRAIN, N_TEST, SIZE = QUICK["N_TRAIN"], QUICK["N_TEST"], QUICK["SIZE"]
    TEACHER_WIDTH, DATA, MODELS = QUICK["TEACHER_WIDTH"], QUICK["DATA"], QUICK["MODELS"]
device = default_device(args.device)
print(f"# 04_anomaly_maps | {describe(device)} | device {device} | float32 | seed {SEED}")

# 1. The data of tutorial 03: training images, the held-out validation images, the test set.
make_dataset(DATA, [CATEGORY], n_train=N_TRAIN, n_test=N_TEST, size=SIZE, seed=SEED)
cat = load_category(DATA, CATEGORY)
train_paths, val_paths = train_val_split(cat.train, 0.1, seed=SEED)
val_x, test = load_images(val_paths), load_test(cat.test)
print(f"# {CATEGORY}: {len(val_x)} validation images, {len(test.items)} test images "
      f"({int(test.labels.sum())} with defects), {SIZE}x{SIZE}")


def teacher_for(p):
    """Tutorial 01's teacher if saved, else the shipped one, else an untrained network."""
    path = f"out/teacher_p{p}.npz"
    if os.path.exists(path):
        return models.load(path, p=p, device=device), f"{path} (tutorial 01)"
    try:
        return models.pretrained(p).to(device), "shipped (models.pretrained)"
    except (AttributeError, OSError, ValueError):                   # none shipped (yet)
        return (models.PatchNet(p, width=TEACHER_WIDTH, seed=SEED).to(device),
                "untrained (run tutorial 01 for a trained one)")


def students_for(p):
    """The students tutorial 03 saved for p, or the same training run here."""
    path = scale_path(MODELS, p)
    if os.path.exists(path):
        print(f"# students p={p}: {path} (tutorial 03)")
        return load_scale(path, device)
    teacher, source = teacher_for(p)
    print(f"# no {path}: training the students here, teacher {source}")
    model = train_students(teacher, load_images(train_paths), n_students=STUDENTS, epochs=EPOCHS,
                           lr=LR, seed=SEED, width=WIDTH)
    save_scale(model, MODELS)
    return model


model = students_for(P)

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
