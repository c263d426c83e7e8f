"""Step 2: the patch network at every pixel in one pass (Fast Dense Feature Extraction).

What it teaches: the teacher and the students describe *every* pixel by the p x p patch centred
on it (paper §3: the dense teacher T and the students S_i, computed as Bailer et al., BMVC 2017
propose; docs/method.md §3). Running the patch network once per pixel repeats nearly all its
work; the dense network runs each layer once on the whole image, turns every stride-2 pool into
4 shifted pools stacked in the batch axis ("multipool") and puts the results back at their pixels
with one transpose ("unwarp"). This script checks that both give the same numbers, times them,
and draws which shifted copy each pixel comes from. It needs nothing from step 1: the equality holds for
any weights, and a freshly initialised p = 65 network shows all three pools.

    python tutorials/02_dense.py [--device auto|cpu|cuda] [--quick]

Time on a 2-core CPU: 15-27 s (--quick: 2 s); far longer while other jobs share the cores,
as multi-threaded OpenBLAS then stalls (OPENBLAS_NUM_THREADS=1 avoids it). GPU: not measured yet.
Figure: out/02_dense.png. Last line printed, e.g.:
    dense == patch by patch: max |difference| 7.5e-08 (values up to 1.7e-01), dense 88x faster
"""
import argparse
import math
import os
import time

import matplotlib
import numpy as np

from ustudents.backend import asnumpy, default_device, describe, synchronize, xp_for
from ustudents.dense import dense_features, unwarp_forward
from ustudents.models import PatchNet

matplotlib.use("Agg")
import matplotlib.pyplot as plt                                 # noqa: E402  (after the backend)

P = 65                     # patch size: 17, 33 or 65 (65 has three pools: 64 shifted copies)
WIDTH = 1.0                # hidden channels x WIDTH (the paper: 1)
SIZE = 30                  # image side; not a multiple of 8, to show the pad-then-crop
BATCH = 128                # patches per forward pass in the patch-by-patch loop
SEED = 0

ap = argparse.ArgumentParser(description="dense feature extraction == patch by patch")
ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
ap.add_argument("--quick", action="store_true", help="a narrower network on a smaller image")
args = ap.parse_args()
if args.quick:
    WIDTH, SIZE = 0.125, 18
device = default_device(args.device)
xp = xp_for(device)
print(f"# 02_dense | {describe(device)} | device {device} | float32 | seed {SEED}")

net = PatchNet(P, width=WIDTH, seed=SEED).to(device)
print(f"# {net}; pool strides {net.strides}, so {math.prod(net.strides) ** 2} shifted copies")

# A smooth random image (sums of waves), float32, shape (1, 3, SIZE, SIZE).
rng = np.random.default_rng(SEED)
r, c = np.mgrid[:SIZE, :SIZE] / SIZE
image = sum(np.sin(2 * np.pi * (rng.uniform(1, 4) * r + rng.uniform(1, 4) * c) + rng.uniform(0, 6))
            for _ in range(3))
image = np.stack([image, np.roll(image, 5, 0), image.T])[None].astype(np.float32)
x = xp.asarray(image)


def timed(fn):
    synchronize()
    t = time.perf_counter()
    out = fn()
    synchronize()
    return out, time.perf_counter() - t


# 1. Dense: one pass over the whole image.
dense_features(net, x)                                           # warm-up (threads, GPU kernels)
dense, t_dense = timed(lambda: dense_features(net, x))           # (1, 128, SIZE, SIZE)
print(f"dense          {t_dense:8.3f} s  output {tuple(dense.shape)}")


# 2. Patch by patch: the definition. Pad as the dense pass does (zeros, centred patches).
def patch_by_patch():
    padded = np.pad(image, ((0, 0), (0, 0), (P // 2, (P - 1) // 2), (P // 2, (P - 1) // 2)))
    pixels = [(i, j) for i in range(SIZE) for j in range(SIZE)]   # row by row
    out = []
    for k in range(0, len(pixels), BATCH):
        batch = np.stack([padded[0, :, i:i + P, j:j + P] for i, j in pixels[k:k + BATCH]])
        out.append(net.forward(xp.asarray(batch))[0])                # (B, 128, 1, 1)
    return xp.concatenate(out).reshape(1, SIZE, SIZE, -1).transpose(0, 3, 1, 2)


patches, t_patch = timed(patch_by_patch)
print(f"patch by patch {t_patch:8.3f} s  {SIZE * SIZE} forward passes in batches of {BATCH}")

# 3. The figure: unwarp a batch whose k-th shifted copy is filled with k, to see where each
# copy's values land. Pixels with the same number came through the same chain of pool shifts.
S = math.prod(net.strides)
copies = np.arange(S * S, dtype=np.float32)[:, None, None, None]
copies = np.broadcast_to(copies, (S * S, 1, 2, 2))                # copy k: a 2x2 map of k
phase, _ = unwarp_forward(copies, net.strides)                    # (1, 1, 2S, 2S)
os.makedirs("out", exist_ok=True)
fig, axes = plt.subplots(1, 4, figsize=(20, 5.4))
axes[0].imshow(image[0, 0], cmap="gray")
axes[0].set_title(f"input, {SIZE}x{SIZE} (channel 0)")
axes[1].imshow(phase[0, 0], cmap="viridis")
if S <= 8:
    for (i, j), k in np.ndenumerate(phase[0, 0]):
        axes[1].text(j, i, int(k), ha="center", va="center", fontsize=6, color="w")
axes[1].set_title(f"which of the {S * S} shifted copies fills\neach pixel ({2 * S}x{2 * S} corner)")
axes[2].imshow(asnumpy(dense)[0, 0], cmap="viridis")
axes[2].set_title("dense output, channel 0")
diff = np.abs(asnumpy(dense) - asnumpy(patches))
fig.colorbar(axes[3].imshow(diff[0].max(axis=0), cmap="magma"), ax=axes[3], fraction=0.046)
axes[3].set_title("|dense - patch by patch|\n(max over channels)")
for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])
fig.savefig("out/02_dense.png", dpi=90, bbox_inches="tight")
print("figure: out/02_dense.png")
print(f"dense == patch by patch: max |difference| {diff.max():.1e} "
      f"(values up to {np.abs(asnumpy(patches)).max():.1e}), dense {t_patch / t_dense:.0f}x faster")
