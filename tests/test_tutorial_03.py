"""tutorials/03_students.py --quick trains a small ensemble, saves it, reports its losses."""
import math
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "tutorials" / "03_students.py"


def test_tutorial_03_quick_trains_and_saves_the_students(tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg", USTUDENTS_DEVICE="cpu")
    env.setdefault("OPENBLAS_NUM_THREADS", "1")     # tiny matrices; threads stall on a busy CPU
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--device", "cpu"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("# 03_students |") and "float32" in lines[0]
    assert lines[-1].startswith("students p=17: final regression loss ")
    losses = [float(w) for w in lines[-1].split("loss ")[1].split(" (")[0].split()]
    assert len(losses) == 2 and all(math.isfinite(v) and 0 < v < 128 * 2 for v in losses)
    assert (tmp_path / "out" / "quick" / "students" / "scale_17.npz").stat().st_size > 0
    assert "figure: out/03_students.png" in done.stdout
    assert (tmp_path / "out" / "03_students.png").stat().st_size > 0
