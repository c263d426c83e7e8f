"""Step 3: train the students to regress the teacher's normalised descriptors.

What it teaches: the students S_1..S_M are patch networks like the teacher, randomly initialised,
trained densely on anomaly-free images only (paper §3.2; docs/method.md §4). Their target at
every pixel is the teacher's descriptor, normalised per channel with the mean μ and std σ of the
teacher over all training pixels (computed streaming, a batch at a time):

    L(S_i) = 1/(w·h) Σ_(r,c) ||μ^{S_i}_(r,c) − (y^T_(r,c) − μ) ⊘ σ||²

Each target channel then has mean 0 and variance 1, so predicting 0 everywhere scores exactly
D = 128: the loss says how much of the teacher a student has learnt. On normal images the students
learn to agree with the teacher; tutorial 04 shows where they do not.

    python tutorials/03_students.py [--device auto|cpu|cuda] [--quick]

Time on a 2-core CPU: 70-100 s (--quick: 2 s). GPU: not measured.
Teacher: out/teacher_p33.npz from tutorial 01 (--quick: teacher_p17.npz) if present, else the
shipped one (models.pretrained). Saves out/students/scale_33.npz
(--quick: out/quick/students/scale_17.npz) for tutorials 04-06; figure out/03_students.png.
Last line printed, e.g. (after tutorial 01's full run):
    students p=33: final regression loss 10.51 9.03 8.27 (epoch 1: 88.7; predicting 0 scores 128)
"""
import argparse
import os

import matplotlib
import numpy as np

from ustudents import models
from ustudents.backend import asnumpy, default_device, describe, xp_for
from ustudents.data import load_category, load_images, train_val_split
from ustudents.dense import dense_features
from ustudents.students import channel_stats, normalise, save_scale, train_students
from ustudents.synthetic import make_dataset

matplotlib.use("Agg")
import matplotlib.pyplot as plt                                 # noqa: E402  (after the backend)

P = 33                 # patch size of teacher and students: 17, 33 or 65
STUDENTS = 3           # M, the ensemble size (the paper: 3)
WIDTH = 0.25           # the students' hidden channels x WIDTH (the paper: 1)
EPOCHS = 10
LR = 1e-3              # the paper: 1e-4 over far more steps; 10 epochs of 18 images need more
CATEGORY = "nut"       # synthetic category: weave, felt or nut
N_TRAIN, N_TEST, SIZE = 20, 16, 64     # synthetic images; a tenth of train is held out
DATA, MODELS = "out/data", "out/students"
SEED = 0

ap = argparse.ArgumentParser(description="train the student ensemble")
ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
ap.add_argument("--quick", action="store_true", help="tiny images, narrow students, a few epochs")
args = ap.parse_args()
if args.quick:
    P, STUDENTS, WIDTH, EPOCHS = 17, 2, 0.125, 3
    N_TRAIN, N_TEST, SIZE = 5, 4, 32
    DATA, MODELS = "out/quick/data", "out/quick/students"
device = default_device(args.device)
xp = xp_for(device)
print(f"# 03_students | {describe(device)} | device {device} | float32 | seed {SEED}")

# 1. Anomaly-free training images; the held-out tenth is for tutorial 04's validation statistics.
make_dataset(DATA, [CATEGORY], n_train=N_TRAIN, n_test=N_TEST, size=SIZE, seed=SEED)
train_paths, val_paths = train_val_split(load_category(DATA, CATEGORY).train, 0.1, seed=SEED)
train_x, val_x = load_images(train_paths), load_images(val_paths)        # (N, 3, SIZE, SIZE)
print(f"# {CATEGORY}: {len(train_x)} training images, {len(val_x)} held out, {SIZE}x{SIZE}")
if os.path.exists(f"out/teacher_p{P}.npz"):                              # tutorial 01's
    teacher, source = models.load(f"out/teacher_p{P}.npz", p=P, device=device), "tutorial 01"
else:
    teacher, source = models.pretrained(P).to(device), "shipped (models.pretrained)"
print(f"# teacher p={P}: {source}, width {teacher.width:g}")

# 2. μ and σ per channel: streamed over batches of 2 images, and once more all at once, to check.
mu, sigma = channel_stats(teacher, train_x, batch=2)                      # (D,), (D,)
features = dense_features(teacher, xp.asarray(train_x))                   # (N, D, H, W)
full_mu, full_sigma = features.mean(axis=(0, 2, 3)), features.std(axis=(0, 2, 3))
diff = float(max(abs(mu - full_mu).max(), abs(sigma - full_sigma).max()))
targets = normalise(features, mu, sigma)                                  # (N, D, H, W)
t_mean, t_std = targets.mean(axis=(0, 2, 3)), targets.std(axis=(0, 2, 3))
print(f"# mu, sigma over {train_x.shape[0] * SIZE * SIZE} pixels: streamed == all at once, "
      f"max |difference| {diff:.1e}; sigma {float(sigma.min()):.3g}..{float(sigma.max()):.3g}")
print(f"# normalised targets: channel means within +-{float(abs(t_mean).max()):.1e}, "
      f"stds {float(t_std.min()):.4f}..{float(t_std.max()):.4f}")

# 3. Train. One line per epoch: the mean loss of each student (before each step's update).
model = train_students(teacher, train_x, n_students=STUDENTS, epochs=EPOCHS, lr=LR, seed=SEED,
                       width=WIDTH, mu=mu, sigma=sigma)
path = save_scale(model, MODELS)
print(f"saved: {path}")

# 4. On a held-out image: does each student reproduce the teacher there too?
x = xp.asarray(val_x[:1])
target = asnumpy(normalise(dense_features(teacher, x), mu, sigma))[0]     # (D, H, W)
outs = [asnumpy(dense_features(s, x))[0] for s in model.students]         # M x (D, H, W)
held_out = [float(((o - target) ** 2).sum(axis=0).mean()) for o in outs]
print("held-out image: loss " + " ".join(f"{v:9.4f}" for v in held_out))

# 5. The figure: loss curves, and descriptors as colours. The first 3 principal components of
# the teacher's targets on this image become R, G, B; the students are shown in the same basis.
D = target.shape[0]
flat = target.reshape(D, -1).T                                            # (H*W, D)
centre = flat.mean(axis=0)
basis = np.linalg.svd(flat - centre, full_matrices=False)[2][:3]          # (3, D)
proj = (flat - centre) @ basis.T                                          # (H*W, 3)
lo, hi = np.percentile(proj, 1, axis=0), np.percentile(proj, 99, axis=0)


def as_rgb(desc):
    """(D, H, W) descriptors -> (H, W, 3) colours in the teacher's PCA basis."""
    rgb = ((desc.reshape(D, -1).T - centre) @ basis.T - lo) / (hi - lo)
    return np.clip(rgb, 0, 1).reshape(SIZE, SIZE, 3)


history = np.array(model.history)                                         # (EPOCHS, M)
os.makedirs("out", exist_ok=True)
fig, axes = plt.subplots(1, 3 + STUDENTS, figsize=(3.3 * (3 + STUDENTS), 3.4))
axes[0].plot(np.arange(1, EPOCHS + 1), history, marker="o")
axes[0].legend([f"student {i + 1}" for i in range(STUDENTS)])
axes[0].axhline(D, color="gray", linestyle="--", linewidth=1)
axes[0].set(xlabel="epoch", ylabel="regression loss", title="training loss (dashed: predict 0)")
axes[1].imshow(val_x[0].transpose(1, 2, 0))
axes[1].set_title("held-out image")
axes[2].imshow(as_rgb(target))
axes[2].set_title("teacher (y - mu) / sigma\nPCA 1-3 as RGB")
for i, (ax, out) in enumerate(zip(axes[3:], outs)):
    ax.imshow(as_rgb(out))
    ax.set_title(f"student {i + 1}, loss {held_out[i]:.1f}")
for ax in axes[1:]:
    ax.set_xticks([])
    ax.set_yticks([])
fig.savefig("out/03_students.png", dpi=90, bbox_inches="tight")
plt.close(fig)
print("figure: out/03_students.png")
print(f"students p={P}: final regression loss " + " ".join(f"{v:.2f}" for v in history[-1])
      + f" (epoch 1: {history[0].mean():.1f}; predicting 0 scores {D})")
