"""Shared fixtures: the `xp` fixture runs a test on NumPy, and on CuPy where a GPU is usable."""
import os

# The tests multiply small matrices; one BLAS thread is as fast for them and, unlike two, does
# not stall when another job shares the CPU. Set before NumPy loads OpenBLAS; a caller's
# setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest

from ustudents.backend import cupy_available, xp_for

BACKENDS = ["numpy", "cupy"]


@pytest.fixture(params=BACKENDS)
def xp(request):
    """The array module to run the test on; the cupy case is skipped without CuPy and a GPU."""
    if request.param == "numpy":
        return np
    if not cupy_available():
        pytest.skip("CuPy with a usable GPU is not available")
    return xp_for("cuda")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def run_tutorial(tmp_path):
    """run_tutorial('0N_name.py') runs a tutorial with --quick on the CPU in tmp_path (its out/
    lands there), asserts it exited 0 and returns its stdout lines."""
    import subprocess
    import sys
    from pathlib import Path

    def run(name):
        script = Path(__file__).resolve().parents[1] / "tutorials" / name
        env = dict(os.environ, MPLBACKEND="Agg", USTUDENTS_DEVICE="cpu")
        env.setdefault("OPENBLAS_NUM_THREADS", "1")     # tiny matrices; threads stall on a busy CPU
        done = subprocess.run([sys.executable, str(script), "--quick", "--device", "cpu"], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()
    return run
