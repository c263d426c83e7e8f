"""tutorials/04_anomaly_maps.py --quick makes its students, scores a test set, draws e, v, both."""
import math

import pytest

NAME = "04_anomaly_maps.py"


@pytest.mark.slow
def test_tutorial_04_quick_scores_inside_and_outside_the_defects(run_tutorial, tmp_path):
    lines = run_tutorial(NAME)
    out = "\n".join(lines)
    assert lines[0].startswith("# 04_anomaly_maps |") and "float32" in lines[0]
    assert lines[-1].startswith("mean inside / outside the defects: e~ ")
    pairs = [part.split()[-3::2] for part in lines[-1].split(": ", 1)[1].split(", ")]
    scores = [float(w) for pair in pairs for w in pair]
    assert len(scores) == 6 and all(math.isfinite(v) for v in scores)
    assert "figure: out/04_anomaly_maps.png" in out
    assert (tmp_path / "out" / "04_anomaly_maps.png").stat().st_size > 0
