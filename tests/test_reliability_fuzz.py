"""Reliability (issue 14): fuzzed run-file readers, config round trips, and sweeps killed with
SIGKILL (workers must die with their parent; a rerun adopts what they completed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CONFIGS, ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlptrain.config import MAX_NAME, Config, load_config, name_from_stem, parse_config
from mlptrain.errors import ConfigError, RunStoreError
from mlptrain.reports.arrays import curves
from mlptrain.runs import Run
from mlptrain.runs.query import run_record

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["status", "model", "sizes", "final", "timing", "epoch", "dataset",
                         "name", "train_loss", "test_loss", "epochs_completed", "x"]),
        inner, max_size=5),
    max_leaves=12)
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(summary=JSON, metrics=st.lists(JSON, max_size=3))
def test_run_readers_accept_the_right_shape_or_raise_run_store_error(tmp_path, summary, metrics):
    """Whatever JSON lies in summary.json and metrics.jsonl: the readers either return data
    every consumer can use, or raise RunStoreError; `mlptrain runs` never fails."""
    run = Run(tmp_path / "run")
    run.path.mkdir(exist_ok=True)
    (run.path / "summary.json").write_text(json.dumps(summary))
    (run.path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    record = run_record(run)  # never raises
    try:
        s, m = run.read_summary(), run.read_metrics()
    except RunStoreError:
        assert record["status"] == "damaged"
        return
    assert record["status"] in ("running", "completed", "interrupted", "failed", "stale")
    curves(m, s)  # what `plot` draws first


@FUZZ
@given(name=st.text(alphabet="abcXYZ019._- ", max_size=120),
       path=st.text(max_size=40),
       stem=st.text(max_size=300))
def test_what_a_run_saves_of_its_config_reads_back_equal(tmp_path, name, path, stem):
    """config.toml round trip: write, load_config(saved) == original; anything the validator
    refuses is refused with ConfigError, up front."""
    derived = name_from_stem(stem)
    assert parse_config(f'name = "{derived}"').name == derived and len(derived) <= MAX_NAME
    try:
        config = parse_config(f"name = {json.dumps(name)}\n[data]\npath = {json.dumps(path)}\n",
                              source=f"{tmp_path}/{stem}", overrides=[f"data.path={path}"])
    except ConfigError:
        return
    saved = tmp_path / "config.toml"
    saved.write_text(config.to_toml(), encoding="utf-8")
    assert load_config(saved) == config
    assert isinstance(config, Config)


# -- sweeps and SIGKILL ----------------------------------------------------------------------------


def _children(pid: int) -> set[int]:
    """The processes whose parent is `pid` (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def long_sweep(tmp_path) -> Path:
    config = tmp_path / "kill.toml"
    config.write_text((CONFIGS / "xor.toml").read_text().replace('name = "xor"', 'name = "k"')
                      + '\n[sweep]\n"train.seed" = [0, 1, 2, 3]\n')
    return config


def _start_sweep(config: Path, runs: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mlptrain", "sweep", str(config), "--workers",
                             "2", "--runs-dir", str(runs), "--format", "png"],
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _kill_and_check_orphans(proc: subprocess.Popen, delay: float,
                            at_least: int = 0) -> list[int]:
    """SIGKILL the sweep after `delay` s (and once it has started `at_least` processes, which a
    loaded machine may take longer for); every process it started must be gone soon after."""
    deadline, patience = time.monotonic() + delay, time.monotonic() + 60
    started: set[int] = set()
    while time.monotonic() < deadline or (len(started) < at_least and
                                          time.monotonic() < patience):
        started |= _children(proc.pid)  # workers and the multiprocessing resource tracker
        time.sleep(0.05)
    started |= _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # a worker may still be starting (a fresh clone compiles its .pyc first), then finishes
    # its step and marks its run interrupted within the grace period
    gone_by = time.monotonic() + 45
    while any(_alive(p) for p in started) and time.monotonic() < gone_by:
        time.sleep(0.1)
    left = [p for p in started if _alive(p)]
    assert not left, f"still running after the sweep was killed: {left}"
    return sorted(started)


def _check_rerun(config: Path, runs: Path) -> dict:
    done = subprocess.run([sys.executable, "-m", "mlptrain", "sweep", str(config), "--workers",
                           "2", "--runs-dir", str(runs), "--format", "png"],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    (sweep_dir,) = (runs / "sweeps").iterdir()
    trials = json.loads((sweep_dir / "trials.json").read_text())["trials"]
    assert [t["status"] for t in trials] == ["completed"] * 4
    listed = {t["run_id"] for t in trials} | {r for t in trials for r in t["previous_runs"]}
    mine = {p.name for p in runs.iterdir() if (p / "sweep.json").exists()}
    assert mine <= listed, f"runs outside the sweep's summary: {mine - listed}"
    return {t["run_id"]: t for t in trials}


def test_sigkill_of_a_sweep_ends_its_workers_and_a_rerun_adopts(long_sweep, tmp_path):
    runs = tmp_path / "runs"
    proc = _start_sweep(long_sweep, runs)
    started = _kill_and_check_orphans(proc, delay=4.0, at_least=2)
    assert len(started) >= 2  # two workers (and the resource tracker) were watched
    _check_rerun(long_sweep, runs)


@pytest.mark.slow
@pytest.mark.parametrize("delay", [1.5, 2.5, 6.0, 9.0])
def test_sigkill_of_a_sweep_at_random_moments(long_sweep, tmp_path, delay):
    runs = tmp_path / "runs"
    _kill_and_check_orphans(_start_sweep(long_sweep, runs), delay)
    _check_rerun(long_sweep, runs)


def test_a_rerun_adopts_a_trial_its_killed_sweep_left_running(tmp_path):
    """trials.json says running (or pending, no run id) while the worker completed the run:
    the rerun records it completed and trains it no more."""
    from mlptrain.sweep import InlineExecutor, load_sweep, run_sweep

    config = tmp_path / "a.toml"
    config.write_text('name = "a"\n[data]\ndataset = "xor"\nsamples = 100\n[model]\n'
                      'hidden = 4\n[train]\nepochs = 2\n[report]\nplots = false\n'
                      '[sweep]\n"train.seed" = [0, 1, 2]\n')
    runs = tmp_path / "runs"
    first = run_sweep(load_sweep(config), runs, InlineExecutor(), figure_formats=())
    path = first.path / "trials.json"
    data = json.loads(path.read_text())
    completed = [t["run_id"] for t in data["trials"]]
    data["trials"][0].update(status="running")
    data["trials"][1].update(status="pending", run_id=None, final=None)  # start never recorded
    path.write_text(json.dumps(data))
    events = []
    run_sweep(load_sweep(config), runs, InlineExecutor(), events.append, figure_formats=())
    assert events[0].to_run == []
    after = json.loads(path.read_text())["trials"]
    assert [t["run_id"] for t in after] == completed
    assert all(t["status"] == "completed" and t["final"] for t in after)
