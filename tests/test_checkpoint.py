"""A checkpoint holds arrays and JSON only, and a file that is not one is refused by name."""
import numpy as np
import pytest

from ustudents.checkpoint import load_run, restore, save_run
from ustudents.models import PatchNet, save
from ustudents.optim import Adam


def test_a_saved_run_restores_parameters_adam_and_the_random_state(tmp_path):
    params = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    adam = Adam(lr=0.1)
    adam.step(params, {"w": np.ones((2, 3), np.float32)})
    rng = np.random.default_rng(5)
    rng.normal(size=3)
    save_run(tmp_path / "c.npz", params, adam, rng, {"iteration": 1}, {"mean": np.zeros(2)})
    want_next = rng.normal(size=4)

    run = load_run(tmp_path / "c.npz")
    fresh, fresh_adam, fresh_rng = {"w": np.zeros((2, 3), np.float32)}, Adam(lr=0.1), np.random.default_rng(0)
    restore(run, fresh, fresh_adam, fresh_rng, np)
    np.testing.assert_array_equal(fresh["w"], params["w"])
    assert fresh_adam.t == 1 and np.array_equal(fresh_adam.v["w"], adam.v["w"])
    np.testing.assert_array_equal(fresh_rng.normal(size=4), want_next)
    assert run.record == {"iteration": 1} and run.arrays["mean"].shape == (2,)


def test_a_model_file_is_no_checkpoint(tmp_path):
    save(PatchNet(17, width=0.25), tmp_path / "net.npz")
    with pytest.raises(ValueError, match="net.npz: not a training checkpoint"):
        load_run(tmp_path / "net.npz")


def test_a_parameter_of_another_shape_is_named(tmp_path):
    adam, rng = Adam(), np.random.default_rng(0)
    save_run(tmp_path / "c.npz", {"w": np.zeros(3, np.float32)}, adam, rng, {})
    with pytest.raises(ValueError, match="'w' has shape \\(3,\\)"):
        restore(load_run(tmp_path / "c.npz"), {"w": np.zeros(4, np.float32)}, adam, rng, np)


def test_a_truncated_checkpoint_is_named_not_a_zip_traceback(tmp_path):
    save_run(tmp_path / "c.npz", {"w": np.zeros(3, np.float32)}, Adam(), np.random.default_rng(0), {})
    data = (tmp_path / "c.npz").read_bytes()
    (tmp_path / "c.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="c.npz: cannot read it as a .npz file"):
        load_run(tmp_path / "c.npz")
