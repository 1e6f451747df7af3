"""The accuracy aids through the real command line: the shipped mnist-best config runs (briefly)
end to end, and misuse is a one-paragraph error, not a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import CONFIGS, ROOT


def mlptrain(*args, runs_dir):
    env = dict(os.environ, PYTHONPATH=str(ROOT), MLPTRAIN_RUNS_DIR=str(runs_dir))
    return subprocess.run([sys.executable, "-m", "mlptrain", *map(str, args)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def test_mnist_best_runs_briefly_with_every_aid_and_eval_agrees(tmp_path):
    runs = tmp_path / "runs"
    result = mlptrain("fit", CONFIGS / "mnist-best.toml", "--set", "data.limit=2000",
                      "--set", "train.epochs=3", "--set", "model.hidden=[64, 64]",
                      "--set", "model.label_smoothing=0.05",
                      "--set", "schedule.momentum_low=0.85", runs_dir=runs)
    assert result.returncode == 0, result.stderr
    (path,) = runs.iterdir()
    summary = json.loads((path / "summary.json").read_text())
    assert summary["status"] == "completed"
    config = (path / "config.toml").read_text()
    for key in ("dropout_input", "max_norm", "augment_shift", "augment_rotate"):
        assert key in config
    assert summary["final"]["test_accuracy"] > 0.3  # chance is 0.1: it learned through every aid
    evaluated = mlptrain("eval", path.name, "--json", runs_dir=runs)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["accuracy"] == summary["final"]["test_accuracy"]


def test_augmenting_non_image_data_is_a_config_error(tmp_path):
    result = mlptrain("fit", CONFIGS / "xor.toml", "--set", "data.augment_shift=2",
                      runs_dir=tmp_path / "runs")
    assert result.returncode == 1
    assert "augment_shift = 2: augmentation distorts images" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_label_smoothing_with_a_sigmoid_loss_is_a_config_error(tmp_path):
    result = mlptrain("fit", CONFIGS / "xor.toml", "--set", "model.label_smoothing=0.1",
                      runs_dir=tmp_path / "runs")
    assert result.returncode == 1
    assert "label_smoothing = 0.1: label smoothing needs the softmax_cross_entropy loss" in \
        result.stderr
    assert "Traceback" not in result.stderr


def test_dropout_rate_out_of_range_names_the_key(tmp_path):
    result = mlptrain("fit", CONFIGS / "mnist-best.toml", "--set", "model.dropout_hidden=1.0",
                      runs_dir=tmp_path / "runs")
    assert result.returncode == 1
    assert "model.dropout_hidden" in result.stderr and "< 1.0" in result.stderr
