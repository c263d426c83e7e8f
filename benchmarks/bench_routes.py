"""The Fourier route against the direct route, forward + backward, where the rule has to choose.

    python benchmarks/bench_routes.py [--repeat 5] [--low 0.8] [--high 1.7] [--json out.json]
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_routes.py      # the same on one thread

conv.py takes the Fourier route where the direct convolution needs `MIN_GAIN` times its count of
multiply-adds (`fourier.Tiling.worth_it`), and a lower gain on one thread. This times both
routes on every conv shape whose count ratio (direct / Fourier) lies between --low and --high:
the shapes of bench_layers.py at width 1 and at the demo students' width 0.25, and the layers of
a p = 17 student on the demo's 64 x 64 training crop (its 80 x 80 window, one image). Medians
of --repeat runs, on the threads this process has (holding, as training does).
"""
import argparse
import os
import sys

import numpy as np

from ustudents import blas, conv, fourier

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_layers import all_shapes, median_time  # noqa: E402
from timing import Steal, report  # noqa: E402

CROP_SHAPES = [("crop conv2", 1, 32, 75, 75, 64, 5), ("crop conv3", 1, 64, 71, 71, 64, 5),
               ("crop conv4", 1, 64, 67, 67, 128, 4)]               # width 0.25


def forced(route_gain, fn):
    """fn() with the Fourier rule's gains set to route_gain (0: always Fourier; inf: never)."""
    saved = fourier.MIN_GAIN, fourier.MIN_GAIN_ONE_THREAD
    fourier.MIN_GAIN = fourier.MIN_GAIN_ONE_THREAD = route_gain
    try:
        return fn()
    finally:
        fourier.MIN_GAIN, fourier.MIN_GAIN_ONE_THREAD = saved


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--low", type=float, default=0.8)
    ap.add_argument("--high", type=float, default=1.7)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    shapes = [(width, s) for width in (1.0, 0.25) for s in all_shapes(width)] + \
             [(0.25, s) for s in CROP_SHAPES]
    threads = blas.threads()
    print(f"| shape | N | C | HxW | F | K | count ratio | direct ms | Fourier ms | direct / Fourier | "
          f"the rule on {threads} thread(s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    with Steal() as steal:
        for width, (name, N, C, H, W, F, K) in shapes:
            g = fourier.Tiling(N, C, H, W, F, K)
            ratio = g.direct_count() / g.count()
            if K < 2 or not args.low <= ratio <= args.high:
                continue
            x = rng.standard_normal((N, C, H, W)).astype(np.float32)
            w = (rng.standard_normal((F, C, K, K)) * 0.1).astype(np.float32)
            b = np.zeros(F, np.float32)

            @blas.holding
            def step():
                y, cache = conv.conv2d_forward(x, w, b)
                conv.conv2d_backward(y, cache)
            direct = forced(float("inf"), lambda: median_time(step, args.repeat)) * 1e3
            ours = forced(0.0, lambda: median_time(step, args.repeat)) * 1e3
            chosen = conv.route(x, w)
            rows.append(dict(shape=name, width=width, N=N, C=C, H=H, W=W, F=F, K=K, count_ratio=ratio,
                             direct_ms=direct, fourier_ms=ours, route=chosen))
            print(f"| {name}, width {width:g} "
                  f"| {N} | {C} | {H}x{W} | {F} | {K} | {ratio:.2f} | {direct:.1f} | {ours:.1f} | "
                  f"{direct / ours:.2f} | {chosen} |", flush=True)
    report(dict(threads=threads, steal=steal.share, rows=rows), args.json)


if __name__ == "__main__":
    main()
