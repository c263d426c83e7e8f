"""The whole method on one category: train (students per scale), then evaluate (maps, metrics,
TIFFs, figures). The `ustudents` command is a thin layer over these two functions.

    train_category(data, category, out, scales=(17, 33, 65), ...)   -> out/scale_<p>.npz, model.json
    evaluate_category(data, category, model, out)   -> out/<category>/metrics.json, TIFF maps, figures

Both are transactions: everything they need is checked before the work starts, and the output
folder (`out` for train, `out/<category>` for evaluate) is written beside its place under a
hidden name and swapped in whole at the end (files.staged_folder). A failed, diverged or
interrupted run leaves the old output exactly as it was.

Image handling: images are resized to image_size x image_size for the networks; anomaly maps
are resized back to each test image's original size (bilinear) before the metrics and the TIFF
files, so the metrics are those of the official evaluation on the original masks.
"""
import json
import math
import os
import re
import time
from pathlib import Path

import numpy as np

from . import metrics, scoring
from .backend import asnumpy, default_device, describe
from .files import clean_leftovers, staged_folder, write_json
from .data import load_category, load_images, load_test, train_val_split
from .models import ARCHITECTURES, PatchNet, build_layers, load
from .students import load_scale, save_scale, scale_path, train_students, weights_sha256

SCALES = tuple(sorted(ARCHITECTURES))
MODEL_FORMAT = "ustudents.model"


def resolve_teacher(teacher, p, device, seed=0):
    """The teacher for patch size p: 'pretrained' (shipped), 'random' (untrained, to show why
    pretraining matters), a .npz file, or a folder holding teacher_p<p>.npz. A missing file or
    weights that are not finite raise an error naming --teacher and the file."""
    if teacher in (None, "pretrained"):
        from .models import pretrained
        net, source = pretrained(p), f"the shipped teacher for p={p}"
    elif teacher == "random":
        return PatchNet(p, seed=seed).to(device)
    else:
        path = Path(teacher)
        if path.is_dir():
            path = path / f"teacher_p{p}.npz"
        if not path.is_file():
            raise FileNotFoundError(f"--teacher {teacher}: no teacher for p={p} ({path} is missing)")
        net, source = load(path, p=p), f"--teacher {path}"
    if not all(np.isfinite(v).all() for v in net.params.values()):
        raise ValueError(f"{source}: its weights hold NaN or inf")
    return net.to(device)


def _memory_bytes():
    """This machine's physical memory in bytes (None where the system does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def train_bytes(p, image_size, n_images, students, width, batch, out_dim=128, cache_bytes=2 ** 30):
    """A lower estimate of the memory train_category needs at one scale, from the shapes alone:
    the images (float32), the cached targets, every student's parameters with Adam's two moments
    and its gradient, and one dense forward/backward of `batch` images (each conv's im2col
    columns and output at about (S + p)² pixels)."""
    S = image_size
    layers = [l for l in build_layers(p, out_dim, width) if l.kind == "conv"]
    n_params = sum(l.c_out * (l.c_in * l.k * l.k + 1) for l in layers)
    pixels = batch * (S + p) ** 2
    activations = sum((l.c_in * l.k * l.k + l.c_out) * pixels for l in layers)
    images = n_images * 3 * S * S
    targets = min(n_images * out_dim * S * S * 4, cache_bytes)
    return 4 * (images + 4 * n_params * students + activations) + targets


def check_train_settings(scales, students, epochs, image_size, student_width, lr, seed, batch,
                         n_images=1, crop=None):
    """Refuse, before any work, settings that cannot train: each error names the option."""
    def whole(name, value, least):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise ValueError(f"--{name} {value}: must be a whole number of at least {least}")
    for p in scales:
        if p not in SCALES:
            raise ValueError(f"--scales: {p} is no patch size of the paper; choose from {SCALES}")
    if not scales:
        raise ValueError("--scales: give at least one patch size")
    whole("students", students, 1)
    whole("epochs", epochs, 1)
    whole("batch", batch, 1)
    whole("seed", seed, 0)
    whole("image-size", image_size, 1)
    if image_size < max(scales):
        raise ValueError(f"--image-size {image_size} is smaller than the patch of --scales "
                         f"{max(scales)}; the images must be at least {max(scales)} px")
    if crop is not None:
        whole("crop", crop, 1)
        if crop > image_size:
            raise ValueError(f"--crop {crop} is larger than --image-size {image_size}")
        for p in scales:
            S = math.prod(k for kind, k, _ in ARCHITECTURES[p] if kind == "pool")
            if crop % S:
                raise ValueError(f"--crop {crop}: must be a multiple of {S} for p={p} (its pools' "
                                 f"strides), e.g. {crop // S * S or S}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"--lr {lr}: must be a positive finite number")
    if student_width is not None and not (math.isfinite(student_width) and student_width > 0):
        raise ValueError(f"--student-width {student_width}: must be a positive finite number")
    memory = _memory_bytes()
    for p in scales:
        need = train_bytes(p, image_size, n_images, students, student_width or 1.0, batch)
        if memory is not None and need > memory:
            raise ValueError(f"--image-size {image_size}, --student-width {student_width or 1:g}, "
                             f"--batch {batch}, --students {students}: training p={p} needs about "
                             f"{need / 2 ** 30:.0f} GiB, more than this machine's "
                             f"{memory / 2 ** 30:.0f} GiB; lower them")


def _model_file(name):
    return name == "model.json" or re.fullmatch(r"scale_\d+\.npz", name) is not None


def train_category(data, category, out, scales=(17, 33, 65), students=3, epochs=10,
                   image_size=256, teacher=None, device=None, seed=0, batch=1,
                   student_width=None, lr=1e-4, crop=None, log=print):
    """Train M students per scale on <data>/<category>/train/good (90%; 10% validation).
    Writes out/scale_<p>.npz per scale and out/model.json, all or nothing: the settings, every
    scale's teacher and the data are checked first; the model is trained into a hidden folder
    beside `out` and replaces it whole at the end. crop: train on crops of that side
    (students.train_students; None: whole images, as the paper). Returns the model.json dict."""
    scales = list(scales)
    clean_leftovers(out)                        # a killed run's swap first, so nothing is lost
    device = default_device(device)
    cat = load_category(data, category)
    check_train_settings(scales, students, epochs, image_size, student_width, lr, seed, batch,
                         n_images=len(cat.train), crop=crop)
    teachers = {p: resolve_teacher(teacher, p, device, seed) for p in scales}
    train_paths, val_paths = train_val_split(cat.train, val_fraction=0.1, seed=seed)
    with staged_folder(out, _model_file, f"--out {out}") as staging:
        train_images, val_images = load_images(train_paths, image_size), load_images(val_paths, image_size)
        log(f"# train {category}: {len(train_paths)} train / {len(val_paths)} validation images at "
            f"{image_size}x{image_size} | scales {scales} | {describe(device)} | seed {seed}")
        timings, shas = {}, {}
        for p in scales:
            start = time.perf_counter()
            model = train_students(teachers[p], train_images, n_students=students, epochs=epochs,
                                   batch=batch, lr=lr, seed=seed + p, width=student_width,
                                   crop=crop, log=log)
            model.set_val_stats(scoring.validation_stats(model, val_images))
            model.category = category
            save_scale(model, staging)
            shas[f"p{p}"] = weights_sha256(model.teacher)
            timings[f"p{p}_seconds"] = time.perf_counter() - start
            log(f"# scale p={p}: trained in {timings[f'p{p}_seconds']:.1f} s -> {scale_path(out, p)}")
        info = dict(format=MODEL_FORMAT, category=category, data=str(data), scales=scales,
                    students=students, epochs=epochs, image_size=image_size,
                    teacher=str(teacher or "pretrained"), teacher_sha256=shas,
                    student_width=student_width, lr=lr, crop=crop, seed=seed, device=describe(device),
                    timings=timings)
        write_json(Path(staging) / "model.json", info)
    return info


def read_model_info(model):
    """model.json of a model folder, checked: a dict with a category (str), scales (a non-empty
    list of the paper's patch sizes) and image_size (an int at least the largest p). Every
    error names the file."""
    path = Path(model) / "model.json"
    if not path.is_file():
        raise FileNotFoundError(f"--model {model}: no model.json there (is it a folder that "
                                f"`ustudents train` wrote?)")
    try:
        info = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(info, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(info).__name__}")
    for key, kind in (("category", str), ("scales", list), ("image_size", int)):
        if key not in info:
            raise ValueError(f"{path}: no {key!r}; train the model again with `ustudents train`")
        if not isinstance(info[key], kind) or isinstance(info[key], bool):
            raise ValueError(f"{path}: {key!r} must be a JSON {'string' if kind is str else kind.__name__}, "
                             f"got {info[key]!r}")
    if not info["scales"] or any(p not in SCALES or isinstance(p, bool) for p in info["scales"]):
        raise ValueError(f"{path}: 'scales' must list patch sizes from {SCALES}, got {info['scales']!r}")
    if info["image_size"] < max(info["scales"]):
        raise ValueError(f"{path}: 'image_size' {info['image_size']} is smaller than the patch "
                         f"p={max(info['scales'])}")
    return info


def load_checked_scale(model, p, info, device):
    """Load <model>/scale_<p>.npz and check its identity against model.json: p, the image size,
    the category and the teacher's sha256. A mismatch names the file."""
    path = scale_path(model, p)
    scale = load_scale(path, device)
    size = (info["image_size"], info["image_size"])
    if scale.p != p:
        raise ValueError(f"{path} holds a p={scale.p} model, not p={p}")
    if scale.image_size != size:
        raise ValueError(f"{path} was trained at {scale.image_size} px, model.json says {size}")
    if scale.category != info["category"]:
        raise ValueError(f"{path} was trained on category {scale.category!r}, model.json says "
                         f"{info['category']!r}")
    sha = (info.get("teacher_sha256") or {}).get(f"p{p}")
    if sha != weights_sha256(scale.teacher):
        raise ValueError(f"{path}: its teacher is not the one model.json records for p={p}")
    return scale


def _full_size(amaps, test):
    """Maps (N, S, S) resized to each test image's original size: a list of (H0, W0) arrays."""
    return [metrics.resize_map(m, mask.shape) for m, mask in zip(amaps, test.full_masks)]


def evaluate_maps(amaps, test):
    """au_pro, pixel_auroc, image_auroc and AU-PRO per defect type of maps (N, S, S) against a
    TestSet, at original size."""
    full = _full_size(amaps, test)
    return full, dict(au_pro=metrics.au_pro(full, test.full_masks),
                      pixel_auroc=metrics.pixel_auroc(full, test.full_masks),
                      image_auroc=metrics.image_auroc(metrics.image_scores(full), test.labels),
                      au_pro_by_defect=metrics.au_pro_by_defect(
                          full, test.full_masks, [item.defect for item in test.items]))


def _evaluation_file(name):
    return name in ("metrics.json", "test", "figures")


def evaluate_category(data, category, model, out, device=None, figures=True,
                      allow_other_category=False, log=print):
    """Score <data>/<category>/test with the scales saved in `model` (a folder). Writes, per
    category, out/<category>/: metrics.json, float32 TIFF maps at test/<defect>/<id>.tiff
    (original size; with out as the maps folder, the official evaluation's layout) and, with
    figures, PNGs under figures/. That folder is replaced whole, so no map or figure of an
    earlier evaluation stays; other categories' folders are left alone.

    The model's files must agree with its model.json (load_checked_scale) and its category with
    `category`, unless allow_other_category.

    metrics.json: au_pro, pixel_auroc, image_auroc and au_pro_by_defect for the multi-scale map,
    the same under scales/p<p> for each scale, there also the AU-PRO of e alone and of v alone
    (au_pro_error_only, au_pro_uncertainty_only; the latter null, with a note, for one student,
    whose v is 0 everywhere), and timings."""
    device = default_device(device)
    info = read_model_info(model)
    if info["category"] != category and not allow_other_category:
        raise ValueError(f"--model {model} was trained on {info['category']!r}, not {category!r}; "
                         f"pass --allow-other-category to score it on {category!r} anyway")
    cat = load_category(data, category)
    scales = {p: load_checked_scale(model, p, info, device) for p in info["scales"]}
    test = load_test(cat.test, info["image_size"])
    start = time.perf_counter()
    per_scale, result = {}, {"category": category, "model_category": info["category"],
                             "scales": {}, "device": describe(device)}
    for p, scale in scales.items():
        t0 = time.perf_counter()
        maps = scoring.score_maps(scale, test.images)                              # e, v
        per_scale[p] = asnumpy(scoring.combined(maps["error"], maps["uncertainty"], scale))
        result.setdefault("timings", {})[f"p{p}_maps_seconds"] = time.perf_counter() - t0
        entry = result["scales"][f"p{p}"] = evaluate_maps(per_scale[p], test)[1]
        entry["au_pro_error_only"] = metrics.au_pro(_full_size(asnumpy(maps["error"]), test),
                                                    test.full_masks)
        if len(scale.students) > 1:        # each score alone: which one finds the defects
            entry["au_pro_uncertainty_only"] = metrics.au_pro(
                _full_size(asnumpy(maps["uncertainty"]), test), test.full_masks)
        else:
            entry["au_pro_uncertainty_only"] = None
            entry["note"] = "one student: the uncertainty v is 0 everywhere and scores nothing alone"
    amaps = scoring.multiscale(per_scale)
    full, combined = evaluate_maps(amaps, test)
    result.update(combined)
    result["timings"]["total_seconds"] = time.perf_counter() - start
    result["timings"]["seconds_per_image"] = result["timings"]["total_seconds"] / len(full)
    with staged_folder(Path(out) / category, _evaluation_file, f"--out {out}") as staging:
        for item, m in zip(test.items, full):
            metrics.write_tiff(staging / "test" / item.defect / (item.image.stem + ".tiff"), m)
        if figures:
            _figures(staging / "figures", test, amaps, full, result)
        write_json(staging / "metrics.json", result)
    log(f"# {category}: AU-PRO {result['au_pro']:.3f}  pixel AUROC {result['pixel_auroc']:.3f}  "
        f"image AUROC {result['image_auroc']:.3f}  ({len(full)} test images) -> "
        f"{Path(out) / category / 'metrics.json'}")
    log("#   AU-PRO by defect: " + "  ".join(f"{kind} {value:.3f}" for kind, value
                                             in result["au_pro_by_defect"].items()))
    return result


def _figures(folder, test, amaps, full, result, most=12):
    """One figure per test image (up to `most`), the PRO curve and the image-level ROC curve."""
    from . import viz
    for k, item in enumerate(test.items[:most]):
        viz.save_anomaly_figure(folder / f"{item.defect}_{item.image.stem}.png", test.images[k],
                                test.masks[k], amaps[k], title=f"{item.defect}/{item.image.name}")
    fprs, pros = metrics.pro_curve(full, test.full_masks)
    viz.save_pro_figure(folder / "pro_curve.png", fprs, pros, label=f"AU-PRO {result['au_pro']:.3f}")
    fpr, tpr = metrics.roc_curve(metrics.image_scores(full), test.labels)
    viz.save_roc_figure(folder / "image_roc.png", fpr, tpr, auc=result["image_auroc"])
