"""Device choice: USTUDENTS_DEVICE, and the fallback when CuPy imports but no GPU answers."""
import sys
import types

import numpy as np
import pytest

from ustudents import backend


@pytest.fixture
def fresh_probe(monkeypatch):
    monkeypatch.setattr(backend, "_cupy_state", None)


def test_auto_falls_back_to_numpy_when_cupy_imports_but_the_first_allocation_fails(monkeypatch, fresh_probe):
    class CUDARuntimeError(RuntimeError):
        pass

    def zeros(*args, **kwargs):
        raise CUDARuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")

    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(zeros=zeros, float32=np.float32))
    monkeypatch.setenv("USTUDENTS_DEVICE", "auto")
    assert backend.default_device() == "cpu"
    assert backend.xp_for() is np
    with pytest.raises(RuntimeError, match="no GPU is usable"):
        backend.default_device("cuda")


def test_cpu_setting_never_touches_cupy(monkeypatch, fresh_probe):
    monkeypatch.setenv("USTUDENTS_DEVICE", "cpu")
    assert backend.default_device() == "cpu"
    assert backend._cupy_state is None


def test_a_bad_device_setting_names_the_variable(monkeypatch):
    monkeypatch.setenv("USTUDENTS_DEVICE", "tpu")
    with pytest.raises(ValueError, match="USTUDENTS_DEVICE"):
        backend.default_device()


def test_to_device_cpu_moves_every_array_of_a_dict_to_the_host():
    moved = backend.to_device({"w": [1.0, 2.0], "b": np.zeros(2, np.float32)}, "cpu")
    assert all(isinstance(v, np.ndarray) for v in moved.values())
    assert moved["b"].dtype == np.float32
    assert backend.get_array_module(moved["w"]) is np


def test_to_device_cuda_gives_gpu_arrays_that_asnumpy_brings_back():
    if not backend.cupy_available():
        pytest.skip("CuPy with a usable GPU is not available")
    x = np.arange(6, dtype=np.float32)
    g = backend.to_device(x, "cuda")
    assert backend.is_gpu_array(g)
    np.testing.assert_array_equal(backend.asnumpy(g), x)
