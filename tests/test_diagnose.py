"""A run whose loss blew up is `completed` with a `diverged` warning, decided from its history,
and `fit` shows the warning; healthy runs get none."""

from __future__ import annotations

import json
import math

import pytest
from conftest import CONFIGS
from typer.testing import CliRunner

from mlptrain.cli import app
from mlptrain.experiment.diagnose import training_warnings

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
