"""One trial, as a worker runs it: an ordinary fit into the run store, reported as events.

This module is what a worker process (local or on a Dask cluster) imports; it must stay cheap
to import and must never print. A trial's progress goes to a `report` callback as the events
below, small picklable dataclasses that cross process boundaries through a queue.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlptrain.backend.threads import THREAD_VARIABLES
from mlptrain.config import Config

STOP_CHECK_SECONDS = 0.5  # how often a trial asks whether the sweep was stopped


@dataclass
class TrialTask:
    """What a worker needs to run one trial (picklable)."""

    index: int
    name: str
    config: Config
    runs_root: str  # absolute: a worker's working directory may differ
    mark: dict[str, Any] | None = None  # written into the run as sweep.json when it starts
    resume: str | None = None  # an interrupted run of this trial to continue (its run id)
    resume_epoch: int | None = None  # its checkpoint ends this epoch (None: inside one)
    afresh: str = ""  # why an interrupted run of this trial is not continued ("": none is)

    @property
    def resumes_inside_an_epoch(self) -> bool:
        """Continues from a checkpoint inside an epoch: alone, never in a group."""
        return self.resume is not None and self.resume_epoch is None


@dataclass
class GroupTask:
    """Trials a worker trains together as one batched model (sweep/grouping.py; picklable)."""

    tasks: list[TrialTask]


@dataclass
class TrialStarted:
    index: int
    name: str
    run_id: str
    parameters: int


@dataclass
class TrialProgress:
    index: int
    epoch: int
    epochs: int
    step: int  # steps done in this epoch
    steps: int
    loss: float  # running training loss of the epoch
    score: float  # ... and its declared metric (nn's Loss.metric)
    metric: str = "accuracy"


@dataclass
class TrialFinished:
    """The end of a trial, whatever happened: status completed, failed or interrupted."""

    index: int
    name: str
    status: str
    run_id: str | None = None
    final: dict[str, Any] = field(default_factory=dict)  # the run summary's final metrics
    parameters: int | None = None
    epochs: int = 0  # epochs completed
    seconds: float = 0.0  # wall time of the whole trial, data loading included
    error: str = ""
    worker: dict[str, Any] = field(default_factory=dict)  # pid, host, thread limits


def run_trial(task: TrialTask, report: Callable[[Any], None] = lambda e: None,
              should_stop: Callable[[], bool] = lambda: False) -> TrialFinished:
    """Fits the trial's config into a new run (or continues task.resume from its checkpoint);
    returns how it ended (never raises for a trial that fails: a sweep goes on past one bad
    point)."""
    from mlptrain.errors import MlptrainError
    from mlptrain.experiment import RunStarted, fit_experiment, resume_experiment
    from mlptrain.runs import RunStore
    from mlptrain.loop import EpochEnded, StepsDone

    start = time.perf_counter()
    started: dict[str, Any] = {}
    last_check = [start]

    def on_event(event) -> None:
        if isinstance(event, RunStarted):
            started.update(run_id=event.run_id, parameters=event.parameters)
            trial_started(task, event, report)
            return
        if isinstance(event, StepsDone):
            report(TrialProgress(task.index, event.epoch, task.config.train.epochs, event.step,
                                 event.steps, event.loss, event.score, event.metric))
        elif isinstance(event, EpochEnded):
            started["epochs"] = event.epoch
        else:
            return
        # only the loop's events may stop a trial: fit_experiment marks its run interrupted
        # from inside the loop, not before (RunStarted comes before the loop's try)
        now = time.perf_counter()
        if now - last_check[0] >= STOP_CHECK_SECONDS:
            last_check[0] = now
            if should_stop():
                raise KeyboardInterrupt

    def finished(status: str, **extra) -> TrialFinished:
        return TrialFinished(task.index, task.name, status, started.get("run_id"),
                             parameters=started.get("parameters"),
                             epochs=started.get("epochs", 0),
                             seconds=time.perf_counter() - start, worker=worker_info(), **extra)

    if should_stop():  # queued before the sweep was stopped: leave no run behind
        return finished("interrupted")
    try:
        store = RunStore(Path(task.runs_root))
        result = (resume_experiment(store, task.resume, on_event) if task.resume
                  else fit_experiment(task.config, store, on_event))
    except KeyboardInterrupt:
        return finished("interrupted")
    except MlptrainError as exc:
        return finished("failed", error=str(exc))
    except Exception as exc:  # noqa: BLE001 - a bug, not a bad point: keep going, keep the evidence
        return finished("failed", error=f"{type(exc).__name__}: {exc}")
    summary = result.summary
    return finished("completed", final=summary["final"])


def trial_started(task: TrialTask, event, report: Callable[[Any], None]) -> None:
    """A trial's run exists (experiment.RunStarted): its sweep.json mark is written, here in
    the worker, not by the sweep process (if that is killed, a rerun still finds and adopts
    the runs its workers completed), and the sweep hears of it."""
    from mlptrain.runs import atomic_write_text

    if task.mark:
        atomic_write_text(event.path / "sweep.json", json.dumps(task.mark, indent=2))
    report(TrialStarted(task.index, task.name, event.run_id, event.parameters))




def worker_info() -> dict[str, Any]:
    """Which process ran the trial and the BLAS thread limits it ran under."""
    import os
    import socket

    info: dict[str, Any] = {"pid": os.getpid(), "host": socket.gethostname()}
    info["env"] = {k: os.environ.get(k) for k in THREAD_VARIABLES[:3]}
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:  # a GPU worker pinned to its device
        info["gpus"] = os.environ["CUDA_VISIBLE_DEVICES"]
    try:
        from threadpoolctl import threadpool_info  # optional: what the BLAS really uses
    except ImportError:
        return info
    info["blas_threads"] = sorted({p["num_threads"] for p in threadpool_info()})
    return info
