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

A run can be saved as it goes and continued later (train_teacher's checkpoint= and resume=,
ustudents.checkpoint): the teacher, the decoder, Adam, the sampler's random state and the
targets' centring, so the continued run ends where an unbroken one would.
"""
import hashlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import checkpoint as ckpt
from . import losses
from .backend import asnumpy, default_device, describe, get_array_module, xp_for
from .layers import linear_backward, linear_forward
from .files import write_json
from .models import PatchNet, save
from .natural import PatchSampler, natural_images, resize_batch
from .optim import Adam


@dataclass
class TeacherConfig:
    """Settings of one pretraining run; the defaults are published re-implementations' values
    (Adam, lr 2e-4, weight decay 1e-5, batch 64). λ and δ are not published. λk = 20 is ours:
    Lk is taken per feature (1/K of the paper's sum), and with λk = 1 compactness outweighs it,
    so that Lk barely moves for many iterations (docs/method.md §1; measured in
    docs/teachers.md)."""
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
    """P's pooled features of the anchors, centred and scaled with statistics of a first sample
    (or with `stats`, those of the run being continued: {"target_mean", "target_scale"})."""

    def __init__(self, model, sampler, size, xp, n_sample=256, stats=None):
        self.model, self.size = model, size
        if stats is None:
            feats = self._raw(xp.asarray(sampler.patches(n_sample)))  # (n_sample, K)
            self.mean = feats.mean(axis=0)                            # (K,)
            self.scale = float(xp.sqrt(feats.var(axis=0).mean()))     # RMS spread over features
        else:
            self.mean, self.scale = xp.asarray(stats["target_mean"]), float(stats["target_scale"])
        self.dim = self.mean.shape[0]

    def stats(self):
        return {"target_mean": self.mean, "target_scale": np.array(self.scale)}

    def _raw(self, patches):
        return self.model.features(self.model.preprocess(resize_batch(patches, self.size)))

    def __call__(self, patches):
        return (self._raw(patches) - self.mean) / self.scale         # (B, K)


FREE_ON_RESUME = ("iterations", "log_every")     # settings a continued run may change


def _check_resumable(config, record, path):
    """A run continues with the settings it started with; say which ones differ."""
    ours = asdict(config)
    diff = [f"{k}: {record['config'].get(k)!r} there, {v!r} here" for k, v in ours.items()
            if k not in FREE_ON_RESUME and record["config"].get(k) != v]
    if diff:
        raise ValueError(f"{path} was trained with other settings ({'; '.join(diff)}); a run "
                         f"continues with its own")
    if record["iteration"] >= config.iterations:
        raise ValueError(f"{path} is at iteration {record['iteration']} already; ask for more "
                         f"iterations than that (now {config.iterations})")


def _images_sha256(sampler):
    digest = hashlib.sha256()
    for im in sampler.images:
        digest.update(np.ascontiguousarray(im).tobytes())
    return digest.hexdigest()


def teacher_step(net, params, opt, x, weights, targets=None, margin=1.0):
    """One iteration of the paper's teacher pretraining (§3.1), on the device.

    x: the batch's patches, (B, 3, p, p) anchors, or with the triplet on (3B, 3, p, p): anchors,
    then their positives, then the negatives. weights: {"L_k": λk, "L_m": λm, "L_c": λc}; a
    term with λ = 0 is not computed. targets(patches) -> (B, K): the distillation targets P(p);
    the decoder D is params["decoder.w"], params["decoder.b"]. Returns {term: 0-d loss,
    "total": L(T̂)}, on the device (float() them once per log line)."""
    xp = get_array_module(x)
    B = len(x) // 3 if weights["L_m"] else len(x)
    y, cache = net.forward(x)                                        # 1. one pass for all
    d = y.reshape(len(x), -1)                                        # (B or 3B, d)
    terms, dd = {}, xp.zeros_like(d)                                 # 2. each loss, its gradient
    if weights["L_k"]:                                               # distillation through D
        z, lin_cache = linear_forward(d[:B], params["decoder.w"], params["decoder.b"])
        lk, dz = losses.distillation(z, targets(x[:B]))
        terms["L_k"] = lk / targets.dim                              # per feature, see above
        dd_k, dw, db = linear_backward(dz * (weights["L_k"] / targets.dim), lin_cache)
        dd[:B] += dd_k
    if weights["L_m"]:                                               # triplet, anchor swap
        terms["L_m"], (da, dp, dn) = losses.triplet(d[:B], d[B:2 * B], d[2 * B:], margin=margin)
        dd[:B] += weights["L_m"] * da
        dd[B:2 * B] += weights["L_m"] * dp
        dd[2 * B:] += weights["L_m"] * dn
    if weights["L_c"]:                                               # compactness
        terms["L_c"], dc = losses.compactness(d[:B])
        dd[:B] += weights["L_c"] * dc
    _, grads = net.backward(dd.reshape(y.shape), cache)              # 3. backpropagate once
    if weights["L_k"]:
        grads["decoder.w"], grads["decoder.b"] = dw, db
    opt.step(params, grads)                                          # 4. one Adam step
    terms["total"] = losses.teacher_loss(terms, weights)
    return terms


def sample_batch(sampler, config, triplet, xp):
    """The patches one iteration uses, as teacher_step takes them, on the device: anchors, and
    with the triplet on their positives and the negatives after them. Drawn on the host (the
    sampler's seeded generator, so CPU and GPU runs see the same patches), copied in one go."""
    if not triplet:
        return xp.asarray(sampler.patches(config.batch))
    a, pos, neg = sampler.triplet(config.batch, shift=config.shift, noise=config.noise,
                                  jitter=config.jitter)
    return xp.asarray(np.concatenate([a, pos, neg]))                  # (3B, 3, p, p)


def train_teacher(config, device=None, log=print, sampler=None, checkpoint=None, resume=None,
                  checkpoint_every=300.0, command=None):
    """Pretrain a PatchNet teacher. Returns (net, history): history is a list of dicts with the
    iteration, each loss term, patches/s and the training seconds so far; net lives on the
    chosen device.

    checkpoint: a path; the whole run (ustudents.checkpoint) is written there at the first log
    line after each `checkpoint_every` seconds, and at the end. resume: such a file; training
    goes on from its iteration to config.iterations as if it had never stopped (config must
    match the run's settings but for iterations and log_every, and the images must be the same).
    command: how this part was started, kept in the checkpoint's list of runs."""
    device = default_device(device)
    xp = xp_for(device)
    run = ckpt.load_run(resume) if resume is not None else None
    if run is not None:
        _check_resumable(config, run.record, resume)
    if sampler is None:
        images = natural_images(config.images, n=config.n_images, size=config.image_size,
                                seed=config.seed)
        sampler = PatchSampler(images, config.p, seed=config.seed)
    if sampler.p != config.p:
        raise ValueError(f"the patch sampler cuts {sampler.p}-px patches but the teacher has "
                         f"p = {config.p}; make PatchSampler(images, {config.p})")
    images_sha = _images_sha256(sampler) if run is not None or checkpoint is not None else None
    if run is not None and run.record["images_sha256"] != images_sha:
        raise ValueError(f"{resume} was trained on other images than these (config.images = "
                         f"{config.images!r}); a run continues on its own")
    net, params, opt, targets, weights = _setup(config, device, xp, sampler, run, resume, log)
    first, history, seconds_before, runs = 0, [], 0.0, []
    if run is not None:
        ckpt.restore(run, params, opt, sampler.rng, xp)
        first, history = run.record["iteration"], run.record["history"]
        seconds_before, runs = run.record["seconds"], run.record["runs"]
    log(f"# teacher p={config.p} width={config.width} | {describe(device)} | float32 | seed {config.seed}")
    log(f"# losses: lambda_k={weights['L_k']} ({config.distill if weights['L_k'] else 'off'}) "
        f"lambda_m={weights['L_m']} (margin {config.margin}) lambda_c={weights['L_c']} | batch {config.batch}")
    if run is not None:
        log(f"# continuing {resume} from iteration {first} ({seconds_before:.0f} s so far)")
    log(f"{'iter':>6}{'L_k':>9}{'L_m':>9}{'L_c':>9}{'total':>9}{'patch/s':>9}{'ETA':>8}")
    t0 = last_saved = time.perf_counter()
    keys = [k for k in ("L_k", "L_m", "L_c") if weights[k]] + ["total"]
    sums, since = 0, 0
    for it in range(first + 1, config.iterations + 1):
        x = sample_batch(sampler, config, weights["L_m"] > 0, xp)
        terms = teacher_step(net, params, opt, x, weights, targets, config.margin)
        sums, since = sums + xp.stack([terms[k] for k in keys]), since + 1   # stays on the device
        if it % config.log_every == 0 or it == config.iterations:
            means = dict(zip(keys, (asnumpy(sums) / since).tolist()))         # one wait per line
            now = time.perf_counter()
            rate = (it - first) * config.batch / (now - t0)
            row = {"iteration": it, **{k: means.get(k, 0.0) for k in ("L_k", "L_m", "L_c", "total")},
                   "patches_per_s": rate, "seconds": round(seconds_before + now - t0, 1)}
            if not all(np.isfinite(row[k]) for k in terms):
                raise ValueError(f"--lr {config.lr:g}: the teacher's loss became {row['total']} by "
                                 f"iteration {it}; lower --lr (the teacher was not saved)")
            history.append(row)
            eta = (config.iterations - it) * config.batch / rate
            cells = "".join(f"{row[k]:9.4f}" if k in means else f"{'-':>9}" for k in ("L_k", "L_m", "L_c"))
            log(f"{it:6d}{cells}{row['total']:9.4f}{rate:9.1f}{eta:7.0f}s")
            sums, since = 0, 0
            if checkpoint is not None and (it == config.iterations or now - last_saved >= checkpoint_every):
                this_run = dict(command=command, device=describe(device), first_iteration=first + 1,
                                last_iteration=it, seconds=round(now - t0, 1))
                record = dict(config=asdict(config), iteration=it, history=history, weights=weights,
                              seconds=row["seconds"], runs=runs + [this_run], images_sha256=images_sha)
                ckpt.save_run(checkpoint, params, opt, sampler.rng, record,
                              targets.stats() if targets is not None else None)
                last_saved = now
    return net, history


def _setup(config, device, xp, sampler, run, resume, log):
    """The teacher on the device, its parameters with the decoder's, Adam, the distillation
    targets (None without distillation) and the loss weights, as the run had them if resumed."""
    rng = np.random.default_rng(config.seed)
    net = PatchNet(config.p, out_dim=config.out_dim, width=config.width, seed=config.seed).to(device)
    weights = {"L_k": config.lambda_k, "L_m": config.lambda_m, "L_c": config.lambda_c}
    if run is not None:                                  # as the run had them (after any fallback)
        weights = dict(run.record["weights"])
    model = load_distillation_target(config, device, log) if weights["L_k"] else None
    if model is None and weights["L_k"]:
        if run is not None:
            raise RuntimeError(f"{resume} distils from {config.distill!r}, which cannot be loaded "
                               f"here; install it to continue this run")
        weights["L_k"], weights["L_m"] = 0.0, weights["L_m"] or 1.0
    params, targets = dict(net.params), None
    if weights["L_k"]:
        targets = _Targets(model, sampler, config.distill_size, xp,
                           stats=run.arrays if run is not None else None)
        bound = 1 / np.sqrt(config.out_dim)                          # PyTorch's Linear init
        params["decoder.w"] = xp.asarray(rng.uniform(-bound, bound, (targets.dim, config.out_dim)),
                                         dtype=xp.float32)
        params["decoder.b"] = xp.asarray(rng.uniform(-bound, bound, targets.dim), dtype=xp.float32)
    return net, params, Adam(lr=config.lr, weight_decay=config.weight_decay), targets, weights


def save_teacher(net, path, config, history, seconds, command=None, quality=None, runs=None):
    """Save the teacher (models.save) and, beside it, a manifest <path>.json: the command, the
    settings, the last losses, the time, the file's sha256, any quality figures and, for a run
    continued from a checkpoint, its parts (`runs`: command, device, iterations, seconds each)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save(net, path)
    manifest = dict(command=command, config=asdict(config), iterations=config.iterations,
                    seed=config.seed, final_losses=history[-1] if history else None,
                    train_seconds=round(seconds, 1), device=describe(),
                    sha256=hashlib.sha256(path.read_bytes()).hexdigest(), quality=quality)
    if runs is not None:
        manifest["runs"] = runs
    write_json(path.with_suffix(".json"), manifest)
    return path
