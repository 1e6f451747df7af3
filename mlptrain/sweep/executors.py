"""Where trials run: in this process or in local worker processes (cluster.py: on Dask).

An executor's `run(tasks, report)` runs every task and calls `report` (in the calling thread)
with each trial's events, ending with one TrialFinished per trial that ran. On Ctrl-C it asks
the running trials to stop (each marks its run interrupted), reports what came back, and
re-raises KeyboardInterrupt.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from mlptrain.errors import MlptrainError
from mlptrain.memory import available_cores
from mlptrain.sweep.trial import (THREAD_VARIABLES, GroupTask, TrialFinished, TrialTask,
                                  run_trial)

STOP_TIMEOUT = 30.0  # seconds the running trials get to stop cleanly after Ctrl-C
PARENT_POLL_SECONDS = 0.2  # how often a worker checks that the sweep process still lives
ORPHAN_GRACE_SECONDS = 10.0  # an orphaned worker's time to mark its run interrupted
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>: signal this process when its parent dies


class SweepError(MlptrainError):
    """The sweep's machinery (worker processes, the Dask scheduler) failed."""


# -- in this process -------------------------------------------------------------------------------


class InlineExecutor:
    """Runs trials one after another in this process: `--workers 0` (for debugging), and
    by default trials on a single GPU."""

    workers, threads = 0, None

    def describe(self) -> str:
        return "in this process"

    def run(self, tasks: list[TrialTask], report: Callable[[Any], None]) -> None:
        for task in tasks:
            result = run_trial(task, report)
            report(result)
            if result.status == "interrupted":  # only Ctrl-C interrupts a trial here
                raise KeyboardInterrupt


# -- local worker processes ------------------------------------------------------------------------


class LocalExecutor:
    """`workers` spawned processes pull trials from a queue and send events back on another.

    Each worker gets `threads` BLAS threads, set in its environment before it imports NumPy, so
    that workers x threads never exceeds the cores. Workers ignore SIGINT: Ctrl-C reaches this
    process only, which tells them to stop through an Event they poll between steps.
    """

    def __init__(self, workers: int | None = None, cores: int | None = None,
                 devices: list[str] | None = None):
        self.cores = cores or available_cores()
        self.devices = devices  # GPUs: one worker per device, pinned to it (see run)
        self.workers = len(devices) if devices else max(1, workers or self.cores)
        self.threads = self.threads_for(self.workers)

    def threads_for(self, processes: int) -> int:
        return max(1, self.cores // processes)

    def describe(self) -> str:
        on = f", one per GPU ({', '.join(self.devices)})" if self.devices else ""
        return f"{self.workers} worker process{'es' * (self.workers > 1)} x {self.threads} " \
               f"BLAS thread{'s' * (self.threads > 1)}{on}"

    def start(self, ctx, target, args, count: int, devices: list[str] | None = None) -> list:
        """Starts `count` processes running target(*args), sharing the cores between them;
        with `devices`, process i sees only GPU devices[i] (CUDA_VISIBLE_DEVICES)."""
        procs = []
        with sigint_ignored():
            for i in range(count):
                pinned = {"CUDA_VISIBLE_DEVICES": devices[i]} if devices else {}
                with child_environment(self.threads_for(count), pinned):
                    procs.append(ctx.Process(target=target, args=args, daemon=True))
                    procs[-1].start()
        return procs

    def run(self, tasks: list[TrialTask | GroupTask], report: Callable[[Any], None],
            devices: list[str] | None = None) -> None:
        """Runs the tasks (trials, or groups of them) in the workers; with `devices` (default:
        this executor's), one worker per GPU, pinned to it, each taking the next task when it
        is free."""
        if not tasks:
            return
        devices = devices or self.devices
        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: env read at startup
        task_q, event_q, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
        # fewer tasks than workers: fewer processes, more threads each
        count = min(len(devices) if devices else self.workers, len(tasks))
        for task in tasks:
            task_q.put(task)
        for _ in range(count):
            task_q.put(None)  # one "no more work" per worker
        # after Ctrl-C the unstarted tasks stay in the pipe; exiting must not wait to flush them
        task_q.cancel_join_thread()
        procs = self.start(ctx, _worker_main, (task_q, event_q, stop, os.getpid()), count,
                           devices)
        pending = {t.index: t for task in tasks
                   for t in (task.tasks if isinstance(task, GroupTask) else [task])}
        with interrupts_between_reads() as noted:
            try:
                _pump(event_q, procs, pending, report, None, noted)
                _report_lost(pending, procs, report)
            except KeyboardInterrupt:
                stop.set()
                try:
                    _pump(event_q, procs, pending, report, time.monotonic() + STOP_TIMEOUT,
                          noted)
                except KeyboardInterrupt:  # a second Ctrl-C: stop waiting
                    pass
                raise
            finally:
                for p in procs:
                    p.join(timeout=1.0)
                    if p.is_alive():
                        p.kill()
                        p.join()


@contextlib.contextmanager
def interrupts_between_reads():
    """Ctrl-C and SIGTERM (which the CLI makes a Ctrl-C) noted inside the block, not raised:
    `_pump` raises KeyboardInterrupt between two reads of the workers' events, and the block
    at its end. Raised inside Queue.get, it could leave the pipe in the middle of a message,
    and the next read would unpickle the message's rest (EOFError: a sweep once exited 1
    instead of marking its trials interrupted). Yields the list of signals noted."""
    noted: list[int] = []
    with _handled((signal.SIGINT, signal.SIGTERM), lambda signum, frame: noted.append(signum)):
        yield noted
    _raise_noted(noted)


def _raise_noted(noted: list[int]) -> None:
    if noted:
        noted.clear()
        raise KeyboardInterrupt


def _pump(event_q, procs, pending: dict, report, deadline: float | None,
          noted: list[int]) -> None:
    """Forwards worker events until every task has finished, the workers are gone, or the
    deadline passes; a signal `noted` meanwhile raises KeyboardInterrupt between two reads."""
    while pending and (deadline is None or time.monotonic() < deadline):
        _raise_noted(noted)
        try:
            event = event_q.get(timeout=0.2)
        except queue.Empty:
            if not any(p.is_alive() for p in procs):
                try:  # the last events may still be in the pipe
                    event = event_q.get(timeout=0.5)
                except queue.Empty:
                    return
            else:
                continue
        report(event)
        if isinstance(event, TrialFinished):
            pending.pop(event.index, None)


def _report_lost(pending: dict, procs, report) -> None:
    """Trials whose worker died (killed, out of memory) without reporting: failed."""
    codes = sorted({p.exitcode for p in procs if p.exitcode})
    for task in list(pending.values()):
        report(TrialFinished(task.index, task.name, "failed",
                             error=f"its worker process exited (codes {codes}) before the "
                                   "trial finished"))
        pending.pop(task.index)


def _worker_main(task_q, event_q, stop, parent_pid: int) -> None:
    lifeline = Lifeline(parent_pid)

    def should_stop() -> bool:
        return lifeline.lost or stop.is_set()

    while not should_stop():
        try:  # a timeout, so an idle worker whose sweep died leaves at once, not after grace
            task = task_q.get(timeout=PARENT_POLL_SECONDS)
        except queue.Empty:
            continue
        if task is None:
            break
        if isinstance(task, GroupTask):  # its members report their own TrialFinished
            from mlptrain.sweep.grouping import run_group_task

            run_group_task(task, lambda e: lifeline.lost or event_q.put(e), should_stop)
            if lifeline.lost or stop.is_set():
                break
            continue
        result = run_trial(task, lambda e: lifeline.lost or event_q.put(e), should_stop)
        if lifeline.lost:
            break  # the trial marked its run interrupted; a rerun of the sweep takes it up
        event_q.put(result)
    if lifeline.lost:
        # skip the queues' exit handlers: flushing events nobody reads could block for ever
        # (a normal exit must flush: the last TrialFinished may still be in the feeder)
        os._exit(0)


class Lifeline:
    """Tells a worker that the sweep process that started it is gone, however it died (SIGKILL
    included): `lost` turns true, the running trial stops at its next check and marks its run
    interrupted. A worker that has not exited `grace` seconds later (blocked waiting for a task,
    say) is ended from here.

    Two mechanisms: on Linux the kernel sends SIGTERM when the parent dies (PR_SET_PDEATHSIG);
    everywhere a daemon thread polls the parent pid (a dead parent's children are adopted by
    another process, so the pid changes). `lost` is a plain attribute, not a threading.Event,
    on purpose: the signal handler runs between any two bytecodes of the main thread, possibly
    inside Event.set holding the Event's lock, and a second set() from the handler would then
    wait on that lock for ever."""

    def __init__(self, parent_pid: int, poll: float = PARENT_POLL_SECONDS,
                 grace: float = ORPHAN_GRACE_SECONDS):
        self.parent_pid, self.poll, self.grace = parent_pid, poll, grace
        self.lost = False
        if sys.platform.startswith("linux"):
            with contextlib.suppress(OSError, AttributeError, ValueError):
                signal.signal(signal.SIGTERM, self._on_parent_death)
                libc = ctypes.CDLL(None, use_errno=True)
                libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        self._check()  # the parent may have died before the death signal was armed
        threading.Thread(target=self._watch, name="watch-parent", daemon=True).start()

    def _on_parent_death(self, signum, frame) -> None:
        self.lost = True

    def _check(self) -> None:
        if os.getppid() != self.parent_pid:
            self.lost = True

    def _watch(self) -> None:
        while not self.lost:
            time.sleep(self.poll)
            self._check()
        time.sleep(self.grace)
        os._exit(1)


@contextlib.contextmanager
def child_environment(threads: int, extra: dict[str, str] | None = None):
    """Sets the BLAS thread variables (and `extra`) for processes started inside the block (a
    spawned child copies this environment), and restores ours afterwards."""
    variables = {k: str(threads) for k in THREAD_VARIABLES} | (extra or {})
    saved = {k: os.environ.get(k) for k in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def sigint_ignored():
    """Children started inside inherit SIGINT ignored (Python keeps an inherited SIG_IGN)."""
    return _handled((signal.SIGINT,), signal.SIG_IGN)


@contextlib.contextmanager
def _handled(signals: tuple, handler):
    """`signals` go to `handler` inside the block, then back to their handlers; outside the
    main thread, where none is delivered, they are left alone."""
    try:
        previous = {s: signal.signal(s, handler) for s in signals}
    except ValueError:  # not the main thread
        previous = {}
    try:
        yield
    finally:
        for s, before in previous.items():
            signal.signal(s, before)
