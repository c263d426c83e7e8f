"""One `ustudents train` run under cProfile: where a student epoch's time goes.

    OPENBLAS_NUM_THREADS=1 python benchmarks/profile_epoch.py --data out/demo/data --category weave \\
        --scales 17 --students 3 --epochs 1 --image-size 128 --student-width 0.25 --lr 1e-3 --out DIR

Every argument goes to `ustudents train` as it is. With one BLAS thread the students train one
after another in the profiled thread; on more, they run on threads of their own, which cProfile
does not follow, and the profile shows the main thread waiting. Prints the seconds of the
functions that a step is made of (cumulative: their callees included), then own time summed
per source file of ustudents. Run it with PYTHONPATH set to another checkout to profile that
code instead.
"""
import cProfile
import os
import pstats
import sys
from collections import defaultdict

from ustudents.cli import main

CUMULATIVE = ("cmd_train", "train_students", "dense_features", "conv2d_forward", "conv2d_backward",
              "leaky_relu_forward", "leaky_relu_backward")


def summary(stats):
    """{function name: cumulative seconds} for CUMULATIVE (the package's own, the largest where
    one name is defined twice, as layers.py's wrapper and conv.py's work), and {file: own seconds}
    for the package's files."""
    cumulative, own = {}, defaultdict(float)
    for (path, _, name), (_, _, tottime, cumtime, _) in stats.stats.items():
        if f"{os.sep}ustudents{os.sep}" not in path:
            continue
        own[os.path.basename(path)] += tottime
        if name in CUMULATIVE:
            cumulative[name] = max(cumulative.get(name, 0.0), cumtime)
    return cumulative, dict(own)


def run():
    profile = cProfile.Profile()
    profile.enable()
    try:
        main(["train"] + sys.argv[1:])
    finally:
        profile.disable()
    stats = pstats.Stats(profile)
    cumulative, own = summary(stats)
    print(f"# profile of `ustudents train {' '.join(sys.argv[1:])}`: {stats.total_tt:.1f} s in all")
    print("# cumulative seconds")
    for name in CUMULATIVE:
        if name in cumulative:
            print(f"{name:<22}{cumulative[name]:8.1f}")
    print("# own seconds per file of ustudents")
    for path, seconds in sorted(own.items(), key=lambda kv: -kv[1])[:8]:
        print(f"{path:<22}{seconds:8.1f}")


if __name__ == "__main__":
    run()
