"""Trials on a Dask cluster: each one a task submitted to a dask.distributed scheduler.

Results come back as futures; each trial's start and (twice a second) its progress come back
through a Dask Queue, as plain dicts (the queue carries msgpack-able data only). Ctrl-C sets a
Dask Event that the running trials poll, so they stop and mark their runs interrupted.

A group of trials (sweep/grouping.py) is one task too: the worker that takes it trains the
group as one batched model on its GPU (start each worker with its own CUDA_VISIBLE_DEVICES,
one worker process per GPU), and the future's result is every member's TrialFinished.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

from mlptrain.errors import ConfigError
from mlptrain.sweep.executors import STOP_TIMEOUT, SweepError
from mlptrain.sweep.store import stale_run_of
from mlptrain.sweep.trial import (GroupTask, TrialFinished, TrialProgress, TrialStarted,
                                  TrialTask, run_trial)

DASK_HINT = "pip install 'mlptrain[dask]'"
PROGRESS_SECONDS = 0.5  # at most this often a trial's progress crosses the scheduler
EVENTS = {"TrialStarted": TrialStarted, "TrialProgress": TrialProgress}


def import_distributed():
    try:
        import distributed
    except ImportError:
        raise ConfigError(f"--executor dask needs dask.distributed, which is not installed; "
                          f"install it with: {DASK_HINT}") from None
    return distributed


class DaskExecutor:
    """Workers need mlptrain installed, the data reachable at the config's path, and the runs
    directory on a filesystem they share with this machine (else the run directories stay on
    the workers; the sweep summary still gets every result)."""

    workers, threads = None, None
    takes_groups = True  # run() accepts GroupTasks: each goes to one worker (and its GPU)

    def __init__(self, address: str, connect_timeout: float = 10.0):
        if not address:
            raise ConfigError("--executor dask needs --scheduler ADDRESS, e.g. "
                              "--scheduler tcp://10.0.0.5:8786.")
        self.address, self.connect_timeout = address, connect_timeout
        self.distributed = import_distributed()

    def describe(self) -> str:
        return f"Dask scheduler {self.address}"

    def run(self, tasks: list[TrialTask | GroupTask], report: Callable[[Any], None]) -> None:
        if not tasks:
            return
        d = self.distributed
        try:
            client = d.Client(self.address, timeout=self.connect_timeout, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise SweepError(f"cannot reach the Dask scheduler at {self.address} ({exc}). Start "
                             "one with `dask scheduler` and give its tcp:// address.") from None
        tag = uuid.uuid4().hex
        stop = d.Event(f"mlptrain-stop-{tag}", client=client)
        events = d.Queue(f"mlptrain-events-{tag}", client=client)
        futures = {client.submit(_dask_task, task, stop.name, events.name, pure=False,
                                 key=f"mlptrain-{_task_name(task)}-{tag[:8]}"): task
                   for task in tasks}
        pending, finished = dict(futures), set()
        try:
            _follow(pending, finished, events, report, deadline=None)
        except KeyboardInterrupt:
            stop.set()
            with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C: stop waiting
                _follow(pending, finished, events, report, time.monotonic() + STOP_TIMEOUT)
            raise
        finally:
            with contextlib.suppress(Exception):
                client.cancel(list(futures))
                client.close()


def _follow(pending: dict, finished: set[int], events, report, deadline: float | None) -> None:
    """Reports queued trial events and finished futures until none is pending or the deadline
    passes. Events of a trial that has finished are dropped (the two channels do not keep
    order between them)."""
    while pending and (deadline is None or time.monotonic() < deadline):
        for item in events.get(batch=True):  # whatever is queued now, without waiting
            event = EVENTS[item.pop("kind")](**item)
            if event.index not in finished:
                report(event)
        done = [f for f in pending if f.done()]
        for future in done:
            for result in _dask_results(future, pending.pop(future)):
                finished.add(result.index)
                report(result)
        if not done:
            time.sleep(0.1)


def _task_name(task: TrialTask | GroupTask) -> str:
    return f"group-{task.tasks[0].name}" if isinstance(task, GroupTask) else task.name


def _dask_results(future, task: TrialTask | GroupTask) -> list[TrialFinished]:
    try:
        result = future.result()
    except Exception as exc:  # noqa: BLE001 - the worker died or could not run the task
        trials = task.tasks if isinstance(task, GroupTask) else [task]
        return [TrialFinished(t.index, t.name, "failed",
                              error=f"the Dask task failed: {type(exc).__name__}: {exc}")
                for t in trials]
    return result if isinstance(result, list) else [result]


def _dask_task(task: TrialTask | GroupTask, stop_name: str,
               events_name: str) -> TrialFinished | list[TrialFinished]:
    """Runs on a Dask worker: reports its start and progress, stops when the Event is set. A
    group returns its members' TrialFinished."""
    from distributed import Event, Queue

    stop, events = Event(stop_name), Queue(events_name)
    last = [0.0]
    ended: list[TrialFinished] = []

    def report(event) -> None:
        if isinstance(event, TrialFinished):  # a group member's: returned with the others
            ended.append(event)
            return
        now = time.monotonic()
        if isinstance(event, TrialProgress) and now - last[0] < PROGRESS_SECONDS:
            return
        last[0] = now
        events.put({"kind": type(event).__name__, **asdict(event)})

    if isinstance(task, GroupTask):
        from mlptrain.sweep.grouping import run_group_task

        run_group_task(task, report, stop.is_set)
        return ended
    if not task.resume and not task.afresh:  # handed on from a worker that died in it: Dask
        # retries a dead worker's task, which continues that worker's run from its checkpoint
        task = replace(task, resume=stale_run_of(task.runs_root, task.mark))
    return run_trial(task, report, stop.is_set)
