"""The patch networks of the paper (teacher = student), docs/method.md §2, and their .npz files.

A PatchNet maps a p x p patch to a d-dimensional descriptor (d = out_dim, 128 in the paper):

    p = 17: conv 6->128, conv 5->256, conv 5->256, conv 4->d
    p = 33: conv 5->128, pool, conv 5->256, pool, conv 2->256, conv 4->d
    p = 65: conv 5->128, pool, conv 5->128, pool, conv 5->256, pool, conv 4->256, conv 1->d

Valid convolutions (no padding), 2x2 max pools with stride 2 (floor mode), leaky ReLU with
slope 5e-3 after every conv except the last (the descriptor layer). No batch norm, no dropout.
`width` scales the hidden channels (the paper: width 1); the descriptor keeps out_dim channels.

The same network runs densely over whole images in dense.py (docs/method.md §3); `net.layers` is the one
description of the architecture that both walk.

`pretrained(p)` loads the shipped teacher for p: package data under ustudents/weights/, trained
by the project's own `ustudents teacher` command; each has a manifest (.json) beside it.
"""
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .backend import asnumpy, to_device
from .files import atomic_path, read_npz
from .layers import (conv2d_backward, conv2d_forward, leaky_relu_backward, leaky_relu_forward,
                     max_pool2d_backward, max_pool2d_forward)

SLOPE = 5e-3                 # leaky ReLU slope of the paper
FORMAT_VERSION = 1           # of the .npz files written by save()

# (kind, kernel or pool size, out channels at width 1; None: the descriptor, out_dim)
ARCHITECTURES = {
    17: [("conv", 6, 128), ("conv", 5, 256), ("conv", 5, 256), ("conv", 4, None)],
    33: [("conv", 5, 128), ("pool", 2, None), ("conv", 5, 256), ("pool", 2, None),
         ("conv", 2, 256), ("conv", 4, None)],
    65: [("conv", 5, 128), ("pool", 2, None), ("conv", 5, 128), ("pool", 2, None),
         ("conv", 5, 256), ("pool", 2, None), ("conv", 4, 256), ("conv", 1, None)],
}


class Layer(NamedTuple):
    """One step of a PatchNet. kind: 'conv' | 'lrelu' | 'pool'. name: the parameter prefix of a
    conv ('conv1' -> params 'conv1.w', 'conv1.b'). k: kernel size, or pool size (= stride).
    c_in, c_out: channels of a conv."""
    kind: str
    name: str = ""
    k: int = 0
    c_in: int = 0
    c_out: int = 0


def build_layers(p, out_dim=128, width=1.0):
    """The p network as a list of Layer: convs (each hidden one followed by a leaky ReLU), pools."""
    if p not in ARCHITECTURES:
        raise ValueError(f"PatchNet: p must be one of {sorted(ARCHITECTURES)}, got {p!r}")
    if width <= 0:
        raise ValueError(f"PatchNet: width must be positive, got {width}")
    layers, c_in, n_conv = [], 3, 0
    for kind, k, f in ARCHITECTURES[p]:
        if kind == "pool":
            layers.append(Layer("pool", k=k))
            continue
        n_conv += 1
        c_out = out_dim if f is None else max(1, round(f * width))
        layers.append(Layer("conv", f"conv{n_conv}", k, c_in, c_out))
        if f is not None:                                 # no activation on the descriptor
            layers.append(Layer("lrelu"))
        c_in = c_out
    return layers


def init_params(layers, seed=0):
    """PyTorch's default Conv2d init, drawn on the host: kaiming_uniform_(a=sqrt(5)) for the
    weights, which is U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the same bound for the biases;
    fan_in = C*K*K. float32, from numpy.random.default_rng(seed), weight then bias, layer by
    layer."""
    rng = np.random.default_rng(seed)
    params = {}
    for layer in layers:
        if layer.kind == "conv":
            bound = 1.0 / np.sqrt(layer.c_in * layer.k * layer.k)
            shape = (layer.c_out, layer.c_in, layer.k, layer.k)
            params[layer.name + ".w"] = rng.uniform(-bound, bound, shape).astype(np.float32)
            params[layer.name + ".b"] = rng.uniform(-bound, bound, layer.c_out).astype(np.float32)
    return params


class PatchNet:
    """The patch network for p in {17, 33, 65} (docs/method.md §2).

    net.params: dict in layer order, 'convI.w' (F,C,K,K) and 'convI.b' (F,); float32 NumPy
    arrays after construction, initialised as PyTorch initialises Conv2d (see init_params) from
    a seeded numpy Generator on the host, so CPU and GPU runs start identical.
    net.layers: the architecture as a list of Layer; net.strides: the pool strides in order.
    """

    def __init__(self, p, out_dim=128, width=1.0, seed=0):
        self.p, self.out_dim, self.width = p, out_dim, float(width)
        self.layers = build_layers(p, out_dim, width)
        self.params = init_params(self.layers, seed)

    @property
    def strides(self):
        """Strides of the pools, first to last: [] for p = 17, [2, 2] for 33, [2, 2, 2] for 65."""
        return [layer.k for layer in self.layers if layer.kind == "pool"]

    def to(self, device=None, dtype=None):
        """Move the parameters to 'cpu' | 'cuda' | 'auto' and/or cast them (float64 for gradient
        checks); in place, returns self."""
        if device is not None:
            self.params = to_device(self.params, device)
        if dtype is not None:
            self.params = {k: v.astype(dtype) for k, v in self.params.items()}
        return self

    def forward(self, x):
        """x (N,3,p,p) -> y (N,out_dim,1,1), and the cache for backward (one entry per layer)."""
        if x.ndim != 4 or x.shape[1:] != (3, self.p, self.p):
            raise ValueError(f"PatchNet(p={self.p}).forward: expected x of shape (N, 3, {self.p}, "
                             f"{self.p}), got {tuple(x.shape)}; dense.py runs whole images")
        caches = []
        for layer in self.layers:
            x, cache = layer_forward(layer, self.params, x)
            caches.append(cache)
        return x, caches

    def backward(self, dy, cache, input_grad=True):
        """dy (N,out_dim,1,1) -> dx (N,3,p,p), grads (dict, keys and order as params).
        input_grad=False: dx is None, and the first layer skips computing it (training)."""
        grads = {}
        for i, (layer, c) in enumerate(zip(reversed(self.layers), reversed(cache))):
            dy = layer_backward(layer, dy, c, grads, input_grad or i < len(self.layers) - 1)
        return dy, {k: grads[k] for k in self.params}

    def __repr__(self):
        steps = [f"conv {layer.k}->{layer.c_out}" if layer.kind == "conv" else "pool"
                 for layer in self.layers if layer.kind != "lrelu"]
        return f"PatchNet(p={self.p}, width={self.width:g}: {', '.join(steps)})"


def layer_forward(layer, params, x):
    """One conv / leaky ReLU / 2x2 pool step: x -> (y, cache). The pool here is the plain
    stride-2 pool of a patch; dense.py swaps it for a multipool."""
    if layer.kind == "conv":
        return conv2d_forward(x, params[layer.name + ".w"], params[layer.name + ".b"])
    if layer.kind == "lrelu":
        return leaky_relu_forward(x, SLOPE)
    return max_pool2d_forward(x, layer.k, layer.k)


def layer_backward(layer, dy, cache, grads, input_grad=True):
    """The backward of layer_forward: dy -> dx; a conv writes its dw, db into grads (and
    returns None for dx without input_grad)."""
    if layer.kind == "conv":
        dx, grads[layer.name + ".w"], grads[layer.name + ".b"] = conv2d_backward(dy, cache, input_grad)
        return dx
    if layer.kind == "lrelu":
        return leaky_relu_backward(dy, cache)
    return max_pool2d_backward(dy, cache)


def save(net, path):
    """Write net to `path` as .npz: its parameters (host copies), p, width, out_dim and the
    format version. Written to a temporary file beside it, then renamed over it, so a crash
    never leaves a half-written file under the real name."""
    path = os.fspath(path)
    arrays = {"format_version": np.array(FORMAT_VERSION), "p": np.array(net.p),
              "width": np.array(net.width), "out_dim": np.array(net.out_dim)}
    for k, v in net.params.items():
        arrays["params/" + k] = asnumpy(v)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def load(path, p=None, device=None):
    """Read a network written by save(). p: the patch size you expect (an error if the file holds
    another); device: where to put the parameters (default: they stay on the host).
    Arrays only (allow_pickle=False): a file cannot run code."""
    path = os.fspath(path)
    data = read_npz(path, f"load({path!r})")
    missing = {"format_version", "p", "width", "out_dim"} - set(data)
    if missing:
        raise ValueError(f"load({path!r}): not a PatchNet file (no {', '.join(sorted(missing))})")
    version = int(data["format_version"])
    if version != FORMAT_VERSION:
        raise ValueError(f"load({path!r}): format version {version}, this code reads "
                         f"version {FORMAT_VERSION}")
    file_p, width, out_dim = int(data["p"]), float(data["width"]), int(data["out_dim"])
    if p is not None and file_p != p:
        raise ValueError(f"load({path!r}): expected a p={p} network, the file holds p={file_p}")
    stored = {k[len("params/"):]: v for k, v in data.items() if k.startswith("params/")}
    net = from_arrays(stored, file_p, width, out_dim, source=f"load({path!r})")
    return net.to(device) if device is not None else net


def from_arrays(params, p, width=1.0, out_dim=128, source="from_arrays"):
    """A PatchNet holding `params` (name -> host array), after checking the names and shapes
    against the architecture; `source` starts every error message (say which file).
    Half-precision arrays (the shipped teachers) are widened: the layers compute in float32."""
    net = PatchNet(p, out_dim=out_dim, width=width)
    if set(params) != set(net.params):
        raise ValueError(f"{source}: parameters {sorted(params)} do not match a p={p} "
                         f"network's {sorted(net.params)}")
    for k, v in net.params.items():
        if params[k].shape != v.shape:
            raise ValueError(f"{source}: {k} has shape {params[k].shape}, a p={p} width={width:g} "
                             f"out_dim={out_dim} network expects {v.shape}")
    net.params = {k: params[k].astype(np.float32) if params[k].dtype == np.float16 else params[k]
                  for k in net.params}
    return net


WEIGHTS = Path(__file__).resolve().parent / "weights"


def pretrained(p, device=None):
    """The shipped teacher for patch size p (17, 33 or 65), float32, on `device` (default: host).
    How it was trained and how good it is: ustudents/weights/teacher_p<p>.json."""
    path = WEIGHTS / f"teacher_p{p}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"no shipped teacher for p={p} ({path} is missing); train one with "
                                f"`ustudents teacher --p {p} --out teacher_p{p}.npz` and pass --teacher")
    return load(path, p=p, device=device)
