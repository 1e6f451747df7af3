"""Runs that survive: exact resume from checkpoint.npz, mid-epoch, in the same directory.

The strongest check is byte equality of weights.npz between a resumed run and the same run left
alone: parameters, optimizer state, every RNG, the shuffle order and the position in it must all
come back, and the file itself must not depend on the clock.
"""

from __future__ import annotations

import glob
import json
import os
import platform
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import CONFIGS, ROOT

from mlptrain.config import load_config, parse_config
from mlptrain.errors import RunStoreError, TrainingError
from mlptrain.experiment import fit_experiment, resume_experiment
from mlptrain.runs import RunStore, npz_bytes
from mlptrain.loop import EpochEnded, StepsDone, StopFlag


def metrics_without_time(path):
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (path / "metrics.jsonl").read_text().splitlines()]


def stop_at(stop: StopFlag, epoch: int, step: int):
    """An event callback that asks the loop to stop once it reports (epoch, step)."""
    def on_event(event):
        if isinstance(event, StepsDone) and (event.epoch, event.step) == (epoch, step):
            stop.set()
    return on_event


# 640 samples in batches of 64: 10 steps per epoch, each reported; figures are test_plots.py's
XOR = ["train.epochs=6", "report.plots=false"]


def test_npz_bytes_do_not_depend_on_the_clock(monkeypatch):
    arrays = {"a": np.arange(6.0).reshape(2, 3), "b": np.array(3)}
    first = npz_bytes(arrays)
    monkeypatch.setattr(time, "time", lambda: 2_000_000_000.0)  # what zipfile dates entries by
    assert npz_bytes(arrays) == first
    with zipfile.ZipFile(__import__("io").BytesIO(first)) as archive:
        assert {i.date_time for i in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}


@pytest.mark.parametrize("epoch, step", [(1, 3), (3, 7), (4, 1)])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_stopped_run_resumes_to_the_same_bytes(runs_dir, epoch, step, optimizer):
    overrides = [*XOR, f"optimizer.name={optimizer}", "optimizer.momentum=0.9" if optimizer ==
                 "sgd" else "optimizer.beta1=0.8", "schedule.name=cosine"]
    config = load_config(CONFIGS / "xor.toml", overrides)
    alone = fit_experiment(config, RunStore(runs_dir))
    stop = StopFlag()
    stopped = fit_experiment(config, RunStore(runs_dir), stop_at(stop, epoch, step), stop=stop)
    assert stopped.summary["status"] == "interrupted"
    assert not (stopped.path / "weights.npz").exists()
    checkpoint = np.load(stopped.path / "checkpoint.npz")
    assert (int(checkpoint["epoch"]), int(checkpoint["position"])) == (epoch - 1, step)
    resumed = resume_experiment(RunStore(runs_dir), stopped.run_id)
    assert resumed.path == stopped.path and len(list(runs_dir.iterdir())) == 2
    assert resumed.summary["status"] == "completed" and resumed.summary["resumed"] == 1
    assert (resumed.path / "weights.npz").read_bytes() == (alone.path / "weights.npz").read_bytes()
    assert metrics_without_time(resumed.path) == metrics_without_time(alone.path)
    assert resumed.summary["final"] == alone.summary["final"]


def test_a_stop_before_a_resumed_run_s_first_step_keeps_its_checkpoint(runs_dir):
    """A stop that comes before the resumed epoch's first step (a scheduler's SIGTERM while
    the run is set up) checkpoints the run as it was restored: its running sums too, which a
    loss of 0 / 0 samples once turned into a 'diverged' failure."""
    config = load_config(CONFIGS / "xor.toml", XOR)
    stop = StopFlag()
    stopped = fit_experiment(config, RunStore(runs_dir), stop_at(stop, 2, 4), stop=stop)
    before = dict(np.load(stopped.path / "checkpoint.npz"))
    again = StopFlag()
    again.set()
    resumed = resume_experiment(RunStore(runs_dir), stopped.run_id, stop=again)
    assert resumed.summary["status"] == "interrupted" and "error" not in resumed.summary
    after = dict(np.load(stopped.path / "checkpoint.npz"))
    assert set(after) == set(before)
    for key in before:
        assert after[key].tobytes() == before[key].tobytes(), key


def test_a_run_resumed_twice_is_timed_for_its_last_sitting_and_whole(runs_dir):
    config = load_config(CONFIGS / "xor.toml", XOR)
    stop = StopFlag()
    first = fit_experiment(config, RunStore(runs_dir), stop_at(stop, 2, 4), stop=stop)
    stop = StopFlag()
    second = resume_experiment(RunStore(runs_dir), first.run_id, stop_at(stop, 5, 2), stop=stop)
    assert second.summary["status"] == "interrupted"
    walls = [first.summary["timing"]["wall_seconds"], second.summary["timing"]["wall_seconds"]]
    assert second.summary["earlier_sittings_seconds"] == walls[0]
    last = resume_experiment(RunStore(runs_dir), first.run_id)
    timing = last.summary["timing"]
    epoch_seconds = [json.loads(line)["seconds"]
                     for line in (last.path / "metrics.jsonl").read_text().splitlines()]
    assert len(epoch_seconds) == 6 and timing["sittings"] == 3
    assert timing["training_seconds"] == sum(epoch_seconds[4:])  # epoch 5 began in sitting 3
    assert timing["run_training_seconds"] == sum(epoch_seconds)
    assert timing["run_wall_seconds"] == walls[0] + walls[1] + timing["wall_seconds"]
    assert timing["seconds_per_epoch"] == timing["wall_seconds"] / 2
    assert RunStore(runs_dir).find(first.run_id).read_summary() == last.summary  # it reads back


def test_a_run_with_every_training_aid_resumes_to_the_same_bytes(runs_dir):
    # dropout masks are keyed by (seed, step) and augmentations come from their own stream: the
    # resumed epoch must see the same masks and distortions as the run left alone
    overrides = ["data.limit=600", "model.hidden=[32, 16]", "train.epochs=2",
                 "train.batch_size=50", "model.dropout_input=0.1", "model.dropout_hidden=0.3",
                 "model.max_norm=1.5", "model.label_smoothing=0.1", "data.augment_shift=2",
                 "data.augment_rotate=8", "data.augment_elastic=8", "schedule.name=onecycle",
                 "schedule.warmup_epochs=1", "schedule.momentum_low=0.8",
                 "optimizer.momentum=0.9", "report.plots=false"]
    assert_stopped_and_resumed_as_alone(load_config(CONFIGS / "mnist.toml", overrides),
                                        runs_dir, 2, 5)


def assert_stopped_and_resumed_as_alone(config, runs_dir, epoch: int, step: int) -> None:
    """`config` stopped at (epoch, step) and resumed ends with the weights and metrics of the
    run left alone, byte for byte."""
    alone = fit_experiment(config, RunStore(runs_dir))
    stop = StopFlag()
    stopped = fit_experiment(config, RunStore(runs_dir), stop_at(stop, epoch, step), stop=stop)
    assert stopped.summary["status"] == "interrupted"
    resumed = resume_experiment(RunStore(runs_dir), stopped.run_id)
    assert (resumed.path / "weights.npz").read_bytes() == (alone.path / "weights.npz").read_bytes()
    assert metrics_without_time(resumed.path) == metrics_without_time(alone.path)


def test_resume_restores_early_stopping_state(runs_dir):
    overrides = ["train.epochs=200", "train.patience=3", "train.min_delta=0.01",
                 "optimizer.lr=3.0", "report.plots=false"]
    config = load_config(CONFIGS / "xor.toml", overrides)
    alone = fit_experiment(config, RunStore(runs_dir))
    assert alone.summary["stopped_early"]
    best = alone.summary["best_epoch"]
    stop = StopFlag()
    stopped = fit_experiment(config, RunStore(runs_dir), stop_at(stop, best + 1, 5), stop=stop)
    resumed = resume_experiment(RunStore(runs_dir), stopped.run_id)
    assert resumed.summary["best_epoch"] == best
    assert (resumed.path / "weights.npz").read_bytes() == (alone.path / "weights.npz").read_bytes()


def checkpoints_written(config, runs_dir, monkeypatch) -> list[tuple[int, int, int]]:
    """(epoch, position, step) of every checkpoint a fresh fit of `config` writes."""
    seen, original = [], RunStore.create

    def spy_create(store, name):
        created = original(store, name)
        write = created.write_checkpoint
        created.write_checkpoint = lambda arrays: (seen.append(
            (int(arrays["epoch"]), int(arrays["position"]), int(arrays["step"]))), write(arrays))
        return created

    monkeypatch.setattr(RunStore, "create", spy_create)
    fit_experiment(config, RunStore(runs_dir))
    return seen


def test_checkpoint_every_n_steps_writes_mid_epoch_checkpoints(runs_dir, monkeypatch):
    config = load_config(CONFIGS / "xor.toml", ["train.epochs=2", "train.checkpoint_every=3",
                                                "train.checkpoint_epochs=1"])
    seen = checkpoints_written(config, runs_dir, monkeypatch)
    # every 3 global steps inside an epoch, and at each epoch end (position 0)
    assert seen == [(0, 3, 3), (0, 6, 6), (0, 9, 9), (1, 0, 10), (1, 2, 12), (1, 5, 15),
                    (1, 8, 18), (2, 0, 20)]


def test_checkpoint_epochs_skips_epoch_ends_but_always_saves_the_last(runs_dir, monkeypatch):
    config = load_config(CONFIGS / "xor.toml", [*XOR, "train.epochs=5",
                                                "train.checkpoint_epochs=2"])
    seen = checkpoints_written(config, runs_dir, monkeypatch)
    assert [epoch for epoch, _, _ in seen] == [2, 4, 5]


@pytest.mark.parametrize("seconds,epochs", [(1e9, [1, 5]), (0.0, [1, 2, 3, 4, 5])])
def test_by_default_epoch_ends_write_their_files_at_most_once_a_second(runs_dir, monkeypatch,
                                                                      seconds, epochs):
    """Milliseconds of epochs no longer wait on their files' fsyncs: checkpoint, metrics
    lines and summary come together at the first epoch, once the interval has passed, and at
    the last epoch; an early stop writes the records still held back."""
    from mlptrain.experiment import training

    monkeypatch.setattr(training._EpochFiles, "FILES_SECONDS", seconds)
    config = load_config(CONFIGS / "xor.toml", [*XOR, "train.epochs=5"])
    seen = checkpoints_written(config, runs_dir, monkeypatch)
    assert [epoch for epoch, _, _ in seen] == epochs
    run = next(runs_dir.iterdir())
    assert [r["epoch"] for r in metrics_without_time(run)] == [1, 2, 3, 4, 5]
    assert json.loads((run / "summary.json").read_text())["epochs_completed"] == 5
    stopped = fit_experiment(load_config(CONFIGS / "xor.toml", [
        "train.epochs=200", "train.patience=3", "train.min_delta=0.01", "optimizer.lr=3.0",
        "report.plots=false"]), RunStore(runs_dir))
    assert stopped.summary["stopped_early"]
    assert len(metrics_without_time(stopped.path)) == stopped.summary["epochs_completed"]


def test_a_run_killed_between_checkpoint_epochs_resumes_to_the_same_bytes(runs_dir):
    """Metrics run ahead of a checkpoint saved every 2 epochs; the resume drops the epoch the
    checkpoint lacks, trains it again, and ends where the run left alone ends."""
    config = load_config(CONFIGS / "xor.toml", [*XOR, "train.checkpoint_epochs=2"])
    alone = fit_experiment(config, RunStore(runs_dir))

    def die_after_epoch_3(event):
        if isinstance(event, EpochEnded) and event.epoch == 3:
            raise KeyboardInterrupt  # after epoch 3's metrics, before its (skipped) checkpoint

    with pytest.raises(KeyboardInterrupt):
        fit_experiment(config, RunStore(runs_dir), die_after_epoch_3)
    killed = next(p for p in runs_dir.iterdir() if p != alone.path)
    assert len(metrics_without_time(killed)) == 3
    resumed = resume_experiment(RunStore(runs_dir), killed.name)
    assert metrics_without_time(resumed.path) == metrics_without_time(alone.path)
    assert (resumed.path / "weights.npz").read_bytes() == (alone.path / "weights.npz").read_bytes()


def test_one_writer_per_run_resume_is_refused_while_the_recorded_process_lives(runs_dir):
    """`fit --resume RUN` while RUN's own process still trained it: both wrote the directory
    (exit 0, and the summary then claimed two sittings). The summary's pid and host decide:
    alive here, or on another machine, refuses; gone (a stale run) resumes."""
    from typer.testing import CliRunner

    from mlptrain.cli import app

    stop = StopFlag()
    stop.set()
    cut = fit_experiment(load_config(CONFIGS / "xor.toml", XOR), RunStore(runs_dir), stop=stop)
    recorded = json.loads((cut.path / "summary.json").read_text())
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        for host, phrase in ((platform.node(), f"being trained by process {owner.pid} on "
                                               "this machine"),
                             ("another-host", f"process {owner.pid} on another-host")):
            claimed = {**recorded, "status": "running", "pid": owner.pid, "host": host}
            (cut.path / "summary.json").write_text(json.dumps(claimed))
            result = CliRunner().invoke(app, ["fit", "--resume", cut.run_id])
            assert result.exit_code == 1 and "Traceback" not in result.output
            assert phrase in " ".join(result.stderr.split()), result.stderr
            assert json.loads((cut.path / "summary.json").read_text()) == claimed
        (cut.path / "summary.json").write_text(json.dumps({**claimed, "host": platform.node()}))
        deleted = CliRunner().invoke(app, ["runs", "rm", cut.run_id, "--yes"])
        assert deleted.exit_code == 1 and cut.path.exists()  # nor deleted under its writer
    finally:
        owner.kill()
        owner.wait()
    resumed = resume_experiment(RunStore(runs_dir), cut.run_id)  # its owner is gone: stale
    assert resumed.summary["status"] == "completed" and resumed.summary["resumed"] == 1


def test_resume_of_a_completed_run_is_an_error(runs_dir):
    done = fit_experiment(load_config(CONFIGS / "xor.toml", ["train.epochs=1"]),
                          RunStore(runs_dir))
    with pytest.raises(RunStoreError, match="already completed"):
        resume_experiment(RunStore(runs_dir), done.run_id)


def test_resume_without_a_checkpoint_is_an_error(runs_dir):
    done = fit_experiment(load_config(CONFIGS / "xor.toml", ["train.epochs=1"]),
                          RunStore(runs_dir))
    summary = json.loads((done.path / "summary.json").read_text())
    summary["status"] = "failed"
    (done.path / "summary.json").write_text(json.dumps(summary))
    (done.path / "checkpoint.npz").unlink()
    with pytest.raises(RunStoreError, match="no checkpoint.npz"):
        resume_experiment(RunStore(runs_dir), done.run_id)


def test_a_checkpoint_this_version_cannot_read_is_a_clear_error(runs_dir):
    stop = StopFlag()
    config = load_config(CONFIGS / "xor.toml", ["train.epochs=3"])
    stopped = fit_experiment(config, RunStore(runs_dir), stop_at(stop, 2, 4), stop=stop)
    arrays = dict(np.load(stopped.path / "checkpoint.npz"))
    del arrays["rng.shuffle"]  # as an older version wrote it: one "shuffle_rng" key
    np.savez(stopped.path / "checkpoint.npz", **arrays)
    with pytest.raises(RunStoreError, match="not a checkpoint this version can resume from"):
        resume_experiment(RunStore(runs_dir), stopped.run_id)


def test_a_checkpoint_whose_product_plans_are_not_records_is_a_clear_error(runs_dir):
    stop = StopFlag()
    config = load_config(CONFIGS / "xor.toml", ["train.epochs=3"])
    stopped = fit_experiment(config, RunStore(runs_dir), stop_at(stop, 2, 4), stop=stop)
    arrays = dict(np.load(stopped.path / "checkpoint.npz"))
    assert "product_plans" not in arrays  # the CPU times nothing
    arrays["product_plans"] = np.array(json.dumps({"forward 0": "large"}))
    np.savez(stopped.path / "checkpoint.npz", **arrays)
    with pytest.raises(RunStoreError, match="product_plans is not a list of records"):
        resume_experiment(RunStore(runs_dir), stopped.run_id)


def _stopped_xor(runs_dir, *overrides):
    stop = StopFlag()
    config = load_config(CONFIGS / "xor.toml", ["train.epochs=3", *overrides])
    return config, fit_experiment(config, RunStore(runs_dir), stop_at(stop, 2, 4), stop=stop)


def test_an_older_checkpoint_without_dropout_or_augmentation_still_resumes_exactly(runs_dir):
    config, stopped = _stopped_xor(runs_dir, "optimizer.momentum=0.9")
    arrays = dict(np.load(stopped.path / "checkpoint.npz"))
    assert int(arrays.pop("format")) == 2  # format 1 had no such key
    np.savez(stopped.path / "checkpoint.npz", **arrays)
    resumed = resume_experiment(RunStore(runs_dir), stopped.run_id)
    alone = fit_experiment(config, RunStore(runs_dir))
    assert (resumed.path / "weights.npz").read_bytes() == (alone.path / "weights.npz").read_bytes()


def test_an_older_checkpoint_with_dropout_is_refused_with_a_clear_error(runs_dir):
    # format 1 drew dropout masks from a sequential stream; the step-keyed masks after a resume
    # would continue neither that run nor a new one
    _, stopped = _stopped_xor(runs_dir, "model.dropout_hidden=0.2")
    arrays = dict(np.load(stopped.path / "checkpoint.npz"))
    del arrays["format"]
    np.savez(stopped.path / "checkpoint.npz", **arrays)
    with pytest.raises(RunStoreError, match="older mlptrain .checkpoint format 1.*dropout"):
        resume_experiment(RunStore(runs_dir), stopped.run_id)
    arrays["format"] = np.array(99)
    np.savez(stopped.path / "checkpoint.npz", **arrays)
    with pytest.raises(RunStoreError, match="format 99, newer than"):
        resume_experiment(RunStore(runs_dir), stopped.run_id)


def test_a_diverging_run_keeps_its_last_good_checkpoint(runs_dir, tmp_path):
    # inputs of scale 1e3 (unstandardized) and lr 100: the weights grow for some 17 steps, then
    # overflow
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 8)) * 1e3
    np.savez(tmp_path / "wide.npz", X=X, y=(X[:, 0] > 0).astype(int))
    config = parse_config(f'''
        [data]
        dataset = "npz"
        path = "{tmp_path / 'wide.npz'}"
        standardize = false
        [model]
        hidden = [64, 64]
        loss = "softmax_cross_entropy"
        [optimizer]
        lr = 100
        momentum = 0.9
        [train]
        batch_size = 32
        checkpoint_every = 1
        ''')
    # (numpy's overflow warnings on the way are hushed: the error says what happened)
    with pytest.raises(TrainingError, match="optimizer.lr"):
        fit_experiment(config, RunStore(runs_dir))
    (path,) = runs_dir.iterdir()
    summary = json.loads((path / "summary.json").read_text())
    assert summary["status"] == "failed" and "optimizer.lr" in summary["error"]
    checkpoint = np.load(path / "checkpoint.npz")
    assert int(checkpoint["step"]) > 5  # good checkpoints were written before it diverged
    for key in checkpoint.files:
        if key.startswith("model."):
            assert np.isfinite(checkpoint[key]).all(), key


# -- a real process killed with SIGKILL in the middle of an epoch ---------------------------------

KILL_ARGS = ["--set", "data.limit=6000", "--set", "model.hidden=32", "--set", "train.epochs=3",
             "--set", "train.batch_size=32", "--set", "train.checkpoint_every=5",
             "--progress", "never"]


def _mlptrain(*args, runs, **kwargs):
    env = {**os.environ, "MLPTRAIN_RUNS_DIR": str(runs), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "mlptrain", *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _wait_stopped(pid: int) -> None:
    """Until every thread of the process is stopped (state T in /proc): SIGSTOP is delivered
    asynchronously, so the checkpoint writer's rename may still land after os.kill returns."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            states = [stat.read_text().rsplit(")", 1)[1].split()[0]
                      for stat in Path(f"/proc/{pid}/task").glob("*/stat")]
        except (OSError, IndexError):
            return  # no /proc (or the process is gone): nothing better to wait on
        if not states or all(state in "Tt" for state in states):
            return
        time.sleep(0.0005)


def _kill_mid_epoch(process, runs) -> tuple[int, int]:
    """SIGKILLs the process once its checkpoint sits inside an epoch after the first; returns
    that checkpoint's (epoch, position). SIGSTOP first, so the checkpoint read is the last."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for path in glob.glob(str(runs / "*" / "checkpoint.npz")):
            try:
                before = np.load(path)
                if int(before["epoch"]) < 1 or int(before["position"]) == 0:
                    continue
                os.kill(process.pid, signal.SIGSTOP)
                _wait_stopped(process.pid)  # a stop is delivered later: a rename may land first
                after = np.load(path)
                where = int(after["epoch"]), int(after["position"])
                if where[1] == 0:  # it reached an epoch end meanwhile: let it go on
                    os.kill(process.pid, signal.SIGCONT)
                    continue
                os.kill(process.pid, signal.SIGKILL)
                process.communicate(timeout=30)
                return where
            except (OSError, ValueError, KeyError, zipfile.BadZipFile):
                continue
        if process.poll() is not None:
            pytest.fail("the run finished before it could be killed mid-epoch")
        time.sleep(0.001)
    pytest.fail("no mid-epoch checkpoint appeared")


@pytest.mark.slow  # three processes on MNIST: about 10 s
def test_a_run_killed_mid_epoch_resumes_to_byte_identical_weights(tmp_path):
    runs = tmp_path / "runs"
    killed = _mlptrain("fit", CONFIGS / "mnist.toml", *KILL_ARGS, runs=runs)
    epoch, position = _kill_mid_epoch(killed, runs)
    assert killed.returncode == -signal.SIGKILL and epoch >= 1 and position > 0
    (run_dir,) = runs.iterdir()
    assert not (run_dir / "weights.npz").exists()
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "running"
    listed = subprocess.run([sys.executable, "-m", "mlptrain", "runs", "--json"], cwd=ROOT,
                            env={**os.environ, "MLPTRAIN_RUNS_DIR": str(runs)},
                            capture_output=True, text=True, timeout=60)
    assert json.loads(listed.stdout)[0]["status"] == "stale"  # running, but its process is gone

    resumed = _mlptrain("fit", "--resume", run_dir.name, "--progress", "never", runs=runs)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert f"resuming after {epoch} epoch" in out
    assert f"{position} steps of epoch {epoch + 1}" in out

    alone_runs = tmp_path / "alone"
    alone = _mlptrain("fit", CONFIGS / "mnist.toml", *KILL_ARGS, runs=alone_runs)
    assert alone.wait(timeout=300) == 0
    (alone_dir,) = alone_runs.iterdir()
    assert (run_dir / "weights.npz").read_bytes() == (alone_dir / "weights.npz").read_bytes()
    assert metrics_without_time(run_dir) == metrics_without_time(alone_dir)
    assert len(metrics_without_time(run_dir)) == 3


def test_checkpoints_are_written_off_the_training_thread_one_at_a_time(tmp_path):
    import shutil
    import threading

    from mlptrain.runs.checkpoint import CheckpointWriter

    run = RunStore(tmp_path / "runs").create("x")
    gate, write = threading.Event(), run.write_checkpoint
    run.write_checkpoint = lambda arrays: (gate.wait(10), write(arrays))
    writer = CheckpointWriter(run)
    writer.write({"step": np.array(1), "w": np.full(100_000, 1.0)})  # returns while it waits
    assert not (run.path / "checkpoint.npz").exists()
    gate.set()
    writer.write({"step": np.array(2), "w": np.full(100_000, 2.0)})  # after the first is done
    writer.wait()
    with np.load(run.path / "checkpoint.npz") as saved:
        assert int(saved["step"]) == 2 and saved["w"][0] == 2.0
    shutil.rmtree(run.path)  # the next write fails in the thread: close reports it
    writer.write({"step": np.array(3)})
    with pytest.raises(OSError, match="checkpoint.npz"):
        writer.close()
