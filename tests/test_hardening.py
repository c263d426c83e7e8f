"""Nothing good is lost, a diverged run never passes as a result, and bad input is refused by
name: the `ustudents` commands against clumsy and hostile use, on tiny synthetic data."""
import hashlib
import json

import numpy as np
import pytest

from ustudents import pipeline, students
from ustudents.cli import _parser, main
from ustudents.models import PatchNet, save
from ustudents.students import load_scale, save_scale, scale_path
from ustudents.synthetic import CATEGORIES, make_dataset

A, B = CATEGORIES[:2]
TRAIN = ["--students", "2", "--epochs", "1", "--image-size", "24", "--student-width", "0.25",
         "--lr", "3e-3", "--device", "cpu"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two tiny categories, a folder of small teachers (p = 17, 33) and one trained p = 17 model
    of category A with its evaluation: a dict of paths and the model's metrics."""
    tmp = tmp_path_factory.mktemp("hardening")
    data = make_dataset(tmp / "data", [A, B], 6, 4, 32, seed=0)
    teachers = tmp / "teachers"
    teachers.mkdir()
    for p in (17, 33):
        save(PatchNet(p, width=0.25, seed=0), teachers / f"teacher_p{p}.npz")
    only17 = tmp / "only17"
    only17.mkdir()
    save(PatchNet(17, width=0.25, seed=0), only17 / "teacher_p17.npz")
    model = tmp / "model"
    assert train(data, A, model, teachers, "--scales", "17") is None
    ev = tmp / "eval"
    assert evaluate(data, A, model, ev) is None
    return dict(tmp=tmp, data=data, teachers=teachers, only17=only17, model=model,
                metrics=json.loads((ev / A / "metrics.json").read_text()))


def train(data, category, out, teachers, *extra):
    return main(["train", "--data", data, "--category", category, "--out", out,
                 "--teacher", teachers, *TRAIN, *extra])


def evaluate(data, category, model, out, *extra):
    return main(["evaluate", "--data", data, "--category", category, "--model", model,
                 "--out", out, "--device", "cpu", *extra])


def digest(folder):
    """sha256 of every file under a folder, by relative path: 'exactly as it was'."""
    return {str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(folder.rglob("*")) if f.is_file()}


def copy_model(world, name):
    import shutil
    dst = world["tmp"] / name
    shutil.copytree(world["model"], dst)
    return dst


def test_a_retrain_lacking_a_teacher_is_refused_before_training_and_keeps_the_old_model(world, capsys):
    model = copy_model(world, "m_lacking")
    before = digest(model)
    assert train(world["data"], A, model, world["only17"], "--scales", "17", "33", "--image-size", "36") == 2
    said = capsys.readouterr()
    assert "teacher_p33.npz" in said.err and "epoch" not in said.out
    assert digest(model) == before
    assert [p.name for p in model.parent.iterdir() if p.name.startswith(".")] == []


def test_ctrl_c_during_training_keeps_the_old_model_and_exits_130(world, capsys, monkeypatch):
    model = copy_model(world, "m_ctrl_c")
    before = digest(model)

    real, saved = pipeline.save_scale, []

    def interrupted_at_the_second(model, folder):          # p = 17 saved, then Ctrl-C
        if saved:
            raise KeyboardInterrupt
        saved.append(real(model, folder))
    monkeypatch.setattr(pipeline, "save_scale", interrupted_at_the_second)
    assert train(world["data"], A, model, world["teachers"], "--scales", "17", "33",
                 "--image-size", "36") == 130
    assert saved
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "interrupted" in err[0] and str(model) in err[0]
    assert digest(model) == before
    assert [p.name for p in model.parent.iterdir() if p.name.startswith(".")] == []


@pytest.mark.slow                 # seconds on 2 cores: with the slow tests (.ci/run runs them)
def test_a_retrain_with_fewer_scales_leaves_no_stale_scale_file(world, tmp_path):
    out = tmp_path / "m"
    assert train(world["data"], A, out, world["teachers"], "--scales", "17", "33", "--image-size", "36") is None
    assert train(world["data"], A, out, world["teachers"], "--scales", "17") is None
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "scale_17.npz"]


def test_train_refuses_an_out_folder_holding_other_files(world, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert train(world["data"], A, tmp_path, world["teachers"], "--scales", "17") == 2
    assert "notes.txt" in capsys.readouterr().err and (tmp_path / "notes.txt").read_text() == "mine"


def test_what_a_killed_run_left_beside_the_model_is_cleaned_on_the_next_run(world, tmp_path):
    out = tmp_path / "m"
    dead = tmp_path / f".m.staging-{2 ** 22 + 7}-abc"       # a pid above Linux's default max
    dead.mkdir()
    (dead / "scale_17.npz").write_bytes(b"x" * 1000)
    assert train(world["data"], A, out, world["teachers"], "--scales", "17") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_a_swap_killed_between_its_renames_gets_the_old_model_back(world, tmp_path):
    model = copy_model(world, "m_killed_swap")
    before = digest(model)
    limbo = model.parent / f".{model.name}.old-xyz"
    limbo.mkdir()
    model.rename(limbo / "x")                               # as os.rename(path, old) left it
    assert train(world["data"], A, model, world["only17"], "--scales", "17", "33", "--image-size", "36") == 2
    assert digest(model) == before and not limbo.exists()


@pytest.mark.parametrize("arg", ["--overwrite", None])
def test_teacher_refuses_to_start_over_a_finished_run_without_resume_or_overwrite(tmp_path, capsys, arg):
    out = tmp_path / "teacher_p17.npz"
    run = ["teacher", "--p", "17", "--out", out, "--iterations", "2", "--batch", "4", "--width",
           "0.25", "--n-images", "4", "--distill", "none", "--lambda-k", "0", "--lambda-m", "1",
           "--device", "cpu"]
    assert main(run) is None
    before = out.read_bytes(), out.with_suffix(".ckpt.npz").read_bytes()
    again = run + ["--seed", "5"] + ([arg] if arg else [])
    if arg is None:
        assert main(again) == 2
        err = capsys.readouterr().err
        assert "--resume" in err and "--overwrite" in err and str(out) in err
        assert (out.read_bytes(), out.with_suffix(".ckpt.npz").read_bytes()) == before
    else:
        assert main(again) is None
        assert json.loads(out.with_suffix(".json").read_text())["config"]["seed"] == 5


def test_a_teacher_whose_loss_becomes_nan_is_an_error_and_saves_nothing(tmp_path, capsys):
    out = tmp_path / "t.npz"
    code = main(["teacher", "--p", "17", "--out", out, "--iterations", "2", "--batch", "4",
                 "--width", "0.25", "--n-images", "4", "--distill", "none", "--lambda-k", "0",
                 "--lambda-m", "1", "--lr", "1e30", "--device", "cpu"])
    assert code == 2
    assert "--lr 1e+30" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_lr_nan_is_refused_by_name(world, tmp_path, capsys):
    assert train(world["data"], A, tmp_path / "m", world["teachers"], "--scales", "17", "--lr", "nan") == 2
    assert "--lr" in capsys.readouterr().err and not (tmp_path / "m").exists()


def test_a_diverging_lr_is_an_error_and_keeps_the_old_model(world, capsys):
    model = copy_model(world, "m_diverge")
    before = digest(model)
    assert train(world["data"], A, model, world["teachers"], "--scales", "17", "--lr", "1e30") == 2
    err = capsys.readouterr().err
    assert "--lr 1e+30" in err and "epoch 1" in err and "lower --lr" in err
    assert digest(model) == before


def test_a_nan_pixel_through_the_api_is_refused(rng):
    images = rng.random((2, 3, 20, 20)).astype(np.float32)
    images[1, 0, 3, 3] = np.nan
    with pytest.raises(ValueError, match=r"images \[1\] hold NaN"):
        students.train_students(PatchNet(17, width=0.25), images, n_students=1, epochs=1, log=print)


def test_nan_validation_statistics_are_refused():
    model = students.ScaleModel(PatchNet(17, width=0.25), [], np.zeros(128), np.ones(128))
    with pytest.raises(students.DivergedError, match="e_mean nan"):
        model.set_val_stats({"e_mean": np.nan, "e_std": 1.0, "v_mean": 0.0, "v_std": 1.0})


def test_evaluate_keeps_each_categorys_results_and_needs_consent_for_another_category(world, capsys):
    out = world["tmp"] / "eval_two"
    assert evaluate(world["data"], A, world["model"], out, "--no-figures") is None    # figures: below
    assert evaluate(world["data"], B, world["model"], out, "--no-figures") == 2
    err = capsys.readouterr().err
    assert "--allow-other-category" in err and repr(A) in err
    assert evaluate(world["data"], B, world["model"], out, "--allow-other-category", "--no-figures") is None
    assert json.loads((out / A / "metrics.json").read_text())["category"] == A
    assert json.loads((out / B / "metrics.json").read_text())["model_category"] == A


def test_evaluate_again_leaves_no_stale_maps_or_figures(world, tmp_path):
    import shutil
    data = tmp_path / "data"
    shutil.copytree(world["data"], data)
    out = tmp_path / "eval"
    assert evaluate(data, A, world["model"], out) is None
    defects = sorted(d.name for d in (data / A / "test").iterdir() if d.name != "good")
    gone = defects[0]
    shutil.rmtree(data / A / "test" / gone)
    shutil.rmtree(data / A / "ground_truth" / gone)
    assert evaluate(data, A, world["model"], out) is None
    assert not (out / A / "test" / gone).exists()
    assert not list((out / A / "figures").glob(f"{gone}_*.png"))
    assert (out / A / "figures" / "pro_curve.png").is_file()


@pytest.mark.parametrize("text, said", [("{not json", "not valid JSON"),
                                        ('{"category": "x", "scales": [17]}', "no 'image_size'"),
                                        ('{"category": "x", "scales": [17], "image_size": "32"}',
                                         "'image_size' must be a JSON int")])
def test_a_broken_model_json_is_named(world, capsys, text, said):
    model = copy_model(world, f"m_json_{abs(hash(text))}")
    (model / "model.json").write_text(text)
    assert evaluate(world["data"], A, model, world["tmp"] / "e_json") == 2
    err = capsys.readouterr().err
    assert said in err and "model.json" in err and "Traceback" not in err


def test_a_scale_file_under_another_scales_name_is_refused(world, capsys):
    model = copy_model(world, "m_renamed")
    (model / "scale_17.npz").rename(model / "scale_33.npz")
    info = json.loads((model / "model.json").read_text())
    info.update(scales=[33], image_size=36, teacher_sha256={"p33": info["teacher_sha256"]["p17"]})
    (model / "model.json").write_text(json.dumps(info))
    assert evaluate(world["data"], A, model, world["tmp"] / "e_renamed") == 2
    assert "scale_33.npz holds a p=17 model" in capsys.readouterr().err


def test_mu_of_the_wrong_length_is_refused_naming_the_file(world, tmp_path):
    scale = load_scale(scale_path(world["model"], 17))
    scale.mu = scale.mu[:-1]
    path = save_scale(scale, tmp_path)
    with pytest.raises(ValueError, match=r"scale_17.npz.*mu \(127,\)"):
        load_scale(path)


@pytest.mark.parametrize("size, scales", [("7", ["17"]), ("32", ["65"])])
def test_images_smaller_than_the_patch_are_refused(world, tmp_path, capsys, size, scales):
    args = ["train", "--data", world["data"], "--category", A, "--out", tmp_path / "m",
            "--teacher", world["teachers"], "--image-size", size, "--scales", *scales]
    assert main(args) == 2
    assert f"--image-size {size} is smaller than the patch of --scales {scales[-1]}" in capsys.readouterr().err


def test_one_student_reports_no_uncertainty_only_score(world, tmp_path):
    model = tmp_path / "m1"
    assert train(world["data"], A, model, world["teachers"], "--scales", "17", "--students", "1") is None
    assert evaluate(world["data"], A, model, tmp_path / "e", "--no-figures") is None
    p17 = json.loads((tmp_path / "e" / A / "metrics.json").read_text())["scales"]["p17"]
    assert p17["au_pro_uncertainty_only"] is None and "one student" in p17["note"]


@pytest.mark.parametrize("flag, value", [("--seed", "-1"), ("--student-width", "nan"),
                                         ("--image-size", "30000"), ("--student-width", "1e6"),
                                         ("--crop", "0"), ("--crop", "300")])
def test_impossible_settings_are_refused_by_name_before_any_work(world, tmp_path, capsys, flag, value):
    args = ["train", "--data", world["data"], "--category", A, "--out", tmp_path / "m",
            "--teacher", world["teachers"], "--scales", "17", "--device", "cpu", flag, value]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert flag in err and "Traceback" not in err and not (tmp_path / "m").exists()


def test_every_option_has_help_with_its_default_and_every_command_opens_with_an_example():
    ap = _parser()
    sub = next(a for a in ap._actions if a.dest == "command")
    for name, parser in sub.choices.items():
        text = parser.format_help()
        assert text.split("\n\n")[1].startswith(f"example:\n  ustudents {name}"), name
        for action in parser._actions:
            assert action.help, (name, action.dest)
            if action.default not in (None, False) and not action.required and action.dest != "help":
                assert "default" in parser._get_formatter()._get_help_string(action), (name, action.dest)


@pytest.mark.slow
def test_train_interrupted_anywhere_keeps_the_old_model_or_replaces_it_whole(world, monkeypatch):
    """Ctrl-C after k calls of the functions train goes through, k drawn from a seeded rng: the
    model folder is then either byte for byte the old one or a complete new one, and it scores
    the old figures whenever it is the old one."""
    import os
    import shutil
    model = copy_model(world, "m_property")
    old = digest(model)
    names = [(pipeline, "load_images"), (pipeline, "train_students"), (pipeline, "save_scale"),
             (pipeline, "write_json"), (students, "dense_forward"), (students, "regression"),
             (os, "rename"), (shutil, "rmtree")]
    calls = {"n": 0, "stop": None}

    def wrap(module, name):
        real = getattr(module, name)

        def counted(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == calls["stop"]:
                raise KeyboardInterrupt
            return real(*args, **kwargs)
        monkeypatch.setattr(module, name, counted)
    for module, name in names:
        wrap(module, name)
    run = lambda: train(world["data"], A, model, world["teachers"], "--scales", "17", "--seed", "1")
    assert run() is None
    total, new = calls["n"], digest(model)["scale_17.npz"]

    def state():                        # model.json holds timings: compare what they describe
        files = digest(model)
        if files == old:
            return "old"
        seed = json.loads((model / "model.json").read_text())["seed"] if "model.json" in files else None
        return "new" if (sorted(files), files["scale_17.npz"], seed) == (
            ["model.json", "scale_17.npz"], new, 1) else f"torn {files}"
    shutil.rmtree(model)
    shutil.copytree(world["model"], model)
    rng = np.random.default_rng(14)
    for k in rng.permutation(np.arange(1, total + 1)):        # every point, in a seeded order
        calls.update(n=0, stop=int(k))
        code = run()
        assert code in (None, 130)
        now = state()
        assert now == "new" if code is None else now in ("old", "new"), (k, now)   # new: Ctrl-C after the swap
        if now == "new":
            shutil.rmtree(model)
            shutil.copytree(world["model"], model)
    monkeypatch.undo()
    litter = lambda: [p.name for p in model.parent.iterdir() if p.name.startswith(f".{model.name}")]
    pipeline.clean_leftovers(model)                       # what the next train does first
    assert litter() == []
    again = world["tmp"] / "e_property"
    assert evaluate(world["data"], A, model, again, "--no-figures") is None
    assert json.loads((again / A / "metrics.json").read_text())["au_pro"] == world["metrics"]["au_pro"]
