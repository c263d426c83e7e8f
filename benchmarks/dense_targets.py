"""How close is the dense recipe's distillation target to the paper's?

    python benchmarks/dense_targets.py [--images DIR] [--scales 17 33 65] [--pools 1 2 3] [--n 256]

The paper's target for a p x p patch is P(patch resized to 64 x 64), globally average-pooled
(P = EfficientNet-Lite0). The dense recipe reads it instead from P's last feature map over the
whole image resized by 64 / p, average-pooled over pool x pool cells, at the patch's centre
(ustudents.targets.DenseTargets); or from an earlier map, after the first BLOCKS blocks, which
sees less beyond the patch, against P's map after those blocks of the resized patch, pooled.
For n random patches of held-out images, both targets are
standardised with the patch targets' statistics, and the table gives
    R²   = 1 - Σ (dense - patch)² / Σ (patch - mean)²   (1: the same target; 0: no better than
           the mean; the share of the paper's target that the dense one reproduces as it is)
    corr = the mean over patches of the correlation between the two 1280-vectors.
Held-out images: dead leaves of a seed no teacher trains on (default), or any folder.
"""
import argparse
import time

import numpy as np

from ustudents.imagenet import LITE0_STAGES, load_efficientnet_lite0
from ustudents.natural import dead_leaves, natural_images
from ustudents.patches import resize_batch
from ustudents.targets import DenseTargets


LITE0_CHANNELS = {n + 1: F for n, F in enumerate(F for _, _, _, F, r in LITE0_STAGES for _ in range(r))}


def compare(model, images, p, blocks, pool, n, seed=0):
    """(R², corr) of the dense target against the patch target at n random patches, both from
    the feature map after `blocks` blocks (None: the last one)."""
    dense = DenseTargets(model, images, p, 64, np, pool=pool, blocks=blocks)
    rng = np.random.default_rng(seed)
    k = rng.integers(len(images), size=n)
    y = rng.integers(0, images.shape[2] - p + 1, size=n)
    x = rng.integers(0, images.shape[3] - p + 1, size=n)
    patches = np.stack([images[a, :, b:b + p, c:c + p] for a, b, c in zip(k, y, x)])
    fmap = model.feature_map(model.preprocess(resize_batch(patches, 64)), blocks)
    t_patch = fmap.mean(axis=(2, 3))                                           # (n, K)
    t_dense = np.concatenate([dense(np.array([a]), np.array([b]), np.array([c]), 1, np) * dense.scale
                              + dense.mean for a, b, c in zip(k, y, x)])         # unstandardised
    mean, scale = t_patch.mean(0), np.sqrt(t_patch.var(0).mean())
    a, b = (t_patch - mean) / scale, (t_dense - mean) / scale
    r2 = 1 - ((b - a) ** 2).sum() / (a ** 2).sum()
    ac, bc = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    corr = ((ac * bc).sum(1) / np.sqrt((ac ** 2).sum(1) * (bc ** 2).sum(1))).mean()
    return float(r2), float(corr), dense.stride, dense.k


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default=None, help="a folder of held-out photos (default: dead leaves)")
    ap.add_argument("--n-images", type=int, default=8)
    ap.add_argument("--scales", type=int, nargs="+", default=[17, 33, 65])
    ap.add_argument("--maps", nargs="+", default=["5:1", "5:8", "8:1", "8:4", "11:1", "11:4", "head:1", "head:2"],
                    help="BLOCKS:POOL pairs, BLOCKS 'head' for the last feature map")
    ap.add_argument("--n", type=int, default=256, help="patches compared per row")
    args = ap.parse_args()
    model = load_efficientnet_lite0()
    if args.images:
        images = natural_images(args.images, n=args.n_images, size=256)
    else:
        images = np.stack([dead_leaves(np.random.default_rng([987, k])) for k in range(args.n_images)])
    print(f"{len(images)} held-out images ({args.images or 'dead leaves, seed 987'}), {args.n} patches each row")
    print(f"{'p':>3} {'map':>5} {'K':>5} {'stride':>6} {'pool':>5} {'R2':>7} {'corr':>6} {'s':>6}")
    for p in args.scales:
        for item in args.maps:
            blocks, pool = item.split(":")
            blocks = None if blocks == "head" else int(blocks)
            t = time.perf_counter()
            r2, corr, stride, k = compare(model, images, p, blocks, int(pool), args.n)
            K = 1280 if blocks is None else LITE0_CHANNELS[blocks]
            print(f"{p:3d} {str(blocks or 'head'):>5} {K:5d} {stride:6d} {k:5d} {r2:7.3f} "
                  f"{corr:6.3f} {time.perf_counter() - t:6.1f}")


if __name__ == "__main__":
    main()
