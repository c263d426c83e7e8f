"""The `ustudents` command end to end on tiny synthetic data, and its clear errors."""
import json

import numpy as np
import pytest
from PIL import Image

from ustudents.cli import main
from ustudents.models import PatchNet, save


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """make-data -> train -> evaluate, with a small untrained teacher: (data, model, eval) paths."""
    tmp = tmp_path_factory.mktemp("cli")
    data, model, out = tmp / "data", tmp / "model", tmp / "eval"
    assert main(["make-data", "--out", str(data), "--categories", "nut", "--n-train", "10",
                 "--n-test", "8", "--size", "48"]) is None
    (tmp / "teachers").mkdir()
    save(PatchNet(17, width=0.25, seed=0), tmp / "teachers" / "teacher_p17.npz")
    assert main(["train", "--data", str(data), "--category", "nut", "--out", str(model),
                 "--scales", "17", "--students", "2", "--epochs", "4", "--image-size", "32",
                 "--teacher", str(tmp / "teachers"), "--student-width", "0.25", "--lr", "3e-3",
                 "--device", "cpu"]) is None
    assert main(["evaluate", "--data", str(data), "--category", "nut", "--model", str(model),
                 "--out", str(out), "--device", "cpu"]) is None
    return data, model, out


def test_train_writes_one_model_file_per_scale(run):
    _, model, _ = run
    info = json.loads((model / "model.json").read_text())
    assert info["scales"] == [17] and (model / "scale_17.npz").is_file()


def test_evaluate_beats_a_random_map_and_reports_every_scale(run):
    _, _, out = run
    result = json.loads((out / "nut" / "metrics.json").read_text())
    for key in ("au_pro", "pixel_auroc", "image_auroc"):
        assert 0 <= result[key] <= 1 and key in result["scales"]["p17"]
    assert result["au_pro"] > 0.3               # a random map scores about 0.15
    assert result["timings"]["total_seconds"] > 0


def test_evaluate_reports_each_defect_type_and_each_score_alone(run):
    data, _, out = run
    result = json.loads((out / "nut" / "metrics.json").read_text())
    kinds = sorted(d.name for d in (data / "nut" / "test").iterdir() if d.name != "good")
    assert sorted(result["au_pro_by_defect"]) == kinds
    scale = result["scales"]["p17"]
    for key in ("au_pro_error_only", "au_pro_uncertainty_only"):
        assert 0 <= scale[key] <= 1
    assert all(0 <= v <= 1 for v in result["au_pro_by_defect"].values())


def test_evaluate_writes_float32_tiffs_at_the_original_size_in_the_official_layout(run):
    data, _, out = run
    tiffs = sorted((out / "nut" / "test").glob("*/*.tiff"))
    pngs = sorted((data / "nut" / "test").glob("*/*.png"))
    assert [t.relative_to(out / "nut" / "test").with_suffix("") for t in tiffs] == \
           [p.relative_to(data / "nut" / "test").with_suffix("") for p in pngs]
    with Image.open(tiffs[0]) as img:
        amap = np.asarray(img)
    assert amap.dtype == np.float32 and amap.shape == (48, 48)
    assert (out / "nut" / "figures" / "pro_curve.png").is_file()


def test_a_missing_data_folder_is_named_in_one_line(tmp_path, capsys):
    code = main(["train", "--data", str(tmp_path / "nowhere"), "--category", "x", "--out", str(tmp_path)])
    assert code == 2
    assert "nowhere" in capsys.readouterr().err


def test_a_scale_outside_the_paper_is_refused(tmp_path, capsys):
    code = main(["train", "--data", str(tmp_path), "--category", "x", "--out", str(tmp_path), "--scales", "20"])
    assert code == 2
    assert "--scales: 20" in capsys.readouterr().err


def test_a_missing_category_lists_the_ones_that_exist(run, tmp_path, capsys):
    data, _, _ = run
    code = main(["train", "--data", str(data), "--category", "carpet", "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "carpet" in err and "nut" in err


def test_teacher_writes_a_loadable_net_and_a_manifest_with_every_setting(tmp_path):
    out = tmp_path / "teacher_p17.npz"
    assert main(["teacher", "--p", "17", "--out", str(out), "--iterations", "2", "--batch", "4",
                 "--width", "0.25", "--n-images", "4", "--distill", "none", "--lambda-k", "0",
                 "--lambda-m", "1", "--lambda-c", "0.5", "--lr", "1e-3", "--seed", "3",
                 "--device", "cpu"]) is None
    manifest = json.loads(out.with_suffix(".json").read_text())
    config = manifest["config"]
    assert (config["lr"], config["lambda_m"], config["lambda_c"], config["seed"]) == (1e-3, 1.0, 0.5, 3)
    assert manifest["command"].startswith("ustudents teacher --p 17")
    from ustudents.models import load
    net = load(out, p=17)
    assert net.forward(np.zeros((1, 3, 17, 17), np.float32))[0].shape == (1, 128, 1, 1)


def test_teacher_command_defaults_are_the_teacher_configs():
    """The parser takes them from TeacherConfig; this keeps it so."""
    from dataclasses import asdict

    from ustudents.cli import _parser
    from ustudents.teacher import TeacherConfig
    args = vars(_parser().parse_args(["teacher", "--out", "t.npz"]))
    config = asdict(TeacherConfig())
    shared = set(args) & set(config)
    assert {"lambda_k", "lambda_m", "lambda_c", "margin", "lr", "batch", "iterations", "p"} <= shared
    assert {k: args[k] for k in shared} == {k: config[k] for k in shared}


def test_teacher_resume_trains_on_and_refuses_a_changed_setting(tmp_path, capsys):
    out = tmp_path / "teacher_p17.npz"
    common = ["--out", str(out), "--batch", "4", "--device", "cpu"]
    assert main(["teacher", "--p", "17", "--iterations", "2", "--width", "0.25", "--n-images", "4",
                 "--distill", "none", "--lambda-k", "0", "--lambda-m", "1", *common]) is None
    ckpt = out.with_suffix(".ckpt.npz")
    assert main(["teacher", "--resume", str(ckpt), "--iterations", "3", *common]) is None
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert manifest["config"]["p"] == 17 and manifest["iterations"] == 3
    assert [(r["first_iteration"], r["last_iteration"]) for r in manifest["runs"]] == [(1, 2), (3, 3)]
    assert main(["teacher", "--resume", str(ckpt), "--iterations", "5", "--lambda-m", "0", *common]) == 2
    err = capsys.readouterr().err
    assert "lambda_m: 1.0 there, 0.0 here" in err and "Traceback" not in err


def test_teacher_takes_the_dense_recipe_from_the_command_line(tmp_path):
    out = tmp_path / "dense_p17.npz"
    assert main(["teacher", "--p", "17", "--recipe", "dense", "--crops", "2", "--crop-size", "12",
                 "--iterations", "2", "--width", "0.25", "--n-images", "4", "--distill", "none",
                 "--lambda-k", "0", "--lambda-m", "1", "--batch", "8", "--out", str(out),
                 "--device", "cpu"]) is None
    config = json.loads(out.with_suffix(".json").read_text())["config"]
    assert (config["recipe"], config["crops"], config["crop_size"]) == ("dense", 2, 12)
