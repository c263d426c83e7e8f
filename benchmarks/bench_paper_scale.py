"""The paper's scale on one device: the p = 65 network over a 256x256 image, dense.

    python benchmarks/bench_paper_scale.py [--device auto|cpu|cuda] [--p 65] [--size 256]
                                           [--repeat 5] [--json out.json]

Times, first call (allocations, kernel compilation on a GPU) and steady (median of --repeat):
- `dense_features`: the teacher's descriptors at every pixel (inference, no caches);
- one student step: dense forward, the regression loss, dense backward and an Adam step.
Prints the memory pool's bytes in use and held after each (CuPy; zeros on the CPU), and the
precision (fp32, or tf32 with USTUDENTS_PRECISION=tf32).
"""
import argparse
import time

import numpy as np

from ustudents.backend import default_device, describe, memory_pool_bytes, synchronize, xp_for
from ustudents.dense import dense_backward, dense_features, dense_forward
from ustudents.losses import regression
from ustudents.models import PatchNet
from ustudents.optim import Adam

from timing import report, run_times


def first_and_steady(fn, repeat):
    synchronize()
    t = time.perf_counter()
    fn()
    synchronize()
    first = time.perf_counter() - t
    return first, float(np.median(run_times(fn, repeat)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None)
    ap.add_argument("--p", type=int, default=65)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    device = default_device(args.device)
    xp = xp_for(device)
    print(f"# p = {args.p}, one {args.size}x{args.size} image | {describe(device)}")
    teacher = PatchNet(args.p, seed=0).to(device)
    student = PatchNet(args.p, seed=1).to(device)
    image = xp.asarray(np.random.default_rng(0).random((1, 3, args.size, args.size), dtype=np.float32))
    target = dense_features(teacher, image)
    opt = Adam(lr=1e-4, weight_decay=1e-5)

    def student_step():
        y, cache = dense_forward(student, image)
        _, dy = regression(y, target)
        opt.step(student.params, dense_backward(dy, cache))

    rows = []
    for name, fn in (("dense_features", lambda: dense_features(teacher, image)),
                     ("student step", student_step)):
        first, steady = first_and_steady(fn, args.repeat)
        used, held = memory_pool_bytes()
        rows.append(dict(what=name, first_ms=first * 1e3, steady_ms=steady * 1e3,
                         pool_used_mib=used / 2 ** 20, pool_held_mib=held / 2 ** 20))
        print(f"{name:<16} first {first * 1e3:9.1f} ms   steady {steady * 1e3:9.2f} ms   "
              f"pool {used / 2 ** 20:8.1f} MiB in use, {held / 2 ** 20:8.1f} MiB held", flush=True)
    report(dict(device=describe(device), p=args.p, size=args.size, rows=rows), args.json)


if __name__ == "__main__":
    main()
