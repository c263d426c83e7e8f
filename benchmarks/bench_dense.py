"""Dense feature extraction (docs/method.md §3) against the patch-by-patch definition and PyTorch.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_dense.py \
        [--p 17 33 65] [--sizes 128 256] [--modes dense patch torch train] [--tile N]
        [--device auto|cpu|cuda] [--repeat 3] [--patches 256] [--threads N] [--json out.json]

For each patch size p and image side, one fresh subprocess per measurement (so each peak is its
own), on one random float32 image, width-1 networks:
  dense  dense_features(net, image, tile): our inference path, no caches
  patch  net.forward on --patches random pixels' patches (batches of 64), extrapolated to H*W
  torch  PyTorch, the equivalent dilated-convolution route: pools with stride 1, every later
         kernel (and pool) dilated by the product of the earlier strides; strict fp32
  train  dense_forward + dense_backward (what a student step costs, optimiser aside)
Times: the best of --repeat runs after one warm-up. Peak memory: the process's ru_maxrss
(includes the interpreter and libraries; "base" is the same after imports and set-up) on the
CPU; on a GPU the CuPy / PyTorch allocator's pool size at the end (its high-water mark).
On this project's CPU machines OpenBLAS is pinned to Haswell kernels by OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE; PyTorch ignores them. Unset both for a like-for-like run, as above.
While other jobs share the cores, multi-threaded OpenBLAS stalls (up to seconds per matrix
product) far more than PyTorch does: the two-thread comparison is then meaningless; compare with
--threads 1, and check the load (uptime) before trusting a run.
"""
import argparse
import json
import os
import resource
import subprocess
import sys

import numpy as np

from ustudents.backend import default_device, describe, to_device
from ustudents.dense import dense_backward, dense_features, dense_forward, padding
from ustudents.models import PatchNet

from timing import report, run_times

PATCH_BATCH = 64


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024     # Linux: KiB


def best_time(fn, repeat):
    return min(run_times(fn, repeat))


def patch_runner(net, image, n_pixels, xp):
    """net.forward on the patches centred at n_pixels random pixels: returns (run, scale)."""
    _, _, H, W = image.shape
    p = net.p
    padded = np.pad(image, ((0, 0), (0, 0), (p // 2, (p - 1) // 2), (p // 2, (p - 1) // 2)))
    pixels = np.random.default_rng(0).choice(H * W, size=min(n_pixels, H * W), replace=False)

    def run():
        for k in range(0, len(pixels), PATCH_BATCH):
            rows, cols = np.divmod(pixels[k:k + PATCH_BATCH], W)
            batch = np.stack([padded[0, :, r:r + p, c:c + p] for r, c in zip(rows, cols)])
            net.forward(xp.asarray(batch))
    return run, H * W / len(pixels)


def torch_dense(net, image, device):
    """The same network by dilated convolutions in PyTorch: image (1,3,H,W) -> (1,d,H,W)."""
    import torch
    import torch.nn.functional as F
    dev = "cuda" if device == "cuda" else "cpu"
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count())))
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    params = {k: torch.tensor(v, device=dev) for k, v in net.params.items()}
    (t, b), (l, r) = padding(net.p, 1, *image.shape[2:])
    x = torch.tensor(np.pad(image, ((0, 0), (0, 0), (t, b), (l, r))), device=dev)

    def run():
        with torch.no_grad():
            h, dilation = x, 1
            for layer in net.layers:
                if layer.kind == "conv":
                    h = F.conv2d(h, params[layer.name + ".w"], params[layer.name + ".b"],
                                 dilation=dilation)
                elif layer.kind == "lrelu":
                    h = F.leaky_relu(h, 5e-3)
                else:
                    h = F.max_pool2d(h, layer.k, stride=1, dilation=dilation)
                    dilation *= layer.k
            if dev == "cuda":
                torch.cuda.synchronize()
            return h[:, :, :image.shape[2], :image.shape[3]].cpu().numpy()

    def peak():
        if dev == "cuda":
            return torch.cuda.memory_stats()["reserved_bytes.all.peak"] / 2 ** 20
    return run, peak


def worker(mode, p, size, args):
    """One measurement in this process; prints one JSON line."""
    device = default_device(args.device)
    xp = np if device == "cpu" else __import__("cupy")
    net = PatchNet(p)
    image = np.random.default_rng(1).standard_normal((1, 3, size, size)).astype(np.float32)
    result = dict(mode=mode, p=p, size=size)
    if mode == "torch":
        try:
            run, peak = torch_dense(net, image, device)
        except ImportError:
            print(json.dumps(dict(result, skipped="torch not importable")))
            return
    else:
        net.to(device)
        ximg = xp.asarray(image)
        if mode == "dense":
            run = lambda: dense_features(net, ximg, tile=args.tile)       # noqa: E731
        elif mode == "train":
            def run():
                y, cache = dense_forward(net, ximg)
                dense_backward(xp.ones_like(y), cache)
        else:
            run, result["extrapolated_by"] = patch_runner(net, image, args.patches, xp)
    result["base_mb"] = rss_mb()
    seconds = best_time(run, args.repeat if mode != "patch" else 1)
    result["seconds"] = seconds * result.get("extrapolated_by", 1)
    result["peak_mb"] = rss_mb()
    if device == "cuda":
        result["gpu_peak_mb"] = (peak() if mode == "torch"
                                 else xp.get_default_memory_pool().total_bytes() / 2 ** 20)
    if mode == "torch":                                   # a witness: the same numbers as ours
        small = image[:, :, :40, :40]
        ours = to_device(dense_features(net.to(device), xp.asarray(small)), "cpu")
        theirs = torch_dense(net, small, device)[0]()
        result["max_abs_diff_vs_ours"] = float(np.abs(theirs - ours).max())
    print(json.dumps(result))


def peak_mb(result):
    """The GPU allocator's peak where there is one, else the process's peak RSS."""
    return result.get("gpu_peak_mb", result.get("peak_mb"))


def cell(value, spec, width):
    return (format(value, spec) if value is not None else "-").rjust(width)


def measure(mode, p, size, args):
    cmd = [sys.executable, __file__, "--worker", mode, str(p), str(size), "--device", args.device,
           "--repeat", str(args.repeat), "--patches", str(args.patches)]
    if args.tile:
        cmd += ["--tile", str(args.tile)]
    env = dict(os.environ)
    if args.threads:                     # read by OpenBLAS and OpenMP when the worker starts
        env.update(OPENBLAS_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        return dict(mode=mode, p=p, size=size, error=done.stderr.strip().splitlines()[-1:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--p", type=int, nargs="+", default=[17, 33, 65])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--modes", nargs="+", default=["dense", "patch", "torch"],
                    choices=["dense", "patch", "torch", "train"])
    ap.add_argument("--tile", type=int, default=None, help="dense_features tile (default: untiled)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--patches", type=int, default=256, help="pixels the patch-wise run evaluates")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for OpenBLAS and PyTorch (default: all cores)")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        mode, p, size = args.worker
        return worker(mode, int(p), int(size), args)

    env = {k: os.environ.get(k)
           for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS")}
    print(f"# {describe(args.device)}; env {env}; threads {args.threads or os.cpu_count()}; "
          f"tile {args.tile}")
    rows = []
    head = (f"{'p':>3} {'size':>5} {'dense s':>8} {'patch s':>9} {'speedup':>8} {'torch s':>8} "
            f"{'ours/torch':>10} {'train s':>8} {'dense MB':>9} {'torch MB':>9} {'train MB':>9}")
    print(head)
    for p in args.p:
        for size in args.sizes:
            r = {mode: measure(mode, p, size, args) for mode in args.modes}
            rows.append(r)
            for bad in (m for m in r.values() if "error" in m):
                print(f"# {bad['mode']} p={p} size={size} failed: {bad['error']}", file=sys.stderr)
            d, pt, t, tr = (r.get(m, {}).get("seconds")
                            for m in ("dense", "patch", "torch", "train"))
            print(f"{p:>3} {size:>5} " + " ".join([
                cell(d, ".3f", 8), cell(pt, ".1f", 9), cell(pt / d if d and pt else None, ".0f", 8),
                cell(t, ".3f", 8), cell(d / t if d and t else None, ".2f", 10), cell(tr, ".3f", 8),
                *(cell(peak_mb(r.get(m, {})), ".0f", 9) for m in ("dense", "torch", "train"))]),
                  flush=True)
    summary = dict(device=describe(args.device), env=env, threads=args.threads or os.cpu_count(),
                  tile=args.tile, results=rows)
    report(summary, args.json)


if __name__ == "__main__":
    main()
