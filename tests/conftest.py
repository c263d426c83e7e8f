"""Shared fixtures: the `xp` fixture runs a test on NumPy, and on CuPy where a GPU is usable."""
import numpy as np
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
