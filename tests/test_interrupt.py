"""Ctrl-C in a real process: the first finishes the batch, checkpoints and exits 130 with the
resume command; the second stops at once and leaves the last checkpoint valid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from conftest import CONFIGS, ROOT

# steps of a few hundred ms, so a signal surely lands inside one; 6 steps per epoch
BIG = ["--set", "data.limit=3000", "--set", "model.hidden=[1024, 1024]",
       "--set", "train.batch_size=500", "--set", "train.epochs=1000", "--progress", "never"]


def start(tmp_path, *args):
    env = {**os.environ, "MLPTRAIN_RUNS_DIR": str(tmp_path / "runs"), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "mlptrain", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(stream, prefix: str) -> str:
    for line in stream:
        if line.startswith(prefix):
            return line
    raise AssertionError(f"the process ended before printing {prefix!r}")


def only_run(tmp_path):
    (path,) = (tmp_path / "runs").iterdir()
    return path


@pytest.mark.slow  # two MNIST processes with a big network: about 10 s
def test_first_ctrl_c_checkpoints_and_prints_how_to_resume(tmp_path):
    process = start(tmp_path, "fit", CONFIGS / "mnist.toml", *BIG)
    wait_for(process.stdout, "epoch 1/")  # one epoch done, the second under way
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "finishing this batch" in err and "Traceback" not in err
    run_dir = only_run(tmp_path)
    assert f"mlptrain fit --resume {run_dir}" in err.replace("\n", " ")
    summary = json.loads((run_dir / "summary.json").read_text())
    checkpoint = np.load(run_dir / "checkpoint.npz")
    assert summary["status"] == "interrupted"
    assert summary["position"]["step"] == int(checkpoint["step"]) >= 6
    epochs = int(checkpoint["epoch"])
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == epochs >= 1
    assert not (run_dir / "weights.npz").exists()

    # the printed command continues from exactly that point, in the same directory
    again = start(tmp_path, "fit", "--resume", str(run_dir), "--progress", "never")
    line = wait_for(again.stdout, "  resuming after")
    position = int(checkpoint["position"])
    assert line.strip() == f"resuming after {epochs} epoch{'s' * (epochs != 1)}" + (
        f" and {position} step{'s' * (position != 1)} of epoch {epochs + 1}" if position else "")
    wait_for(again.stdout, f"epoch {epochs + 1}/")
    again.send_signal(signal.SIGINT)
    _, err = again.communicate(timeout=120)
    assert again.returncode == 130, err
    assert only_run(tmp_path) == run_dir
    resumed = json.loads((run_dir / "summary.json").read_text())
    assert resumed["resumed"] == 1 and resumed["epochs_completed"] >= epochs + 1
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) >= epochs + 1


@pytest.mark.slow  # about 6 s
def test_second_ctrl_c_stops_at_once_and_keeps_the_last_checkpoint(tmp_path):
    process = start(tmp_path, "fit", CONFIGS / "mnist.toml", *BIG)
    wait_for(process.stdout, "epoch 1/")
    process.send_signal(signal.SIGINT)
    wait_for(process.stderr, "Ctrl-C: finishing this batch")
    process.send_signal(signal.SIGINT)  # while that batch still runs
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "second Ctrl-C: stopping at once" in err and "Traceback" not in err
    run_dir = only_run(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    # the abort wrote no checkpoint of its own: the last one is the epoch end before it, whole
    checkpoint = np.load(run_dir / "checkpoint.npz")
    assert int(checkpoint["position"]) == 0
    assert int(checkpoint["epoch"]) == summary["epochs_completed"] >= 1
    assert all(np.isfinite(checkpoint[k]).all() for k in checkpoint.files if k.startswith("model."))
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]
