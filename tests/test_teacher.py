"""Teacher pretraining: each loss term is wired in and goes down, and the loop degrades
gracefully without the ImageNet network."""
import functools

import numpy as np
import pytest

from ustudents import batches, teacher
from ustudents.backend import asnumpy, get_array_module
from ustudents.natural import dead_leaves
from ustudents.patches import PatchSampler
from ustudents.targets import DenseTargets
from ustudents.teacher import TeacherConfig, train_teacher


@functools.lru_cache(maxsize=None)
def leaves(seed=0):
    """Six dead-leaves images of 48 px, made once per seed (each takes about 40 ms), read-only
    so that no test can change another's."""
    images = tuple(dead_leaves(np.random.default_rng(k + seed), 48) for k in range(6))
    for image in images:
        image.flags.writeable = False
    return images


@pytest.fixture
def sampler():
    return PatchSampler(list(leaves()), 17, seed=0)


def tiny(**kw):
    base = dict(p=17, width=0.125, out_dim=16, iterations=40, batch=32, lr=2e-3, log_every=10, distill="none")
    return TeacherConfig(**{**base, **kw})


class LinearTarget:
    """A stand-in for the ImageNet network: a fixed random projection of the resized patch."""

    def __init__(self, size, dim=24, seed=0):
        self.R = np.random.default_rng(seed).standard_normal((3 * size * size, dim)).astype(np.float32)

    def preprocess(self, x):
        return 2 * x - 1

    def features(self, x):
        return x.reshape(len(x), -1) @ get_array_module(x).asarray(self.R)   # on x's device


def test_compactness_alone_decorrelates_the_descriptors(sampler):
    _, history = train_teacher(tiny(lambda_k=0, lambda_m=0, lambda_c=1), sampler=sampler, log=lambda s: None)
    assert history[-1]["L_c"] < 0.6 * history[0]["L_c"]


@pytest.mark.slow                 # seconds on 2 cores: with the slow tests (.ci/run runs them)
def test_triplet_loss_falls_with_metric_learning(sampler):
    _, history = train_teacher(tiny(lambda_k=0, lambda_m=1, lambda_c=0, margin=1.0),
                               sampler=sampler, log=lambda s: None)
    assert history[-1]["L_m"] < 0.8 * history[0]["L_m"]


@pytest.mark.slow                 # seconds on 2 cores: with the slow tests (.ci/run runs them)
def test_distillation_regresses_the_target_network(sampler, monkeypatch):
    monkeypatch.setattr(teacher, "load_distillation_target",
                        lambda config, device, log: LinearTarget(config.distill_size))
    _, history = train_teacher(tiny(distill="lite0", distill_size=8, lambda_k=1, lambda_c=0, iterations=100),
                               sampler=sampler, log=lambda s: None)
    assert history[-1]["L_k"] < 0.8 * history[0]["L_k"]
    assert all(h["L_m"] == 0 for h in history)          # metric learning stayed off


def test_without_the_imagenet_network_training_falls_back_to_metric_learning(sampler, monkeypatch):
    from ustudents import imagenet

    def missing(*args, **kwargs):
        raise ImportError("the EfficientNet-Lite0 weights are not installed")

    monkeypatch.setattr(imagenet, "load_efficientnet_lite0", missing)
    lines = []
    _, history = train_teacher(tiny(distill="lite0", iterations=10, log_every=5), sampler=sampler, log=lines.append)
    assert any("falling back" in line for line in lines)
    assert history[-1]["L_m"] > 0 and history[-1]["L_k"] == 0


def test_a_sampler_of_another_patch_size_is_refused_by_name(sampler):
    with pytest.raises(ValueError, match="17-px patches but the teacher has p = 33"):
        train_teacher(tiny(p=33), sampler=sampler, log=lambda s: None)


def _distilling(monkeypatch):
    monkeypatch.setattr(teacher, "load_distillation_target",
                        lambda config, device, log: LinearTarget(config.distill_size))
    return dict(distill="lite0", distill_size=8, lambda_k=1, lambda_m=1, lambda_c=1, batch=8, log_every=3,
                target_reuse=1)


def _fresh_sampler(seed=0, sampler_seed=0):
    images = list(leaves(seed))
    return PatchSampler(images, 17, seed=sampler_seed)


def test_a_run_continued_from_its_checkpoint_ends_where_an_unbroken_run_ends(monkeypatch, tmp_path):
    """All three losses on, so the checkpoint must carry the teacher, the decoder, Adam's moments,
    the sampler's random state and the targets' centring; leave any out and the runs part. The
    continuing sampler starts from another seed: its state must come from the checkpoint."""
    settings = _distilling(monkeypatch)
    quiet = lambda s: None                                               # noqa: E731
    whole, whole_history = train_teacher(tiny(**settings, iterations=12), sampler=_fresh_sampler(), log=quiet)
    ckpt = tmp_path / "run.ckpt.npz"
    train_teacher(tiny(**settings, iterations=6), sampler=_fresh_sampler(), log=quiet,
                  checkpoint=ckpt, checkpoint_every=0)
    lines = []
    cont, cont_history = train_teacher(tiny(**settings, iterations=12), sampler=_fresh_sampler(sampler_seed=7),
                                       log=lines.append, resume=ckpt)
    assert any("continuing" in line and "iteration 6" in line for line in lines)
    for name, p in whole.params.items():
        np.testing.assert_allclose(asnumpy(cont.params[name]), asnumpy(p), rtol=1e-6, atol=1e-7, err_msg=name)
    assert [h["iteration"] for h in cont_history] == [h["iteration"] for h in whole_history]
    assert cont_history[-1]["L_k"] == pytest.approx(whole_history[-1]["L_k"], rel=1e-5)
    assert cont_history[-1]["L_m"] == pytest.approx(whole_history[-1]["L_m"], rel=1e-5)


def test_resuming_refuses_other_settings_other_images_and_a_finished_run(monkeypatch, tmp_path):
    settings = _distilling(monkeypatch)
    ckpt = tmp_path / "run.ckpt.npz"
    train_teacher(tiny(**settings, iterations=3), sampler=_fresh_sampler(), log=lambda s: None,
                  checkpoint=ckpt)
    with pytest.raises(ValueError, match="other settings .*lr: 0.002 there, 0.01 here"):
        train_teacher(tiny(**settings, iterations=6, lr=1e-2), sampler=_fresh_sampler(), resume=ckpt)
    with pytest.raises(ValueError, match="other images"):
        train_teacher(tiny(**settings, iterations=6), sampler=_fresh_sampler(seed=1), resume=ckpt)
    with pytest.raises(ValueError, match="at iteration 3 already"):
        train_teacher(tiny(**settings, iterations=3), sampler=_fresh_sampler(), resume=ckpt)


# -- targets reused from a pool ------------------------------------------------------------------

class MeanColour:
    """A stand-in for PatchTargets: each patch's mean colour and its top-left pixel, counting
    its calls."""
    xp = np

    def __init__(self):
        self.patches = 0

    def __call__(self, x):
        self.patches += len(x)
        return np.concatenate([x.mean(axis=(2, 3)), x[:, :, 0, 0]], axis=1)


@pytest.mark.parametrize("augment, margin", [(False, 0), (False, 4), (True, 4)])
def test_a_pooled_target_is_the_target_of_its_own_anchor(augment, margin):
    images = list(leaves())
    sampler = PatchSampler(images, 17, seed=0, augment=augment)
    targets = MeanColour()
    pool = teacher.TargetPool(targets, sampler, size=40, reuse=3, batch=8, seed=0, margin=margin)
    places, values = pool.draw(1, sampler.rng)
    np.testing.assert_allclose(values, MeanColour()(sampler.patches_at(places)), rtol=1e-6)
    if margin:                                        # the triplet's anchors are the same patches
        anchors, _, _ = sampler.triplet(8, shift=margin, places=places)
        np.testing.assert_allclose(values, MeanColour()(anchors), rtol=1e-6)


def test_a_pool_serves_its_span_and_any_iteration_can_rebuild_it():
    """A continued run rebuilds its pool from the iteration alone: a pool made afresh (over a
    sampler of another seed) must give the same anchors and targets as the running one."""
    images = list(leaves())
    sampler = PatchSampler(images, 17, seed=0)
    targets = MeanColour()
    pool = teacher.TargetPool(targets, sampler, size=40, reuse=3, batch=8, seed=0)
    assert pool.span == 15                                # 40 anchors * 3 uses / 8 per iteration
    first = [pool.draw(it, sampler.rng) for it in range(1, 16)]
    assert targets.patches == 40                          # one pool, its targets computed once
    second = pool.draw(16, sampler.rng)
    assert targets.patches == 80                          # iteration 16 starts the next one
    assert not np.isin(second[1][:, 3], first[0][1][:, 3]).all()   # of other anchors
    again = teacher.TargetPool(MeanColour(), PatchSampler(images, 17, seed=9), 40, 3, 8, seed=0)
    for it in (7, 16, 31):
        mine, theirs = again.draw(it, np.random.default_rng(it)), pool.draw(it, np.random.default_rng(it))
        np.testing.assert_array_equal(mine[1], theirs[1])
        np.testing.assert_array_equal(mine[0].at[0], theirs[0].at[0])


def test_a_run_with_reused_targets_continues_from_its_checkpoint_mid_pool(monkeypatch, tmp_path):
    settings = dict(_distilling(monkeypatch), target_reuse=2, target_pool=12)   # a pool: 3 iterations
    quiet = lambda s: None                                               # noqa: E731
    lines = []
    whole, history = train_teacher(tiny(**settings, iterations=10), sampler=_fresh_sampler(), log=lines.append)
    assert any("pools of 12 anchors" in line and "every 3 iterations" in line for line in lines)
    ckpt = tmp_path / "run.ckpt.npz"
    train_teacher(tiny(**settings, iterations=5), sampler=_fresh_sampler(), log=quiet,
                  checkpoint=ckpt, checkpoint_every=0)
    cont, cont_history = train_teacher(tiny(**settings, iterations=10), sampler=_fresh_sampler(sampler_seed=7),
                                       log=quiet, resume=ckpt)
    for name, p in whole.params.items():
        np.testing.assert_allclose(asnumpy(cont.params[name]), asnumpy(p), rtol=1e-6, atol=1e-7, err_msg=name)
    assert cont_history[-1]["L_k"] == pytest.approx(history[-1]["L_k"], rel=1e-5)


@pytest.mark.parametrize("settings, message", [
    (dict(target_reuse=0), "target_reuse must be a whole number >= 1"),
    (dict(target_reuse=2, target_pool=8), r"target_pool \(8\) must hold at least one batch \(32\)"),
])
def test_target_reuse_settings_are_refused_by_name(sampler, settings, message):
    with pytest.raises(ValueError, match=message):
        train_teacher(tiny(**settings), sampler=sampler, log=lambda s: None)


@pytest.mark.parametrize("settings, message", [
    (dict(lambda_m=1, recolour=1.2), r"recolour must lie in \[0, 1\] \(got 1.2\)"),
    (dict(lambda_m=1, recolour=0.5, recolour_step=0), r"recolour_step be positive \(got 0\)"),
    (dict(lambda_m=0, recolour=0.5), "it needs the triplet, lambda_m > 0"),
])
def test_recolour_settings_are_refused_by_name(sampler, settings, message):
    with pytest.raises(ValueError, match=message):
        train_teacher(tiny(**settings), sampler=sampler, log=lambda s: None)


def test_recoloured_negatives_reach_the_batch():
    """The config's recolour goes through sample_batch: with recolour 1 every negative row is
    its anchor row moved by one colour step of recolour_step."""
    config = tiny(lambda_m=1, recolour=1.0, recolour_step=0.05, batch=8)
    batch = batches.sample_batch(PatchSampler(list(leaves()), 17, seed=0), config, True, np)
    a, _, n = (batch.x[rows] for rows in batch.triplet)
    inside = (n > 0) & (n < 1)                                      # unclipped pixels
    offset = np.where(inside, n - a, np.nan)
    per_patch = np.nanmedian(offset.reshape(8, 3, -1), axis=2)      # (8, 3): one offset each
    np.testing.assert_allclose(np.linalg.norm(per_patch, axis=1), 0.05, rtol=1e-3)
    assert np.nanmax(np.abs(offset - per_patch[:, :, None, None])) < 1e-6


# -- the dense recipe ---------------------------------------------------------------------------

class RecordingOptimiser:
    """Keeps the gradients of a step instead of taking it."""

    def step(self, params, grads):
        self.grads = grads


def test_a_dense_step_is_the_patch_step_on_every_patch_of_its_crops(rng):
    from numpy.lib.stride_tricks import sliding_window_view
    from ustudents.models import PatchNet
    net = PatchNet(33, out_dim=6, width=0.0625, seed=1).to(dtype=np.float64)
    side, K = 4, 5                                                  # 4 x 4 patches per crop
    crops = rng.uniform(size=(4, 3, side + 32, side + 32))           # 2 crops, then 2 noisy copies
    params = dict(net.params, **{"decoder.w": rng.standard_normal((K, 6)),
                                 "decoder.b": rng.standard_normal(K)})
    target = rng.standard_normal((2 * side * side, K))
    rows = (np.array([0, 5, 16 + 6]), np.array([32 + 1, 32 + 9, 48 + 15]), np.array([16, 21, 6]))
    weights = {"L_k": 2.0, "L_m": 0.5, "L_c": 1.5}
    win = sliding_window_view(crops, (33, 33), axis=(2, 3))          # (4, 3, side, side, 33, 33)
    patches = np.ascontiguousarray(win.transpose(0, 2, 3, 1, 4, 5).reshape(-1, 3, 33, 33))
    results = []
    for batch in (batches.Batch(crops, 2 * side * side, target, rows, dense=True),
                  batches.Batch(patches, 2 * side * side, target, rows)):
        opt = RecordingOptimiser()
        terms = teacher.teacher_step(net, params, opt, batch, weights, margin=1.0)
        results.append(({k: float(v) for k, v in terms.items()}, opt.grads))
    (dense_terms, dense_grads), (patch_terms, patch_grads) = results
    assert dense_terms.keys() == patch_terms.keys() == {"L_k", "L_m", "L_c", "total"}
    for k in dense_terms:
        assert np.isclose(dense_terms[k], patch_terms[k], rtol=1e-10), k
    for k in patch_grads:
        assert np.allclose(dense_grads[k], patch_grads[k], rtol=1e-8, atol=1e-12), k


class MapTarget(LinearTarget):
    """A stand-in for the ImageNet network with a feature map: cells of 8 x 8 pixels, each a
    fixed random projection of its mean colour."""

    def __init__(self, dim=12, seed=0):
        self.R = np.random.default_rng(seed).standard_normal((3, dim)).astype(np.float32)

    def feature_map(self, x, blocks=None):
        from ustudents.patches import resize_batch
        cells = resize_batch(x, -(-x.shape[2] // 8))                    # (N, 3, h, h)
        return (cells.transpose(0, 2, 3, 1) @ get_array_module(x).asarray(self.R)).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("term", ["L_k", "L_m", "L_c"])
def test_repeated_dense_steps_on_one_batch_lower_each_term(sampler, term):
    from ustudents.models import PatchNet
    from ustudents.optim import Adam
    config = tiny(recipe="dense", crops=2, crop_size=12, batch=32, lambda_m=1.0)
    targets = DenseTargets(MapTarget(), sampler.images, 17, 16, np)
    batch = batches.sample_crops(sampler, config, True, np, targets)
    net = PatchNet(17, out_dim=16, width=0.125, seed=0)
    weights = {k: float(k == term) for k in ("L_k", "L_m", "L_c")}
    params = dict(net.params)
    if term == "L_k":                                                # the decoder, only with Lk
        params.update({"decoder.w": np.zeros((targets.dim, 16), np.float32),
                       "decoder.b": np.zeros(targets.dim, np.float32)})
    opt = Adam(lr=3e-3)
    losses = [float(teacher.teacher_step(net, params, opt, batch, weights)[term]) for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0]


def test_the_dense_recipe_runs_end_to_end_and_counts_every_patch(sampler, monkeypatch):
    monkeypatch.setattr(teacher, "load_distillation_target", lambda config, device, log: MapTarget())
    lines = []
    _, history = train_teacher(tiny(distill="lite0", distill_size=16, lambda_k=1, lambda_m=1,
                                    recipe="dense", crops=2, crop_size=12, iterations=4, log_every=2),
                               sampler=sampler, log=lines.append)
    assert any("2 crops of 12x12 patches" in line for line in lines)
    assert len(history) == 2 and all(np.isfinite(h["total"]) and h["L_k"] > 0 and h["L_m"] > 0
                                      for h in history)


@pytest.mark.parametrize("settings, message", [
    (dict(recipe="pixels"), "recipe must be 'patch' or 'dense'"),
    (dict(recipe="dense", crop_size=40), r"crops of 56 px .* smallest image \(48 px\)"),
    (dict(recipe="dense", lambda_m=1, crops=1), r"crops \(1\) must be >= 2"),
    (dict(recipe="dense", augment=True), "augment works with the patch recipe only"),
    (dict(recipe="dense", lambda_m=1, recolour=0.5), "recolour works with the patch recipe only"),
    (dict(recipe="dense", lambda_m=1, crops=2, crop_size=12, batch=64), r"32 anchors per crop.* room for 16"),
])
def test_dense_recipe_settings_are_refused_by_name(sampler, settings, message):
    with pytest.raises(ValueError, match=message):
        train_teacher(tiny(lambda_c=1, **settings), sampler=sampler, log=lambda s: None)
