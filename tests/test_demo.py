"""`ustudents demo --quick`: the whole method on the shipped teacher, as a newcomer first runs it."""
import json

import pytest

from ustudents.cli import main


@pytest.mark.slow
def test_quick_demo_trains_evaluates_and_writes_its_tables(tmp_path, capsys, lane_device):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--device", lane_device]) is None
    results = json.loads((out / "results.json").read_text())
    assert list(results) == ["nut"]
    nut = results["nut"]
    assert nut["au_pro"] > 0.3                      # a random map scores about 0.15
    assert sorted(nut["au_pro_by_defect"]) == sorted(
        d.name for d in (out / "data" / "nut" / "test").iterdir() if d.name != "good")
    table = (out / "results.md").read_text()
    assert "| **mean** |" in table and "by defect type" in table
    assert table.strip() in capsys.readouterr().out
    assert (out / "eval" / "nut" / "figures" / "pro_curve.png").is_file()


@pytest.mark.slow
def test_quick_demo_with_two_scales_scores_each_and_their_mean(tmp_path, capsys, lane_device):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--scales", "17", "33", "--out", str(out), "--device", lane_device]) is None
    nut = json.loads((out / "results.json").read_text())["nut"]
    assert sorted(nut["scales"]) == ["p17", "p33"]
    assert json.loads((out / "models" / "nut" / "model.json").read_text())["scales"] == [17, 33]
    assert nut["au_pro"] > 0.3
    assert "scales [17, 33]" in capsys.readouterr().out


def test_demo_refuses_a_scale_outside_the_paper(tmp_path, capsys):
    assert main(["demo", "--quick", "--scales", "21", "--out", str(tmp_path / "demo")]) == 2
    assert "--scales: 21" in capsys.readouterr().err


def test_demo_names_a_missing_teacher_file(tmp_path, capsys):
    missing = tmp_path / "teacher_p17.npz"
    assert main(["demo", "--quick", "--teacher", str(missing), "--out", str(tmp_path / "demo")]) == 2
    assert f"--teacher {missing}" in capsys.readouterr().err
