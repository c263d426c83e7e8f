"""The student ensemble (Bergmann et al., CVPR 2020, §3.2; docs/method.md §4) and its file.

M students S_1..S_M, each a PatchNet with the teacher's patch size p and a random
initialisation of its own, learn densely on anomaly-free images to regress the teacher's
descriptors, normalised per channel:

    L(S_i) = 1/(w·h) Σ_(r,c) ||μ^{S_i}_(r,c) − (y^T_(r,c) − μ) ⊘ σ||²

μ, σ ∈ R^d: the mean and (population) std of each teacher channel over all pixels of all
training images, from one streaming pass (`channel_stats`). A ScaleModel bundles the teacher,
the students, μ, σ and the four validation statistics that scoring.py normalises with:

    model = train_students(teacher, train_images, n_students=3, epochs=10)
    model.set_val_stats(scoring.validation_stats(model, val_images))
    path = save_scale(model, "run/")                          # run/scale_33.npz
    model = load_scale(path, device="auto")

File format (FORMAT_VERSION 2): one .npz per scale, arrays only (read with allow_pickle=False,
so a file cannot run code): 'format', 'format_version', 'p', the teacher's and every student's
weights under 'teacher/<param>' and 'student<i>/<param>' with '<net>/width' and
'<net>/out_dim', 'mu', 'sigma', 'val_stats' (e_mean, e_std, v_mean, v_std; NaN until set),
'history' (epochs, M) losses, and the model's identity: 'image_size' (H, W) of the training
images, 'category' ('' when unknown) and 'teacher_sha256' (weights_sha256 of the teacher), so a
file cannot pass for another scale, size, category or teacher. Version 1 files are refused. The teacher's weights are stored, not a path and a hash of its
file: the students are only meaningful against exactly those weights, and one file cannot drift
apart from another.
"""
import hashlib
import os
import time
from dataclasses import dataclass, field

import numpy as np

from .backend import asnumpy, get_array_module, to_device
from .blas import holding, interleave, shared, threads
from .files import atomic_path, read_npz
from .dense import crop_corners, crop_window, dense_backward, dense_forward, dense_features
from .losses import regression
from .moments import RunningMoments
from .models import PatchNet, from_arrays
from .optim import Adam

FORMAT = "ustudents.scale"
FORMAT_VERSION = 2
VAL_STATS = ("e_mean", "e_std", "v_mean", "v_std")


class DivergedError(ValueError):
    """Training produced a non-finite number (loss, μ, σ or a validation statistic)."""


def weights_sha256(net):
    """sha256 of a network's parameters as stored (name, dtype, shape and bytes of each, in
    sorted order): the teacher's identity, the same on the host and on the GPU."""
    digest = hashlib.sha256()
    for name in sorted(net.params):
        v = np.ascontiguousarray(asnumpy(net.params[name]))
        digest.update(f"{name}:{v.dtype.str}:{v.shape}".encode())
        digest.update(v.tobytes())
    return digest.hexdigest()


def _finite(xp, *arrays):
    return all(bool(xp.isfinite(a).all()) for a in arrays)


def _net_xp_dtype(net):
    """The array module and dtype of a network's parameters: where and in what it computes."""
    w = next(iter(net.params.values()))
    return get_array_module(w), w.dtype


def image_batches(images, batch, net):
    """Yield images[i:i+batch] (n,3,H,W) moved to `net`'s device and cast to its dtype."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    xp, dtype = _net_xp_dtype(net)
    for start in range(0, len(images), batch):
        yield xp.asarray(images[start:start + batch], dtype=dtype)


def normalise(y, mu, sigma):
    """(y − μ) ⊘ σ per channel: y (N,D,H,W), mu and sigma (D,) -> (N,D,H,W)."""
    return (y - mu[None, :, None, None]) / sigma[None, :, None, None]


def channel_stats(teacher, images, batch=4, tile=256):
    """Per-channel mean and population std of the dense teacher output over every pixel of every
    image, one batch at a time (RunningMoments; float64 accumulators), never stacking them.

    images (N,3,H,W) on any device -> mu, sigma (D,) on the teacher's device, in its dtype.
    tile: dense.dense_features' tile size (memory, not results).
    A channel that is constant on every pixel (σ = 0) gets σ = 1: its normalised target is then
    0 instead of 0/0.
    """
    if len(images) == 0:
        raise ValueError("channel_stats: no images")
    return _stats(teacher, (dense_features(teacher, x, tile) for x in image_batches(images, batch, teacher)))


def _stats(teacher, outputs):
    """mu, sigma (D,) of a stream of dense teacher outputs (n,D,H,W), as channel_stats returns."""
    xp, dtype = _net_xp_dtype(teacher)
    acc = RunningMoments()
    for y in outputs:
        acc.update(y, axis=(0, 2, 3))                                  # (n,D,H,W) -> (D,)
    sigma = xp.sqrt(acc.var)
    sigma = xp.where(sigma > 0, sigma, 1.0)
    return acc.mean.astype(dtype), sigma.astype(dtype)


@dataclass
class ScaleModel:
    """Everything one patch size p needs for scoring: the teacher, M students, the teacher's
    channel statistics mu and sigma (D,), and the validation statistics of the error e and the
    uncertainty v (Python floats; None until set_val_stats). history: mean loss per epoch and
    student, a list of M-lists. image_size: (H, W) of the training images; category: the
    data's category name (None when unknown)."""
    teacher: PatchNet
    students: list
    mu: object
    sigma: object
    e_mean: float | None = None
    e_std: float | None = None
    v_mean: float | None = None
    v_std: float | None = None
    history: list = field(default_factory=list)
    image_size: tuple | None = None
    category: str | None = None

    @property
    def p(self):
        return self.teacher.p

    @property
    def val_stats(self):
        """{'e_mean', 'e_std', 'v_mean', 'v_std'} or None when not computed yet."""
        if any(getattr(self, k) is None for k in VAL_STATS):
            return None
        return {k: getattr(self, k) for k in VAL_STATS}

    def set_val_stats(self, stats):
        """Store scoring.validation_stats(...) (a dict with the four keys); returns self.
        A non-finite statistic raises DivergedError: the students (or the images) are broken."""
        bad = {k: stats[k] for k in VAL_STATS if not np.isfinite(float(stats[k]))}
        if bad:
            raise DivergedError(f"the validation statistics of p={self.p} are not finite "
                                f"({', '.join(f'{k} {v}' for k, v in bad.items())}); the students "
                                f"diverged: lower --lr")
        for k in VAL_STATS:
            setattr(self, k, float(stats[k]))
        return self

    def to(self, device):
        """Move teacher, students, mu and sigma to 'cpu' | 'cuda' | 'auto'; in place, returns self."""
        for net in [self.teacher, *self.students]:
            net.to(device)
        self.mu, self.sigma = to_device(self.mu, device), to_device(self.sigma, device)
        return self


def make_students(teacher, n_students, width=None, seed=0):
    """M PatchNets with the teacher's p and out_dim, on its device and in its dtype. width: of
    the hidden layers (default: the teacher's). Seeds come from SeedSequence(seed), so the
    students differ from each other and from a teacher drawn with any small integer seed."""
    xp, dtype = _net_xp_dtype(teacher)
    width = teacher.width if width is None else width
    seeds = np.random.SeedSequence(seed).generate_state(n_students)
    students = []
    for s in seeds:
        net = PatchNet(teacher.p, out_dim=teacher.out_dim, width=width, seed=int(s))
        net.params = {k: xp.asarray(v, dtype=dtype) for k, v in net.params.items()}
        students.append(net)
    return students


@holding
def train_students(teacher, images, *, n_students=3, epochs=10, batch=1, lr=1e-4,
                   weight_decay=1e-5, seed=0, width=None, mu=None, sigma=None, crop=None,
                   cache_bytes=2 ** 30, log=print):
    """Train M students on the normalised dense teacher targets (docs/method.md §4); returns a ScaleModel.

    teacher: a PatchNet; the students live on its device and in its dtype. images (N,3,H,W),
    anomaly-free (on any device). Each student has its own Adam (lr, weight_decay) and sees
    the images in the same seeded order, `batch` images per step; the students differ by their
    initialisation only. mu, sigma: computed as channel_stats does when None (from the same
    teacher pass as the cached targets).

    crop: None trains each step on whole images, as the paper does. A side k (a multiple of
    the pool strides' product) trains each step on one k x k crop of the batch's images instead,
    one of the crops that tile the image (dense.crop_corners). Each image goes through its
    crops in its own seeded order, a new one every len(corners) epochs, so in those epochs it
    is trained on each crop once, and every pixel as often as any other where k divides H and
    W (with batch > 1 the batch's first image picks the crop). The crop's outputs are
    exactly the whole image's at its pixels (dense.crop_window), so the students learn the same
    targets; a step costs about (k + p - 1)^2 / (H + p - 1)^2 of a whole image's. This departs
    from the paper to make training cheaper on a CPU; docs/results.md measures it.

    On a CPU with several cores two or more students' steps run at once, one student per core at
    a time (blas.interleave), each step on one core: the result is that of a one-core machine,
    whatever the cores (a step split over cores rounds a little differently). A single student
    has its steps split over the cores instead.

    The targets (y^T − μ) ⊘ σ are computed once per image (inference, no caches) and kept when
    they fit in cache_bytes; otherwise recomputed for every batch. log(line) gets a header and
    one line per epoch: mean loss of every student (the loss of each step before its update),
    seconds, and images per second (each image through all M students, forward and backward).
    """
    images = images if hasattr(images, "shape") else np.stack(images)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"train_students: expected images (N, 3, H, W), got {tuple(images.shape)}")
    N, _, H, W = images.shape
    xp, dtype = _net_xp_dtype(teacher)
    finite = asnumpy(get_array_module(images).isfinite(images).reshape(N, -1).all(axis=1))
    if not finite.all():
        raise ValueError(f"train_students: images {np.flatnonzero(~finite).tolist()[:5]} hold NaN "
                         f"or inf pixels; the images must be finite")
    target_bytes = N * teacher.out_dim * H * W * np.dtype(dtype).itemsize
    targets, step = None, max(batch, 4)
    if target_bytes <= cache_bytes:                          # one teacher pass serves both
        targets = xp.concatenate([dense_features(teacher, x) for x in image_batches(images, step, teacher)])
    if mu is None or sigma is None:      # batch by batch, as channel_stats does: the same numbers,
        if targets is None:              # and no float64 copy of every target at once
            mu, sigma = channel_stats(teacher, images, batch=step)
        else:
            mu, sigma = _stats(teacher, (targets[i:i + step] for i in range(0, N, step)))
    mu, sigma = xp.asarray(mu, dtype=dtype), xp.asarray(sigma, dtype=dtype)
    if not _finite(xp, mu, sigma):
        raise DivergedError(f"the teacher's channel statistics (mu, sigma) of p={teacher.p} are not "
                            f"finite: the teacher's weights hold NaN or inf, or overflow")
    if targets is not None:
        targets = normalise(targets, mu, sigma)
    corners = crop_corners(H, W, crop) if crop else None
    students = make_students(teacher, n_students, width, seed)
    optimisers = [Adam(lr=lr, weight_decay=weight_decay) for _ in students]
    log(f"students: {n_students} x PatchNet(p={teacher.p}, width={students[0].width:g}), "
        f"{N} images {H}x{W}{f', crops {crop}x{crop}' if crop else ''}, batch {batch}, "
        f"{epochs} epochs, lr {lr:g}, targets "
        f"{'cached' if targets is not None else 'recomputed per batch'} "
        f"({target_bytes / 2 ** 20:.0f} MiB)")

    rng = np.random.default_rng(seed)
    cores = threads() if xp is np else 1     # a GPU runs one student's kernels at a time anyway

    def batches(order):                      # the epoch's (n, x, t), the same for every student
        for b0 in range(0, N, batch):
            idx = order[b0:b0 + batch]
            x = xp.asarray(images[idx], dtype=dtype)         # (n,3,H,W)
            if targets is not None:
                t = targets[xp.asarray(idx)]                 # (n,D,H,W)
            else:
                t = normalise(dense_features(teacher, x), mu, sigma)
            if crop:                                         # (n,3,k+p-1,k+p-1), (n,D,k,k)
                r, c = corners[schedule[int(idx[0])][epoch % len(corners)]]
                x, t = crop_window(teacher, x, r, c, crop), t[:, :, r:r + crop, c:c + crop]
            yield len(idx), x, t

    def student(i, reader):                  # one student's epoch, a step per next()
        net, opt = students[i], optimisers[i]
        for n, x, t in reader:
            y, cache = dense_forward(net, x, pad=not crop)
            loss, dy = regression(y, t)
            opt.step(net.params, dense_backward(dy, cache))
            sums[i] += loss * n
            yield

    history = []
    for epoch in range(epochs):
        start = time.perf_counter()
        sums = xp.zeros(n_students, dtype=xp.float64)       # Σ loss · batch size, per student
        if crop and epoch % len(corners) == 0:     # each image: every crop once in len(corners) epochs
            schedule = [rng.permutation(len(corners)) for _ in range(N)]
        readers = shared(batches(rng.permutation(N)), n_students)
        interleave([student(i, readers[i]) for i in range(n_students)], cores)
        losses = (asnumpy(sums) / N).tolist()                # one wait for the GPU per line
        seconds = time.perf_counter() - start
        if not np.isfinite(losses).all():
            worst = next(v for v in losses if not np.isfinite(v))
            raise DivergedError(f"--lr {lr:g}: the students' loss became {worst} at epoch "
                                f"{epoch + 1} (p={teacher.p}); lower --lr")
        history.append(losses)
        log(f"epoch {epoch + 1:3d}/{epochs}  loss " + " ".join(f"{v:9.4f}" for v in losses)
            + f"  {seconds:7.1f} s  {N / seconds:7.1f} images/s")
    return ScaleModel(teacher, students, mu, sigma, history=history, image_size=(H, W))


# ---- files ---------------------------------------------------------------------------------

def scale_path(directory, p):
    """Where save_scale puts the model of patch size p: <directory>/scale_<p>.npz."""
    return os.path.join(os.fspath(directory), f"scale_{p}.npz")


def _net_arrays(prefix, net):
    arrays = {f"{prefix}/width": np.array(net.width), f"{prefix}/out_dim": np.array(net.out_dim)}
    arrays.update({f"{prefix}/{k}": asnumpy(v) for k, v in net.params.items()})
    return arrays


def save_scale(model, directory):
    """Write the whole ScaleModel to <directory>/scale_<p>.npz (format in the module docstring);
    written to a temporary file beside it, then renamed over it, so a crash never leaves a
    half-written file under the real name. Returns the path."""
    os.makedirs(directory, exist_ok=True)
    path = scale_path(directory, model.p)
    stats = [np.nan if getattr(model, k) is None else getattr(model, k) for k in VAL_STATS]
    history = np.array(model.history, dtype=np.float64).reshape(-1, len(model.students))
    arrays = {"format": np.array(FORMAT), "format_version": np.array(FORMAT_VERSION),
              "p": np.array(model.p), "n_students": np.array(len(model.students)),
              "mu": asnumpy(model.mu), "sigma": asnumpy(model.sigma),
              "val_stats": np.array(stats, dtype=np.float64), "history": history,
              "image_size": np.array(model.image_size or (0, 0), dtype=np.int64),
              "category": np.array(model.category or ""),
              "teacher_sha256": np.array(weights_sha256(model.teacher))}
    arrays.update(_net_arrays("teacher", model.teacher))
    for i, net in enumerate(model.students):
        arrays.update(_net_arrays(f"student{i}", net))
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return path


def _net_from_arrays(path, data, prefix, p):
    """Rebuild one PatchNet from the '<prefix>/...' arrays of a scale file."""
    params = {k[len(prefix) + 1:]: v for k, v in data.items()
              if k.startswith(prefix + "/") and k not in (f"{prefix}/width", f"{prefix}/out_dim")}
    return from_arrays(params, p, width=float(data[f"{prefix}/width"]),
                       out_dim=int(data[f"{prefix}/out_dim"]), source=f"load_scale({path!r}) {prefix}")


def load_scale(path, device=None):
    """Read a ScaleModel written by save_scale (a file path, or a directory with p: use
    scale_path). device: 'cpu' | 'cuda' | 'auto' (default: stay on the host). Arrays only
    (allow_pickle=False). A missing file raises FileNotFoundError; a damaged or foreign one a
    ValueError that names the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load_scale: no such file {path!r} (save_scale writes "
                                f"<dir>/scale_<p>.npz)")
    data = read_npz(path, f"load_scale({path!r})")
    if data.get("format") is None or str(data["format"]) != FORMAT:
        raise ValueError(f"load_scale({path!r}): not a ustudents scale file (no format "
                         f"{FORMAT!r}); a single PatchNet file is read by models.load")
    version = int(data["format_version"])
    if version != FORMAT_VERSION:
        raise ValueError(f"load_scale({path!r}): format version {version}, this code reads "
                         f"version {FORMAT_VERSION}; train the model again with `ustudents train`")
    try:
        p, M = int(data["p"]), int(data["n_students"])
        teacher = _net_from_arrays(path, data, "teacher", p)
        students = [_net_from_arrays(path, data, f"student{i}", p) for i in range(M)]
        mu, sigma, stats = data["mu"], data["sigma"], data["val_stats"]
        history = data["history"].tolist()
        size = tuple(int(n) for n in data["image_size"].reshape(-1))
        category, sha = str(data["category"]), str(data["teacher_sha256"])
    except KeyError as e:
        raise ValueError(f"load_scale({path!r}): the file lacks the array {e}") from e
    D = teacher.out_dim
    if mu.shape != (D,) or sigma.shape != (D,):
        raise ValueError(f"load_scale({path!r}): mu {mu.shape} and sigma {sigma.shape} must both "
                         f"be ({D},), one value per teacher channel")
    if any(s.out_dim != D for s in students):
        raise ValueError(f"load_scale({path!r}): the students' descriptors differ in length from "
                         f"the teacher's ({D})")
    if weights_sha256(teacher) != sha:
        raise ValueError(f"load_scale({path!r}): the teacher's weights do not match the recorded "
                         f"teacher_sha256; the file was altered")
    model = ScaleModel(teacher, students, mu, sigma, history=history,
                       image_size=size if size != (0, 0) else None, category=category or None)
    if not np.isnan(stats).any():
        model.set_val_stats(dict(zip(VAL_STATS, stats.tolist())))
    return model.to(device) if device is not None else model
