"""The `ustudents` command.

    ustudents make-data --out ROOT                      synthetic data in the MVTec AD layout
    ustudents teacher --p 33 --out teacher_p33.npz      pretrain a teacher (+ manifest .json)
    ustudents teacher --resume teacher_p33.ckpt.npz --iterations 5000 --out teacher_p33.npz
                                                        ... and train it on later
    ustudents train --data ROOT --category NAME --out DIR [--scales 17 33 65] [--students 3] ...
    ustudents evaluate --data ROOT --category NAME --model DIR --out DIR
    ustudents demo [--quick] [--scales 17 33]           all of it on synthetic data

Settings errors (a missing folder, a bad scale) end with one clear line, not a traceback.
"""
import argparse
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


def _parser():
    ap = argparse.ArgumentParser(prog="ustudents", description="Uninformed Students anomaly detection")
    sub = ap.add_subparsers(dest="command", required=True)

    m = sub.add_parser("make-data", help="write synthetic categories in the MVTec AD layout")
    m.add_argument("--out", default="data/synthetic")
    m.add_argument("--categories", nargs="*", default=None)
    m.add_argument("--n-train", type=int, default=40)
    m.add_argument("--n-test", type=int, default=20)
    m.add_argument("--size", type=int, default=128)
    m.add_argument("--seed", type=int, default=0)

    t = sub.add_parser("teacher", help="pretrain a teacher on natural-image patches")
    t.add_argument("--p", type=int, default=33, choices=SCALES)
    t.add_argument("--out", required=True, help="the .npz file to write (a manifest .json beside it)")
    t.add_argument("--iterations", type=int, default=2000)
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--width", type=float, default=1.0)
    t.add_argument("--images", default=None, help="a folder of photos (default: offline images)")
    t.add_argument("--n-images", type=int, default=200)
    t.add_argument("--distill", default="lite0", help="lite0 | none | PATH of a resnet18 .pth")
    t.add_argument("--lambda-k", type=float, default=20.0, help="distillation's weight (docs/teachers.md: why 20)")
    t.add_argument("--lambda-m", type=float, default=0.0, help="the triplet loss's weight")
    t.add_argument("--lambda-c", type=float, default=1.0, help="compactness's weight")
    t.add_argument("--margin", type=float, default=1.0, help="the triplet loss's margin δ")
    t.add_argument("--lr", type=float, default=2e-4, help="Adam's learning rate (the paper's 2e-4)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--checkpoint", default=None,
                   help="where the run is saved as it goes, to continue it (default: OUT as .ckpt.npz)")
    t.add_argument("--checkpoint-every", type=float, default=300.0, metavar="SECONDS",
                   help="how often to save it: the first log line after this long (default 300)")
    t.add_argument("--resume", default=None, metavar="CHECKPOINT",
                   help="continue that run up to --iterations, with its own settings")
    _device(t)

    r = sub.add_parser("train", help="train the students of one category")
    r.add_argument("--data", required=True)
    r.add_argument("--category", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--scales", type=int, nargs="+", default=list(SCALES))
    r.add_argument("--students", type=int, default=3)
    r.add_argument("--epochs", type=int, default=10)
    r.add_argument("--image-size", type=int, default=256)
    r.add_argument("--teacher", default="pretrained", help="pretrained | random | PATH (.npz or folder)")
    r.add_argument("--student-width", type=float, default=None, help="default: the teacher's")
    r.add_argument("--batch", type=int, default=1)
    r.add_argument("--lr", type=float, default=1e-4, help="Adam's learning rate (the paper: 1e-4)")
    r.add_argument("--seed", type=int, default=0)
    _device(r)

    e = sub.add_parser("evaluate", help="anomaly maps, metrics.json and TIFF maps for one category")
    e.add_argument("--data", required=True)
    e.add_argument("--category", required=True)
    e.add_argument("--model", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--no-figures", action="store_true")
    _device(e)

    d = sub.add_parser("demo", help="synthetic data -> training -> evaluation -> figures")
    d.add_argument("--quick", action="store_true", help="one small category, about a minute")
    d.add_argument("--out", default="out/demo")
    d.add_argument("--scales", type=int, nargs="+", default=None,
                   help="default: 17 alone; 17 33 is the multi-scale demo (about twice as long)")
    _device(d)
    return ap


def _check(args):
    for p in getattr(args, "scales", []) or []:
        if p not in SCALES:
            raise ValueError(f"--scales: {p} is no patch size of the paper; choose from {SCALES}")
    for name in ("students", "epochs", "image_size", "iterations", "batch"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
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
    except Exception as err:
        if not is_out_of_memory(err):
            raise
        lower = OUT_OF_MEMORY_LOWER.get(args.command, "the sizes")
        print(f"ustudents {args.command}: error: {out_of_memory_message(err, lower)}", file=sys.stderr)
        return 2


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
    """TeacherConfig's fields from the command line; with --resume, the run's own, and an error
    for any setting given that differs from them."""
    names = ("p", "width", "batch", "images", "n_images", "distill", "lambda_k", "lambda_m",
             "lambda_c", "margin", "lr", "seed")
    given = {k: getattr(args, k) for k in names}
    if args.resume is None:
        return given
    from .checkpoint import load_run
    stored = load_run(args.resume).record["config"]
    defaults = vars(_parser().parse_args(["teacher", "--out", "-"]))

    def typed(k):                                  # on the command line, or not its default
        flag = "--" + k.replace("_", "-")
        return given[k] != defaults[k] or any(a == flag or a.startswith(flag + "=") for a in args.argv)

    clash = [f"--{k.replace('_', '-')} {v} (the run has {stored[k]})" for k, v in given.items()
             if v != stored[k] and typed(k)]
    if clash:
        raise ValueError(f"--resume {args.resume} continues that run with its own settings; "
                         f"drop {', '.join(clash)}")
    return {k: v for k, v in stored.items() if k not in ("iterations", "log_every")}


def cmd_teacher(args):
    from .checkpoint import load_run
    from .teacher import TeacherConfig, save_teacher, train_teacher
    config = TeacherConfig(**_teacher_settings(args), iterations=args.iterations)
    checkpoint = args.checkpoint or Path(args.out).with_suffix(".ckpt.npz")
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
                   student_width=args.student_width, lr=args.lr)


def cmd_evaluate(args):
    from .pipeline import evaluate_category
    evaluate_category(args.data, args.category, args.model, args.out, device=args.device,
                      figures=not args.no_figures)


def cmd_demo(args):
    from .demo import run_demo
    run_demo(args.out, quick=args.quick, device=args.device, scales=args.scales)


COMMANDS = {"make-data": cmd_make_data, "teacher": cmd_teacher, "train": cmd_train,
            "evaluate": cmd_evaluate, "demo": cmd_demo}

if __name__ == "__main__":
    sys.exit(main())
