"""Processes that draw figures beside the training: finished runs' figures from their saved
files, side by side (FigureDrawers), and a sweep's capacity figure (FigureProcess).

A group of trials finishes all at once, and a run's figures take 0.4-1 s of one core, so a
group's figures are drawn by up to one process per core but one. The processes start with the
group: their start-up (a fresh interpreter importing matplotlib and the figure code, about 2 s,
and loading the dataset) then overlaps the training instead of following it.
"""

from __future__ import annotations

import importlib
import multiprocessing
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import suppress
from pathlib import Path

from mlptrain.memory import available_cores


class FigureDrawers:
    """`with FigureDrawers(runs) as drawers: drawers.submit(run, fmt) ... drawers.records()`:
    `runs`, the directories of the runs that will want figures (no processes for fewer than
    two). A run submitted is drawn at once where there are processes, so drawing the first
    runs overlaps writing the others."""

    def __init__(self, runs: list[str]):
        # one core stays with the training process where there are several: 16 drawers
        # starting up beside it on 16 cores slowed its first epoch from 0.46 to 0.87 s on an
        # H200 host
        cores = available_cores()
        processes = min(len(runs), cores - 1 if cores > 2 else cores)
        self.pool, self.submitted = None, []
        # a sweep's worker process is a daemon, which may have no children: it draws itself
        if processes > 1 and not multiprocessing.current_process().daemon:
            self.pool = ProcessPoolExecutor(processes, multiprocessing.get_context("spawn"),
                                            initializer=_ready, initargs=(runs[0],))
            for _ in range(processes):  # a process starts per task that finds none idle
                self.pool.submit(_started)

    def submit(self, path: str, fmt: str) -> None:
        """Draws the run's figures (from its files, which must be complete) and records them
        in its summary."""
        self.submitted.append(self.pool.submit(_draw, path, fmt)
                              if self.pool is not None else (path, fmt))

    def records(self) -> list[dict]:
        """Each submitted run's figure record (as its summary.json now holds it), in order."""
        if not self.submitted:  # a sweep's trials draw none by default: no matplotlib import
            return []
        # imported here, not before: matplotlib takes this process 0.3-0.4 s, which now
        # overlaps the drawing (and readies its own figures, such as a sweep's summary)
        from mlptrain.experiment.plot import draw_saved_run_figures

        if self.pool is None:
            return [draw_saved_run_figures(*task) for task in self.submitted]
        return [future.result() for future in self.submitted]

    def __enter__(self) -> FigureDrawers:
        return self

    def __exit__(self, *exc) -> None:
        # not waiting for the processes to exit (0.4 s for 15 on an H200 host): they go while
        # the caller writes its summary; after an error or Ctrl-C, nothing more is drawn
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)


def _ready(run: str) -> None:
    """A drawing process's start, while the group trains: Ctrl-C is the training process's to
    handle; one BLAS thread (one process per core already: 16 processes of 16 threads each
    took 3x as long on an H200 host's 16 cores); the figure code (matplotlib) imported and
    the run's dataset loaded (kept for the runs drawn here: a second of the first drawing)."""
    from threadpoolctl import threadpool_limits

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threadpool_limits(1)
    import mlptrain.experiment.plot  # noqa: F401
    from mlptrain.config import load_config
    from mlptrain.errors import MlptrainError
    from mlptrain.experiment.setup import prepare

    try:
        prepare(load_config(Path(run) / "config.toml", ["train.device=cpu"]))
    except MlptrainError:  # the drawing will meet it again and record why
        pass


def _draw(path: str, fmt: str) -> dict:
    """A run's figures, in a drawing process (the figure code is imported there only)."""
    from mlptrain.experiment.plot import draw_saved_run_figures

    return draw_saved_run_figures(path, fmt)


def _started() -> None:
    """A task that makes the pool start one more process."""


class FigureProcess:
    """`FigureProcess(module)`, then `.draw(name, *args)`: module.name(*args), called in a
    process of its own that starts now and imports `module` (a sweep's capacity figure:
    matplotlib, 0.3-0.45 s) while this one trains. Neither that import nor its hold on the GIL
    then slows this process, as an import in a thread here did (a GPU sweep's loop is bound by
    the Python that launches its steps). The call is made here instead where `module` is
    imported here already, where no process may start (a sweep's daemon worker), or where the
    process died (Ctrl-C as it started); its errors are raised here either way."""

    def __init__(self, module: str):
        self.module, self.pool = module, None
        if module not in sys.modules and not multiprocessing.current_process().daemon:
            self.pool = ProcessPoolExecutor(1, multiprocessing.get_context("spawn"),
                                            initializer=_imported, initargs=(module,))
            self.pool.submit(_started)  # the process starts with its first task

    def draw(self, name: str, *args):
        if self.pool is not None:
            with suppress(BrokenProcessPool):
                return self.pool.submit(_call, self.module, name, *args).result()
        return _call(self.module, name, *args)

    def close(self) -> None:
        """Lets the process go (it exits once idle; this one does not wait here)."""
        if self.pool is not None:
            self.pool.shutdown(wait=False)


def _imported(module: str) -> None:
    """A FigureProcess's start: Ctrl-C is the sweep's to handle; the figure code imported."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    importlib.import_module(module)


def _call(module: str, name: str, *args):
    return getattr(importlib.import_module(module), name)(*args)
