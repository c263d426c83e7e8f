"""Conv2d forward + backward on the paper's layer shapes, on the current device, beside PyTorch
when it is importable (it is no dependency of ustudents).

    python benchmarks/bench_layers.py [--device auto|cpu|cuda] [--repeat 5] [--json out.json]

Shapes: every conv of the p = 17, 33, 65 patch networks (docs/method.md §2) on a batch of 64 patches,
and the convs of the dense p = 65 network on one 128x128 image (after multipools the batch axis
holds 4, 16, 64 shifted copies). Times are medians over --repeat runs, ours and PyTorch's
interleaved in one process, same threads. "ratio" = PyTorch time / our time (> 1: we are faster).

On this project's CPU machines OpenBLAS is pinned to Haswell kernels by OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE (a safety setting for old OpenBLAS builds); PyTorch ignores them and uses
AVX-512. For a like-for-like run unset both for this command alone:
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_layers.py
"""
import argparse
import os

import numpy as np

from ustudents.backend import default_device, describe, to_device
from ustudents.layers import conv2d_backward, conv2d_forward

from timing import report, run_times

# (name, N, C, H, W, F, K): layer inputs of the patch networks at width 1
SHAPES = [
    ("p17 conv1", 64, 3, 17, 17, 128, 6),
    ("p17 conv2", 64, 128, 12, 12, 256, 5),
    ("p17 conv3", 64, 256, 8, 8, 256, 5),
    ("p17 conv4", 64, 256, 4, 4, 128, 4),
    ("p33 conv1", 64, 3, 33, 33, 128, 5),
    ("p33 conv2", 64, 128, 14, 14, 256, 5),
    ("p33 conv3", 64, 256, 5, 5, 256, 2),
    ("p33 conv4", 64, 256, 4, 4, 128, 4),
    ("p65 conv1", 64, 3, 65, 65, 128, 5),
    ("p65 conv2", 64, 128, 30, 30, 128, 5),
    ("p65 conv3", 64, 128, 13, 13, 256, 5),
    ("p65 conv4", 64, 256, 4, 4, 256, 4),
    ("p65 conv5", 64, 256, 1, 1, 128, 1),
    # dense p = 65 on a 128x128 image: 64 px of padding, then 4, 16, 64 pool phases
    ("dense65 conv1", 1, 3, 192, 192, 128, 5),
    ("dense65 conv2", 4, 128, 94, 94, 128, 5),
    ("dense65 conv3", 16, 128, 45, 45, 256, 5),
    ("dense65 conv4", 64, 256, 20, 20, 256, 4),
    ("dense65 conv5", 64, 256, 17, 17, 128, 1),
]


def median_time(fn, repeat):
    return float(np.median(run_times(fn, repeat)))


def torch_runner(x, w, b, device):
    try:
        import torch
    except ImportError:
        return None
    dev = "cuda" if device == "cuda" else "cpu"
    if dev == "cuda":
        torch.backends.cudnn.allow_tf32 = False    # strict fp32, like ours
        torch.backends.cuda.matmul.allow_tf32 = False
    xt, wt, bt = (torch.tensor(a, device=dev, requires_grad=True) for a in (x, w, b))

    def run():
        y = torch.nn.functional.conv2d(xt, wt, bt)
        y.backward(torch.ones_like(y))
        if dev == "cuda":
            torch.cuda.synchronize()
    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", default=None, help="also write the results to this file")
    ap.add_argument("--only", default="", help="run only shapes whose name contains this")
    args = ap.parse_args()
    device = default_device(args.device)
    threads = os.environ.get("OMP_NUM_THREADS") or os.cpu_count()
    try:
        import torch
        torch.set_num_threads(int(threads))
        torch_note = f"torch {torch.__version__}"
    except ImportError:
        torch_note = "torch not installed: ours only"
    print(f"# conv2d forward+backward, {describe(device)}, float32, {threads} threads, {torch_note}")
    print(f"# OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    print(f"{'shape':<15}{'N':>4}{'C':>5}{'HxW':>9}{'F':>5}{'K':>3}{'ours ms':>10}{'torch ms':>10}{'ratio':>7}")
    rng = np.random.default_rng(0)
    rows = []
    for name, N, C, H, W, F, K in SHAPES:
        if args.only not in name:
            continue
        x = rng.standard_normal((N, C, H, W), dtype=np.float32)
        w = (rng.standard_normal((F, C, K, K), dtype=np.float32) / np.sqrt(C * K * K)).astype(np.float32)
        b = np.zeros(F, np.float32)
        xd, wd, bd = (to_device(a, device) for a in (x, w, b))

        def ours():
            y, cache = conv2d_forward(xd, wd, bd)
            conv2d_backward(y * 0 + 1, cache)
        t_ours = median_time(ours, args.repeat)
        run_torch = torch_runner(x, w, b, device)
        t_torch = median_time(run_torch, args.repeat) if run_torch else None
        ratio = t_torch / t_ours if t_torch else None
        rows.append(dict(shape=name, N=N, C=C, H=H, W=W, F=F, K=K, ours_ms=t_ours * 1e3,
                         torch_ms=t_torch * 1e3 if t_torch else None, ratio=ratio))
        tt = f"{t_torch * 1e3:10.1f}{ratio:7.2f}" if t_torch else f"{'-':>10}{'-':>7}"
        print(f"{name:<15}{N:>4}{C:>5}{f'{H}x{W}':>9}{F:>5}{K:>3}{t_ours * 1e3:10.1f}{tt}", flush=True)
    ratios = [r["ratio"] for r in rows if r["ratio"]]
    summary = {}
    if ratios:
        summary = {"geomean_ratio": float(np.exp(np.mean(np.log(ratios)))), "min_ratio": min(ratios)}
        print(f"# geometric mean ratio {summary['geomean_ratio']:.2f}, worst {summary['min_ratio']:.2f}")
    result = {"device": describe(device), "threads": threads, "rows": rows, **summary}
    report(result, args.json)


if __name__ == "__main__":
    main()
