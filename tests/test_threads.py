"""The CPU's BLAS thread choice (backend/threads.py): timed on the run's own step before its
first one, the fastest kept for the run and the BLAS's own count given back after it; a fixed
count (MLPTRAIN_CPU_TUNE=0, OMP_NUM_THREADS, ...) is left alone; a resume takes the count its
run recorded. The fake steps below are slow at one count and quick at the other, so a choice
that ignored the timings, or kept the wrong one, fails; no test here asserts a duration."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from conftest import CONFIGS

from mlptrain.backend import get_backend, threads
from mlptrain.backend.events import ThreadsChosen
from mlptrain.config import load_config
from mlptrain.experiment import fit_experiment, resume_experiment
from mlptrain.loop import StepsDone, StopFlag
from mlptrain.runs import RunStore

blas = threads.numpy_blas()
several = pytest.mark.skipif(blas is None or blas.num_threads < 2,
                             reason="the BLAS runs one thread here: nothing to choose")


@pytest.fixture
def tuning(monkeypatch):
    """Timing on (conftest turns it off for every other test), no count fixed outside."""
    monkeypatch.setenv(threads.TUNE_VARIABLE, "1")
    monkeypatch.setattr(threads, "WINDOW", 0.01)  # the fake steps below need no long window
    for name in threads.THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def slow_at(count: int):
    """A fake step that takes 20 ms at `count` BLAS threads and 1 ms at any other."""
    def trial():
        time.sleep(0.02 if blas.num_threads == count else 0.001)
    return trial


def listening():
    """(the CPU backend, the events it reports, NumPy's BLAS threads before the test)."""
    ops, heard = get_backend("cpu"), []
    ops.on_event = heard.append
    return ops, heard, blas.num_threads


def test_the_candidates_are_one_the_powers_of_two_and_every_core():
    assert threads.candidates(1) == [1]
    assert threads.candidates(2) == [1, 2]
    assert threads.candidates(6) == [1, 2, 4, 6]
    assert threads.candidates(8) == [1, 2, 4, 8]


def test_what_fixes_the_count_is_named():
    assert threads.fixed_by({}) == ""
    assert threads.fixed_by({threads.TUNE_VARIABLE: "0"}) == "MLPTRAIN_CPU_TUNE=0"
    assert threads.fixed_by({"OMP_NUM_THREADS": "1"}) == "OMP_NUM_THREADS=1"


@several
@pytest.mark.parametrize("slow", [1, "own"])
def test_a_fresh_run_keeps_the_faster_count_and_gives_the_blas_its_own_back(tuning, slow):
    ops, heard, own = listening()
    slow = own if slow == "own" else slow
    record = ops.choose_threads(slow_at(slow), None, fresh=True)
    (event,) = heard
    assert isinstance(event, ThreadsChosen) and event.how == "timed"
    assert event.threads != slow and record == {"blas_threads": event.threads}
    assert blas.num_threads == event.threads  # set for the run's steps
    assert event.ms_per_step[slow] >= 20 > event.ms_per_step[event.threads]
    ops.restore_threads()
    assert blas.num_threads == own


@several
def test_a_step_too_quick_to_share_is_left_to_the_blas(tuning):
    ops, heard, own = listening()
    assert ops.choose_threads(lambda: None, None, fresh=True) is None  # nothing to record
    assert heard == [ThreadsChosen(own, "a step too quick to share", {})]
    assert blas.num_threads == own


@several
def test_a_recorded_count_is_reused_untimed(tuning):
    ops, heard, own = listening()
    record = ops.choose_threads(slow_at(1), [{"blas_threads": 1}], fresh=False)
    assert record == {"blas_threads": 1} and blas.num_threads == 1
    assert heard == [ThreadsChosen(1, "as recorded", {})]
    ops.restore_threads()
    assert blas.num_threads == own


@several
@pytest.mark.parametrize(("variable", "value"), [("MLPTRAIN_CPU_TUNE", "0"),
                                                 ("OPENBLAS_NUM_THREADS", "2")])
def test_a_count_fixed_outside_is_left_alone(tuning, monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    ops, heard, own = listening()
    assert ops.choose_threads(slow_at(own), None, fresh=True) is None  # nothing to record
    assert heard == [ThreadsChosen(own, f"{variable}={value}", {})]
    assert blas.num_threads == own


@several
def test_a_run_records_its_choice_and_its_resume_reuses_it(tuning, runs_dir, monkeypatch):
    monkeypatch.setattr(threads, "SMALL_STEP", 0.0)  # xor's steps are timed all the same
    stop, heard = StopFlag(), []

    def on_event(event):
        heard.append(event)
        if isinstance(event, StepsDone) and (event.epoch, event.step) == (2, 4):
            stop.set()

    config = load_config(CONFIGS / "xor.toml", ["train.epochs=3", "report.plots=false"])
    stopped = fit_experiment(config, RunStore(runs_dir), on_event, stop=stop)
    (chosen,) = [e for e in heard if isinstance(e, ThreadsChosen)]
    assert chosen.how == "timed"
    summary = json.loads((stopped.path / "summary.json").read_text())
    assert summary["blas_threads"]["threads"] == chosen.threads
    plans = json.loads(str(np.load(stopped.path / "checkpoint.npz")["product_plans"]))
    assert plans == [{"blas_threads": chosen.threads}]

    heard.clear()
    resumed = resume_experiment(RunStore(runs_dir), stopped.run_id, on_event=heard.append)
    assert [e for e in heard if isinstance(e, ThreadsChosen)] == \
        [ThreadsChosen(chosen.threads, "as recorded", {})]
    assert resumed.summary["blas_threads"]["how"] == "as recorded"
