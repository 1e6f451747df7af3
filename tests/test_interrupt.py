"""Ctrl-C in a real process: the first finishes the batch, checkpoints and exits 130 with the
resume command; the second stops at once and leaves the last checkpoint valid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

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


# -- SIGTERM, as a scheduler preempts a job; one writer per run ----------------------------------

ENDLESS = ["--set", "train.epochs=100000", "--set", "report.plots=false"]  # stopped by a signal


def summary_of(run_dir) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def first_checkpoint(tmp_path):
    """The run directory under tmp_path/runs whose first checkpoint appears (a sweep's trial)."""
    deadline = time.monotonic() + 120  # start-up time varies with the machine's load
    while time.monotonic() < deadline:
        found = list((tmp_path / "runs").glob("*/checkpoint.npz"))
        if found:
            return found[0].parent
        time.sleep(0.05)
    pytest.fail("no trial wrote a checkpoint")


@pytest.mark.slow  # three processes on XOR: a few seconds
def test_sigterm_stops_a_fit_as_ctrl_c_does_and_a_resume_waits_for_the_run_s_process(tmp_path):
    """`fit --resume RUN` while RUN's own process still trained it: both wrote the directory
    (exit 0, the summary then claimed two sittings)."""
    process = start(tmp_path, "fit", CONFIGS / "xor.toml", *ENDLESS, "--progress", "never")
    wait_for(process.stdout, "epoch 1/")
    run_dir = only_run(tmp_path)
    refused = subprocess.run([sys.executable, "-m", "mlptrain", "fit", "--resume", str(run_dir)],
                             cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    message = " ".join(refused.stderr.split())
    assert f"being trained by process {process.pid} on this machine" in message, message
    assert "resumed" not in summary_of(run_dir)  # the refused resume wrote nothing

    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "SIGTERM: finishing this batch" in err and "Traceback" not in err
    assert f"mlptrain fit --resume {run_dir}" in err.replace("\n", " ")
    assert summary_of(run_dir)["status"] == "interrupted"
    assert (run_dir / "checkpoint.npz").exists()

    again = start(tmp_path, "fit", "--resume", str(run_dir), "--progress", "never")
    wait_for(again.stdout, "  resuming after")  # its process gone, the run is free
    again.send_signal(signal.SIGTERM)
    _, err = again.communicate(timeout=120)
    assert again.returncode == 130, err
    assert summary_of(run_dir)["resumed"] == 1 and summary_of(run_dir)["status"] == "interrupted"


@pytest.fixture
def endless_sweep(tmp_path):
    config = tmp_path / "endless.toml"
    config.write_text((CONFIGS / "xor.toml").read_text().replace('name = "xor"', 'name = "e"')
                      .replace("epochs = 200", "epochs = 100000")
                      + '\n[report]\nplots = false\n[sweep]\n"train.seed" = [0, 1]\n')
    return config


def dry_run(tmp_path, config) -> str:
    done = subprocess.run([sys.executable, "-m", "mlptrain", "sweep", str(config), "--dry-run"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MLPTRAIN_RUNS_DIR": str(tmp_path / "runs"),
                               "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    return " ".join(done.stdout.split())


@pytest.mark.slow  # two processes on XOR: a few seconds
def test_sigterm_stops_an_in_process_sweep_and_its_trial_continues(tmp_path, endless_sweep):
    """A sweep in this process (--workers 0, the default with one GPU) stopped by SIGTERM left
    its trial's run `running`, and a rerun started the trial afresh without its checkpoint."""
    process = start(tmp_path, "sweep", endless_sweep, "--workers", "0")
    run_dir = first_checkpoint(tmp_path)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert summary_of(run_dir)["status"] == "interrupted"
    assert f"1 trial continues from its checkpoint: #0 ({run_dir.name})" \
        in dry_run(tmp_path, endless_sweep)


@pytest.mark.slow  # three processes on XOR: a few seconds
def test_a_killed_in_process_sweep_s_stale_trial_continues_in_its_run(tmp_path, endless_sweep):
    """SIGKILL leaves the trial's run `running` with its process gone (stale), and trials.json
    may not name the run yet (it is written at most once a second): the rerun still finds the
    run by its sweep.json and continues it from its checkpoint, in that run."""
    process = start(tmp_path, "sweep", endless_sweep, "--workers", "0")
    run_dir = first_checkpoint(tmp_path)
    process.kill()
    process.communicate(timeout=120)
    assert summary_of(run_dir)["status"] == "running"
    assert f"1 trial continues from its checkpoint: #0 ({run_dir.name})" \
        in dry_run(tmp_path, endless_sweep)
    again = start(tmp_path, "sweep", endless_sweep, "--workers", "0")
    deadline = time.monotonic() + 120
    while summary_of(run_dir).get("resumed") != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    again.send_signal(signal.SIGTERM)
    _, err = again.communicate(timeout=120)
    assert again.returncode == 130, err
    assert summary_of(run_dir)["resumed"] == 1 and summary_of(run_dir)["status"] == "interrupted"
    assert len(list((tmp_path / "runs").glob("*/summary.json"))) == 1  # no fresh run of it
