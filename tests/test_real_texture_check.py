"""scripts/real_texture_check.py: the table over several seeds, and bad settings refused by name.
(The check itself trains students; the photo check's data and baseline are tested in
test_photocheck.py.)"""
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "real_texture_check.py"


@pytest.fixture(scope="module")
def check():
    spec = importlib.util.spec_from_file_location("real_texture_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_cell_is_the_mean_over_the_seeds_with_their_range(check):
    baseline = {0: {"a": {"au_pro": 0.40}, "b": {"au_pro": 0.60}},
                7: {"a": {"au_pro": 0.50}, "b": {"au_pro": 0.70}}}
    students = {0: {"t": {"a": {"au_pro": 0.30}, "b": {"au_pro": 0.90}}},
                7: {"t": {"a": {"au_pro": 0.10}, "b": {"au_pro": 0.50}}}}
    rows = check.table(["a", "b"], baseline, students, ["t"]).splitlines()
    assert rows[2] == "| a | 0.450 (0.400-0.500) | 0.200 (0.100-0.300) |"
    assert rows[3] == "| b | 0.650 (0.600-0.700) | 0.700 (0.500-0.900) |"
    # the mean row: each seed's mean over the categories first, then their mean and range
    assert rows[4] == "| **mean** | **0.550 (0.500-0.600)** | **0.450 (0.300-0.600)** |"


def test_one_seed_gives_plain_figures(check):
    rows = check.table(["a"], {3: {"a": {"au_pro": 0.25}}}, {3: {"t": {"a": {"au_pro": 0.75}}}},
                       ["t"]).splitlines()
    assert rows[2] == "| a | 0.250 | 0.750 |"


@pytest.mark.parametrize("argv, words", [
    (["--seeds", "1", "1"], "--seeds 1 1"),
    (["--seeds", "-2"], "--seeds -2"),
    (["--n-test", "2"], "--n-test 2"),
    (["--teacher", "bad name=random"], "--teacher bad name=random"),
])
def test_bad_settings_are_refused_by_name(check, tmp_path, capsys, argv, words):
    with pytest.raises(SystemExit) as stop:
        check.main(["--photos", "x.jpg", "--out", str(tmp_path)] + argv)
    assert stop.value.code == 2
    assert words in capsys.readouterr().err
    assert not any(tmp_path.iterdir())             # refused before any work
