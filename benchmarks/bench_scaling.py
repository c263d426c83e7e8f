"""Dense inference (ustudents.dense.dense_features) time and peak memory against image size.

    python benchmarks/bench_scaling.py [--device auto|cpu|cuda] [--sides 128 256 512 1024]
                                       [--ps 17 33 65] [--tile 256] [--quick] [--json out.json]
                                       [--plot docs/scaling.png]

Each shipped teacher (width 1) runs on one random side x side image. Time: the median of
--repeat runs (one run for sides above 256). Peak memory: on the CPU the largest traced NumPy
allocation total during one run (tracemalloc: NumPy reports its buffers to it), on a GPU CuPy's
memory pool high-water mark. With tiling the time should grow with the pixels and the peak stay
near one tile's activations. --quick: p = 17 at 128x128 only.
"""
import argparse
import os
import sys
import time
import tracemalloc

import numpy as np

from ustudents.backend import describe, default_device, synchronize, to_device, xp_for
from ustudents.dense import dense_features
from ustudents.models import pretrained

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import report  # noqa: E402


def peak_and_time(run, xp):
    """(seconds, peak bytes) of one call of run()."""
    if xp is np:
        tracemalloc.start()
        t = time.perf_counter()
        run()
        seconds = time.perf_counter() - t
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return seconds, peak
    pool = xp.get_default_memory_pool()
    pool.free_all_blocks()
    synchronize()
    t = time.perf_counter()
    run()
    synchronize()
    return time.perf_counter() - t, pool.total_bytes()


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    for p in sorted({r["p"] for r in rows}):
        rs = [r for r in rows if r["p"] == p]
        px = [r["side"] ** 2 / 1e6 for r in rs]
        a.loglog(px, [r["seconds"] for r in rs], "o-", label=f"p = {p}")
        b.semilogx(px, [r["peak_mib"] for r in rs], "o-", label=f"p = {p}")
    sides = sorted({r["side"] for r in rows})
    for ax in (a, b):
        ax.set_xticks([s * s / 1e6 for s in sides], [f"{s}²" for s in sides])
        ax.minorticks_off()
    a.set(xlabel="image pixels", ylabel="seconds", title="dense_features time")
    b.set(xlabel="image pixels", ylabel="peak MiB", title="dense_features peak memory")
    b.set_ylim(bottom=0)
    a.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="auto | cpu | cuda (default: USTUDENTS_DEVICE or auto)")
    ap.add_argument("--sides", type=int, nargs="+", default=[128, 256, 512, 1024], help="image sides")
    ap.add_argument("--ps", type=int, nargs="+", default=[17, 33, 65], help="patch sizes")
    ap.add_argument("--tile", type=int, default=256, help="dense_features' tile (default 256)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs for sides up to 256 (default 3)")
    ap.add_argument("--quick", action="store_true", help="p = 17 at 128x128 only")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    ap.add_argument("--plot", default=None, help="write the plot here (PNG)")
    args = ap.parse_args()
    device = default_device(args.device)
    xp = xp_for(device)
    ps, sides = ([17], [128]) if args.quick else (args.ps, args.sides)
    print(f"# dense_features, {describe(device)}, float32, tile {args.tile}")
    print(f"{'p':>3}{'side':>6}{'seconds':>10}{'us/px':>8}{'peak MiB':>10}")
    rows = []
    for p in ps:
        net = pretrained(p, device=device)
        for side in sides:
            image = to_device(np.random.default_rng(0).random((1, 3, side, side), dtype=np.float32), device)
            dense_features(net, image[:, :, :64, :64], tile=args.tile)          # warm-up
            runs = [peak_and_time(lambda: dense_features(net, image, tile=args.tile), xp)
                    for _ in range(args.repeat if side <= 256 else 1)]
            seconds, peak = float(np.median([r[0] for r in runs])), max(r[1] for r in runs)
            rows.append(dict(p=p, side=side, seconds=seconds, us_per_px=seconds / side ** 2 * 1e6,
                             peak_mib=peak / 2 ** 20))
            print(f"{p:>3}{side:>6}{seconds:10.2f}{seconds / side ** 2 * 1e6:8.1f}{peak / 2 ** 20:10.0f}",
                  flush=True)
    if args.plot:
        plot(rows, args.plot)
    report({"device": describe(device), "tile": args.tile, "rows": rows}, args.json)


if __name__ == "__main__":
    main()
