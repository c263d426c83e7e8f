"""`ustudents demo`: the whole method on built-in synthetic data, with the shipped teachers.

Makes the synthetic categories (ustudents.synthetic), trains students on each, evaluates them
(AU-PRO, pixel and image AUROC, figures, TIFF maps) and prints the results: one row per
category, then AU-PRO per defect type.

The settings (DEMO and QUICK below) are smaller than the paper's so that it runs on a 2-core CPU:
the synthetic images at their own 128x128 (not the paper's 256), 20 training images, students a
quarter as wide as the teacher, a learning rate 10x the paper's to make up for few epochs, one
scale, p = 17, and 16 epochs at lr 2e-3 in which each step trains on one 64x64 crop of the
image (a quadrant: `train_students(crop=64)` takes each image through its four quadrants in
a seeded order every four epochs), where the paper trains on whole images. A crop step costs
less than half of a whole image's, and these 16 epochs score within 0.01 of 16 epochs of whole
images at lr 1e-3 (docs/results.md). `--scales 17 33` (run_demo's `scales`) adds
students for p = 33 and averages the two maps, as the paper does (docs/method.md §5).
docs/results.md gives the results and times of both. `ustudents train` defaults to the paper's
configuration (p = 17, 33, 65 at 256x256, whole images); tutorial 06 shows the multi-scale mean.
"""
import time
from pathlib import Path

from .backend import default_device, describe
from .files import atomic_path, write_json
from .pipeline import evaluate_category, train_category
from .synthetic import CATEGORIES, make_dataset

DEMO = dict(categories=CATEGORIES, n_train=20, n_test=16, data_size=128, image_size=128,
            scales=(17,), students=3, epochs=16, crop=64, student_width=0.25, lr=2e-3)
QUICK = dict(categories=("nut",), n_train=10, n_test=8, data_size=64, image_size=32,
             scales=(17,), students=3, epochs=6, student_width=0.25, lr=3e-3)


def run_demo(out="out/demo", quick=False, device=None, teacher="pretrained", scales=None, log=print):
    """Run the demo under `out`; returns {category: metrics dict} and writes out/results.json
    and out/results.md. scales: the patch sizes, e.g. (17, 33); default the settings' own."""
    s = dict(QUICK if quick else DEMO)
    if scales:
        s["scales"] = tuple(scales)
    s["image_size"] = max(s["image_size"], *s["scales"])     # an image holds at least one patch
    device = default_device(device)
    out = Path(out)
    start = time.perf_counter()
    log(f"# ustudents demo{' --quick' if quick else ''} | {describe(device)} | scales {list(s['scales'])}, "
        f"{s['students']} students of width {s['student_width']}, {s['epochs']} epochs at lr {s['lr']:g}, "
        f"{s['image_size']}x{s['image_size']} images"
        f"{', crops {0}x{0}'.format(s['crop']) if s.get('crop') else ''} | teacher {teacher}")
    data = make_dataset(out / "data", s["categories"], s["n_train"], s["n_test"], s["data_size"], seed=0)
    results = {}
    for name in s["categories"]:
        t0 = time.perf_counter()
        info = train_category(data, name, out / "models" / name, scales=s["scales"],
                              students=s["students"], epochs=s["epochs"], image_size=s["image_size"],
                              teacher=teacher, device=device, student_width=s["student_width"],
                              lr=s["lr"], crop=s.get("crop"), log=log)
        results[name] = evaluate_category(data, name, out / "models" / name, out / "eval",
                                          device=device, log=log)
        results[name]["train_seconds"] = sum(info["timings"].values())
        results[name]["seconds"] = time.perf_counter() - t0
    table = results_table(results)
    write_json(out / "results.json", results)
    with atomic_path(out / "results.md") as tmp:
        Path(tmp).write_text(table + "\n")
    log(table)
    log(f"figures: {out / 'eval'}/<category>/figures/ | total {time.perf_counter() - start:.0f} s")
    return results


def results_table(results):
    """Markdown: one row per category and the mean, then each category's AU-PRO by defect type."""
    keys = ("au_pro", "pixel_auroc", "image_auroc")
    rows = ["| category | AU-PRO (0.3) | pixel AUROC | image AUROC | seconds |", "|---|---|---|---|---|"]
    for name, r in results.items():
        rows.append(f"| {name} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + f" | {r['seconds']:.0f} |")
    means = [sum(r[k] for r in results.values()) / len(results) for k in keys]
    total = sum(r["seconds"] for r in results.values())
    rows.append("| **mean** | " + " | ".join(f"**{m:.3f}**" for m in means) + f" | {total:.0f} |")
    rows += ["", "| category | AU-PRO (0.3) by defect type, with the good images |", "|---|---|"]
    for name, r in results.items():
        rows.append(f"| {name} | " + ", ".join(f"{kind} {value:.3f}" for kind, value
                                              in r["au_pro_by_defect"].items()) + " |")
    return "\n".join(rows)
