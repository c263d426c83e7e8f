"""Tests for ustudents.viz: every figure lands as a PNG that Pillow opens, and nothing else."""
import os

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from ustudents.metrics import pro_curve, roc_curve
from ustudents.viz import save_anomaly_figure, save_pro_figure, save_roc_figure, save_score_figure


def assert_png(path, folder):
    assert os.path.getsize(path) > 0
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.size[0] > 0 and img.size[1] > 0
    assert os.listdir(folder) == [os.path.basename(path)]  # the temporary file was renamed
    assert plt.get_fignums() == []                          # the figure was closed


@pytest.fixture
def sample(rng):
    image = rng.random((24, 32, 3))
    mask = np.zeros((24, 32), dtype=bool)
    mask[5:10, 8:14] = True
    amap = rng.random((24, 32)) + 2.0 * mask
    return image, mask, amap


@pytest.mark.parametrize("layout", ["hwc", "chw", "gray"])
def test_anomaly_figure_writes_a_png(sample, tmp_path, layout):
    image, mask, amap = sample
    image = {"hwc": image, "chw": image.transpose(2, 0, 1), "gray": image.mean(axis=2)}[layout]
    path = str(tmp_path / "anomaly.png")
    assert save_anomaly_figure(path, image, mask, amap, title="a test") == path
    assert_png(path, tmp_path)


def test_anomaly_figure_accepts_no_mask(sample, tmp_path):
    image, _, amap = sample
    path = save_anomaly_figure(str(tmp_path / "good.png"), image, None, amap)
    assert_png(path, tmp_path)


def test_anomaly_figure_rejects_a_map_of_another_size(sample, tmp_path):
    image, mask, _ = sample
    with pytest.raises(ValueError, match="resize"):
        save_anomaly_figure(str(tmp_path / "x.png"), image, mask, np.zeros((8, 8)))
    assert plt.get_fignums() == []


def test_score_figure_writes_a_png(sample, tmp_path):
    image, mask, amap = sample
    panels = {"error": amap, "uncertainty": amap ** 2, "combined": amap + mask}
    path = save_score_figure(str(tmp_path / "scores.png"), image, panels, title="scores")
    assert_png(path, tmp_path)


def test_pro_figure_writes_a_png(sample, tmp_path):
    _, mask, amap = sample
    fprs, pros = pro_curve([amap], [mask])
    path = save_pro_figure(str(tmp_path / "pro.png"), fprs, pros, limit=0.3, label="test")
    assert_png(path, tmp_path)


def test_roc_figure_writes_a_png(rng, tmp_path):
    fprs, tprs = roc_curve(rng.random(20), np.arange(20) % 2)
    path = save_roc_figure(str(tmp_path / "sub" / "roc.png"), fprs, tprs, auc=0.5)
    assert_png(path, tmp_path / "sub")
