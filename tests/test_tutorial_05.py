"""tutorials/05_evaluation.py --quick reproduces the toy AU-PRO and scores real maps three ways."""
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "tutorials" / "05_evaluation.py"


def test_tutorial_05_quick_explains_pro_and_prints_three_scores(tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg", USTUDENTS_DEVICE="cpu")
    env.setdefault("OPENBLAS_NUM_THREADS", "1")     # tiny matrices; threads stall on a busy CPU
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--device", "cpu"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("# 05_evaluation |") and "float32" in lines[0]
    assert "toy: AU-PRO(0.3) by hand 0.98456790, metrics.au_pro 0.98456790" in done.stdout
    assert lines[-1].startswith("AU-PRO(0.3) ")
    scores = [float(part.split()[-1]) for part in lines[-1].split(" | ")]
    assert len(scores) == 3 and all(0 <= v <= 1 for v in scores)
    assert "figure: out/05_evaluation.png" in done.stdout
    assert (tmp_path / "out" / "05_evaluation.png").stat().st_size > 0
