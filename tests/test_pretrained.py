"""The shipped teachers: they load by default, in float32, and match their manifests."""
import hashlib
import json

import numpy as np
import pytest

from ustudents import models
from ustudents.models import WEIGHTS, pretrained


@pytest.mark.parametrize("p", [17, 33, 65])
def test_each_shipped_teacher_loads_in_float32_and_describes_a_patch(p):
    net = pretrained(p)
    assert net.p == p and net.width == 1.0 and net.out_dim == 128
    assert all(v.dtype == np.float32 for v in net.params.values())
    patch = np.random.default_rng(p).random((2, 3, p, p), dtype=np.float32)
    y, _ = net.forward(patch)
    assert y.shape == (2, 128, 1, 1) and np.isfinite(y).all()
    assert np.abs(y[0] - y[1]).max() > 0                    # different patches, different descriptors


@pytest.mark.parametrize("p", [17, 33, 65])
def test_each_manifest_names_the_file_it_describes(p):
    manifest = json.loads((WEIGHTS / f"teacher_p{p}.json").read_text())
    assert manifest["sha256"] == hashlib.sha256((WEIGHTS / f"teacher_p{p}.npz").read_bytes()).hexdigest()
    assert manifest["config"]["p"] == p and manifest["iterations"] > 0
    assert manifest["command"].startswith("ustudents teacher")
    assert {"trained", "untrained"} <= set(manifest["quality"])


def test_a_missing_shipped_teacher_says_how_to_make_one(monkeypatch, tmp_path):
    monkeypatch.setattr(models, "WEIGHTS", tmp_path)
    with pytest.raises(FileNotFoundError, match="ustudents teacher --p 33"):
        pretrained(33)
