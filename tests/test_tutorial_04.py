"""tutorials/04_anomaly_maps.py --quick makes its students, scores a test set, draws e, v, both."""
import math
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "tutorials" / "04_anomaly_maps.py"


def test_tutorial_04_quick_scores_inside_and_outside_the_defects(tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg", USTUDENTS_DEVICE="cpu")
    env.setdefault("OPENBLAS_NUM_THREADS", "1")     # tiny matrices; threads stall on a busy CPU
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--device", "cpu"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("# 04_anomaly_maps |") and "float32" in lines[0]
    assert lines[-1].startswith("mean inside / outside the defects: e~ ")
    pairs = [part.split()[-3::2] for part in lines[-1].split(": ", 1)[1].split(", ")]
    scores = [float(w) for pair in pairs for w in pair]
    assert len(scores) == 6 and all(math.isfinite(v) for v in scores)
    assert "figure: out/04_anomaly_maps.png" in done.stdout
    assert (tmp_path / "out" / "04_anomaly_maps.png").stat().st_size > 0
