"""A run whose loss blew up is `completed` with a `diverged` warning, decided from its history,
and one that scores below chance with a `below chance` warning; `fit` shows them; healthy runs
get none."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import CONFIGS
from typer.testing import CliRunner

from mlptrain.cli import app
from mlptrain.data import Dataset
from mlptrain.experiment.diagnose import below_chance, run_warnings, training_warnings

runner = CliRunner()


def history(*losses):
    return [{"epoch": i + 1, "train_loss": v} for i, v in enumerate(losses)]


@pytest.mark.parametrize("losses, classes", [
    ((0.35, 0.12, 0.05), 10),  # a falling loss
    ((2.4, 2.3), 10),  # stuck at chance: poor, but not diverged
    ((0.6, 0.7, 0.8), 2),  # noisy but within reason
    ((), 10),  # no epoch finished
])
def test_healthy_histories_have_no_warning(losses, classes):
    assert training_warnings(history(*losses), classes) == []


def test_a_loss_far_above_chance_is_diverged():
    (warning,) = training_warnings(history(4e19, 3.9e19), 10)
    assert warning.startswith("diverged: ") and "optimizer.lr" in warning
    assert f"{math.log(10):.3g}" in warning


def test_a_loss_that_rose_is_diverged():
    (warning,) = training_warnings(history(0.2, 0.25, 0.5), 10)
    assert "rose from 0.2 (epoch 1) to 0.5 (epoch 3)" in warning


def test_a_real_diverged_fit_completes_with_a_warning(tmp_path):
    args = ["fit", str(CONFIGS / "mnist.toml"), "--runs-dir", str(tmp_path), "--set",
            "optimizer.lr=1000", "--set", "data.limit=2000", "--set", "train.epochs=2",
            "--set", "model.hidden=16", "--set", "report.plots=false"]
    result = runner.invoke(app, args + ["--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["status"] == "completed"  # the vocabulary is unchanged
    assert len(summary["warnings"]) == 1 and summary["warnings"][0].startswith("diverged: ")
    panel = runner.invoke(app, args)
    assert panel.exit_code == 0, panel.output
    assert "1 warning" in panel.stdout and "diverged:" in panel.stdout
    healthy = runner.invoke(app, args[:4] + ["--set", "optimizer.lr=0.1"] + args[6:] + ["--json"])
    assert json.loads(healthy.stdout.strip().splitlines()[-1])["warnings"] == []


def labelled(y_train, y_test, name="xor", scaler=None) -> Dataset:
    """A dataset of these labels (the features are not read)."""
    X = lambda y: np.zeros((len(y), 1))  # noqa: E731
    return Dataset(name, X(y_train), np.array(y_train), X([]), np.zeros(0, np.int64),
                   X(y_test), np.array(y_test), 3, (1,), scaler=scaler)


def test_an_accuracy_below_the_majority_class_rate_is_below_chance():
    # class 2 is the training split's most common, and 60% of the test set
    data = labelled([2] * 50 + [0] * 30 + [1] * 20, [2] * 600 + [0] * 300 + [1] * 100)
    (warning,) = below_chance({"test_accuracy": 0.40, "val_accuracy": None}, data)
    assert warning.startswith("below chance: the test accuracy 40.00% is below the 60.00% of "
                              "always answering class 2")
    # 1/3 would let 40% pass; within the noise of 1,000 samples (2 x 1.5%) is no warning
    assert below_chance({"test_accuracy": 0.575}, data) == []
    assert below_chance({"test_accuracy": 0.65}, data) == []


def test_without_a_test_split_the_val_accuracy_is_judged():
    data = Dataset("xor", np.zeros((4, 1)), np.array([1, 1, 1, 0]), np.zeros((100, 1)),
                   np.array([1] * 100), np.zeros((0, 1)), np.zeros(0, np.int64), 2, (1,))
    (warning,) = below_chance({"test_accuracy": None, "val_accuracy": 0.5}, data)
    assert "the val accuracy 50.00% is below the 100.00%" in warning


def test_unstandardized_user_features_are_named_as_a_cause():
    data = labelled([0, 1, 2, 2], [2] * 100, name="npz")
    final = {"test_accuracy": 0.1}
    (warning,) = run_warnings(history(1.0, 0.9), final, data)
    assert warning.startswith("below chance") and "set [data] standardize = true" in warning
    (diverged,) = run_warnings(history(2.0, 1e6), final, data)  # one warning: the loss's
    assert diverged.startswith("diverged:") and "standardize = true" in diverged


def test_a_real_run_below_chance_completes_with_a_warning(tmp_path):
    # three epochs leave XOR's net worse than always answering one class (29.6% here)
    args = ["fit", str(CONFIGS / "xor.toml"), "--runs-dir", str(tmp_path), "--set",
            "train.epochs=3", "--set", "report.plots=false"]
    result = runner.invoke(app, args + ["--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["final"]["test_accuracy"] < 0.4
    (warning,) = summary["warnings"]
    assert warning.startswith("below chance: the test accuracy")
    panel = runner.invoke(app, args)
    assert "1 warning" in panel.stdout and "below chance" in panel.stdout
