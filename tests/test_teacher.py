"""Teacher pretraining: each loss term is wired in and goes down, and the loop degrades
gracefully without the ImageNet network."""
import numpy as np
import pytest

from ustudents import teacher
from ustudents.backend import asnumpy, get_array_module
from ustudents.natural import PatchSampler, dead_leaves
from ustudents.teacher import TeacherConfig, train_teacher


@pytest.fixture
def sampler():
    images = [dead_leaves(np.random.default_rng(k), 48) for k in range(6)]
    return PatchSampler(images, 17, seed=0)


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


def test_triplet_loss_falls_with_metric_learning(sampler):
    _, history = train_teacher(tiny(lambda_k=0, lambda_m=1, lambda_c=0, margin=1.0),
                               sampler=sampler, log=lambda s: None)
    assert history[-1]["L_m"] < 0.8 * history[0]["L_m"]


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
    return dict(distill="lite0", distill_size=8, lambda_k=1, lambda_m=1, lambda_c=1, batch=8, log_every=3)


def _fresh_sampler(seed=0, sampler_seed=0):
    images = [dead_leaves(np.random.default_rng(k + seed), 48) for k in range(6)]
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
