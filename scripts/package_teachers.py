"""Store trained teachers as the package's shipped teachers, with their manifests.

    python scripts/package_teachers.py [--src out/teachers] [--dtype float16]
        [--compare metric_only=out/metric_only --compare compactness_only=out/compactness_only]
        [--carry metric_only --carry compactness_only]

For each p in 17, 33, 65: reads <src>/teacher_p<p>.npz and its training manifest (.json, as
`ustudents teacher` writes it), measures the teacher beside an untrained one of the same shape
(ustudents.quality: patch retrieval on held-out natural images, nearest-neighbour AU-PRO on the
synthetic categories at 128 px, as in the teacher issue's own measurement) and, for each
--compare NAME=DIR whose DIR holds a teacher_p<p>.npz (other recipes, made by
`RECIPE=... bash scripts/train_teachers.sh`), beside that one too, stored under NAME.
--carry NAME keeps NAME's figures from the shipped manifest being replaced, as they were
measured, for when only our teacher changed and the other one's folder is gone.
Writes ustudents/weights/teacher_p<p>.npz (weights cast to --dtype) and teacher_p<p>.json: the
training manifest plus the quality figures and the shipped file's sha256.
"""
import argparse
import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np

from ustudents.files import write_json
from ustudents.models import PatchNet, load, save
from ustudents.natural import natural_images
from ustudents.quality import nn_proxy_per_category, retrieval_accuracy
from ustudents.synthetic import make_dataset

WEIGHTS = Path(__file__).resolve().parents[1] / "ustudents" / "weights"


def quality(net, held_out, data, size):
    proxy = nn_proxy_per_category(net, data, size=size)
    return dict(retrieval_accuracy=retrieval_accuracy(net, held_out, seed=0),
                nn_au_pro_mean=float(np.mean(list(proxy.values()))), nn_au_pro=proxy)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", default="out/teachers")
    ap.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    ap.add_argument("--scales", type=int, nargs="+", default=[17, 33, 65])
    ap.add_argument("--proxy-size", type=int, default=128)
    ap.add_argument("--compare", action="append", default=[], metavar="NAME=DIR",
                    help="a folder of teachers trained another way, to measure beside ours")
    ap.add_argument("--carry", action="append", default=[], metavar="NAME",
                    help="keep NAME's figures from the shipped manifest (not re-measured)")
    args = ap.parse_args()
    if any("=" not in item for item in args.compare):
        ap.error(f"--compare wants NAME=DIR, got {args.compare}")
    compare = dict(item.split("=", 1) for item in args.compare)
    for name, folder in compare.items():
        if not Path(folder).is_dir():
            ap.error(f"--compare {name}={folder}: no such folder")
    held_out = natural_images(None, n=24, size=192, seed=12345)   # images unseen in training
    data = make_dataset(Path(tempfile.gettempdir()) / "ustudents_package", n_train=10, n_test=12,
                        size=args.proxy_size, seed=1)
    WEIGHTS.mkdir(exist_ok=True)
    for p in args.scales:
        src = Path(args.src) / f"teacher_p{p}.npz"
        manifest = json.loads(src.with_suffix(".json").read_text())
        dst = WEIGHTS / f"teacher_p{p}.npz"
        old = dst.with_suffix(".json")                  # the manifest this run replaces
        shipped = (json.loads(old.read_text()).get("quality") or {}) if old.is_file() else {}
        net = load(src, p=p)
        untrained = PatchNet(p, width=net.width, seed=0)
        manifest["quality"] = dict(
            measures="retrieval: positive (shift <= 4 px, noise 0.02) nearer than all of 255 "
                     "negatives, 256 queries on 24 held-out default natural images; nn_au_pro: "
                     f"nearest-neighbour anomaly proxy, AU-PRO(0.3), synthetic data at {args.proxy_size} px",
            trained=quality(net, held_out, data, args.proxy_size),
            untrained=quality(untrained, held_out, data, args.proxy_size))
        for name, folder in compare.items():
            other = Path(folder) / f"teacher_p{p}.npz"
            if other.is_file():
                manifest["quality"][name] = dict(
                    quality(load(other, p=p), held_out, data, args.proxy_size),
                    manifest=json.loads(other.with_suffix(".json").read_text()))
        for name in args.carry:
            if name in shipped and name not in manifest["quality"]:
                manifest["quality"][name] = dict(shipped[name], carried=(
                    "measured beside the teacher shipped before this one; not re-measured"))
        net.params = {k: v.astype(args.dtype) for k, v in net.params.items()}
        save(net, dst)
        manifest["shipped_dtype"] = args.dtype
        manifest["sha256"] = hashlib.sha256(dst.read_bytes()).hexdigest()
        write_json(dst.with_suffix(".json"), manifest)
        q = manifest["quality"]
        for name in [*compare, *args.carry]:
            if name in q:
                print(f"p={p} {name}: retrieval {q[name]['retrieval_accuracy']:.3f}, "
                      f"NN AU-PRO {q[name]['nn_au_pro_mean']:.3f}")
        print(f"p={p}: retrieval {q['untrained']['retrieval_accuracy']:.3f} -> {q['trained']['retrieval_accuracy']:.3f}, "
              f"NN AU-PRO {q['untrained']['nn_au_pro_mean']:.3f} -> {q['trained']['nn_au_pro_mean']:.3f} "
              f"(untrained -> trained) -> {dst}")


if __name__ == "__main__":
    main()
