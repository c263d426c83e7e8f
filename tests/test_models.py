"""PatchNet: the architectures of docs/method.md §2, PyTorch's default init, a float64 gradient
check of the whole network, and save/load with clear errors."""
import os

import numpy as np
import pytest

from ustudents.backend import asnumpy
from ustudents.gradcheck import directional_check, numerical_grad, rel_error
from ustudents.models import PatchNet, load, save

SMALL = dict(out_dim=8, width=0.0625)          # 8 and 16 hidden channels: fast on a CPU


def device_of(xp):
    return "cpu" if xp is np else "cuda"


@pytest.mark.parametrize("p", [17, 33, 65])
def test_each_network_maps_a_p_by_p_patch_to_one_descriptor(p, xp):
    net = PatchNet(p).to(device_of(xp))
    x = xp.asarray(np.random.default_rng(0).standard_normal((2, 3, p, p)), dtype=xp.float32)
    y, _ = net.forward(x)
    assert y.shape == (2, 128, 1, 1) and y.dtype == xp.float32


@pytest.mark.parametrize("p, convs, pools", [
    (17, [(128, 3, 6), (256, 128, 5), (256, 256, 5), (128, 256, 4)], 0),
    (33, [(128, 3, 5), (256, 128, 5), (256, 256, 2), (128, 256, 4)], 2),
    (65, [(128, 3, 5), (128, 128, 5), (256, 128, 5), (256, 256, 4), (128, 256, 1)], 3),
])
def test_layers_and_parameters_follow_the_design_table(p, convs, pools):
    net = PatchNet(p)
    weights = [v.shape for k, v in net.params.items() if k.endswith(".w")]
    assert weights == [(f, c, k, k) for f, c, k in convs]
    assert list(net.params)[:2] == ["conv1.w", "conv1.b"]
    assert net.strides == [2] * pools
    kinds = [layer.kind for layer in net.layers]
    assert kinds.count("lrelu") == len(convs) - 1 and kinds[-1] == "conv"   # none on the descriptor


def test_width_scales_the_hidden_channels_but_not_the_descriptor():
    net = PatchNet(65, out_dim=32, width=0.25)
    assert [v.shape[0] for k, v in net.params.items() if k.endswith(".w")] == [32, 32, 64, 64, 32]


def test_init_is_pytorchs_default_uniform_bound_drawn_from_the_seed():
    net = PatchNet(33)
    for k, v in net.params.items():
        w = net.params[k.replace(".b", ".w")]
        bound = 1 / np.sqrt(np.prod(w.shape[1:]))                 # 1/sqrt(fan_in)
        assert v.dtype == np.float32 and np.abs(v).max() <= bound
        if v.size > 10000:                                          # U(-b, b) has std b/sqrt(3)
            assert abs(v.std() / (bound / np.sqrt(3)) - 1) < 0.02
    again, other = PatchNet(33, seed=0), PatchNet(33, seed=1)
    assert all(np.array_equal(net.params[k], again.params[k]) for k in net.params)
    assert not np.array_equal(net.params["conv1.w"], other.params["conv1.w"])


def test_forward_rejects_a_patch_of_the_wrong_size():
    with pytest.raises(ValueError, match=r"\(N, 3, 33, 33\)"):
        PatchNet(33, **SMALL).forward(np.zeros((1, 3, 17, 17), np.float32))
    with pytest.raises(ValueError, match="p must be one of"):
        PatchNet(32)


@pytest.mark.parametrize("p", [17, 33, 65])
def test_backward_matches_central_differences_in_all_directions(p, xp):
    rng = np.random.default_rng(p)
    net = PatchNet(p, seed=p, **SMALL).to(device_of(xp), dtype=np.float64)
    x = xp.asarray(rng.standard_normal((2, 3, p, p)))
    y, cache = net.forward(x)
    dy = xp.asarray(rng.standard_normal(y.shape))
    dx, grads = net.backward(dy, cache)
    assert list(grads) == list(net.params)
    params = list(net.params.values())
    err = directional_check(lambda: net.forward(x)[0], [x] + params, [dx] + list(grads.values()),
                            dy, n_dirs=4, h=1e-6)
    assert err < 1e-5
    last_b = params[-1]                                             # every element of one array
    assert rel_error(grads[list(net.params)[-1]],
                     numerical_grad(lambda v: net.forward(x)[0], last_b, dy)) < 1e-7


def test_save_then_load_gives_back_the_same_network(tmp_path):
    net = PatchNet(65, seed=3, **SMALL)
    path = tmp_path / "teacher.npz"
    save(net, path)
    back = load(path, p=65)
    assert (back.p, back.width, back.out_dim) == (65, 0.0625, 8)
    assert list(back.params) == list(net.params)
    for k, v in net.params.items():
        assert back.params[k].dtype == np.float32 and np.array_equal(back.params[k], v)
    x = np.random.default_rng(0).standard_normal((2, 3, 65, 65)).astype(np.float32)
    assert np.array_equal(back.forward(x)[0], net.forward(x)[0])


def test_save_replaces_an_old_file_and_leaves_no_temporary_behind(tmp_path):
    path = str(tmp_path / "net.npz")
    save(PatchNet(17, seed=0, **SMALL), path)
    save(PatchNet(17, seed=1, **SMALL), path)
    assert os.listdir(tmp_path) == ["net.npz"]
    second = PatchNet(17, seed=1, **SMALL).params["conv1.w"]
    assert np.array_equal(load(path).params["conv1.w"], second)


def test_a_network_on_the_device_saves_and_loads_onto_the_device(tmp_path, xp):
    net = PatchNet(17, **SMALL).to(device_of(xp))
    save(net, tmp_path / "n.npz")
    back = load(tmp_path / "n.npz", device=device_of(xp))
    assert type(back.params["conv1.w"]) is type(net.params["conv1.w"])
    assert np.array_equal(asnumpy(back.params["conv4.b"]), asnumpy(net.params["conv4.b"]))


def test_loading_the_wrong_p_names_the_file(tmp_path):
    path = tmp_path / "p17.npz"
    save(PatchNet(17, **SMALL), path)
    with pytest.raises(ValueError, match=r"p17\.npz.*expected a p=33 network.*p=17"):
        load(path, p=33)


def test_loading_mismatching_shapes_names_the_file_and_the_parameter(tmp_path):
    path = tmp_path / "bad.npz"
    save(PatchNet(33, **SMALL), path)
    with np.load(path) as f:
        arrays = dict(f)
    arrays["params/conv2.w"] = arrays["params/conv2.w"][:, :4]      # 4 input channels, not 8
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"bad\.npz.*conv2\.w has shape \(16, 4, 5, 5\)"):
        load(path)
    del arrays["params/conv2.w"]
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"bad\.npz.*do not match"):
        load(path)


def test_loading_something_else_fails_clearly(tmp_path):
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(ValueError, match=r"other\.npz.*not a PatchNet file"):
        load(other)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match=r"junk\.npz.*cannot read"):
        load(junk)
    newer = tmp_path / "newer.npz"
    save(PatchNet(17, **SMALL), newer)
    with np.load(newer) as f:
        arrays = dict(f, format_version=np.array(99))
    np.savez(newer, **arrays)
    with pytest.raises(ValueError, match=r"newer\.npz.*format version 99"):
        load(newer)
