"""Teacher training's own rate: patches per second as `ustudents teacher` logs it, at each p,
over a short run of the real loop (sampler, distillation target, forward, backward, Adam; a
target pool's filling included, the images' making and the loading of Lite0 not).

    python benchmarks/teacher_rate.py [--p 17 33 65] [--iterations 64] [--target-reuse 4]
                                      [--target-pool 512] [--n-images 20] [--json out.json]

With reused targets, make the run a whole number of pools (iterations a multiple of
target-pool * target-reuse / 64), so that every pool filled is used up: that is the rate of a
long run. The default: two pools of 512 anchors at 4 uses each.

To compare two versions of the code side by side, run it twice in one sitting, once with
PYTHONPATH pointing at the other checkout (a version without --target-reuse ignores it).
"""
import argparse
import dataclasses
import json
import time

import ustudents
from ustudents.teacher import TeacherConfig, train_teacher


def rate(p, iterations, reuse, pool, n_images):
    settings = dict(p=p, iterations=iterations, log_every=iterations, n_images=n_images)
    if "target_reuse" in {f.name for f in dataclasses.fields(TeacherConfig)}:
        settings.update(target_reuse=reuse, target_pool=pool)
    start = time.perf_counter()
    _, history = train_teacher(TeacherConfig(**settings), log=lambda line: None)
    return history[-1]["patches_per_s"], time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--p", type=int, nargs="+", default=[17, 33, 65])
    ap.add_argument("--iterations", type=int, default=64)
    ap.add_argument("--target-reuse", type=int, default=4)
    ap.add_argument("--target-pool", type=int, default=512)
    ap.add_argument("--n-images", type=int, default=20)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    print(f"# {ustudents.__file__} | {args.iterations} iterations | target_reuse {args.target_reuse}, "
          f"pools of {args.target_pool}")
    rows = []
    for p in args.p:
        patches_per_s, wall = rate(p, args.iterations, args.target_reuse, args.target_pool, args.n_images)
        rows.append(dict(p=p, patches_per_s=patches_per_s, wall_s=wall))
        print(f"p {p:3d}  {patches_per_s:8.1f} patches/s  ({wall:.0f} s in all)", flush=True)
    result = dict(code=ustudents.__file__, target_reuse=args.target_reuse,
                  target_pool=args.target_pool, rows=rows)
    print(json.dumps(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    main()
