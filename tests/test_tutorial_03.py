"""tutorials/03_students.py --quick trains a small ensemble, saves it, reports its losses."""
import math

import pytest

NAME = "03_students.py"


@pytest.mark.slow
def test_tutorial_03_quick_trains_and_saves_the_students(run_tutorial, tmp_path):
    lines = run_tutorial(NAME)
    out = "\n".join(lines)
    assert lines[0].startswith("# 03_students |") and "float32" in lines[0]
    assert lines[-1].startswith("students p=17: final regression loss ")
    losses = [float(w) for w in lines[-1].split("loss ")[1].split(" (")[0].split()]
    assert len(losses) == 2 and all(math.isfinite(v) and 0 < v < 128 * 2 for v in losses)
    assert (tmp_path / "out" / "quick" / "students" / "scale_17.npz").stat().st_size > 0
    assert "figure: out/03_students.png" in out
    assert (tmp_path / "out" / "03_students.png").stat().st_size > 0
