"""What one iteration of teacher pretraining trains on (ustudents/teacher.py): its Batch, drawn
from a PatchSampler on the host and copied to the device in one go.

    batch = sample_batch(sampler, config, triplet, xp, targets, pool, iteration)
    teacher_step(net, params, opt, batch, weights)          # teacher.py

The patch recipe's batch is config.batch anchor patches (with the triplet, their positives and
negatives after them), the distillation targets of the anchors beside them; the dense recipe's
is a few whole crops, whose every patch is a row of the descriptors (sample_crops).
"""
from typing import NamedTuple

import numpy as np


class Batch(NamedTuple):
    """What one iteration trains on, on the device. x: the network's input, patches
    (B, 3, p, p) or crops (n, 3, side + p - 1, side + p - 1) (dense). The descriptors are its
    rows: one per patch, or one per patch of each crop (crop, row, column). anchors: the first
    `anchors` rows, which the distillation and compactness terms see. target: their
    standardised distillation targets (anchors, K), or None. triplet: row selections
    (anchor, positive, negative) for the triplet loss, or None."""
    x: object
    anchors: int
    target: object = None
    triplet: tuple = None
    dense: bool = False


def sample_batch(sampler, config, triplet, xp, targets=None, pool=None, iteration=None):
    """The Batch of one iteration, on the device: drawn on the host (the sampler's seeded
    generator, so CPU and GPU runs see the same patches) and copied in one go, with the
    distillation targets (targets: PatchTargets or DenseTargets, or None without Lk).

    Patch recipe: config.batch anchors, and with the triplet their positives and the
    negatives after them. With a TargetPool (pool; iteration counts from 1) the anchors and
    their targets are the pool's. Dense recipe: see sample_crops."""
    if config.recipe == "dense":
        return sample_crops(sampler, config, triplet, xp, targets)
    B, target = config.batch, None
    if pool is not None:
        places, target = pool.draw(iteration, sampler.rng)
    else:
        places = sampler.places(B, margin=config.shift if triplet else 0)
    if not triplet:
        x, rows = xp.asarray(sampler.patches_at(places)), None
    else:
        a, pos, neg = sampler.triplet(B, shift=config.shift, noise=config.noise,
                                      jitter=config.jitter, places=places,
                                      recolour=config.recolour,
                                      recolour_step=config.recolour_step)
        x = xp.asarray(np.concatenate([a, pos, neg]))                # (3B, 3, p, p)
        rows = (slice(0, B), slice(B, 2 * B), slice(2 * B, 3 * B))
    if target is None and targets is not None:
        target = targets(x[:B])
    return Batch(x, B, target, rows)


def sample_crops(sampler, config, triplet, xp, targets=None):
    """The dense recipe's Batch: config.crops crops of (side + p - 1)^2 pixels, side =
    config.crop_size, at random places of random images (each image unlike the one before),
    so that every one of their side x side patches lies wholly inside its image.

    With the triplet, a copy of the crops plus N(0, noise²) noise follows them; in each crop,
    batch / crops anchor patches (distinct, shift px from the edge), their positives the
    noisy copy's patches shifted by one random (dy, dx) in ±shift per crop, and the negatives
    the next crop's patches at the anchors' places (another image)."""
    rng, p, side, n = sampler.rng, sampler.p, config.crop_size, config.crops
    w = side + p - 1
    k = (rng.integers(len(sampler.images)) + np.cumsum(rng.integers(1, len(sampler.images), size=n))) % len(sampler.images)
    y0 = rng.integers(0, sampler.sizes[k, 0] - w + 1)
    x0 = rng.integers(0, sampler.sizes[k, 1] - w + 1)
    crops = np.stack([sampler.images[kk][:, yy:yy + w, xx:xx + w] for kk, yy, xx in zip(k, y0, x0)])
    rows = None
    if triplet:
        noisy = crops + np.float32(config.noise) * rng.standard_normal(crops.shape, dtype=np.float32)
        crops = np.concatenate([crops, np.clip(noisy, 0, 1)])       # (2n, 3, w, w)
        m, s = max(1, config.batch // n), config.shift
        inner = side - 2 * s
        pick = np.stack([rng.choice(inner * inner, m, replace=False) for _ in range(n)])   # (n, m)
        r, c = pick // inner + s, pick % inner + s
        dy, dx = rng.integers(-s, s + 1, size=(2, n, 1))
        crop = np.arange(n)[:, None]
        a = (crop * side + r) * side + c
        pos = ((n + crop) * side + r + dy) * side + c + dx
        neg = (((crop + 1) % n) * side + r) * side + c
        rows = tuple(xp.asarray(i.ravel()) for i in (a, pos, neg))
    target = targets(k, y0, x0, side, xp) if targets is not None else None
    return Batch(xp.asarray(crops), n * side * side, target, rows, dense=True)
