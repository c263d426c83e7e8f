"""Teacher pretraining (paper §3.1): L(T̂) = λk·Lk + λm·Lm + λc·Lc on natural-image patches.

One iteration, for a batch of B anchor patches (B, 3, p, p) in [0, 1]:
  1. sample anchors a, positives (a shifted by a few pixels, plus noise) and negatives (patches
     of other images); only the terms with λ > 0 are computed;
  2. run the teacher once on the stacked batch [a; positives; negatives] -> descriptors (·, d);
  3. Lk: decode the anchors' descriptors with one linear layer D (d -> K) and regress the
     ImageNet network's pooled features P(patch resized to 64x64), standardised per feature;
     Lm: the triplet loss with anchor swap; Lc: decorrelate the descriptor dimensions;
  4. backpropagate the summed descriptor gradients once, and take one Adam step on the teacher
     and on the decoder (the decoder is thrown away after pretraining).

Lk is taken per feature dimension (losses.distillation / K), on P's features centred per
feature and divided by one overall scale (their RMS spread), both measured on a first sample of
patches: so λk means the same for Lite0 (K = 1280) and ResNet-18 (K = 512), and Lk starts near
1. A single scale keeps the paper's weighting of the features (a per-feature scale would blow up
nearly constant features); the decoder's bias would absorb the centring anyway.
"""
import hashlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import losses
from .backend import describe, xp_for
from .layers import linear_backward, linear_forward
from .files import write_json
from .models import PatchNet, save
from .natural import PatchSampler, natural_images, resize_batch
from .optim import Adam


@dataclass
class TeacherConfig:
    """Settings of one pretraining run; the defaults are published re-implementations' values
    (Adam, lr 2e-4, weight decay 1e-5, batch 64). λ and δ are not published. λk = 20 is ours:
    with λk = 1 (Lk per feature, so 1/K of the paper's sum) compactness outweighs Lk, which then
    stays near 1 for about 1600 iterations at p = 17; with 20 it falls within a few hundred
    (README, "The shipped teachers")."""
    p: int = 33
    width: float = 1.0
    out_dim: int = 128
    iterations: int = 2000
    batch: int = 64
    lr: float = 2e-4
    weight_decay: float = 1e-5
    lambda_k: float = 20.0        # distillation
    lambda_m: float = 0.0         # triplet (metric learning)
    lambda_c: float = 1.0         # compactness
    margin: float = 1.0           # δ of the triplet loss
    distill: str = "lite0"        # "lite0", "none", or the path of a torchvision resnet18 file
    distill_size: int = 64        # patches are resized to this before P sees them
    shift: int = 4                # positives: translation up to ±shift px ...
    noise: float = 0.02           # ... plus Gaussian noise of this std ...
    jitter: float = 0.0           # ... plus brightness/contrast jitter of this strength
    images: str = None            # a folder of photos; None: the offline default images
    n_images: int = 200           # how many default images to make
    image_size: int = 256
    seed: int = 0
    log_every: int = 50


def load_distillation_target(config, device=None, log=print):
    """The ImageNet network P for Lk, or None (with a message) when it cannot be had."""
    if config.distill == "none" or config.lambda_k == 0:
        return None
    from . import imagenet
    try:
        if config.distill == "lite0":
            return imagenet.load_efficientnet_lite0(device=device)
        return imagenet.load_resnet18(config.distill, device=device)
    except ImportError as err:
        log(f"# no distillation: {err}")
        log("# falling back to metric learning and compactness (lambda_m = 1 if it was 0)")
        return None


class _Targets:
    """P's pooled features of the anchors, centred and scaled with statistics of a first sample."""

    def __init__(self, model, sampler, size, xp, n_sample=256):
        self.model, self.size = model, size
        feats = self._raw(xp.asarray(sampler.patches(n_sample)))     # (n_sample, K)
        self.mean = feats.mean(axis=0)                               # (K,)
        self.scale = float(xp.sqrt(feats.var(axis=0).mean()))        # RMS spread over features
        self.dim = feats.shape[1]

    def _raw(self, patches):
        return self.model.features(self.model.preprocess(resize_batch(patches, self.size)))

    def __call__(self, patches):
        return (self._raw(patches) - self.mean) / self.scale         # (B, K)


def train_teacher(config, device=None, log=print, sampler=None):
    """Pretrain a PatchNet teacher. Returns (net, history): history is a list of dicts with the
    iteration, each loss term, patches/s; net lives on the chosen device."""
    xp = xp_for(device)
    rng = np.random.default_rng(config.seed)
    if sampler is None:
        images = natural_images(config.images, n=config.n_images, size=config.image_size,
                                seed=config.seed)
        sampler = PatchSampler(images, config.p, seed=config.seed)
    if sampler.p != config.p:
        raise ValueError(f"the patch sampler cuts {sampler.p}-px patches but the teacher has "
                         f"p = {config.p}; make PatchSampler(images, {config.p})")
    net = PatchNet(config.p, out_dim=config.out_dim, width=config.width, seed=config.seed).to(device)
    lam_k, lam_m, lam_c = config.lambda_k, config.lambda_m, config.lambda_c
    model = load_distillation_target(config, device, log)
    if model is None and lam_k:
        lam_k, lam_m = 0.0, lam_m or 1.0
    params = dict(net.params)
    if lam_k:
        targets = _Targets(model, sampler, config.distill_size, xp)
        bound = 1 / np.sqrt(config.out_dim)                          # PyTorch's Linear init
        params["decoder.w"] = xp.asarray(rng.uniform(-bound, bound, (targets.dim, config.out_dim)),
                                         dtype=xp.float32)
        params["decoder.b"] = xp.asarray(rng.uniform(-bound, bound, targets.dim), dtype=xp.float32)
    opt = Adam(lr=config.lr, weight_decay=config.weight_decay)
    log(f"# teacher p={config.p} width={config.width} | {describe(device)} | float32 | seed {config.seed}")
    log(f"# losses: lambda_k={lam_k} ({config.distill if lam_k else 'off'}) lambda_m={lam_m} "
        f"(margin {config.margin}) lambda_c={lam_c} | batch {config.batch}")
    log(f"{'iter':>6}{'L_k':>9}{'L_m':>9}{'L_c':>9}{'total':>9}{'patch/s':>9}{'ETA':>8}")
    history, t0, B = [], time.perf_counter(), config.batch
    sums = {"L_k": 0.0, "L_m": 0.0, "L_c": 0.0, "total": 0.0}
    weights = {"L_k": lam_k, "L_m": lam_m, "L_c": lam_c}
    for it in range(1, config.iterations + 1):
        a, pos, neg = sampler.triplet(B, shift=config.shift, noise=config.noise, jitter=config.jitter)
        x = xp.asarray(np.concatenate([a, pos, neg]) if lam_m else a)
        y, cache = net.forward(x)
        d = y.reshape(len(x), -1)                                    # (B or 3B, d)
        dd = xp.zeros_like(d)
        terms = {}
        if lam_k:
            z, lin_cache = linear_forward(d[:B], params["decoder.w"], params["decoder.b"])
            lk, dz = losses.distillation(z, targets(x[:B]))
            terms["L_k"] = lk / targets.dim
            dd_k, dw, db = linear_backward(dz * (lam_k / targets.dim), lin_cache)
            dd[:B] += dd_k
        if lam_m:
            terms["L_m"], (da, dp, dn) = losses.triplet(d[:B], d[B:2 * B], d[2 * B:], margin=config.margin)
            dd[:B] += lam_m * da
            dd[B:2 * B] += lam_m * dp
            dd[2 * B:] += lam_m * dn
        if lam_c:
            terms["L_c"], dc = losses.compactness(d[:B])
            dd[:B] += lam_c * dc
        _, grads = net.backward(dd.reshape(y.shape), cache)
        if lam_k:
            grads["decoder.w"], grads["decoder.b"] = dw, db
        opt.step(params, grads)
        for k, v in terms.items():
            sums[k] = sums[k] + v                                   # stays on the device:
            sums["total"] = sums["total"] + weights[k] * v          # one wait per log line
        if it % config.log_every == 0 or it == config.iterations:
            n = (it - 1) % config.log_every + 1
            elapsed = time.perf_counter() - t0
            rate = it * B / elapsed
            row = {"iteration": it, **{k: float(v) / n for k, v in sums.items()}, "patches_per_s": rate}
            history.append(row)
            eta = (config.iterations - it) * B / rate
            cells = "".join(f"{row[k]:9.4f}" if k in terms else f"{'-':>9}" for k in ("L_k", "L_m", "L_c"))
            log(f"{it:6d}{cells}{row['total']:9.4f}{rate:9.1f}{eta:7.0f}s")
            sums = dict.fromkeys(sums, 0.0)
    return net, history


def save_teacher(net, path, config, history, seconds, command=None, quality=None):
    """Save the teacher (models.save) and, beside it, a manifest <path>.json: the command, the
    settings, the last losses, the time, the file's sha256 and any quality figures."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save(net, path)
    manifest = dict(command=command, config=asdict(config), iterations=config.iterations,
                    seed=config.seed, final_losses=history[-1] if history else None,
                    train_seconds=round(seconds, 1), device=describe(),
                    sha256=hashlib.sha256(path.read_bytes()).hexdigest(), quality=quality)
    write_json(path.with_suffix(".json"), manifest)
    return path
