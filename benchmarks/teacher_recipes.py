"""Which pretraining recipe makes the best teacher? Trains one teacher per recipe for the same
iterations and measures each (ustudents.quality): patch retrieval on held-out natural images and
the nearest-neighbour anomaly proxy (AU-PRO) on the synthetic categories.

    python benchmarks/teacher_recipes.py [--p 17] [--width 1] [--iterations 300] [--json out.json]
        [--cpu-seconds S] [--save DIR] [--recipes NAME ...]

Recipes: untrained; metric (triplet + compactness); distill (Lite0 + compactness);
distill+metric (all three terms); dense (distill with the dense recipe: whole crops, targets
from Lite0's last feature map over each whole image); dense-early (the same from Lite0's map
after 8 blocks, whose receptive field is closer to the patch; benchmarks/dense_targets.py).
--cpu-seconds S trains each for S seconds of this process's CPU time instead of a number of
iterations (at equal time; CPU time stays fair when other jobs share the cores; run one
recipe per process to compare them side by side). --save DIR keeps each teacher as
DIR/<recipe>_p<p>.npz.
"""
import argparse
import os
import tempfile
import time

import numpy as np

from ustudents.backend import default_device, describe
from ustudents.models import PatchNet, save
from ustudents.natural import natural_images
from ustudents.patches import PatchSampler
from ustudents.quality import nn_proxy_per_category, retrieval_accuracy
from ustudents.synthetic import make_dataset
from ustudents.teacher import TeacherConfig, train_teacher

from timing import report

RECIPES = {
    "untrained": None,
    "metric": dict(distill="none", lambda_k=0, lambda_m=1, lambda_c=1),
    "distill": dict(distill="lite0", lambda_k=20, lambda_m=0, lambda_c=1),
    "distill+metric": dict(distill="lite0", lambda_k=20, lambda_m=1, lambda_c=1),
    "dense": dict(distill="lite0", lambda_k=20, lambda_m=0, lambda_c=1, recipe="dense"),
    "dense-early": dict(distill="lite0", lambda_k=20, lambda_m=0, lambda_c=1, recipe="dense",
                        distill_blocks=8),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--p", type=int, default=17)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--images", type=int, default=60)
    ap.add_argument("--proxy-size", type=int, default=128)
    ap.add_argument("--recipes", nargs="*", default=list(RECIPES))
    ap.add_argument("--device", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--cpu-seconds", type=float, default=None,
                    help="train each recipe this long (CPU time) instead of --iterations")
    ap.add_argument("--save", default=None, help="a folder to keep the teachers in")
    args = ap.parse_args()
    device = default_device(args.device)
    print(f"# teacher recipes, p={args.p} width {args.width:g}, {args.iterations} iterations of "
          f"{args.batch} | {describe(device)}")
    images = natural_images(None, n=args.images, size=192, seed=0)
    held = max(2, args.images // 10)
    data = make_dataset(os.path.join(tempfile.gettempdir(), f"ustudents_recipes_{os.getpid()}"), n_train=10,
                        n_test=12, size=args.proxy_size, seed=1)
    rows = []
    for name in args.recipes:
        t0 = time.perf_counter()
        if RECIPES[name] is None:
            net, iterations = PatchNet(args.p, width=args.width, seed=0).to(device), 0
        else:
            timed = args.cpu_seconds is not None
            config = TeacherConfig(p=args.p, width=args.width,
                                   iterations=10 ** 9 if timed else args.iterations, batch=args.batch,
                                   log_every=10 if timed else max(1, args.iterations // 5),
                                   **RECIPES[name])
            net, history = train_teacher(config, device=device, log=print,
                                         sampler=PatchSampler(images[:-held], args.p, seed=0),
                                         seconds=args.cpu_seconds, clock=time.process_time)
            iterations = history[-1]["iteration"]
        seconds = time.perf_counter() - t0
        if args.save:
            os.makedirs(args.save, exist_ok=True)
            save(net, os.path.join(args.save, f"{name}_p{args.p}.npz"))
        retrieval = retrieval_accuracy(net, images[-held:], seed=0)
        proxy = nn_proxy_per_category(net, data, size=args.proxy_size)
        rows.append(dict(recipe=name, retrieval=retrieval, nn_au_pro=float(np.mean(list(proxy.values()))),
                         per_category=proxy, train_seconds=seconds, iterations=iterations))
        print(f"{name:>15}: retrieval {retrieval:.3f}  NN AU-PRO {rows[-1]['nn_au_pro']:.3f}  "
              + "  ".join(f"{k} {v:.3f}" for k, v in proxy.items()) + f"  ({seconds:.0f} s)", flush=True)
    report(dict(args=vars(args), rows=rows), args.json)


if __name__ == "__main__":
    main()
