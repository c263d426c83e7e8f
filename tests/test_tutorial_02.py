"""tutorials/02_dense.py --quick runs from any folder, prints its last line, saves its figure."""
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "tutorials" / "02_dense.py"


def test_tutorial_02_quick_runs_and_saves_its_figure(tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg", USTUDENTS_DEVICE="cpu")
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--device", "cpu"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("# 02_dense |") and "float32" in lines[0]
    assert lines[-1].startswith("dense == patch by patch: max |difference|")
    assert float(lines[-1].split("|difference| ")[1].split()[0]) < 1e-5
    assert "figure: out/02_dense.png" in done.stdout
    assert (tmp_path / "out" / "02_dense.png").stat().st_size > 0
