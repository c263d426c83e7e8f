"""Students against a classical baseline on real photos the teacher never saw.

    python scripts/real_texture_check.py --photos A.jpg B.jpg --out DIR [--size 128]
        [--teacher NAME=SPEC ...] [--scales 17] [--epochs N] [--window 17] [--seeds 0 1 2]
        [--n-test 16] [--device auto|cpu|cuda]

Builds the check (ustudents.photocheck.make_photo_check: one category per photo, training and
test crops from disjoint blocks of the photo, the synthetic defect kinds drawn onto real crops)
under DIR/seed<s>/data, scores the local-statistics baseline on every category, then, for each
teacher, trains students on every category and evaluates them with the project's pipeline
(train_category, evaluate_category) in the demo's configuration (ustudents.demo.DEMO: p = 17,
3 students a quarter as wide as the teacher, its epochs, learning rate and number of training
images; the images at --size, 128 as in the demo; --scales: other patch sizes, whose maps are
averaged as in the demo's). Prints a table of AU-PRO (FPR limit 0.3): category, baseline, one
column per teacher; writes DIR/results.json (ustudents.files.write_json) with every metric, the
settings and the times.

--seeds: the whole check once per seed, each its own crops, defects and students (DIR/seed<s>/),
so that a difference between teachers can be told from the spread of one check: a run's
figures move with its crops and with how the BLAS rounds. The table then gives each figure's
mean over the seeds, with its lowest and highest. --n-test: test images per photo (the demo's
16); more make each figure steadier for little time, as testing costs a fraction of training.

--teacher NAME=SPEC (repeatable): SPEC is what `ustudents train --teacher` takes (pretrained,
random, a teacher .npz or a folder holding teacher_p17.npz); NAME (letters, digits, _ . -) names
its column and its folders DIR/seed<s>/models/NAME and DIR/seed<s>/eval/NAME. Default:
shipped=pretrained and untrained=random (PatchNet(17, seed 0)), to show what pretraining brings
on real textures.
"""
import argparse
import re
import sys
import time
from pathlib import Path

from ustudents.backend import default_device, describe
from ustudents.demo import DEMO
from ustudents.files import write_json
from ustudents.photocheck import baseline_scores, make_photo_check
from ustudents.pipeline import evaluate_category, resolve_teacher, train_category

DEFAULT_TEACHERS = (("shipped", "pretrained"), ("untrained", "random"))


def parse_teachers(values, ap):
    """['NAME=SPEC', ...] -> [(NAME, SPEC), ...]; a malformed or repeated NAME ends the run
    with a usage error naming it."""
    if not values:
        return list(DEFAULT_TEACHERS)
    teachers = []
    for v in values:
        name, sep, spec = v.partition("=")
        if not sep or not spec or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            ap.error(f"--teacher {v}: expected NAME=SPEC, NAME of letters, digits, _ . - "
                     f"(e.g. p17=teachers/teacher_p17.npz)")
        if name in dict(teachers):
            ap.error(f"--teacher {v}: the name {name!r} is given twice")
        teachers.append((name, spec))
    return teachers


def spread(values):
    """'mean' of one value, 'mean (lowest-highest)' of several, to three decimals."""
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.3f}"
    return f"{mean:.3f} ({min(values):.3f}-{max(values):.3f})"


def table(categories, baseline, students, names):
    """Markdown: AU-PRO per category and its mean over the categories, baseline then each
    teacher's students. baseline[seed][category] and students[seed][name][category] hold a run's
    metrics; each cell gives the mean over the seeds (spread() shows their range)."""
    seeds = list(baseline)

    def cells(results_of):
        """One row's cells: per column, the AU-PRO of `results_of(seed, column)` over the seeds."""
        return [spread([results_of(s, n) for s in seeds]) for n in [None] + names]

    def au_pro(seed, name, c):
        return (baseline[seed] if name is None else students[seed][name])[c]["au_pro"]

    rows = ["| category | baseline | " + " | ".join(f"students, {n} teacher" for n in names) + " |",
            "|---|---|" + "---|" * len(names)]
    for c in categories:
        rows.append(f"| {c} | " + " | ".join(cells(lambda s, n: au_pro(s, n, c))) + " |")
    mean = cells(lambda s, n: sum(au_pro(s, n, c) for c in categories) / len(categories))
    rows.append("| **mean** | " + " | ".join(f"**{m}**" for m in mean) + " |")
    return "\n".join(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", nargs="+", help="photos, one category each (named after the file)")
    ap.add_argument("--out", required=True, help="output folder (data, models, eval, results.json)")
    ap.add_argument("--size", type=int, default=DEMO["image_size"], help="crop and image size (px)")
    ap.add_argument("--teacher", action="append", metavar="NAME=SPEC",
                    help="a teacher to train students with (repeatable); default: "
                         + ", ".join(f"{n}={s}" for n, s in DEFAULT_TEACHERS))
    ap.add_argument("--scales", type=int, nargs="+", default=list(DEMO["scales"]),
                    help="the students' patch sizes (the demo's: 17)")
    ap.add_argument("--epochs", type=int, default=DEMO["epochs"], help="student epochs (the demo's)")
    ap.add_argument("--crop", type=int, default=DEMO["crop"],
                    help="the students' training crops (the demo's; 0: whole images)")
    ap.add_argument("--window", type=int, default=17, help="the baseline's window (px)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0],
                    help="one whole check per seed (crops, defects, students); default: 0")
    ap.add_argument("--n-test", type=int, default=DEMO["n_test"],
                    help="test images per photo (the demo's)")
    ap.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"])
    args = ap.parse_args(argv)
    if not args.photos:
        ap.error("--photos: give one or more photos, any RGB photos that the teacher never saw in "
                 "pretraining (e.g. scikit-learn's sample photos china.jpg and flower.jpg, "
                 "copied from its datasets/images folder)")
    teachers = parse_teachers(args.teacher, ap)
    if any(seed < 0 for seed in args.seeds) or len(set(args.seeds)) < len(args.seeds):
        ap.error(f"--seeds {' '.join(map(str, args.seeds))}: distinct seeds of 0 or more")
    if args.n_test < 4:
        ap.error(f"--n-test {args.n_test}: at least 4 (good images and each defect kind)")
    try:
        return run(args, teachers)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(args, teachers):
    """The check itself (module docstring); returns the exit status."""
    out = Path(args.out)
    device = default_device(args.device)
    scales = tuple(args.scales)
    for name, spec in teachers:            # every teacher checked before any work
        for p in scales:
            resolve_teacher(spec, p, device)
    start = time.perf_counter()
    print(f"# real-texture check | {describe(device)} | {len(args.photos)} photos, {args.size} px, "
          f"{args.n_test} test images each | seeds {args.seeds} | students: scales {list(scales)}, "
          f"{DEMO['students']} of width {DEMO['student_width']}, {args.epochs} epochs at lr "
          f"{DEMO['lr']:g} | baseline window {args.window}", flush=True)
    categories = [Path(p).stem for p in args.photos]
    baseline, students = {}, {}
    for seed in args.seeds:
        baseline[seed], students[seed] = check_once(args, teachers, categories, seed,
                                                    out / f"seed{seed}", device)

    names = [n for n, _ in teachers]
    text = table(categories, baseline, students, names)
    seconds = time.perf_counter() - start
    write_json(out / "results.json", dict(
        photos=[str(p) for p in args.photos], size=args.size, seeds=args.seeds,
        device=describe(device),
        baseline=dict(window=args.window, results=baseline),
        students=dict(settings=dict(scales=list(scales), students=DEMO["students"],
                                    student_width=DEMO["student_width"], lr=DEMO["lr"],
                                    epochs=args.epochs, crop=args.crop or None,
                                    image_size=args.size,
                                    n_train=DEMO["n_train"], n_test=args.n_test),
                      teachers=dict(teachers), results=students),
        table=text, seconds=seconds))
    print(text)
    print(f"AU-PRO up to FPR 0.3{', mean (lowest-highest) over the seeds' if len(args.seeds) > 1 else ''}"
          f" | results: {out / 'results.json'} | total {seconds:.0f} s")
    return 0


def check_once(args, teachers, categories, seed, out, device):
    """One seed's check under `out` (data, models, eval): ({category: baseline metrics},
    {teacher name: {category: students' metrics}})."""
    data = make_photo_check(args.photos, out / "data", size=args.size, n_train=DEMO["n_train"],
                            n_test=args.n_test, seed=seed)
    baseline = {}
    for c in categories:
        baseline[c] = baseline_scores(data, c, args.size, args.window)
        print(f"# seed {seed} baseline {c}: AU-PRO {baseline[c]['au_pro']:.3f}  pixel AUROC "
              f"{baseline[c]['pixel_auroc']:.3f}  image AUROC {baseline[c]['image_auroc']:.3f}",
              flush=True)
    students = {}
    for name, spec in teachers:
        students[name] = {}
        for c in categories:
            t0 = time.perf_counter()
            model = out / "models" / name / c
            info = train_category(data, c, model, scales=tuple(args.scales),
                                  students=DEMO["students"], epochs=args.epochs,
                                  image_size=args.size, teacher=spec, device=device, seed=seed,
                                  student_width=DEMO["student_width"], lr=DEMO["lr"],
                                  crop=args.crop or None,
                                  log=lambda line: print(line, flush=True))
            r = evaluate_category(data, c, model, out / "eval" / name, device=device,
                                  log=lambda line: print(line, flush=True))
            r["train_seconds"] = sum(info["timings"].values())
            r["seconds"] = time.perf_counter() - t0
            students[name][c] = r
            print(f"# seed {seed} {name} {c}: AU-PRO {r['au_pro']:.3f}", flush=True)
    return baseline, students


if __name__ == "__main__":
    sys.exit(main())
