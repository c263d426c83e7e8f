"""Anomaly scores per pixel (paper §3.2; multi-scale §3.3): docs/method.md §5.

With M student outputs μ^{S_i} (D,H,W per image) and their mean μ̄ = 1/M Σ_i μ^{S_i}:

    regression error        e = ||μ̄ − (y^T − μ) ⊘ σ||²
    predictive uncertainty  v = 1/M Σ_i ||μ^{S_i}||² − ||μ̄||²
    combined                ẽ + ṽ = (e − e_mean)/e_std + (v − v_mean)/v_std
    multi-scale             the mean of ẽ + ṽ over the scales, each with its own statistics
    image score             the maximum of the map: metrics.image_scores

e_mean, e_std, v_mean, v_std: pooled over all pixels of anomaly-free validation images.

    maps = score_maps(model, images)                  # {'error', 'uncertainty'}: (N,H,W)
    model.set_val_stats(validation_stats(model, val_images))
    amap = multiscale([anomaly_map(m, images) for m in models])
    scores = metrics.image_scores(amap)               # (N,), on the host
"""
import numpy as np

from .backend import get_array_module
from .blas import run_parallel, threads
from .dense import dense_features
from .moments import RunningMoments
from .students import VAL_STATS, image_batches, normalise


def _stack(student_outs):
    """A list of M arrays (N,D,H,W), or one array (M,N,D,H,W) -> (M,N,D,H,W)."""
    if isinstance(student_outs, (list, tuple)):
        student_outs = get_array_module(*student_outs).stack(student_outs)
    if student_outs.ndim != 5:
        raise ValueError(f"expected student outputs (M, N, D, H, W) or a list of (N, D, H, W), "
                         f"got shape {tuple(student_outs.shape)}")
    return student_outs


def regression_error(student_outs, target_norm):
    """e = ||μ̄ − t||² per pixel: student_outs (M,N,D,H,W) or a list of M (N,D,H,W); target_norm
    t = (y^T − μ) ⊘ σ (N,D,H,W) -> e (N,H,W)."""
    outs = _stack(student_outs)
    if outs.shape[1:] != target_norm.shape:
        raise ValueError(f"regression_error: student outputs {tuple(outs.shape)} do not match the "
                         f"target {tuple(target_norm.shape)}")
    r = outs.mean(axis=0) - target_norm                  # (N,D,H,W)
    return (r * r).sum(axis=1)                           # (N,H,W)


def predictive_uncertainty(student_outs):
    """v = 1/M Σ_i ||μ^{S_i}||² − ||μ̄||² per pixel: (M,N,D,H,W) or a list -> v (N,H,W).

    Computed in the equal form v = 1/M Σ_i ||d_i − d̄||² with d_i = μ^{S_i} − μ^{S_1} (the
    spread of the students around their mean, summed over D; shifting every student by the same
    μ^{S_1} does not change it). A sum of squares, so v >= 0 by construction: the paper's form
    subtracts two large, nearly equal numbers, and its round-off goes below 0 (it would need
    clipping). The shift makes identical students give exactly 0: d_i = 0, where the mean of
    M equal floats is not always that float.
    """
    outs = _stack(student_outs)
    d = outs - outs[:1]                                  # (M,N,D,H,W), d_1 = 0
    dev = d - d.mean(axis=0)
    return (dev * dev).sum(axis=2).mean(axis=0)          # (N,H,W)


def score_maps(model, images, batch=4, tile=256):
    """e and v for every pixel of every image: model a students.ScaleModel, images (N,3,H,W) on
    any device -> {'error': (N,H,W), 'uncertainty': (N,H,W)} on the model's device, in its dtype.
    Dense inference (dense.dense_features, no caches), `batch` images at a time, in tiles of
    `tile` pixels a side (memory, not results).

    On a CPU with several cores the students run at once, one per core (blas.run_parallel), as
    they train: a student's layers are too small to gain from being split over cores, and each
    student's output is then one core's, whatever the cores. The teacher's layers are big
    enough to split, so it runs alone on all of them."""
    xp = get_array_module(*model.teacher.params.values())
    cores = threads() if xp is np else 1
    errors, uncertainties = [], []
    for x in image_batches(images, batch, model.teacher):
        t = normalise(dense_features(model.teacher, x, tile), model.mu, model.sigma)  # (n,D,H,W)
        outs = xp.stack(run_parallel([lambda s=s: dense_features(s, x, tile)          # (M,n,D,H,W)
                                      for s in model.students], cores))
        errors.append(regression_error(outs, t))
        uncertainties.append(predictive_uncertainty(outs))
    return {"error": xp.concatenate(errors), "uncertainty": xp.concatenate(uncertainties)}


def validation_stats(model, val_images, batch=4, tile=256):
    """Mean and population std of e and of v, pooled over every pixel of the anomaly-free
    validation images, one batch at a time -> {'e_mean', 'e_std', 'v_mean', 'v_std'} (floats).
    Store them with model.set_val_stats(...)."""
    e_acc, v_acc = RunningMoments(), RunningMoments()
    for start in range(0, len(val_images), batch):
        maps = score_maps(model, val_images[start:start + batch], batch, tile)
        e_acc.update(maps["error"])
        v_acc.update(maps["uncertainty"])
    return {"e_mean": float(e_acc.mean), "e_std": float(e_acc.std),
            "v_mean": float(v_acc.mean), "v_std": float(v_acc.std)}


def _stat(stats, name):
    value = stats[name] if isinstance(stats, dict) else getattr(stats, name, None)
    if value is None:
        raise ValueError(f"combined: no {name}; compute validation_stats and store them with "
                         f"model.set_val_stats(...) first")
    return value


def combined(e, v, stats):
    """ẽ + ṽ = (e − e_mean)/e_std + (v − v_mean)/v_std, elementwise, any shape.

    stats: a dict with the keys of validation_stats, or a ScaleModel. A term whose std is 0
    carries no information (v of a single student is 0 everywhere) and adds 0 instead of 0/0.
    """
    e_mean, e_std, v_mean, v_std = (_stat(stats, k) for k in VAL_STATS)
    e_term = (e - e_mean) / e_std if e_std > 0 else 0 * e
    v_term = (v - v_mean) / v_std if v_std > 0 else 0 * v
    return e_term + v_term


def anomaly_map(model, images, batch=4, tile=256):
    """The combined map ẽ + ṽ of one scale: images (N,3,H,W) -> (N,H,W), with the model's
    validation statistics."""
    maps = score_maps(model, images, batch, tile)
    return combined(maps["error"], maps["uncertainty"], model)


def multiscale(maps_per_scale):
    """The mean over scales of the combined maps: a list (or dict by p) of equal-shaped arrays."""
    maps = list(maps_per_scale.values()) if isinstance(maps_per_scale, dict) else list(maps_per_scale)
    if not maps:
        raise ValueError("multiscale: no maps")
    if any(m.shape != maps[0].shape for m in maps):
        raise ValueError(f"multiscale: maps of different shapes {[tuple(m.shape) for m in maps]}")
    return sum(maps) / len(maps)
