"""tutorials/02_dense.py --quick runs from any folder, prints its last line, saves its figure."""
import pytest


@pytest.mark.slow
def test_tutorial_02_quick_runs_and_saves_its_figure(run_tutorial, tmp_path):
    lines = run_tutorial("02_dense.py")
    assert lines[0].startswith("# 02_dense |") and "float32" in lines[0]
    assert "figure: out/02_dense.png" in lines
    assert lines[-1].startswith("dense == patch by patch: max |difference|")
    assert float(lines[-1].split("|difference| ")[1].split()[0]) < 1e-5
    assert (tmp_path / "out" / "02_dense.png").stat().st_size > 0
