"""tutorials/05_evaluation.py --quick reproduces the toy AU-PRO and scores real maps three ways."""
import pytest

NAME = "05_evaluation.py"


@pytest.mark.slow
def test_tutorial_05_quick_explains_pro_and_prints_three_scores(run_tutorial, tmp_path):
    lines = run_tutorial(NAME)
    out = "\n".join(lines)
    assert lines[0].startswith("# 05_evaluation |") and "float32" in lines[0]
    assert "toy: AU-PRO(0.3) by hand 0.98456790, metrics.au_pro 0.98456790" in out
    assert lines[-1].startswith("AU-PRO(0.3) ")
    scores = [float(part.split()[-1]) for part in lines[-1].split(" | ")]
    assert len(scores) == 3 and all(0 <= v <= 1 for v in scores)
    assert "figure: out/05_evaluation.png" in out
    assert (tmp_path / "out" / "05_evaluation.png").stat().st_size > 0
