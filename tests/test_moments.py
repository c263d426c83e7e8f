"""RunningMoments: the moments of a stream of batches equal those of the stacked values."""
import numpy as np
import pytest

from ustudents.backend import asnumpy, get_array_module
from ustudents.moments import RunningMoments


def test_running_moments_equal_the_stacked_mean_and_variance(rng):
    # a large offset: naive running sums of x and x² would lose the variance here
    batches = [1e6 + rng.standard_normal((n, 5, 3)) for n in (1, 4, 2, 7)]
    acc = RunningMoments()
    for b in batches:
        acc.update(b, axis=(0, 2))
    stacked = np.concatenate(batches)
    np.testing.assert_allclose(acc.mean, stacked.mean(axis=(0, 2)), rtol=1e-14)
    np.testing.assert_allclose(acc.var, stacked.var(axis=(0, 2)), rtol=1e-9)
    assert acc.n == stacked.size // 5


def test_running_moments_follow_the_data_onto_its_device(xp, rng):
    batches = [xp.asarray(rng.standard_normal((n, 4)).astype(np.float32)) for n in (3, 5)]
    acc = RunningMoments()
    for b in batches:
        acc.update(b, axis=0)
    stacked = np.concatenate([asnumpy(b) for b in batches]).astype(np.float64)   # (8, 4)
    assert get_array_module(acc.std) is xp and acc.std.dtype == np.float64
    np.testing.assert_allclose(asnumpy(acc.std), stacked.std(axis=0), rtol=1e-12)


def test_running_moments_without_values_say_so():
    with pytest.raises(ValueError, match="no values seen yet"):
        RunningMoments().var
