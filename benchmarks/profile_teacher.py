"""Where one teacher iteration's time goes, at each p: the patch sampler, the distillation target
(resize + EfficientNet-Lite0), the forward pass, the losses with the backward pass, Adam.

    python benchmarks/profile_teacher.py [--p 17 33 65] [--batch 64] [--repeat 5]
                                         [--lambda-m 0] [--device auto|cpu|cuda] [--json out.json]

Medians of --repeat iterations after one warm-up, in ms, with the shipped recipe's loss terms
(distillation and compactness; --lambda-m 1 adds the triplet and its patches). The iterations
run as `ustudents teacher` runs them, inside blas.holding (BLAS on one thread, our pieces on the
cores).
"""
import argparse
import time

import numpy as np

from ustudents import losses
from ustudents.backend import default_device, describe, synchronize, xp_for
from ustudents.blas import holding
from ustudents.layers import linear_backward, linear_forward
from ustudents.models import PatchNet
from ustudents.natural import natural_images
from ustudents.patches import PatchSampler
from ustudents.optim import Adam
from ustudents.targets import PatchTargets, load_distillation_target
from ustudents.teacher import TeacherConfig

from timing import report

PARTS = ("sampler", "target", "forward", "losses+backward", "adam")


@holding
def profile(p, batch, lambda_m, repeat, device, images):
    xp = xp_for(device)
    sampler = PatchSampler(images, p, seed=0)
    net = PatchNet(p, seed=0).to(device)
    model = load_distillation_target(TeacherConfig(p=p), device, log=lambda s: None)
    targets = PatchTargets(model, sampler, 64, xp) if model is not None else None
    rng = np.random.default_rng(0)
    dec_w = xp.asarray(rng.uniform(-0.09, 0.09, (targets.dim if targets else 8, 128)), dtype=xp.float32)
    dec_b = xp.zeros(dec_w.shape[0], dtype=xp.float32)
    params = dict(net.params, **{"decoder.w": dec_w, "decoder.b": dec_b})
    opt = Adam(lr=2e-4, weight_decay=1e-5)
    times = {k: [] for k in PARTS}

    def clock(name, fn):
        synchronize()
        t = time.perf_counter()
        out = fn()
        synchronize()
        times[name].append(time.perf_counter() - t)
        return out

    for _ in range(repeat + 1):
        if lambda_m:
            x = clock("sampler", lambda: xp.asarray(np.concatenate(sampler.triplet(batch))))
        else:
            x = clock("sampler", lambda: xp.asarray(sampler.patches(batch)))
        t = clock("target", lambda: targets(x[:batch])) if targets else None
        y, cache = clock("forward", lambda: net.forward(x))

        def backward():
            d = y.reshape(len(x), -1)
            dd = xp.zeros_like(d)
            grads = {}
            if t is not None:
                z, lc = linear_forward(d[:batch], dec_w, dec_b)
                _, dz = losses.distillation(z, t)
                dd_k, grads["decoder.w"], grads["decoder.b"] = linear_backward(dz, lc)
                dd[:batch] += dd_k
            else:
                grads["decoder.w"], grads["decoder.b"] = xp.zeros_like(dec_w), xp.zeros_like(dec_b)
            if lambda_m:
                _, (da, dp, dn) = losses.triplet(d[:batch], d[batch:2 * batch], d[2 * batch:])
                dd[:batch] += da
                dd[batch:2 * batch] += dp
                dd[2 * batch:] += dn
            _, dc = losses.compactness(d[:batch])
            dd[:batch] += dc
            grads.update(net.backward(dd.reshape(y.shape), cache)[1])
            return grads
        grads = clock("losses+backward", backward)
        clock("adam", lambda: opt.step(params, grads))
    return {k: float(np.median(v[1:])) * 1e3 for k, v in times.items() if v}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--p", type=int, nargs="+", default=[17, 33, 65])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--lambda-m", type=float, default=0.0)
    ap.add_argument("--device", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    device = default_device(args.device)
    images = natural_images(None, n=8, size=256, seed=0)
    print(f"# one teacher iteration, batch {args.batch}, lambda_m {args.lambda_m:g} | {describe(device)}")
    print(f"{'p':>3}" + "".join(f"{k:>17}" for k in PARTS) + f"{'total ms':>10}{'patch/s':>9}")
    rows = []
    for p in args.p:
        ms = profile(p, args.batch, args.lambda_m, args.repeat, device, images)
        total = sum(ms.values())
        rows.append(dict(p=p, **ms, total_ms=total, patches_per_s=args.batch / total * 1e3))
        print(f"{p:3d}" + "".join(f"{ms[k]:17.1f}" for k in PARTS) + f"{total:10.1f}"
              f"{args.batch / total * 1e3:9.1f}", flush=True)
    report(dict(device=describe(device), batch=args.batch, lambda_m=args.lambda_m, rows=rows), args.json)


if __name__ == "__main__":
    main()
