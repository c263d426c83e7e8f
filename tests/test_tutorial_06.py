"""tutorials/06_multiscale.py --quick scores p = 17, p = 33 and their mean, and draws the maps."""
import pytest

NAME = "06_multiscale.py"


@pytest.mark.slow
def test_tutorial_06_quick_scores_each_scale_and_the_multiscale_map(run_tutorial, tmp_path):
    lines = run_tutorial(NAME)
    out = "\n".join(lines)
    assert lines[0].startswith("# 06_multiscale |") and "float32" in lines[0]
    assert lines[-1].startswith("AU-PRO(0.3): p=17 ")
    parts = lines[-1].split(": ", 1)[1].split(" | ")
    assert [part.rsplit(" ", 1)[0] for part in parts] == ["p=17", "p=33", "multi-scale"]
    assert all(0 <= float(part.rsplit(" ", 1)[1]) <= 1 for part in parts)
    for p in (17, 33):
        assert (tmp_path / "out" / "quick" / "students" / f"scale_{p}.npz").stat().st_size > 0
    assert "figure: out/06_multiscale.png" in out
    assert (tmp_path / "out" / "06_multiscale.png").stat().st_size > 0
