"""The whole method on one category: train (students per scale), then evaluate (maps, metrics,
TIFFs, figures). The `ustudents` command is a thin layer over these two functions.

    train_category(data, category, out, scales=(17, 33, 65), ...)   -> out/scale_<p>.npz, model.json
    evaluate_category(data, category, model, out)                   -> out/metrics.json, TIFF maps, figures

Image handling: images are resized to image_size x image_size for the networks; anomaly maps
are resized back to each test image's original size (bilinear) before the metrics and the TIFF
files, so the metrics are those of the official evaluation on the original masks.
"""
import json
import time
from pathlib import Path


from . import metrics, scoring
from .backend import asnumpy, default_device, describe
from .files import write_json
from .data import load_category, load_images, load_test, train_val_split
from .models import PatchNet, load
from .students import load_scale, save_scale, scale_path, train_students


def resolve_teacher(teacher, p, device, seed=0):
    """The teacher for patch size p: 'pretrained' (shipped), 'random' (untrained, to show why
    pretraining matters), a .npz file, or a folder holding teacher_p<p>.npz."""
    if teacher in (None, "pretrained"):
        from .models import pretrained
        return pretrained(p).to(device)
    if teacher == "random":
        return PatchNet(p, seed=seed).to(device)
    path = Path(teacher)
    if path.is_dir():
        path = path / f"teacher_p{p}.npz"
    return load(path, p=p, device=device)


def train_category(data, category, out, scales=(17, 33, 65), students=3, epochs=10,
                   image_size=256, teacher=None, device=None, seed=0, batch=1,
                   student_width=None, lr=1e-4, log=print):
    """Train M students per scale on <data>/<category>/train/good (90%; 10% validation).
    Writes out/scale_<p>.npz per scale and out/model.json. Returns the model.json dict."""
    device = default_device(device)
    cat = load_category(data, category)
    train_paths, val_paths = train_val_split(cat.train, val_fraction=0.1, seed=seed)
    train_images, val_images = load_images(train_paths, image_size), load_images(val_paths, image_size)
    log(f"# train {category}: {len(train_paths)} train / {len(val_paths)} validation images at "
        f"{image_size}x{image_size} | scales {list(scales)} | {describe(device)} | seed {seed}")
    timings = {}
    for p in scales:
        start = time.perf_counter()
        net = resolve_teacher(teacher, p, device, seed)
        model = train_students(net, train_images, n_students=students, epochs=epochs, batch=batch,
                               lr=lr, seed=seed + p, width=student_width, log=log)
        model.set_val_stats(scoring.validation_stats(model, val_images))
        save_scale(model, out)
        timings[f"p{p}_seconds"] = time.perf_counter() - start
        log(f"# scale p={p}: trained in {timings[f'p{p}_seconds']:.1f} s -> {scale_path(out, p)}")
    info = dict(category=category, data=str(data), scales=list(scales), students=students,
                epochs=epochs, image_size=image_size, teacher=str(teacher or "pretrained"),
                student_width=student_width, seed=seed, device=describe(device), timings=timings)
    write_json(Path(out) / "model.json", info)
    return info


def _full_size(amaps, test):
    """Maps (N, S, S) resized to each test image's original size: a list of (H0, W0) arrays."""
    return [metrics.resize_map(m, mask.shape) for m, mask in zip(amaps, test.full_masks)]


def _scores(amaps, test):
    """au_pro, pixel_auroc, image_auroc and AU-PRO per defect type of maps (N, S, S) against a
    TestSet, at original size."""
    full = _full_size(amaps, test)
    return full, dict(au_pro=metrics.au_pro(full, test.full_masks),
                      pixel_auroc=metrics.pixel_auroc(full, test.full_masks),
                      image_auroc=metrics.image_auroc(metrics.image_scores(full), test.labels),
                      au_pro_by_defect=metrics.au_pro_by_defect(
                          full, test.full_masks, [item.defect for item in test.items]))


def evaluate_category(data, category, model, out, device=None, figures=True, log=print):
    """Score <data>/<category>/test with the scales saved in `model` (a folder). Writes
    out/metrics.json, float32 TIFF maps at out/<category>/test/<defect>/<id>.tiff (original
    size, the official evaluation's layout) and, with figures, PNGs under out/figures/.

    metrics.json: au_pro, pixel_auroc, image_auroc and au_pro_by_defect for the multi-scale map,
    the same under scales/p<p> for each scale, there also the AU-PRO of e alone and of v alone
    (au_pro_error_only, au_pro_uncertainty_only), and timings."""
    device = default_device(device)
    info = json.loads((Path(model) / "model.json").read_text())
    cat = load_category(data, category)
    test = load_test(cat.test, info["image_size"])
    start = time.perf_counter()
    per_scale, result = {}, {"category": category, "scales": {}, "device": describe(device)}
    for p in info["scales"]:
        scale = load_scale(scale_path(model, p), device)
        t0 = time.perf_counter()
        maps = scoring.score_maps(scale, test.images)                              # e, v
        per_scale[p] = asnumpy(scoring.combined(maps["error"], maps["uncertainty"], scale))
        result.setdefault("timings", {})[f"p{p}_maps_seconds"] = time.perf_counter() - t0
        result["scales"][f"p{p}"] = _scores(per_scale[p], test)[1]
        for term in ("error", "uncertainty"):   # each score alone: which one finds the defects
            full = _full_size(asnumpy(maps[term]), test)
            result["scales"][f"p{p}"][f"au_pro_{term}_only"] = metrics.au_pro(full, test.full_masks)
    amaps = scoring.multiscale(per_scale)
    full, combined = _scores(amaps, test)
    result.update(combined)
    result["timings"]["total_seconds"] = time.perf_counter() - start
    result["timings"]["seconds_per_image"] = result["timings"]["total_seconds"] / len(full)
    for item, m in zip(test.items, full):
        metrics.write_tiff(Path(out) / category / "test" / item.defect / (item.image.stem + ".tiff"), m)
    if figures:
        _figures(Path(out) / "figures" / category, test, amaps, full, result)
    write_json(Path(out) / "metrics.json", result)
    log(f"# {category}: AU-PRO {result['au_pro']:.3f}  pixel AUROC {result['pixel_auroc']:.3f}  "
        f"image AUROC {result['image_auroc']:.3f}  ({len(full)} test images)")
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
