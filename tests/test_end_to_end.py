"""The README's main command, for real: MNIST to >= 98% test accuracy, then eval agrees."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.slow
def test_readme_mnist_fit_reaches_98_percent_and_eval_agrees(tmp_path):
    env = {**os.environ, "MLPTRAIN_RUNS_DIR": str(tmp_path / "runs")}
    mlptrain = shutil.which("mlptrain")
    command = [mlptrain] if mlptrain else [sys.executable, "-m", "mlptrain"]
    fit = subprocess.run([*command, "fit", "configs/mnist.toml"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert fit.returncode == 0, fit.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_completed"] == 15
    assert summary["final"]["test_accuracy"] >= 0.98, summary["final"]
    assert "test accuracy" in fit.stdout and run_dir.name in fit.stdout
    evaluated = subprocess.run([*command, "eval", run_dir.name, "--json"], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)  # stdout holds the JSON and nothing else
    assert report["accuracy"] == summary["final"]["test_accuracy"]
    assert report["samples"] == 10000
