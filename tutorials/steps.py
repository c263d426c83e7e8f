"""What tutorials 03-06 share: their settings, the command line, the data and how to get a teacher
and students.

Tutorial 03 trains the students; 04-06 reuse what it saved (out/students/scale_<p>.npz) or, run on
their own, train the same students with the same settings. Only plumbing lives here: each tutorial
keeps the idea it teaches.
"""
import argparse
import os
from types import SimpleNamespace

from ustudents import models
from ustudents.backend import default_device, describe
from ustudents.data import load_category, load_images, train_val_split
from ustudents.scoring import validation_stats
from ustudents.students import load_scale, save_scale, scale_path, train_students
from ustudents.synthetic import make_dataset

SETTINGS = dict(
    P=33,                  # patch size of teacher and students: 17, 33 or 65
    STUDENTS=3,            # M, the ensemble size (the paper: 3)
    WIDTH=0.25,            # the students' hidden channels x WIDTH (the paper: 1)
    EPOCHS=10,
    LR=1e-3,               # the paper: 1e-4 over far more steps; 10 epochs of 18 images need more
    CATEGORY="nut",        # synthetic category: weave, felt or nut
    N_TRAIN=20, N_TEST=16, SIZE=64,    # synthetic images (10% of train held out for validation)
    TEACHER_WIDTH=1.0,     # of the untrained fallback teacher
    DATA="out/data", MODELS="out/students",
    SEED=0)
QUICK = dict(P=17, STUDENTS=2, WIDTH=0.125, EPOCHS=3, N_TRAIN=5, N_TEST=4, SIZE=32,
             TEACHER_WIDTH=0.25, DATA="out/quick/data", MODELS="out/quick/students")


def start(name, description):
    """Parse --device and --quick and print the header line. Returns the settings (SETTINGS, with
    QUICK over them if asked) as attributes, and the resolved device as .device."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--quick", action="store_true",
                    help="tiny images, narrow students, a few epochs")
    args = ap.parse_args()
    cfg = SimpleNamespace(**{**SETTINGS, **(QUICK if args.quick else {})})
    cfg.device = default_device(args.device)
    print(f"# {name} | {describe(cfg.device)} | device {cfg.device} | float32 | seed {cfg.SEED}")
    return cfg


def data(cfg):
    """Make the synthetic category (kept if already made) and split it. Returns the training
    paths, the held-out tenth of them (anomaly-free validation images) and the test items."""
    make_dataset(cfg.DATA, [cfg.CATEGORY], n_train=cfg.N_TRAIN, n_test=cfg.N_TEST, size=cfg.SIZE,
                 seed=cfg.SEED)
    cat = load_category(cfg.DATA, cfg.CATEGORY)
    train_paths, val_paths = train_val_split(cat.train, 0.1, seed=cfg.SEED)
    return train_paths, val_paths, cat.test


def teacher_for(cfg, p):
    """Tutorial 01's teacher if saved, else the shipped one, else an untrained network; and where
    it came from, in words."""
    path = f"out/teacher_p{p}.npz"
    if os.path.exists(path):
        return models.load(path, p=p, device=cfg.device), f"{path} (tutorial 01)"
    try:
        return models.pretrained(p).to(cfg.device), "shipped (models.pretrained)"
    except (AttributeError, OSError, ValueError):                   # none shipped (yet)
        return (models.PatchNet(p, width=cfg.TEACHER_WIDTH, seed=cfg.SEED).to(cfg.device),
                "untrained (run tutorial 01 for a trained one)")


def students_for(cfg, p, train_paths, val_paths=None, saved_by="tutorial 03"):
    """The students saved for p, or the same training run as tutorial 03's, saved. Given
    val_paths, a model without validation statistics gets them (tutorial 04's) and is saved."""
    path = scale_path(cfg.MODELS, p)
    changed = not os.path.exists(path)
    if changed:
        teacher, source = teacher_for(cfg, p)
        print(f"# no {path}: training the students here, teacher {source}")
        model = train_students(teacher, load_images(train_paths), n_students=cfg.STUDENTS,
                               epochs=cfg.EPOCHS, lr=cfg.LR, seed=cfg.SEED, width=cfg.WIDTH)
    else:
        print(f"# students p={p}: {path}" + (f" ({saved_by})" if saved_by else ""))
        model = load_scale(path, cfg.device)
    if val_paths is not None and model.val_stats is None:
        model.set_val_stats(validation_stats(model, load_images(val_paths)))
        changed = True
    if changed:
        save_scale(model, cfg.MODELS)
    return model
