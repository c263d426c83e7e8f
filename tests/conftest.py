"""Shared fixtures: the `xp` fixture runs a test on NumPy, and on CuPy where a GPU is usable.

The strict GPU lane: with USTUDENTS_STRICT_CUPY=1, tests/strict_cupy (a NumPy-backed stand-in
for CuPy that refuses host/device mixing as CuPy does) is imported as `cupy`, here and in every
subprocess the tests start, and USTUDENTS_DEVICE defaults to cuda. Then every path that asks
for the default device (the CLI, the demo, the pipeline, the tutorials) runs "on the GPU", and
the `xp` fixture runs its tests on the stand-in only (the plain run covers NumPy).

    USTUDENTS_STRICT_CUPY=1 python -m pytest -q        # what .ci/run does after the plain run
"""
import os
import sys
from pathlib import Path

# The tests multiply small matrices; one BLAS thread is as fast for them and, unlike two, does
# not stall when another job shares the CPU. Set before NumPy loads OpenBLAS; a caller's
# setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# Strict float32 on a GPU whatever the environment says: no TF32 tensor cores in the tests.
os.environ["USTUDENTS_PRECISION"] = "fp32"
os.environ["CUPY_TF32"] = "0"
os.environ["NVIDIA_TF32_OVERRIDE"] = "0"

ROOT = Path(__file__).resolve().parents[1]
STRICT = os.environ.get("USTUDENTS_STRICT_CUPY") == "1"
if STRICT:
    stand_in = str(ROOT / "tests" / "strict_cupy")
    sys.path.insert(0, stand_in)
    os.environ["PYTHONPATH"] = os.pathsep.join([stand_in, str(ROOT)] + [
        p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    os.environ.setdefault("USTUDENTS_DEVICE", "cuda")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from ustudents.backend import cupy_available, xp_for  # noqa: E402

BACKENDS = ["cupy"] if STRICT else ["numpy", "cupy"]
LANE_DEVICE = "cuda" if STRICT else "cpu"     # where the user-facing paths run in this lane


@pytest.fixture(params=BACKENDS)
def xp(request):
    """The array module to run the test on; the cupy case is skipped without CuPy and a GPU."""
    if request.param == "numpy":
        return np
    if not cupy_available():
        pytest.skip("CuPy with a usable GPU is not available")
    return xp_for("cuda")


@pytest.fixture
def lane_device():
    """'cuda' in the strict lane (the stand-in), 'cpu' in the plain run: where CLI, pipeline
    and tutorial tests run their commands."""
    return LANE_DEVICE


@pytest.fixture
def strict_cupy():
    """The stand-in module with its counters cleared; the test is skipped outside the lane."""
    if not STRICT:
        pytest.skip("runs in the strict GPU lane (USTUDENTS_STRICT_CUPY=1)")
    import cupy
    cupy.counts.clear()
    return cupy


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def run_tutorial(tmp_path):
    """run_tutorial('0N_name.py') runs a tutorial with --quick in tmp_path (its out/ lands
    there), on the CPU or, in the strict lane, on the stand-in GPU; asserts it exited 0 and
    returns its stdout lines."""
    import subprocess

    def run(name):
        script = ROOT / "tutorials" / name
        env = dict(os.environ, MPLBACKEND="Agg", USTUDENTS_DEVICE=LANE_DEVICE)
        done = subprocess.run([sys.executable, str(script), "--quick", "--device", LANE_DEVICE],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()
    return run
