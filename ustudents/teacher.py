"""Teacher pretraining (paper §3.1): L(T̂) = λk·Lk + λm·Lm + λc·Lc on natural-image patches.

One iteration, for a batch of B anchor patches (B, 3, p, p) in [0, 1]:
  1. sample anchors a, positives (a shifted by a few pixels, plus noise) and negatives (patches
     of other images); only the terms with λ > 0 are computed;
  2. run the teacher once on the stacked batch [a; positives; negatives] -> descriptors (·, d);
  3. Lk: decode the anchors' descriptors with one linear layer D (d -> K) and regress the
     ImageNet network's pooled features P(patch resized to 64x64), standardised per feature;
     Lm: the triplet loss with anchor swap (with recolour > 0, ours: some negatives are the
     anchor recoloured, docs/method.md §1); Lc: decorrelate the descriptor dimensions;
  4. backpropagate the summed descriptor gradients once, and take one Adam step on the teacher
     and on the decoder (the decoder is thrown away after pretraining).

Lk is taken per feature dimension (losses.distillation / K), on P's features centred per
feature and divided by one overall scale (their RMS spread), both measured on a first sample of
patches: so λk means the same for Lite0 (K = 1280) and ResNet-18 (K = 512), and Lk starts near
1. A single scale keeps the paper's weighting of the features (a per-feature scale would blow up
nearly constant features); the decoder's bias would absorb the centring anyway.

Two recipes (TeacherConfig.recipe):
- "patch", the paper's: the above, B independent patches per iteration. Each anchor's target
  costs one forward pass of P (64 px input) per iteration. With target_reuse = R > 1 the
  anchors come from a pool whose targets are computed once and drawn about R times each
  (targets.TargetPool): P's cost per iteration falls by R, and a new pool follows every
  target_pool * R / B iterations. That reuse is where it departs from the paper.
- "dense", ours: a few crops of (side + p - 1)^2 pixels go through the dense network without
  padding (dense.dense_forward(pad=False)), so one pass describes all side^2 patches of each
  crop, and every term sees all of them: Lk and Lc over every patch, the triplet over
  batch/crops anchors per crop (positives in a noisy copy of the crop, shifted; negatives in the
  next crop). The targets are not P of each resized patch but P's feature map over each whole
  image resized by 64/p, computed once before training (targets.DenseTargets): no P pass per
  iteration. That is where it departs from the paper. The map's cells see beyond the patch, so
  the target is not the same function of the patch (benchmarks/dense_targets.py measures how
  far apart they are); distill_blocks picks an earlier map, whose receptive field is closer to p.

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
from .batches import sample_batch
from .blas import holding
from .dense import dense_backward, dense_forward
from .layers import linear_backward, linear_forward
from .files import write_json
from .models import PatchNet, build_layers, save
from .targets import DenseTargets, PatchTargets, TargetPool, load_distillation_target
from .natural import natural_images
from .optim import Adam
from .patches import PatchSampler, check_recolour


@dataclass
class TeacherConfig:
    """Settings of one pretraining run; the defaults are published re-implementations' values
    (Adam, lr 2e-4, weight decay 1e-5, batch 64). λ and δ are not published. λk = 20 is ours:
    Lk is taken per feature (1/K of the paper's sum), and with λk = 1 compactness outweighs it,
    so that Lk barely moves for many iterations (docs/method.md §1; measured in
    docs/teachers.md). target_reuse = 4 is ours too (the paper's is 1): it quarters the ImageNet
    network's passes, and at equal iterations the teachers measure the same (docs/teachers.md)."""
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
    distill_blocks: int = 0       # P's features after this many blocks; 0: its last map (the paper's)
    distill_pool: int = 0         # dense: cells pooled per side; 0: those a patch covers
    augment: bool = False         # patches of randomly zoomed/turned/mirrored/recoloured images
    shift: int = 4                # positives: translation up to ±shift px ...
    noise: float = 0.02           # ... plus Gaussian noise of this std ...
    jitter: float = 0.0           # ... plus brightness/contrast jitter of this strength
    recolour: float = 0.0         # negatives: this share are the anchor recoloured (ours) ...
    recolour_step: float = 0.1    # ... by a step of this length in a random RGB direction
    images: str = None            # a folder of photos; None: the offline default images
    n_images: int = 200           # how many default images to make
    image_size: int = 256
    seed: int = 0
    log_every: int = 50
    recipe: str = "patch"         # "patch": the paper's; "dense": whole crops at once (see above)
    crops: int = 4                # dense: crops per iteration, each giving ...
    crop_size: int = 48           # ... crop_size x crop_size patches (a multiple of 8)
    target_reuse: int = 4         # patch: each target used this often (targets.TargetPool); 1: the paper's
                                  # (dense: no effect, its targets are computed once per image)
    target_pool: int = 4096       # ... from a pool of this many anchors, renewed as it is used up


FREE_ON_RESUME = ("iterations", "log_every")     # settings a continued run may change


def _check_resumable(config, record, path):
    """A run continues with the settings it started with; say which ones differ."""
    ours, before = asdict(config), asdict(TeacherConfig())      # a setting added since: its default
    theirs = {k: record["config"].get(k, before[k]) for k in ours}
    diff = [f"{k}: {theirs[k]!r} there, {v!r} here" for k, v in ours.items()
            if k not in FREE_ON_RESUME and theirs[k] != v]
    if diff:
        raise ValueError(f"{path} was trained with other settings ({'; '.join(diff)}); a run "
                         f"continues with its own")
    if record["iteration"] >= config.iterations:
        raise ValueError(f"{path} is at iteration {record['iteration']} already; ask for more "
                         f"iterations than that (now {config.iterations})")


def _check_recipe(config, sampler):
    """The recipe's settings, checked before any work, each error naming the setting."""
    if config.recipe not in ("patch", "dense"):
        raise ValueError(f"recipe must be 'patch' or 'dense', got {config.recipe!r}")
    if config.target_reuse < 1 or int(config.target_reuse) != config.target_reuse:
        raise ValueError(f"target_reuse must be a whole number >= 1, got {config.target_reuse}")
    if config.target_reuse > 1 and config.target_pool < config.batch:
        raise ValueError(f"target_pool ({config.target_pool}) must hold at least one batch "
                         f"({config.batch}) when targets are reused")
    check_recolour(config.recolour, config.recolour_step)
    if config.recolour and not config.lambda_m:
        raise ValueError(f"recolour ({config.recolour}) makes some of the triplet's negatives: it "
                         f"needs the triplet, lambda_m > 0")
    if config.recipe == "patch":
        return
    if config.recolour:
        raise ValueError("recolour works with the patch recipe only: the dense recipe's "
                         "negatives are the next crop's patches")
    if config.augment:
        raise ValueError("augment works with the patch recipe only: the dense recipe's targets "
                         "are computed once per whole image")
    S = int(np.prod([layer.k for layer in build_layers(config.p) if layer.kind == "pool"]))
    if config.crops < 1 or config.crop_size < 1 or config.crop_size % S:
        raise ValueError(f"recipe 'dense': crops ({config.crops}) must be >= 1 and crop_size "
                         f"({config.crop_size}) a positive multiple of {S} at p = {config.p}")
    if config.lambda_m and (config.crops < 2 or config.crop_size <= 2 * config.shift):
        raise ValueError(f"recipe 'dense' with the triplet: crops ({config.crops}) must be >= 2 "
                         f"(negatives come from the next crop) and crop_size ({config.crop_size}) "
                         f"> 2 * shift ({config.shift})")
    room = (config.crop_size - 2 * config.shift) ** 2
    anchors = max(1, config.batch // config.crops)
    if config.lambda_m and anchors > room:
        raise ValueError(f"recipe 'dense' with the triplet: batch {config.batch} over crops "
                         f"{config.crops} gives {anchors} anchors per crop, but a crop of crop_size "
                         f"{config.crop_size} has room for {room} (shift {config.shift} px from "
                         f"its edges); lower batch or raise crops or crop_size")
    need = config.crop_size + config.p - 1
    if sampler.sizes.min() < need:
        raise ValueError(f"recipe 'dense': crops of {need} px (crop_size {config.crop_size} + p - 1) "
                         f"do not fit the smallest image ({sampler.sizes.min()} px); lower "
                         f"crop_size or use larger images")


def _images_sha256(sampler):
    digest = hashlib.sha256()
    for im in sampler.images:
        digest.update(np.ascontiguousarray(im).tobytes())
    return digest.hexdigest()


def teacher_step(net, params, opt, batch, weights, margin=1.0):
    """One iteration of the paper's teacher pretraining (§3.1), on the device.

    batch: a batches.Batch (batches.sample_batch makes it). weights: {"L_k": λk, "L_m": λm,
    "L_c": λc}; a term with λ = 0 is not computed. The decoder D is params["decoder.w"],
    params["decoder.b"].
    Returns {term: 0-d loss, "total": L(T̂)}, on the device (float() them once per log line)."""
    xp = get_array_module(batch.x)
    if batch.dense:                                                  # 1. one pass for all
        y, cache = dense_forward(net, batch.x, pad=False)            # (n, d, side, side)
        d = y.transpose(0, 2, 3, 1).reshape(-1, y.shape[1])          # a row per patch
    else:
        y, cache = net.forward(batch.x)                              # (B, d, 1, 1)
        d = y.reshape(len(batch.x), -1)
    A = batch.anchors
    terms, dd = {}, xp.zeros_like(d)                                 # 2. each loss, its gradient
    if weights["L_k"]:                                               # distillation through D
        K = batch.target.shape[1]
        z, lin_cache = linear_forward(d[:A], params["decoder.w"], params["decoder.b"])
        lk, dz = losses.distillation(z, batch.target)
        terms["L_k"] = lk / K                                        # per feature, see above
        dd_k, dw, db = linear_backward(dz * (weights["L_k"] / K), lin_cache)
        dd[:A] += dd_k
    if weights["L_m"]:                                               # triplet, anchor swap
        a, p, n = batch.triplet
        terms["L_m"], (da, dp, dn) = losses.triplet(d[a], d[p], d[n], margin=margin)
        dd[a] += weights["L_m"] * da
        dd[p] += weights["L_m"] * dp
        dd[n] += weights["L_m"] * dn
    if weights["L_c"]:                                               # compactness
        terms["L_c"], dc = losses.compactness(d[:A])
        dd[:A] += weights["L_c"] * dc
    if batch.dense:                                                  # 3. backpropagate once
        dy = dd.reshape(y.shape[0], y.shape[2], y.shape[3], y.shape[1]).transpose(0, 3, 1, 2)
        grads = dense_backward(xp.ascontiguousarray(dy), cache)
    else:
        _, grads = net.backward(dd.reshape(y.shape), cache, input_grad=False)
    if weights["L_k"]:
        grads["decoder.w"], grads["decoder.b"] = dw, db
    opt.step(params, grads)                                          # 4. one Adam step
    terms["total"] = losses.teacher_loss(terms, weights)
    return terms


@holding
def train_teacher(config, device=None, log=print, sampler=None, checkpoint=None, resume=None,
                  checkpoint_every=300.0, command=None, seconds=None, clock=time.perf_counter):
    """Pretrain a PatchNet teacher. Returns (net, history): history is a list of dicts with the
    iteration, each loss term, patches/s and the training seconds so far; net lives on the
    chosen device.

    checkpoint: a path; the whole run (ustudents.checkpoint) is written there at the first log
    line after each `checkpoint_every` seconds, and at the end. resume: such a file; training
    goes on from its iteration to config.iterations as if it had never stopped (config must
    match the run's settings but for iterations and log_every, and the images must be the same).
    command: how this part was started, kept in the checkpoint's list of runs. seconds: stop
    at the first log line after this many seconds of training, on `clock` (equal-time
    comparisons; time.process_time counts CPU seconds, fair between jobs sharing the cores)."""
    device = default_device(device)
    xp = xp_for(device)
    run = ckpt.load_run(resume) if resume is not None else None
    if run is not None:
        _check_resumable(config, run.record, resume)
    if sampler is None:
        images = natural_images(config.images, n=config.n_images, size=config.image_size,
                                seed=config.seed)
        sampler = PatchSampler(images, config.p, seed=config.seed, augment=config.augment)
    if sampler.p != config.p:
        raise ValueError(f"the patch sampler cuts {sampler.p}-px patches but the teacher has "
                         f"p = {config.p}; make PatchSampler(images, {config.p})")
    _check_recipe(config, sampler)
    images_sha = _images_sha256(sampler) if run is not None or checkpoint is not None else None
    if run is not None and run.record["images_sha256"] != images_sha:
        raise ValueError(f"{resume} was trained on other images than these (config.images = "
                         f"{config.images!r}); a run continues on its own")
    net, params, opt, targets, weights = _setup(config, device, xp, sampler, run, resume, log)
    pool = None
    if targets is not None and config.recipe == "patch" and config.target_reuse > 1:
        pool = TargetPool(targets, sampler, config.target_pool, config.target_reuse, config.batch,
                          seed=config.seed, margin=config.shift if weights["L_m"] else 0)
    first, history, seconds_before, runs = 0, [], 0.0, []
    if run is not None:
        ckpt.restore(run, params, opt, sampler.rng, xp)
        first, history = run.record["iteration"], run.record["history"]
        seconds_before, runs = run.record["seconds"], run.record["runs"]
    log(f"# teacher p={config.p} width={config.width} | {describe(device)} | float32 | seed {config.seed}")
    shape = (f"{config.crops} crops of {config.crop_size}x{config.crop_size} patches"
             if config.recipe == "dense" else f"batch {config.batch}")
    log(f"# recipe {config.recipe} | losses: lambda_k={weights['L_k']} "
        f"({config.distill if weights['L_k'] else 'off'}) lambda_m={weights['L_m']} "
        f"(margin {config.margin}) lambda_c={weights['L_c']} | {shape}")
    if pool is not None:
        log(f"# targets: pools of {pool.size} anchors, each target used about "
            f"{config.target_reuse} times (a new pool every {pool.span} iterations)")
    if run is not None:
        log(f"# continuing {resume} from iteration {first} ({seconds_before:.0f} s so far)")
    log(f"{'iter':>6}{'L_k':>9}{'L_m':>9}{'L_c':>9}{'total':>9}{'patch/s':>9}{'ETA':>8}")
    t0 = last_saved = time.perf_counter()
    c0 = clock()
    keys = [k for k in ("L_k", "L_m", "L_c") if weights[k]] + ["total"]
    per_iteration = config.crops * config.crop_size ** 2 if config.recipe == "dense" else config.batch
    sums, since = 0, 0
    for it in range(first + 1, config.iterations + 1):
        batch = sample_batch(sampler, config, weights["L_m"] > 0, xp, targets, pool, it)
        terms = teacher_step(net, params, opt, batch, weights, config.margin)
        sums, since = sums + xp.stack([terms[k] for k in keys]), since + 1   # stays on the device
        if it % config.log_every == 0 or it == config.iterations:
            means = dict(zip(keys, (asnumpy(sums) / since).tolist()))         # one wait per line
            now = time.perf_counter()
            rate = (it - first) * per_iteration / (now - t0)
            row = {"iteration": it, **{k: means.get(k, 0.0) for k in ("L_k", "L_m", "L_c", "total")},
                   "patches_per_s": rate, "seconds": round(seconds_before + now - t0, 1)}
            if not all(np.isfinite(row[k]) for k in terms):
                raise ValueError(f"--lr {config.lr:g}: the teacher's loss became {row['total']} by "
                                 f"iteration {it}; lower --lr (the teacher was not saved)")
            history.append(row)
            eta = (config.iterations - it) * per_iteration / rate
            cells = "".join(f"{row[k]:9.4f}" if k in means else f"{'-':>9}" for k in ("L_k", "L_m", "L_c"))
            log(f"{it:6d}{cells}{row['total']:9.4f}{rate:9.1f}{eta:7.0f}s")
            sums, since = 0, 0
            out_of_time = seconds is not None and clock() - c0 >= seconds
            if checkpoint is not None and (it == config.iterations or out_of_time
                                           or now - last_saved >= checkpoint_every):
                this_run = dict(command=command, device=describe(device), first_iteration=first + 1,
                                last_iteration=it, seconds=round(now - t0, 1))
                record = dict(config=asdict(config), iteration=it, history=history, weights=weights,
                              seconds=row["seconds"], runs=runs + [this_run], images_sha256=images_sha)
                ckpt.save_run(checkpoint, params, opt, sampler.rng, record,
                              targets.stats() if targets is not None else None)
                last_saved = now
            if out_of_time:
                break
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
        stats = run.arrays if run is not None else None
        if config.recipe == "dense":
            start = time.perf_counter()
            targets = DenseTargets(model, sampler.images, config.p, config.distill_size, xp, stats,
                                    pool=config.distill_pool or None, blocks=config.distill_blocks or None)
            mib = sum(m.nbytes for m in targets.maps) / 2 ** 20
            log(f"# dense targets: {len(targets.maps)} maps of {targets.dim} x "
                f"{targets.maps[0].shape[1]} x {targets.maps[0].shape[2]} ({mib:.0f} MiB) in "
                f"{time.perf_counter() - start:.0f} s")
        else:
            targets = PatchTargets(model, sampler, config.distill_size, xp, stats=stats,
                               blocks=config.distill_blocks or None)
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
