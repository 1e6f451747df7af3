"""Sweeps across processes: worker thread limits, the CLI in a real subprocess (exit codes,
Ctrl-C), and a real Dask LocalCluster. Trials are tiny XOR fits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from mlptrain.cli import app
from mlptrain.errors import ConfigError
from mlptrain.runs import RunStore
from mlptrain.sweep import InlineExecutor, LocalExecutor, load_sweep, run_sweep
from mlptrain.sweep.cluster import import_distributed
from mlptrain.sweep.executors import child_environment

from conftest import ROOT
from test_sweep import XOR_SWEEP

runner = CliRunner()


def mlptrain(*args, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "mlptrain", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=300, **kwargs)


@pytest.fixture
def sweep_toml(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text(XOR_SWEEP)
    return path


def flat(text: str) -> str:
    """Output as one line, without the frame rich draws around usage errors."""
    return " ".join(text.replace("\u2502", " ").split())


def finished(events):
    return sorted((e for e in events if type(e).__name__ == "TrialFinished"),
                  key=lambda e: e.index)


# -- local worker processes ----------------------------------------------------------------------


@pytest.mark.parametrize("workers, trials, threads", [(2, "2,4", "1"), (1, "2,4", "2"),
                                                     (2, "2", "2")])
def test_workers_get_blas_threads_so_workers_times_threads_fit_the_cores(
        sweep_toml, tmp_path, workers, trials, threads):
    spec = load_sweep(sweep_toml, grid=[f"model.hidden={trials}", "train.seed=0"])
    events, before = [], dict(os.environ)
    executor = LocalExecutor(workers=workers, cores=2)
    run_sweep(spec, tmp_path / "runs", executor, events.append, figure_formats=())
    results = finished(events)
    assert [r.status for r in results] == ["completed"] * len(spec.trials)
    for r in results:  # what each child process saw, set before it imported numpy
        assert r.worker["pid"] != os.getpid()
        assert r.worker["env"] == {"OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
                                   "MKL_NUM_THREADS": threads}
        # threadpoolctl: what each BLAS uses; none above the limit (SciPy's own BLAS, which
        # the NumPy backend runs its updates on, is held to 1 thread and may be listed too)
        assert max(r.worker["blas_threads"]) == int(threads)
    # a fast worker may take both trials before the other has started: at most one pid each
    assert len({r.worker["pid"] for r in results}) <= min(workers, len(spec.trials))
    assert dict(os.environ) == before  # the limits were for the children only


def test_the_child_environment_is_restored(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    with child_environment(3):
        assert os.environ["OMP_NUM_THREADS"] == os.environ["MKL_NUM_THREADS"] == "3"
    assert os.environ["OMP_NUM_THREADS"] == "7" and "MKL_NUM_THREADS" not in os.environ


def test_worker_results_equal_in_process_results(sweep_toml, tmp_path):
    spec = load_sweep(sweep_toml, grid=["model.hidden=2,4", "train.seed=1"])
    inline, local = [], []
    run_sweep(spec, tmp_path / "a", InlineExecutor(), inline.append, figure_formats=())
    run_sweep(spec, tmp_path / "b", LocalExecutor(2, cores=2), local.append, figure_formats=())
    assert [r.final for r in finished(local)] == [r.final for r in finished(inline)]


# -- the CLI -------------------------------------------------------------------------------------


def test_cli_sweep_end_to_end_then_eval_a_trial(sweep_toml, tmp_path):
    runs = tmp_path / "runs"
    done = mlptrain("sweep", sweep_toml, "--workers", "2", "--runs-dir", runs,
                    "--format", "png", "--format", "svg")
    assert done.returncode == 0, done.stderr
    (sweep_dir,) = (runs / "sweeps").iterdir()
    for name in ("spec.json", "trials.json", "summary.json", "summary.csv", "capacity.png",
                 "capacity.svg"):
        assert (sweep_dir / name).exists(), name
    assert "6 completed" in done.stdout and "test accuracy" in done.stdout
    trials = json.loads((sweep_dir / "trials.json").read_text())["trials"]
    assert len(RunStore(runs).runs()) == 6  # ordinary runs; the sweeps folder is not one
    report = mlptrain("eval", trials[3]["run_id"], "--json", "--runs-dir", runs)
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["accuracy"] == trials[3]["final"]["test_accuracy"]
    again = mlptrain("sweep", sweep_toml, "--runs-dir", runs)  # same spec: nothing to do
    assert again.returncode == 0 and "6 completed earlier, skipped" in again.stdout
    assert len(RunStore(runs).runs()) == 6


@pytest.mark.parametrize("args, code, message", [
    (["--grid", "train.epochs=0"], 1, "--grid train.epochs = 0: expected a value >= 1."),
    (["--grid", "train.seeds=1"], 1, "Did you mean `seed`?"),
    (["--samples", "99"], 1, "more than the 6 points"),
    (["--executor", "spark"], 2, "'spark' is not one of local, dask"),
    (["--scheduler", "tcp://127.0.0.1:8786"], 2, "is for --executor dask"),
    (["--executor", "dask"], 2, "needs the scheduler's address"),
    (["--executor", "dask", "--scheduler", "tcp://x:1", "--workers", "2"], 2, "--workers"),
    (["--format", "jpg"], 2, "'jpg' is not one of png, svg"),
    (["--workers", "-1"], 2, "--workers"),
])
def test_cli_errors_and_their_exit_codes(sweep_toml, runs_dir, args, code, message):
    result = runner.invoke(app, ["sweep", str(sweep_toml), *args])
    assert result.exit_code == code, result.output
    assert message in flat(result.output) and "Traceback" not in result.output
    assert not runs_dir.exists()  # nothing ran


def test_cli_missing_config_and_failed_trials_exit_1(sweep_toml, runs_dir, tmp_path):
    missing = runner.invoke(app, ["sweep", str(tmp_path / "nope.toml")])
    assert missing.exit_code == 1 and "does not exist" in missing.output
    failing = runner.invoke(app, ["sweep", str(sweep_toml), "--workers", "0",
                                  "--grid", "model.weights=missing-weights.npz",
                                  "--grid", "model.hidden=2", "--grid", "train.seed=0"])
    assert failing.exit_code == 1
    assert "1 of 1 trial failed" in flat(failing.output)  # plural() agrees with 1


def test_cli_dry_run_lists_the_trials(sweep_toml, runs_dir):
    result = runner.invoke(app, ["sweep", str(sweep_toml), "--dry-run", "--samples", "2"])
    assert result.exit_code == 0
    assert "2 trials of a 6-point grid" in result.output and not runs_dir.exists()


def _sigint_as_in_a_terminal() -> None:
    # a shell starts background jobs with SIGINT ignored, and an ignored signal is inherited:
    # give the sweep the default disposition a terminal's foreground command has
    signal.signal(signal.SIGINT, signal.SIG_DFL)


STORM = """
import multiprocessing, os, signal, threading, time
from mlptrain.sweep.executors import _pump, interrupts_between_reads

def flood(q):
    for i in range(10**6):
        q.put(("event", i, "x" * 3000))

fork = multiprocessing.get_context("fork")
q = fork.Queue()
p = fork.Process(target=flood, args=(q,), daemon=True)
seen, interrupts, stop = [], 0, threading.Event()

def storm():
    while not stop.is_set():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.0005)

with interrupts_between_reads() as noted:
    p.start()
    thread = threading.Thread(target=storm)
    thread.start()
    end = time.monotonic() + 2
    while time.monotonic() < end:
        try:
            _pump(q, [p], {0: None}, lambda e: seen.append(e[1]), time.monotonic() + 0.05, noted)
        except KeyboardInterrupt:
            interrupts += 1
    stop.set()
    thread.join()
    noted.clear()
p.kill()
print(len(seen), interrupts, seen == list(range(len(seen))))
"""


def test_ctrl_c_between_reads_keeps_the_event_pipe_whole():
    # a storm of real SIGINTs while a worker floods the event queue: each becomes a
    # KeyboardInterrupt between two reads, and every event still arrives whole and in order
    # (raised inside Queue.get, one left the pipe mid-message: EOFError, exit 1)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", STORM], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    events, interrupts, in_order = done.stdout.split()
    assert int(events) > 100 and int(interrupts) > 10 and in_order == "True", done.stdout


def test_ctrl_c_stops_the_workers_and_marks_trials_interrupted(tmp_path):
    config = tmp_path / "long.toml"
    # 100 trials (~1 kB pickled each) overfill the task pipe: exiting must not wait to flush it;
    # each far longer than the test (an XOR epoch takes well under a millisecond)
    config.write_text(XOR_SWEEP.replace('"model.hidden" = [2, 4, 8]', '"train.epochs" = [300000]')
                      .replace('"train.seed" = [0, 1]', f'"train.seed" = {list(range(100))}'))
    runs = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "mlptrain", "sweep", str(config),
                             "--workers", "2", "--runs-dir", str(runs)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, preexec_fn=_sigint_as_in_a_terminal)
    trials_json = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until both trials are training
        found = list(runs.glob("sweeps/*/trials.json"))
        if found:
            trials_json = found[0]
            trials = json.loads(trials_json.read_text())["trials"]  # written atomically
            if sum(t["status"] == "running" for t in trials[:2]) == 2:
                break
        time.sleep(0.1)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
    try:
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # hung: leave nothing behind
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
    assert "run the same command again to resume" in stdout
    trials = json.loads(trials_json.read_text())["trials"]
    assert [t["status"] for t in trials] == ["interrupted"] * 2 + ["pending"] * 98
    for t in trials[:2]:
        run = RunStore(runs).find(t["run_id"])
        assert run.read_summary()["status"] == "interrupted"
        with pytest.raises(ProcessLookupError):  # the worker is gone
            os.kill(t["worker"]["pid"], 0)


# -- Dask ----------------------------------------------------------------------------------------


def test_without_distributed_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # what `import` sees when missing
    with pytest.raises(ConfigError, match=r"pip install 'mlptrain\[dask\]'"):
        import_distributed()


@pytest.mark.slow
def test_dask_local_cluster_gives_the_same_results_as_local_workers(sweep_toml, tmp_path):
    distributed = pytest.importorskip("distributed")
    spec = load_sweep(sweep_toml, grid=["model.hidden=2,4", "train.seed=0,1"])
    inline = []
    run_sweep(spec, tmp_path / "inline", InlineExecutor(), inline.append, figure_formats=())
    env = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT)}
    with distributed.LocalCluster(processes=True, n_workers=2, threads_per_worker=1,
                                  dashboard_address=None, env=env) as cluster:
        from mlptrain.sweep import DaskExecutor

        events = []
        result = run_sweep(spec, tmp_path / "dask", DaskExecutor(cluster.scheduler_address),
                           events.append)
        cli = mlptrain("sweep", sweep_toml, "--grid", "model.hidden=2,4", "--grid",
                       "train.seed=0,1", "--executor", "dask", "--scheduler",
                       cluster.scheduler_address, "--runs-dir", tmp_path / "cli")
    dask = finished(events)
    assert [r.status for r in dask] == ["completed"] * 4
    started = [e for e in events if type(e).__name__ == "TrialStarted"]
    assert sorted(e.index for e in started) == [0, 1, 2, 3]  # through the Dask Queue
    assert sorted(e.run_id for e in started) == sorted(r.run_id for r in dask)
    assert [r.final for r in dask] == [r.final for r in finished(inline)]
    assert {r.worker["pid"] for r in dask} - {os.getpid()}  # ran in the cluster's workers
    assert all(r.worker["env"]["OMP_NUM_THREADS"] == "1" for r in dask)
    assert result.summary["counts"] == {"completed": 4}
    assert len(RunStore(tmp_path / "dask").runs()) == 4
    assert cli.returncode == 0, cli.stderr
    assert "Dask scheduler" in cli.stdout and "4 completed" in cli.stdout


@pytest.mark.slow
def test_a_dask_worker_killed_mid_trial_leaves_its_run_to_the_next_worker(sweep_toml, tmp_path):
    """SIGKILL of the worker training a trial: Dask hands the task on, and the worker that
    takes it continues the killed worker's run from its checkpoint (before, it started the
    trial again from its first step in a new run); the results equal an undisturbed sweep's."""
    distributed = pytest.importorskip("distributed")
    # every epoch end checkpoints and says so in the summary (the killer below waits for it)
    spec = load_sweep(sweep_toml, ["train.epochs=300", "report.plots=false",
                                   "train.checkpoint_epochs=1"],
                      grid=["model.hidden=4", "train.seed=0,1"])
    inline = []
    run_sweep(spec, tmp_path / "inline", InlineExecutor(), inline.append, figure_formats=())
    env = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT)}
    runs = tmp_path / "dask"
    with distributed.LocalCluster(processes=True, n_workers=2, threads_per_worker=1,
                                  dashboard_address=None, env=env) as cluster:
        from mlptrain.sweep import DaskExecutor

        killed = {}

        def kill_the_first_checkpointed_trial():
            deadline = time.monotonic() + 120
            while not killed and time.monotonic() < deadline:
                for summary_path in runs.glob("*/summary.json"):
                    try:
                        summary = json.loads(summary_path.read_text())
                    except ValueError:
                        continue
                    if summary.get("epochs_completed", 0) >= 5 and \
                            (summary_path.parent / "checkpoint.npz").exists():
                        os.kill(summary["pid"], signal.SIGKILL)
                        killed.update(run=summary_path.parent.name, pid=summary["pid"])
                        return
                time.sleep(0.05)

        import threading

        killer = threading.Thread(target=kill_the_first_checkpointed_trial)
        killer.start()
        events = []
        run_sweep(spec, runs, DaskExecutor(cluster.scheduler_address), events.append,
                  figure_formats=())
        killer.join()
    assert killed, "no trial reached its fifth epoch"
    dask = finished(events)
    assert [r.status for r in dask] == ["completed"] * 2
    assert [r.final for r in dask] == [r.final for r in finished(inline)]
    assert len(RunStore(runs).runs()) == 2  # no fresh run for the killed trial
    summary = json.loads((runs / killed["run"] / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumed"] == 1
    assert summary["pid"] != killed["pid"]
