"""The `ustudents` command.

    ustudents make-data --out ROOT                      synthetic data in the MVTec AD layout
    ustudents teacher --p 33 --out teacher_p33.npz      pretrain a teacher (+ manifest .json)
    ustudents teacher --resume teacher_p33.ckpt.npz --iterations 5000 --out teacher_p33.npz
                                                        ... and train it on later
    ustudents train --data ROOT --category NAME --out DIR [--scales 17 33 65] [--students 3] ...
    ustudents evaluate --data ROOT --category NAME --model DIR --out DIR
    ustudents demo [--quick] [--scales 17 33]           all of it on synthetic data

Settings errors (a missing folder, a bad scale) end with one clear line naming the file or
the option, not a traceback; so does Ctrl-C (exit code 130). `train` and `evaluate` replace
their output folder whole or not at all; `teacher` does not write over a finished run unless
told to (--resume, --overwrite).

The teacher's defaults are TeacherConfig's: importing ustudents.teacher (and with it SciPy)
costs `--help` and `make-data` a few tenths of a second; train, evaluate and demo import it
anyway.
"""
import argparse
import math
import sys
from pathlib import Path

from .backend import is_out_of_memory, out_of_memory_message, set_precision

SCALES = (17, 33, 65)


def _device(ap):
    ap.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"],
                    help="default: USTUDENTS_DEVICE, else auto (CuPy with a GPU, else NumPy)")
    ap.add_argument("--precision", default=None, choices=["fp32", "tf32"],
                    help="float32 matrix products on a GPU: fp32 strict, or tf32 tensor cores "
                         "(faster, about 3 decimal digits); default: USTUDENTS_PRECISION, else fp32")


class _Help(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks and appends each option's default to its help."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" in text or action.required or action.default is None
                or action.default is False or action.default is argparse.SUPPRESS):
            return text
        return text + " (default: %(default)s)"


def _command(sub, name, summary, example):
    return sub.add_parser(name, help=summary, formatter_class=_Help,
                          description=f"example:\n  {example}\n\n{summary}.")


def _parser():
    from .teacher import TeacherConfig
    c = TeacherConfig()
    ap = argparse.ArgumentParser(prog="ustudents", formatter_class=_Help,
                                 description="example:\n  ustudents demo --quick\n\n"
                                             "Uninformed Students anomaly detection.")
    sub = ap.add_subparsers(dest="command", required=True)

    m = _command(sub, "make-data", "write synthetic categories in the MVTec AD layout",
                 "ustudents make-data --out data/synthetic --categories nut")
    m.add_argument("--out", default="data/synthetic", help="the data root to write")
    m.add_argument("--categories", nargs="*", default=None, help="default: every synthetic category")
    m.add_argument("--n-train", type=int, default=40, help="anomaly-free training images per category")
    m.add_argument("--n-test", type=int, default=20, help="test images per category")
    m.add_argument("--size", type=int, default=128, help="image side in pixels")
    m.add_argument("--seed", type=int, default=0, help="random seed (0 or more)")

    t = _command(sub, "teacher", "pretrain a teacher on natural-image patches",
                 "ustudents teacher --p 33 --iterations 2000 --out teacher_p33.npz")
    t.add_argument("--p", type=int, default=c.p, choices=SCALES, help="the patch size")
    t.add_argument("--out", required=True, help="the .npz file to write (a manifest .json beside it)")
    t.add_argument("--iterations", type=int, default=c.iterations, help="Adam steps in all")
    t.add_argument("--batch", type=int, default=c.batch, help="anchor patches per step")
    t.add_argument("--width", type=float, default=c.width, help="hidden channels, as a fraction of the paper's")
    t.add_argument("--images", default=c.images, help="a folder of photos (default: offline images)")
    t.add_argument("--n-images", type=int, default=c.n_images, help="how many offline images to make")
    t.add_argument("--distill", default=c.distill, help="lite0 | none | PATH of a resnet18 .pth")
    t.add_argument("--lambda-k", type=float, default=c.lambda_k, help="distillation's weight (docs/teachers.md: why 20)")
    t.add_argument("--lambda-m", type=float, default=c.lambda_m, help="the triplet loss's weight")
    t.add_argument("--lambda-c", type=float, default=c.lambda_c, help="compactness's weight")
    t.add_argument("--margin", type=float, default=c.margin, help="the triplet loss's margin δ")
    t.add_argument("--lr", type=float, default=c.lr, help="Adam's learning rate (the paper's 2e-4)")
    t.add_argument("--seed", type=int, default=c.seed, help="random seed (0 or more)")
    t.add_argument("--recipe", default=c.recipe, choices=["patch", "dense"],
                   help="patch: the paper's, a batch of patches per step; dense: whole crops")
    t.add_argument("--crops", type=int, default=c.crops, help="dense: crops per step")
    t.add_argument("--crop-size", type=int, default=c.crop_size,
                   help="dense: patches per crop side (a multiple of 8)")
    t.add_argument("--target-reuse", type=int, default=c.target_reuse, metavar="R",
                   help="patch: use each distillation target about R times, from pools of "
                        "--target-pool anchors (1: the paper's, a fresh target per anchor)")
    t.add_argument("--target-pool", type=int, default=c.target_pool, metavar="N",
                   help="patch, with --target-reuse > 1: anchors per pool")
    t.add_argument("--distill-blocks", type=int, default=c.distill_blocks,
                   help="distil Lite0's features after this many blocks (0: its last map)")
    t.add_argument("--augment", action="store_true",
                   help="patches from randomly zoomed, turned, mirrored, recoloured images")
    t.add_argument("--recolour", type=float, default=c.recolour, metavar="SHARE",
                   help="with the triplet: this share of its negatives are the anchor itself, "
                        "recoloured (ours, not the paper's: asks the teacher to keep colour)")
    t.add_argument("--recolour-step", type=float, default=c.recolour_step, metavar="STEP",
                   help="the recolouring's step, its length in RGB (pixels in [0, 1])")
    t.add_argument("--checkpoint", default=None,
                   help="where the run is saved as it goes, to continue it (default: OUT as .ckpt.npz)")
    t.add_argument("--checkpoint-every", type=float, default=300.0, metavar="SECONDS",
                   help="how often to save it: the first log line after this long")
    t.add_argument("--resume", default=None, metavar="CHECKPOINT",
                   help="continue that run up to --iterations, with its own settings")
    t.add_argument("--overwrite", action="store_true",
                   help="start afresh over a finished run (its .npz or checkpoint) at --out")
    _device(t)

    r = _command(sub, "train", "train the students of one category",
                 "ustudents train --data data/synthetic --category nut --out models/nut --scales 17")
    r.add_argument("--data", required=True, help="the data root (MVTec AD layout)")
    r.add_argument("--category", required=True, help="the category folder under --data")
    r.add_argument("--out", required=True, help="the model folder; replaced whole at the end")
    r.add_argument("--scales", type=int, nargs="+", default=list(SCALES), help="patch sizes p")
    r.add_argument("--students", type=int, default=3, help="students M per scale")
    r.add_argument("--epochs", type=int, default=10, help="passes over the training images")
    r.add_argument("--image-size", type=int, default=256, help="images are resized to this side")
    r.add_argument("--teacher", default="pretrained", help="pretrained | random | PATH (.npz or folder)")
    r.add_argument("--student-width", type=float, default=None, help="default: the teacher's")
    r.add_argument("--batch", type=int, default=1, help="images per step")
    r.add_argument("--crop", type=int, default=None,
                   help="train each step on one crop of this side from a grid that tiles the "
                        "image: cheaper steps; a divisor of --image-size trains every pixel "
                        "equally often (default: whole images, as the paper)")
    r.add_argument("--lr", type=float, default=1e-4, help="Adam's learning rate (the paper: 1e-4)")
    r.add_argument("--seed", type=int, default=0, help="random seed (0 or more)")
    _device(r)

    e = _command(sub, "evaluate", "anomaly maps, metrics.json and TIFF maps for one category",
                 "ustudents evaluate --data data/synthetic --category nut --model models/nut --out eval")
    e.add_argument("--data", required=True, help="the data root (MVTec AD layout)")
    e.add_argument("--category", required=True, help="the category folder under --data")
    e.add_argument("--model", required=True, help="a folder written by `ustudents train`")
    e.add_argument("--out", required=True, help="results go to OUT/CATEGORY/, replaced whole")
    e.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    e.add_argument("--allow-other-category", action="store_true",
                   help="score a model trained on another category")
    _device(e)

    d = _command(sub, "demo", "synthetic data -> training -> evaluation -> figures",
                 "ustudents demo --quick")
    d.add_argument("--quick", action="store_true", help="one small category, about a minute")
    d.add_argument("--out", default="out/demo", help="where data, models and results go")
    d.add_argument("--scales", type=int, nargs="+", default=None,
                   help="default: 17 alone; 17 33 is the multi-scale demo (about twice as long)")
    d.add_argument("--teacher", default="pretrained",
                   help="pretrained (the shipped teachers), random (untrained), a teacher .npz "
                        "or a folder of teacher_p<p>.npz, as train takes it")
    _device(d)
    return ap


def _check(args):
    for p in getattr(args, "scales", []) or []:
        if p not in SCALES:
            raise ValueError(f"--scales: {p} is no patch size of the paper; choose from {SCALES}")
    for name in ("students", "epochs", "image_size", "iterations", "batch", "n_train", "n_test",
                 "size", "n_images", "crop"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if getattr(args, "seed", 0) < 0:
        raise ValueError(f"--seed must be 0 or more, got {args.seed}")
    for name, value in vars(args).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"--{name.replace('_', '-')} must be a finite number, got {value}")
    for name in ("lr", "width", "student_width", "lambda_k", "lambda_m", "lambda_c", "margin"):
        value = getattr(args, name, None)
        if value is not None and (value < 0 or value == 0 and name in ("lr", "width", "student_width")):
            raise ValueError(f"--{name.replace('_', '-')} must be "
                             f"{'positive' if name in ('lr', 'width', 'student_width') else '0 or more'}, "
                             f"got {value}")
    data = getattr(args, "data", None)
    if data is not None and not Path(data).is_dir():
        raise FileNotFoundError(f"--data: no such folder: {data}")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = _parser().parse_args(argv)
    args.argv = argv                                                 # for the teacher's manifest
    try:
        _check(args)
        set_precision(getattr(args, "precision", None))              # before any GPU work
        return COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError, FileExistsError, ImportError, RuntimeError) as err:
        print(f"ustudents {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ustudents {args.command}: interrupted; {_interrupted(args)}", file=sys.stderr)
        return 130
    except Exception as err:
        if not is_out_of_memory(err):
            raise
        lower = OUT_OF_MEMORY_LOWER.get(args.command, "the sizes")
        print(f"ustudents {args.command}: error: {out_of_memory_message(err, lower)}", file=sys.stderr)
        return 2


def _interrupted(args):
    """What a Ctrl-C left behind, in a few words."""
    if args.command in ("train", "evaluate"):
        return f"--out {args.out} is as it was before"
    if args.command == "teacher":
        checkpoint = Path(args.checkpoint or Path(args.out).with_suffix(".ckpt.npz"))
        if checkpoint.is_file():
            return f"to continue from the last checkpoint: --resume {checkpoint}"
        return "no checkpoint was written yet"
    return "files written so far are complete"


# What to lower when a command runs out of memory (GPU or host).
OUT_OF_MEMORY_LOWER = {
    "teacher": "--batch (or --width)",
    "train": "--image-size, --batch or --students (or --student-width, or fewer --scales)",
    "evaluate": "the model's image size (train it with a smaller --image-size)",
    "demo": "--scales (one scale), or run it with --device cpu",
    "make-data": "--size or --n-train",
}


def cmd_make_data(args):
    from .synthetic import make_dataset
    root = make_dataset(args.out, args.categories, args.n_train, args.n_test, args.size, args.seed)
    print(f"synthetic data in {root}")


def _teacher_settings(args):
    """TeacherConfig's fields from the command line. With --resume: the run's own settings, and
    over them only the flags typed, so that train_teacher names any that differ from the run's."""
    from .teacher import FREE_ON_RESUME
    names = ("p", "width", "batch", "images", "n_images", "distill", "lambda_k", "lambda_m",
             "lambda_c", "margin", "lr", "seed", "recipe", "crops", "crop_size", "distill_blocks",
             "augment", "target_reuse", "target_pool", "recolour", "recolour_step")
    given = {k: getattr(args, k) for k in names}
    if args.resume is None:
        return given
    from .checkpoint import load_run
    stored = load_run(args.resume).record["config"]
    defaults = vars(_parser().parse_args(["teacher", "--out", "-"]))

    def typed(k):                                  # on the command line, or not its default
        flag = "--" + k.replace("_", "-")
        return given[k] != defaults[k] or any(a == flag or a.startswith(flag + "=") for a in args.argv)

    return {**{k: v for k, v in stored.items() if k not in FREE_ON_RESUME},
            **{k: v for k, v in given.items() if typed(k)}}


def _check_teacher_out(args, checkpoint):
    """Refuse to start afresh over a finished run (--out's .npz, or its checkpoint) without
    --resume or --overwrite: that can be hours of training."""
    for path in (Path(args.out), Path(checkpoint)):
        if path.is_dir():
            raise FileExistsError(f"--out {args.out}: {path} is a folder; give a .npz file name")
    if args.resume is not None or args.overwrite:
        return
    found = [str(p) for p in (Path(args.out), Path(checkpoint)) if p.exists()]
    if found:
        raise FileExistsError(f"--out {args.out}: a finished or started run is there "
                              f"({', '.join(found)}); continue it with --resume {checkpoint}, or "
                              f"pass --overwrite to start afresh")


def cmd_teacher(args):
    from .checkpoint import load_run
    from .teacher import TeacherConfig, save_teacher, train_teacher
    checkpoint = args.checkpoint or Path(args.out).with_suffix(".ckpt.npz")
    _check_teacher_out(args, checkpoint)
    config = TeacherConfig(**_teacher_settings(args), iterations=args.iterations)
    command = "ustudents " + " ".join(args.argv)
    net, history = train_teacher(config, device=args.device, checkpoint=checkpoint,
                                 resume=args.resume, checkpoint_every=args.checkpoint_every,
                                 command=command)
    runs = load_run(checkpoint).record["runs"]
    path = save_teacher(net, args.out, config, history, history[-1]["seconds"], command=command,
                        runs=runs if len(runs) > 1 else None)
    print(f"saved: {path} (manifest: {Path(path).with_suffix('.json')}; to train on: "
          f"--resume {checkpoint})")


def cmd_train(args):
    from .pipeline import train_category
    train_category(args.data, args.category, args.out, scales=args.scales, students=args.students,
                   epochs=args.epochs, image_size=args.image_size, teacher=args.teacher,
                   device=args.device, seed=args.seed, batch=args.batch,
                   student_width=args.student_width, lr=args.lr, crop=args.crop)


def cmd_evaluate(args):
    from .pipeline import evaluate_category
    evaluate_category(args.data, args.category, args.model, args.out, device=args.device,
                      figures=not args.no_figures, allow_other_category=args.allow_other_category)


def cmd_demo(args):
    from .demo import run_demo
    run_demo(args.out, quick=args.quick, device=args.device, scales=args.scales, teacher=args.teacher)


COMMANDS = {"make-data": cmd_make_data, "teacher": cmd_teacher, "train": cmd_train,
            "evaluate": cmd_evaluate, "demo": cmd_demo}

if __name__ == "__main__":
    sys.exit(main())
