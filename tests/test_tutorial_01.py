"""tutorials/01_teacher.py --quick trains a small teacher, saves it, measures it, draws its losses."""
import pytest

NAME = "01_teacher.py"


@pytest.mark.slow
def test_tutorial_01_quick_trains_saves_and_measures_a_teacher(run_tutorial, tmp_path):
    lines = run_tutorial(NAME)
    assert lines[0].startswith("# 01_teacher |")
    assert lines[-1].startswith("teacher p=17: retrieval ")
    assert (tmp_path / "out" / "teacher_p17.npz").stat().st_size > 0
    assert (tmp_path / "out" / "01_teacher.png").stat().st_size > 0
    scores = [float(w) for w in lines[-1].replace(",", " ").split() if w[:1].isdigit() and "." in w]
    assert len(scores) == 4 and all(0 <= v <= 1 for v in scores)
