"""Store trained teachers as the package's shipped teachers, with their manifests.

    python scripts/package_teachers.py [--src out/teachers] [--dtype float16] [--photos DIR]
        [--compare metric_only=out/metric_only --compare compactness_only=out/compactness_only]
        [--carry metric_only --carry compactness_only] [--texture-photos A.jpg B.jpg]
    python scripts/package_teachers.py --measure FILE.npz ... [--photos DIR]   (writes nothing)

For each p in 17, 33, 65: reads <src>/teacher_p<p>.npz and its training manifest (.json, as
`ustudents teacher` writes it), measures the teacher beside an untrained one of the same shape
(ustudents.quality: patch retrieval, also by quartile of the patches' contrast, the colour
sensitivity of flat patches and, when the EfficientNet-Lite0 weights load, the explained
variance of the distillation target, all on 24 held-out default natural images and, with
--photos DIR, also on the photos of DIR (keys ending in _photos); nearest-neighbour AU-PRO on
the synthetic categories at 128 px, as in the teacher issue's own measurement) and, for each
--compare NAME=DIR whose DIR holds a teacher_p<p>.npz (other recipes, made by
`RECIPE=... bash scripts/train_teachers.sh`), beside that one too, stored under NAME.
--carry NAME keeps NAME's figures from the shipped manifest being replaced, as they were
measured, for when only our teacher changed and the other one's folder is gone.
--texture-photos adds the real-texture check (scripts/real_texture_check.py) at each p: students
of that p alone on the teacher, on an untrained one of the same p, and the local-statistics
baseline, on those photos (one category each, photos neither reserved nor used in pretraining),
stored under "real_texture_check". It trains students, so it takes minutes per p and category.
Writes ustudents/weights/teacher_p<p>.npz (weights cast to --dtype) and teacher_p<p>.json: the
training manifest plus the quality figures and the shipped file's sha256.
"""
import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from ustudents.files import write_json
from ustudents.models import PatchNet, load, save
from ustudents.natural import natural_images
from ustudents.quality import (colour_sensitivity, explained_variance, nn_proxy_per_category,
                               retrieval_by_contrast)
from ustudents.synthetic import make_dataset

WEIGHTS = Path(__file__).resolve().parents[1] / "ustudents" / "weights"


def distillation_target():
    """EfficientNet-Lite0 on the host (where the teachers are measured), or None without its weights."""
    from ustudents.imagenet import load_efficientnet_lite0
    try:
        return load_efficientnet_lite0(device="cpu")
    except ImportError as e:
        print(f"no explained variance: {e}")
        return None


def quality(net, held_out, data, size, target=None, photos=None, n_fit=2048, n_eval=1024):
    """The figures of one teacher: retrieval, also by quartile of the anchors' contrast, the
    colour sensitivity of flat patches (and, with a target network, explained variance) on the
    held-out images and, if given, on the photos; the nearest-neighbour proxy."""
    out = {}
    for suffix, images in (("", held_out), ("_photos", photos)):
        if images is None:
            continue
        groups = retrieval_by_contrast(net, images, groups=4, seed=0)     # 256 queries, 4 x 64
        out[f"retrieval_accuracy{suffix}"] = float(np.mean([share for _, _, share in groups]))
        out[f"retrieval_by_contrast{suffix}"] = groups
        out[f"colour_sensitivity{suffix}"] = colour_sensitivity(net, images, seed=0)
        if target is not None:
            out[f"explained_variance{suffix}"] = explained_variance(net, target, images, n_fit=n_fit,
                                                                    n_eval=n_eval, seed=0)
    proxy = nn_proxy_per_category(net, data, size=size)
    return dict(out, nn_au_pro_mean=float(np.mean(list(proxy.values()))), nn_au_pro=proxy)


def texture_check(photos, teacher, p, epochs, out, seeds=(0,)):
    """The real-texture check at patch size p: AU-PRO (0.3) per photo and their mean, for the
    baseline and for students on `teacher` (a .npz) and on an untrained network; with several
    seeds, each figure is the mean over them."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import real_texture_check
    demo = real_texture_check.DEMO
    args = argparse.Namespace(photos=list(photos), out=str(out), size=demo["image_size"],
                              epochs=epochs, crop=demo["crop"], window=17, device="cpu",
                              scales=[p], seeds=list(seeds), n_test=demo["n_test"])
    real_texture_check.run(args, [("trained", str(teacher)), ("untrained", "random")])
    results = json.loads((Path(out) / "results.json").read_text())
    baseline, students = results["baseline"]["results"], results["students"]["results"]

    def au_pro(by_seed):
        """{seed: {category: metrics}} -> {category: mean AU-PRO over the seeds, 'mean': ...}"""
        categories = next(iter(by_seed.values()))
        per = {c: float(np.mean([r[c]["au_pro"] for r in by_seed.values()])) for c in categories}
        return dict(per, mean=float(np.mean(list(per.values()))))
    names = next(iter(students.values()))
    return dict(settings=dict(results["students"]["settings"], window=17, seeds=list(seeds)),
                baseline=au_pro(baseline),
                **{name: au_pro({s: r[name] for s, r in students.items()}) for name in names},
                seconds=round(results["seconds"]))


def measures(args, photos, target):
    """What the quality figures are, in words, for the manifest."""
    on = "24 held-out default natural images" + (
        f" and (keys ending in _photos) the {len(photos)} photos of {args.photos} at {args.photo_size} px"
        if photos is not None else "")
    text = ("retrieval: positive (the anchor shifted by <= 4 px, noise 0.03) nearer than all of "
            "399 negatives sharing no pixel with the anchor, 256 queries")
    if target is not None:
        text += (f"; explained_variance: share of EfficientNet-Lite0's pooled features of the "
                 f"patch (resized to 64 px) that a ridge decoder on the descriptors explains, "
                 f"fitted (ridge chosen) on {args.n_fit} patches, evaluated on {args.n_eval} others")
    return (f"{text}; measured on {on}; nn_au_pro: nearest-neighbour anomaly proxy, AU-PRO(0.3), "
            f"synthetic data at {args.proxy_size} px")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", default="out/teachers")
    ap.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    ap.add_argument("--scales", type=int, nargs="+", default=[17, 33, 65])
    ap.add_argument("--proxy-size", type=int, default=128)
    ap.add_argument("--photos", metavar="DIR",
                    help="a folder of at least 2 held-out photos: retrieval and explained variance on them too")
    ap.add_argument("--photo-size", type=int, default=256, help="photos resized and cropped to this side")
    ap.add_argument("--n-fit", type=int, default=2048, help="explained variance: patches the decoder is fitted on")
    ap.add_argument("--n-eval", type=int, default=1024, help="explained variance: patches it is evaluated on")
    ap.add_argument("--compare", action="append", default=[], metavar="NAME=DIR",
                    help="a folder of teachers trained another way, to measure beside ours")
    ap.add_argument("--carry", action="append", default=[], metavar="NAME",
                    help="keep NAME's figures from the shipped manifest (not re-measured)")
    ap.add_argument("--texture-photos", nargs="+", metavar="PHOTO",
                    help="the real-texture check at each p on these photos (trains students: long)")
    ap.add_argument("--texture-epochs", type=int, default=16, help="its students' epochs (the demo's)")
    ap.add_argument("--measure", nargs="+", metavar="NPZ",
                    help="only measure these teacher files, beside untrained networks of their p, "
                         "and print the figures; nothing is written")
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
    photos = natural_images(args.photos, n=None, size=args.photo_size) if args.photos else None
    if photos is not None and len(photos) < 2:
        ap.error(f"--photos {args.photos}: need at least 2 photos, found {len(photos)}")
    target = distillation_target()
    figures = dict(held_out=held_out, data=data, size=args.proxy_size, target=target, photos=photos,
                   n_fit=args.n_fit, n_eval=args.n_eval)
    if args.measure:
        nets = {path: load(path) for path in args.measure}
        for p in sorted({net.p for net in nets.values()}):
            print(f"p={p} untrained: {summary(quality(PatchNet(p, seed=0), **figures))}", flush=True)
        for path, net in nets.items():
            print(f"p={net.p} {path}: {summary(quality(net, **figures))}", flush=True)
            if args.texture_photos:
                with tempfile.TemporaryDirectory() as out:
                    check = texture_check(args.texture_photos, path, net.p, args.texture_epochs, out)
                print(f"p={net.p} {path}: real-texture check {texture_summary(check)}", flush=True)
        return
    WEIGHTS.mkdir(exist_ok=True)
    for p in args.scales:
        src = Path(args.src) / f"teacher_p{p}.npz"
        manifest = json.loads(src.with_suffix(".json").read_text())
        dst = WEIGHTS / f"teacher_p{p}.npz"
        old = dst.with_suffix(".json")                  # the manifest this run replaces
        shipped = (json.loads(old.read_text()).get("quality") or {}) if old.is_file() else {}
        net = load(src, p=p)
        untrained = PatchNet(p, width=net.width, seed=0)
        manifest["quality"] = dict(measures=measures(args, photos, target),
                                   trained=quality(net, **figures),
                                   untrained=quality(untrained, **figures))
        for name, folder in compare.items():
            other = Path(folder) / f"teacher_p{p}.npz"
            if other.is_file():
                manifest["quality"][name] = dict(
                    quality(load(other, p=p), **figures),
                    manifest=json.loads(other.with_suffix(".json").read_text()))
        if args.texture_photos:
            with tempfile.TemporaryDirectory() as out:
                manifest["quality"]["real_texture_check"] = texture_check(
                    args.texture_photos, src, p, args.texture_epochs, out)
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
                print(f"p={p} {name}: {summary(q[name])}")
        print(f"p={p} untrained: {summary(q['untrained'])}")
        print(f"p={p} trained: {summary(q['trained'])} -> {dst}")
        if "real_texture_check" in q:
            print(f"p={p} real-texture check: {texture_summary(q['real_texture_check'])}")


def texture_summary(check):
    """One line of the real-texture check: mean AU-PRO of the baseline and of both students."""
    return ", ".join(f"{k} {check[k]['mean']:.3f}" for k in ("baseline", "trained", "untrained"))


def summary(figures):
    """One line of a teacher's figures: every measure it has, 3 decimals."""
    names = [k for k in ("retrieval_accuracy", "retrieval_accuracy_photos", "explained_variance",
                         "explained_variance_photos", "nn_au_pro_mean", "colour_sensitivity",
                         "colour_sensitivity_photos") if k in figures]
    line = ", ".join(f"{k} {figures[k]:.3f}" for k in names)
    if "retrieval_by_contrast_photos" in figures:
        line += ", retrieval_photos by contrast quartile " + " / ".join(
            f"{share:.3f}" for _, _, share in figures["retrieval_by_contrast_photos"])
    return line


if __name__ == "__main__":
    main()
