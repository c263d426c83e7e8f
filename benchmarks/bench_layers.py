"""Conv2d forward + backward on every conv shape of the three networks, beside the machine's
GEMM rate and beside PyTorch when it is importable (it is no dependency of ustudents).

    python benchmarks/bench_layers.py [--device auto|cpu|cuda] [--repeat 5] [--quick] [--json out.json]

Shapes: every conv of the p = 17, 33, 65 patch networks (docs/method.md §2, width 1) on a batch of 64 patches, and
every conv of the dense networks on one 128x128 image (after n multipools the batch axis holds
4^n shifted copies). Times are medians over --repeat runs, ours and PyTorch's taken in turn in
one process (timing.side_by_side), same threads. GFLOP/s counts forward + dX + dW, 3 * 2*N*F*C*KH*KW*OH*OW flops, the direct convolution's
(on the Fourier route, the "route" column, it is the rate that would match our time).
"ratio" = PyTorch time / our time (> 1: we are faster). --quick: the smallest shape only.
"""
import argparse
import math
import os
import sys

import numpy as np

from ustudents import conv
from ustudents.backend import default_device, describe, to_device, xp_for
from ustudents.dense import padding
from ustudents.layers import conv2d_backward, conv2d_forward
from ustudents.models import build_layers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import Steal, report, run_times, side_by_side, torch_for  # noqa: E402


def patch_shapes(p, N=64, width=1.0):
    """(name, N, C, H, W, F, K) of every conv of the p network on N patches."""
    shapes, H, n = [], p, 0
    for layer in build_layers(p, width=width):
        if layer.kind == "conv":
            n += 1
            shapes.append((f"p{p} conv{n}", N, layer.c_in, H, H, layer.c_out, layer.k))
            H -= layer.k - 1
        elif layer.kind == "pool":
            H //= layer.k
    return shapes


def dense_shapes(p, side=128, width=1.0):
    """(name, N, C, H, W, F, K) of every conv of the dense p network on one side x side image."""
    layers = build_layers(p, width=width)
    S = math.prod(layer.k for layer in layers if layer.kind == "pool")
    (t, b), (l, r) = padding(p, S, side, side)
    shapes, N, H, W, n = [], 1, side + t + b, side + l + r, 0
    for layer in layers:
        if layer.kind == "conv":
            n += 1
            shapes.append((f"dense{p} conv{n}", N, layer.c_in, H, W, layer.c_out, layer.k))
            H, W = H - layer.k + 1, W - layer.k + 1
        elif layer.kind == "pool":
            s = layer.k
            N, H, W = N * s * s, (H - s + 1) // s, (W - s + 1) // s
    return shapes


def all_shapes(width=1.0):
    return [s for p in (17, 33, 65) for s in patch_shapes(p, width=width)] + \
           [s for p in (17, 33, 65) for s in dense_shapes(p, width=width)]


def flops(N, C, H, W, F, K):
    return 3 * 2 * N * F * C * K * K * (H - K + 1) * (W - K + 1)


def median_time(fn, repeat):
    return float(np.median(run_times(fn, repeat)))


def gemm_rate(xp, repeat, n=1024):
    """GFLOP/s of one float32 (n x n) @ (n x n) product on this device."""
    a = xp.asarray(np.random.default_rng(0).standard_normal((n, n), dtype=np.float32))
    return 2 * n ** 3 / median_time(lambda: a @ a, repeat) / 1e9


def torch_runner(x, w, b, device):
    torch = torch_for(device)
    if torch is None:
        return None
    dev = "cuda" if device == "cuda" else "cpu"
    if dev == "cuda":
        torch.backends.cudnn.allow_tf32 = False    # strict fp32, like ours
        torch.backends.cuda.matmul.allow_tf32 = False
    xt, wt, bt = (torch.tensor(a, device=dev, requires_grad=True) for a in (x, w, b))
    dy = None

    def run():
        nonlocal dy
        y = torch.nn.functional.conv2d(xt, wt, bt)
        dy = torch.ones_like(y) if dy is None else dy
        y.backward(dy)
        if dev == "cuda":
            torch.cuda.synchronize()
    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="auto | cpu | cuda (default: USTUDENTS_DEVICE or auto)")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per shape (default 5)")
    ap.add_argument("--quick", action="store_true", help="only the smallest shape")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    ap.add_argument("--only", default="", help="run only shapes whose name contains this")
    ap.add_argument("--markdown", action="store_true", help="also print the table in Markdown (benchmarks/README.md)")
    ap.add_argument("--width", type=float, default=1.0,
                    help="network width (default 1, the teachers; the demo's students: 0.25)")
    args = ap.parse_args()
    device = default_device(args.device)
    xp = xp_for(device)
    threads = os.environ.get("OMP_NUM_THREADS") or os.cpu_count()
    torch = torch_for(device)
    if torch is not None:
        torch.set_num_threads(int(threads))
    torch_note = f"torch {torch.__version__}" if torch else f"no PyTorch for {device}: ours only"
    shapes = [s for s in all_shapes(args.width) if args.only in s[0]]
    if args.quick:
        shapes = [min(shapes, key=lambda s: flops(*s[1:]))]
    gemm = gemm_rate(xp, args.repeat)
    print(f"# conv2d forward+backward, {describe(device)}, float32, {threads} threads, width {args.width:g}, {torch_note}")
    print(f"# GEMM 1024^3 float32: {gemm:.0f} GFLOP/s")
    print(f"{'shape':<15}{'N':>4}{'C':>5}{'HxW':>9}{'F':>5}{'K':>3}{'route':>10}{'ours ms':>10}{'GF/s':>6}"
          f"{'torch ms':>10}{'GF/s':>6}{'ratio':>7}")
    rng = np.random.default_rng(0)
    rows = []
    with Steal() as steal:
        for name, N, C, H, W, F, K in shapes:
            x = rng.standard_normal((N, C, H, W), dtype=np.float32)
            w = (rng.standard_normal((F, C, K, K), dtype=np.float32) / np.sqrt(C * K * K)).astype(np.float32)
            b = np.zeros(F, np.float32)
            xd, wd, bd = (to_device(a, device) for a in (x, w, b))
            dy = xp.ones_like(conv2d_forward(xd, wd, bd)[0])
            route = conv.route(x, w) if device == "cpu" else "plain"

            def ours():
                conv2d_backward(dy, conv2d_forward(xd, wd, bd)[1])
            run_torch = torch_runner(x, w, b, device)
            times = [float(np.median(t)) for t in side_by_side([ours, run_torch] if run_torch else [ours], args.repeat)]
            t_ours, t_torch = times[0], times[1] if run_torch else None
            ratio = t_torch / t_ours if t_torch else None
            gf = flops(N, C, H, W, F, K) / 1e9
            rows.append(dict(shape=name, N=N, C=C, H=H, W=W, F=F, K=K, route=route, ours_ms=t_ours * 1e3,
                             ours_gflops=gf / t_ours, torch_ms=t_torch * 1e3 if t_torch else None,
                             torch_gflops=gf / t_torch if t_torch else None, ratio=ratio))
            tt = f"{t_torch * 1e3:10.1f}{gf / t_torch:6.0f}{ratio:7.2f}" if t_torch else f"{'-':>10}{'-':>6}{'-':>7}"
            print(f"{name:<15}{N:>4}{C:>5}{f'{H}x{W}':>9}{F:>5}{K:>3}{route:>10}{t_ours * 1e3:10.1f}{gf / t_ours:6.0f}{tt}",
                  flush=True)
    ratios = [r["ratio"] for r in rows if r["ratio"]]
    summary = {"gemm_gflops": gemm, "steal": steal.share}
    if steal.share is not None:
        print(f"# CPU steal (time the hypervisor gave other guests) during the run: {100 * steal.share:.0f}%")
    if ratios:
        summary.update(geomean_ratio=float(np.exp(np.mean(np.log(ratios)))), min_ratio=min(ratios))
        print(f"# geometric mean ratio {summary['geomean_ratio']:.2f}, worst {summary['min_ratio']:.2f}")
    if args.markdown:
        print(markdown(rows, summary))
    report({"device": describe(device), "threads": threads, "rows": rows, **summary}, args.json)


def markdown(rows, summary):
    """The rows as benchmarks/README.md's layer table."""
    def ms(v):
        return "-" if v is None else f"{v:.1f}"
    lines = ["| shape | N | C | HxW | F | K | route | ours ms | GFLOP/s | PyTorch ms | ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        lines.append(f"| {r['shape']} | {r['N']} | {r['C']} | {r['H']}x{r['W']} | {r['F']} | {r['K']} | {r['route']} "
                     f"| {ms(r['ours_ms'])} | {r['ours_gflops']:.0f} | {ms(r['torch_ms'])} | {ratio} |")
    if "geomean_ratio" in summary:
        lines.append(f"| geometric mean | | | | | | | | | | **{summary['geomean_ratio']:.2f}** |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
