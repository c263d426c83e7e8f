"""Teacher pretraining: each loss term is wired in and goes down, and the loop degrades
gracefully without the ImageNet network."""
import numpy as np
import pytest

from ustudents import teacher
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
        return x.reshape(len(x), -1) @ self.R


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
