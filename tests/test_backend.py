"""Device choice: USTUDENTS_DEVICE, the probe (one kernel, one matrix product), its messages
when the GPU cannot compute, precision, and out-of-memory messages."""
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from ustudents import backend

STAND_IN = str(Path(__file__).resolve().parent / "strict_cupy")


@pytest.fixture
def fresh_probe(monkeypatch):
    monkeypatch.setattr(backend, "_cupy_state", None)


def test_auto_falls_back_to_numpy_when_cupy_imports_but_the_first_allocation_fails(monkeypatch, fresh_probe):
    class CUDARuntimeError(RuntimeError):
        pass

    def arange(*args, **kwargs):
        raise CUDARuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")

    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(arange=arange, float32=np.float32))
    monkeypatch.setenv("USTUDENTS_DEVICE", "auto")
    assert backend.default_device() == "cpu"
    assert backend.xp_for() is np
    assert "no GPU: no GPU is visible" in backend.describe()
    with pytest.raises(RuntimeError, match="cudaErrorNoDevice"):
        backend.default_device("cuda")


def _probe_in_subprocess(fail):
    """What `cuda` and `auto` say when the stand-in fails as CuPy does (STRICT_CUPY_FAIL)."""
    code = ("from ustudents import backend\n"
            "print(backend.describe('auto'))\n"
            "backend.default_device('cuda')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([STAND_IN, os.environ.get("PYTHONPATH", "")]),
               STRICT_CUPY_FAIL=fail)
    env.pop("USTUDENTS_DEVICE", None)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


@pytest.mark.parametrize("fail, reason, fix", [
    ("nvrtc", "libnvrtc", "cupy-cuda12x[ctk]"),
    ("cublas", "libcublas", "cupy-cuda12x[ctk]"),
    ("driver", "cudaErrorInsufficientDriver", "update the driver"),
    ("busy", "cudaErrorDevicesUnavailable", "no GPU is free"),
    ("nodevice", "cudaErrorNoDevice", "no GPU is visible"),
])
def test_a_gpu_that_cannot_compute_is_explained_with_cupys_reason_and_the_fix(fail, reason, fix):
    done = _probe_in_subprocess(fail)
    header, error = done.stdout.strip(), done.stderr.strip().splitlines()[-1]
    assert header.startswith("numpy") and reason in header and fix in header   # auto: why it fell back
    assert "device 'cuda' was asked for" in error and reason in error and fix in error
    assert done.returncode != 0


def test_the_probe_runs_a_kernel_and_a_matrix_product_on_a_working_gpu():
    done = _probe_in_subprocess("")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("cupy ") and "fp32" in done.stdout


def test_cpu_setting_never_touches_cupy(monkeypatch, fresh_probe):
    monkeypatch.setenv("USTUDENTS_DEVICE", "cpu")
    assert backend.default_device() == "cpu"
    assert backend._cupy_state is None


def test_a_bad_device_setting_names_the_variable(monkeypatch):
    monkeypatch.setenv("USTUDENTS_DEVICE", "tpu")
    with pytest.raises(ValueError, match="USTUDENTS_DEVICE"):
        backend.default_device()


def test_precision_is_strict_fp32_unless_tf32_is_asked_for(monkeypatch, fresh_probe):
    assert backend.precision() == "fp32"                  # conftest: whatever the environment said
    monkeypatch.setenv("USTUDENTS_PRECISION", "tf32")
    monkeypatch.setitem(sys.modules, "cupy", None)        # import fails: the probe still sets the flag
    backend._probe_cupy()
    assert os.environ["CUPY_TF32"] == "1"
    monkeypatch.setenv("USTUDENTS_PRECISION", "bf16")
    with pytest.raises(ValueError, match="USTUDENTS_PRECISION"):
        backend.precision()
    os.environ["CUPY_TF32"] = "0"


def test_out_of_memory_is_told_in_one_line_with_what_to_lower():
    class OutOfMemoryError(MemoryError):
        pass

    err = OutOfMemoryError("Out of memory allocating 1,073,741,824 bytes (allocated so far: 0 bytes).")
    assert backend.is_out_of_memory(err) and not backend.is_out_of_memory(ValueError("x"))
    line = backend.out_of_memory_message(err, "--image-size or --batch")
    assert line.startswith("the GPU ran out") and line.endswith("lower --image-size or --batch")
    assert "\n" not in line


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
