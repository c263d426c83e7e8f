"""tutorials/01_teacher.py --quick trains a small teacher, saves it, measures it, draws its losses."""
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "tutorials" / "01_teacher.py"


def test_tutorial_01_quick_trains_saves_and_measures_a_teacher(tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg", USTUDENTS_DEVICE="cpu")
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--device", "cpu"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("# 01_teacher |")
    assert lines[-1].startswith("teacher p=17: retrieval ")
    assert (tmp_path / "out" / "teacher_p17.npz").stat().st_size > 0
    assert (tmp_path / "out" / "01_teacher.png").stat().st_size > 0
    scores = [float(w) for w in lines[-1].replace(",", " ").split() if w[:1].isdigit() and "." in w]
    assert len(scores) == 4 and all(0 <= v <= 1 for v in scores)
