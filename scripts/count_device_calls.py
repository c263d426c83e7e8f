"""Device calls of one teacher step and one student step, counted by the strict CuPy stand-in.

    PYTHONPATH=tests/strict_cupy python scripts/count_device_calls.py

Each figure is the difference between two runs that differ only in their number of steps, divided
by that difference: kernels (every device operation), device-to-host copies (syncs) and
host-to-device copies per step, and the call sites of the syncs. Small networks (width 0.25), so
that it runs in seconds; the counts depend on the architecture, not on the width.
"""
import numpy as np

import cupy
from ustudents.backend import default_device
from ustudents.models import PatchNet
from ustudents.natural import dead_leaves
from ustudents.patches import PatchSampler
from ustudents.students import train_students
from ustudents.teacher import TeacherConfig, train_teacher

EVENTS = ("kernel", "d2h", "h2d")


def counted(fn):
    cupy.counts.clear()
    fn()
    return {e: cupy.total(e) for e in EVENTS}, {e: cupy.sites(e) for e in ("d2h", "h2d")}


def per_step(run, small, large):
    (a, _), (b, sites) = counted(lambda: run(small)), counted(lambda: run(large))
    return {e: (b[e] - a[e]) / (large - small) for e in EVENTS}, sites


def teacher_run(p, lambda_m, log_every=None):
    """run(n): n iterations, one log line at the end (or one every log_every iterations)."""
    images = [dead_leaves(np.random.default_rng(k), 80) for k in range(4)]

    def run(iterations):
        config = TeacherConfig(p=p, width=0.25, iterations=iterations, batch=8, distill="none",
                               lambda_k=0, lambda_m=lambda_m, lambda_c=1,
                               log_every=log_every or iterations)
        train_teacher(config, device="cuda", sampler=PatchSampler(images, p), log=lambda s: None)
    return run


def student_run(p):
    teacher = PatchNet(p, width=0.25).to("cuda")
    images = np.random.default_rng(0).random((12, 3, 32, 32), dtype=np.float32)

    def run(epochs):
        train_students(teacher, images, n_students=3, epochs=epochs, log=lambda s: None)
    return run


def main():
    default_device("cuda")                                 # the probe's own sync, before counting
    print(f"{'step':<34}{'kernels':>9}{'syncs':>7}{'h2d':>6}")
    for p in (17, 33, 65):
        for lambda_m in (0, 1):
            counts, sites = per_step(teacher_run(p, lambda_m), 4, 8)
            print(f"{f'teacher p={p} (compactness' + (', triplet)' if lambda_m else ')'):<34}"
                  f"{counts['kernel']:9.1f}{counts['d2h']:7.2f}{counts['h2d']:6.2f}")
    lines, _ = per_step(teacher_run(17, 1, log_every=1), 4, 8)
    print(f"{'teacher p=17, per log line':<34}{'':>9}{lines['d2h'] - counts['d2h']:7.2f}")
    for p in (17, 33, 65):
        counts, sites = per_step(student_run(p), 1, 2)
        n = 12                                             # steps per epoch (batch 1)
        print(f"{f'student p={p} (3 students, 1 image)':<34}{counts['kernel'] / n:9.1f}"
              f"{counts['d2h'] / n:7.2f}{counts['h2d'] / n:6.2f}")
    print("# sync sites of the last run:", sites["d2h"])


if __name__ == "__main__":
    main()
