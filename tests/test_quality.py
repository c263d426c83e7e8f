"""ustudents.quality: patch retrieval and the explained variance of the distillation target,
checked against networks and targets whose answer is known."""
import numpy as np
import pytest

from ustudents.backend import asnumpy
from ustudents.models import PatchNet
from ustudents.natural import dead_leaves
from ustudents.quality import (colour_sensitivity, explained_variance, retrieval_accuracy,
                                retrieval_by_contrast)

P = 17


def device_of(xp):
    return "cpu" if xp is np else "cuda"


@pytest.fixture(scope="module")
def images():
    return np.stack([dead_leaves(np.random.default_rng(k), 64) for k in range(3)])   # (3, 3, 64, 64)


def small_net(xp):
    return PatchNet(P, out_dim=16, width=0.25, seed=0).to(device_of(xp))


class RandomNet:
    """Descriptors drawn at random, whatever the patch: nothing to retrieve by."""

    def __init__(self, xp, value=None, d=8, seed=0):
        self.p, self.xp, self.value, self.d = P, xp, value, d
        self.params = {"w": xp.zeros(1, dtype=xp.float32)}
        self.rng = np.random.default_rng(seed)

    def forward(self, x):
        y = self.rng.standard_normal((len(x), self.d, 1, 1)) if self.value is None \
            else np.full((len(x), self.d, 1, 1), self.value)
        return self.xp.asarray(y, dtype=self.xp.float32), None


class LinearOfDescriptors:
    """A stand-in target network whose features ARE a linear function of net's descriptors of
    the patch (resize_batch to the patch's own size changes nothing), plus, with noise > 0,
    independent Gaussian noise of that std per feature."""

    def __init__(self, net, xp, dim=12, noise=0.0, seed=0):
        rng = np.random.default_rng(seed)
        self.net, self.xp, self.noise, self.rng = net, xp, noise, rng
        self.A = xp.asarray(rng.standard_normal((net.out_dim, dim)))
        self.c = xp.asarray(rng.standard_normal(dim))
        self.sizes = set()

    def preprocess(self, x01):
        return x01

    def features(self, x):
        self.sizes.add(x.shape[-1])
        d = self.net.forward(x)[0].reshape(len(x), -1).astype(self.xp.float64)
        z = d @ self.A + self.c
        scale = asnumpy(z.std(axis=0))                              # (dim,) each feature's spread
        return z + self.xp.asarray(self.noise * scale * self.rng.standard_normal(z.shape))


class IndependentTarget(LinearOfDescriptors):
    """Features drawn at random, unrelated to the patch."""

    def features(self, x):
        self.sizes.add(x.shape[-1])
        return self.xp.asarray(self.rng.standard_normal((len(x), 12)))


# ---- retrieval ---------------------------------------------------------------------------------

def test_an_unchanged_positive_is_always_retrieved(images, xp):
    assert retrieval_accuracy(small_net(xp), images, n_queries=64, shift=0, noise=0) == 1.0


def test_equal_descriptors_retrieve_nothing(images, xp):
    # the positive must be strictly nearer than every negative; a tie does not count
    assert retrieval_accuracy(RandomNet(xp, value=1.0), images, n_queries=64) == 0.0


def test_random_descriptors_score_chance_one_in_n_negatives_plus_one(images, xp):
    # the negatives are shared by all queries, so one draw's share varies: average over draws
    four = [retrieval_accuracy(RandomNet(xp, seed=s), images, n_negatives=3, seed=s) for s in range(8)]
    assert abs(np.mean(four) - 1 / 4) < 0.08
    assert retrieval_accuracy(RandomNet(xp), images) < 0.03        # chance 1/400 by default


def test_images_too_small_for_the_negatives_are_refused(images):
    with pytest.raises(ValueError, match="too few or too small"):
        retrieval_accuracy(small_net(np), images[:2, :, :20, :20], n_negatives=50)


def test_a_noisier_positive_is_harder_to_retrieve(images, xp):
    net = small_net(xp)
    clean = retrieval_accuracy(net, images, n_queries=128, noise=0.0)
    noisy = retrieval_accuracy(net, images, n_queries=128, noise=0.3)
    assert noisy < clean


class ColourNet:
    """Each channel's mean over the patch as its descriptor: blind to the patch's structure."""

    def __init__(self, xp):
        self.p, self.xp = P, xp
        self.params = {"w": xp.zeros(1, dtype=xp.float32)}

    def forward(self, x):
        mean = self.xp.asarray(x).mean(axis=(2, 3))
        return mean.reshape(len(x), -1, 1, 1).astype(self.xp.float32), None


def test_retrieval_by_contrast_splits_the_same_queries_into_equal_groups(images, xp):
    net = small_net(xp)
    groups = retrieval_by_contrast(net, images, groups=4, n_queries=128)
    assert len(groups) == 4
    lows, highs, shares = zip(*groups)
    assert all(lo <= hi for lo, hi in zip(lows, highs))
    assert all(h <= lo for h, lo in zip(highs, lows[1:]))          # lowest contrast first
    # 128 queries in 4 groups of 32: the groups' mean is retrieval_accuracy of the same queries
    assert np.mean(shares) == pytest.approx(retrieval_accuracy(net, images, n_queries=128))


def test_a_colour_only_descriptor_retrieves_flat_patches_better_than_textured_ones(images, xp):
    # a shift moves a flat patch's mean colour little and a textured one's much
    (_, _, flat), (_, _, textured) = retrieval_by_contrast(ColourNet(xp), images, groups=2,
                                                           n_queries=256)
    assert flat > textured + 0.05


class StructureNet(ColourNet):
    """The patch with each channel's mean taken out as its descriptor: blind to its colour."""

    def forward(self, x):
        x = self.xp.asarray(x)
        d = x - x.mean(axis=(2, 3), keepdims=True)
        return d.reshape(len(x), -1, 1, 1).astype(self.xp.float32), None


def test_colour_sensitivity_tells_a_colour_only_descriptor_from_a_colour_blind_one(images, xp):
    # a colour step of 0.05 moves a patch's mean by 0.05 and noise of std 0.03 by about
    # 0.03 / 17: far apart for the colour-only descriptor; the colour-blind one sees the noise
    # and, but for clipping at 0 and 1, nothing of the step
    assert colour_sensitivity(ColourNet(xp), images) > 5
    assert colour_sensitivity(StructureNet(xp), images) < 0.5


# ---- explained variance ------------------------------------------------------------------------

def test_a_target_linear_in_the_descriptors_is_explained_fully(images, xp):
    net = small_net(xp)
    target = LinearOfDescriptors(net, xp)
    ev = explained_variance(net, target, images, n_fit=256, n_eval=128, size=P)
    assert ev > 0.99
    assert target.sizes == {P}


def test_half_the_variance_as_independent_noise_is_half_explained(images, xp):
    net = small_net(xp)
    ev = explained_variance(net, LinearOfDescriptors(net, xp, noise=1.0), images,
                            n_fit=256, n_eval=256, size=P)
    assert 0.35 < ev < 0.65


def test_a_target_independent_of_the_patch_is_not_explained(images, xp):
    net = small_net(xp)
    target = IndependentTarget(net, xp)
    ev = explained_variance(net, target, images, n_fit=256, n_eval=128, size=32)
    assert ev < 0.05
    assert target.sizes == {32}                    # the target network sees size x size patches


def test_a_ridge_chosen_on_the_fit_set_overfits_less_than_none(images, xp):
    # 64 descriptors, 96 patches to fit on: least squares with (almost) no penalty fits the
    # noise too and explains less of new patches than the ridge chosen on the fit set
    net = PatchNet(P, out_dim=64, width=0.25, seed=0).to(device_of(xp))
    kw = dict(n_fit=96, n_eval=256, size=P)
    chosen = explained_variance(net, LinearOfDescriptors(net, xp, noise=1.0, seed=1), images, **kw)
    bare = explained_variance(net, LinearOfDescriptors(net, xp, noise=1.0, seed=1), images,
                              ridge=1e-9, **kw)
    assert chosen > bare + 0.1


def test_too_few_fit_patches_are_refused(images):
    net = small_net(np)
    with pytest.raises(ValueError, match="n_fit >= 8"):
        explained_variance(net, LinearOfDescriptors(net, np), images, n_fit=4)
