"""tutorials/01_teacher.py --quick trains a small teacher, saves it, measures it, draws its losses."""
import re

import pytest

NAME = "01_teacher.py"


@pytest.mark.slow
def test_tutorial_01_quick_trains_saves_and_measures_a_teacher(run_tutorial, tmp_path):
    lines = run_tutorial(NAME)
    assert lines[0].startswith("# 01_teacher |")
    assert lines[-1].startswith("teacher p=17: retrieval ")
    assert (tmp_path / "out" / "teacher_p17.npz").stat().st_size > 0
    assert (tmp_path / "out" / "01_teacher.png").stat().st_size > 0
    scores = [float(w) for w in re.findall(r"-?\d+\.\d+", lines[-1])]   # untrained -> trained
    assert len(scores) == 6 and all(0 <= v <= 1 for v in scores[:2] + scores[4:])
    assert all(v <= 1 for v in scores[2:4])                      # explained variance: <= 1, any sign
