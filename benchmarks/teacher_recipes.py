"""Which pretraining recipe makes the best teacher? Trains one teacher per recipe for the same
iterations and measures each (ustudents.quality): patch retrieval on held-out natural images and
the nearest-neighbour anomaly proxy (AU-PRO) on the synthetic categories.

    python benchmarks/teacher_recipes.py [--p 17] [--width 1] [--iterations 300] [--json out.json]

Recipes: untrained; metric (triplet + compactness); distill (Lite0 + compactness);
distill+metric (all three terms).
"""
import argparse
import os
import tempfile
import time

import numpy as np

from ustudents.backend import default_device, describe
from ustudents.models import PatchNet
from ustudents.natural import PatchSampler, natural_images
from ustudents.quality import nn_proxy_per_category, retrieval_accuracy
from ustudents.synthetic import make_dataset
from ustudents.teacher import TeacherConfig, train_teacher

from timing import report

RECIPES = {
    "untrained": None,
    "metric": dict(distill="none", lambda_k=0, lambda_m=1, lambda_c=1),
    "distill": dict(distill="lite0", lambda_k=20, lambda_m=0, lambda_c=1),
    "distill+metric": dict(distill="lite0", lambda_k=20, lambda_m=1, lambda_c=1),
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
    args = ap.parse_args()
    device = default_device(args.device)
    print(f"# teacher recipes, p={args.p} width {args.width:g}, {args.iterations} iterations of "
          f"{args.batch} | {describe(device)}")
    images = natural_images(None, n=args.images, size=192, seed=0)
    held = max(2, args.images // 10)
    data = make_dataset(os.path.join(tempfile.gettempdir(), "ustudents_recipes"), n_train=10,
                        n_test=12, size=args.proxy_size, seed=1)
    rows = []
    for name in args.recipes:
        t0 = time.perf_counter()
        if RECIPES[name] is None:
            net = PatchNet(args.p, width=args.width, seed=0).to(device)
        else:
            config = TeacherConfig(p=args.p, width=args.width, iterations=args.iterations,
                                   batch=args.batch, log_every=max(1, args.iterations // 5), **RECIPES[name])
            net, _ = train_teacher(config, device=device, log=print,
                                   sampler=PatchSampler(images[:-held], args.p, seed=0))
        seconds = time.perf_counter() - t0
        retrieval = retrieval_accuracy(net, images[-held:], seed=0)
        proxy = nn_proxy_per_category(net, data, size=args.proxy_size)
        rows.append(dict(recipe=name, retrieval=retrieval, nn_au_pro=float(np.mean(list(proxy.values()))),
                         per_category=proxy, train_seconds=seconds))
        print(f"{name:>15}: retrieval {retrieval:.3f}  NN AU-PRO {rows[-1]['nn_au_pro']:.3f}  "
              + "  ".join(f"{k} {v:.3f}" for k, v in proxy.items()) + f"  ({seconds:.0f} s)", flush=True)
    report(dict(args=vars(args), rows=rows), args.json)


if __name__ == "__main__":
    main()
