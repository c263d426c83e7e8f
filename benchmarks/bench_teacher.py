"""One teacher training step, ours beside PyTorch's (when PyTorch is importable; it is no
dependency): forward + backward of the patch network on a batch of patches, the compactness loss,
and an Adam step. The distillation target (the ImageNet network) is timed apart, ours only:
it is inference on a fixed network and the same work whichever framework trains the teacher.

    python benchmarks/bench_teacher.py [--p 17 33 65] [--batch 64] [--device auto|cpu|cuda]
                                       [--repeat 5] [--json out.json]

Prints patches/s per p, ours and PyTorch's, and the ratio (PyTorch's time / ours; > 1: we are
faster). PyTorch runs in strict fp32 on a GPU (no TF32), as we do.
"""
import argparse
import os

import numpy as np

from ustudents import losses
from ustudents.backend import asnumpy, default_device, describe, xp_for
from ustudents.models import PatchNet
from ustudents.optim import Adam

from timing import report, run_times, torch_for


def ours_step(net, x, opt):
    def step():
        y, cache = net.forward(x)
        _, dd = losses.compactness(y.reshape(len(x), -1))
        _, grads = net.backward(dd.reshape(y.shape), cache)
        opt.step(net.params, grads)
    return step


def torch_step(net, x, device):
    import torch
    import torch.nn.functional as F
    dev = "cuda" if device == "cuda" else "cpu"
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    params = {k: torch.tensor(asnumpy(v), device=dev, requires_grad=True) for k, v in net.params.items()}
    xt = torch.tensor(asnumpy(x), device=dev)
    opt = torch.optim.Adam(params.values(), lr=2e-4, weight_decay=1e-5)

    def step():
        h = xt
        for layer in net.layers:
            if layer.kind == "conv":
                h = F.conv2d(h, params[layer.name + ".w"], params[layer.name + ".b"])
            elif layer.kind == "lrelu":
                h = F.leaky_relu(h, 5e-3)
            else:
                h = F.max_pool2d(h, layer.k)
        d = h.reshape(len(xt), -1)
        z = (d - d.mean(0)) / torch.sqrt(d.var(0, unbiased=False) + 1e-8)
        c = z.T @ z / len(xt)
        off = c - torch.diag(torch.diag(c))
        loss = (off ** 2).sum() / (c.shape[0] * (c.shape[0] - 1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if dev == "cuda":
            torch.cuda.synchronize()
    return step


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--p", type=int, nargs="+", default=[17, 33, 65])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", default=None)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    device = default_device(args.device)
    xp = xp_for(device)
    torch = torch_for(device)
    have_torch = torch is not None
    if have_torch:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count())))
    print(f"# teacher step (forward, backward, compactness, Adam), batch {args.batch} | {describe(device)}")
    print(f"{'p':>3}{'ours ms':>10}{'ours patch/s':>14}{'torch ms':>10}{'torch patch/s':>15}{'ratio':>7}")
    rows = []
    for p in args.p:
        net = PatchNet(p, seed=0).to(device)
        x = xp.asarray(np.random.default_rng(p).random((args.batch, 3, p, p), dtype=np.float32))
        t_ours = float(np.median(run_times(ours_step(net, x, Adam(lr=2e-4, weight_decay=1e-5)), args.repeat)))
        t_torch = float(np.median(run_times(torch_step(net, x, device), args.repeat))) if have_torch else None
        rows.append(dict(p=p, batch=args.batch, ours_ms=t_ours * 1e3,
                         torch_ms=t_torch * 1e3 if t_torch else None,
                         ratio=t_torch / t_ours if t_torch else None))
        torch_cells = (f"{t_torch * 1e3:10.1f}{args.batch / t_torch:15.0f}{t_torch / t_ours:7.2f}"
                       if t_torch else f"{'-':>10}{'-':>15}{'-':>7}")
        print(f"{p:3d}{t_ours * 1e3:10.1f}{args.batch / t_ours:14.0f}{torch_cells}", flush=True)
    try:
        from ustudents.imagenet import load_efficientnet_lite0
        from ustudents.patches import resize_batch
        model = load_efficientnet_lite0(device=device)
        x = xp.asarray(np.random.default_rng(0).random((args.batch, 3, 33, 33), dtype=np.float32))
        t = float(np.median(run_times(lambda: model.features(model.preprocess(resize_batch(x, 64))),
                                      args.repeat)))
        print(f"# distillation target: EfficientNet-Lite0 features of {args.batch} patches at 64x64: {t * 1e3:.1f} ms")
        rows.append(dict(lite0_features_ms=t * 1e3))
    except ImportError as err:
        print(f"# distillation target not timed: {err}")
    result = dict(device=describe(device), rows=rows)
    report(result, args.json)


if __name__ == "__main__":
    main()
