"""Training a run: a new one from a config, or an interrupted one from its checkpoint.

The CLI calls `fit_experiment` / `resume_experiment` and renders their events; nothing here prints.
"""

from __future__ import annotations

import os
import platform
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

import mlptrain
from mlptrain import loop
from mlptrain.config import Config, ignored_keys
from mlptrain.errors import DataError, RunStoreError, TrainingError
from mlptrain.experiment.setup import (SPLITS, Prepared, changed_files, check_new_run,
                                       load_start_weights, prepare, prepare_saved,
                                       run_config)
from mlptrain.experiment.training import (RunFinished, TrainingRun, finish_run,
                                          os_errors_fail, train_runs)
from mlptrain.optim import build_optimizer
from mlptrain.runs import Run, RunStore
from mlptrain.runs.checkpoint import restore


@dataclass
class RunStarted:
    run_id: str
    path: Path
    layers: list[str]
    parameters: int
    samples: dict[str, int]  # split -> size
    device: str
    dtype: str
    resumed_at: tuple[int, int] | None = None  # (epochs completed, steps into the next)
    train_path: str = ""  # `cuda graph` or `eager: <reasons>` (backend.epoch_path)
    member: int = 0  # its place in a group (group_fit.fit_group); 0 for a run alone


@dataclass
class DrawingFigures:
    """A completed fit is drawing its figures ([report] plots = true): a display may say so."""

    run_id: str
    path: Path


def fit_experiment(config: Config, store: RunStore,
                   on_event: Callable[[Any], None] = lambda e: None,
                   data_progress: Callable | None = None,
                   stop: loop.StopFlag | None = None) -> RunFinished:
    """Trains the configured model into a new run directory and returns its summary.

    Setting `stop` ends training after the current batch with a checkpoint; the summary's
    status is then `interrupted` and `resume_experiment` continues the run.
    """
    p = prepare(config, data_progress)
    load_start_weights(p)
    optimizer = build_optimizer(p.step.optimizer, p.model.ops, p.model.params)
    splits = _splits(p)
    m = start_run(p, store)
    with os_errors_fail(m.run, m.summary), interrupts_marked(m.run, m.summary):
        return _alone(m, optimizer, splits, on_event, stop)


def resume_experiment(store: RunStore, ref: str,
                      on_event: Callable[[Any], None] = lambda e: None,
                      data_progress: Callable | None = None,
                      stop: loop.StopFlag | None = None,
                      allow_data_change: bool = False) -> RunFinished:
    """Continues a run from its checkpoint.npz, in its own directory, to the same weights an
    uninterrupted run would have reached. A dataset file whose SHA-256 differs from the one
    the run recorded is refused unless `allow_data_change` (then the change is recorded)."""
    run = store.find(ref)
    summary = run.read_summary()
    run.check_no_writer(summary)  # before any work; reopen_run checks again before writing
    if summary.get("status") == "completed":
        raise RunStoreError(f"run {run.run_id} has already completed; there is nothing to "
                            "resume. Start a new run with `mlptrain fit`.")
    if summary.get("path") == "grouped" and not (run.path / "checkpoint.npz").exists():
        raise RunStoreError(f"run {run.run_id} was trained in a group of a sweep (`sweep "
                            "--group`) and stopped while its steps were under way, so it has "
                            "no checkpoint to resume from. Run the same `mlptrain sweep` "
                            "command again: it trains the interrupted trials afresh.")
    checkpoint = run.read_checkpoint()  # before any work: a run without one cannot resume
    # the run's own statistics, as its epochs so far saw them
    p = prepare_saved(run, summary, run_config(run), data_progress)
    splits = _splits(p)
    m, optimizer = reopen_training(run, summary, p, checkpoint, allow_data_change)
    summary["path"] = p.path
    with os_errors_fail(run, summary), interrupts_marked(run, summary):
        run.write_summary(summary)
        return _alone(m, optimizer, splits, on_event, stop)


def run_started(m: TrainingRun, member: int = 0) -> RunStarted:
    """The event that a run (alone, or member `member` of a group) starts its training."""
    p, state = m.p, m.state
    return RunStarted(m.run.run_id, m.run.path, p.model.describe(), p.model.parameter_count,
                      {k: len(p.dataset.targets(k)) for k in SPLITS}, p.model.ops.device,
                      p.config.train.dtype, (state.epoch, state.position) if state.step
                      else None, m.summary["path"], member)


def start_run(p: Prepared, store: RunStore, path: str | None = None) -> TrainingRun:
    """A new run for p, its config and first summary written (`path`: how its steps run)."""
    check_new_run(p)  # before its directory exists
    run = store.create(p.config.name)
    m = TrainingRun(p, run, start_summary(run, p))
    if path:
        m.summary["path"] = path
    with os_errors_fail(run, m.summary):
        run.write_config(p.config.to_toml())
        statistics = [s.arrays() for s in (p.dataset.scaler, p.dataset.target_scale) if s]
        if statistics:  # before the summary that says they are there
            run.write_preprocess({k: v for arrays in statistics for k, v in arrays.items()})
        run.write_summary(m.summary)
    return m


def reopen_training(run: Run, summary: dict, p: Prepared, checkpoint: dict,
                    allow_data_change: bool = False) -> tuple[TrainingRun, Any]:
    """An interrupted run made ready to go on (resume_experiment; a group's resumed members):
    its checkpoint restored into p's model, a new optimizer and p's random streams, its
    metrics cut back to the checkpoint's history, its summary (not yet written) running
    again. Returns (the training run, its optimizer)."""
    _check_same_data(run, summary, p.dataset.checksums, allow_data_change)
    optimizer = build_optimizer(p.step.optimizer, p.model.ops, p.model.params)
    state = restore(checkpoint, p.model, optimizer, p.rngs, str(run.path / "checkpoint.npz"),
                    p.step, len(p.dataset.targets("train")))
    with os_errors_fail(run, summary):
        run.open_for_writing()  # one writer per run; removes what a killed writer left
        run.write_metrics(state.history)  # drops any record written after the checkpoint
    earlier = (summary.get("timing") or {}).get("wall_seconds") or 0.0  # the sitting it ended
    summary.update(status="running", epochs_completed=state.epoch, final=None, timing=None,
                   resumed=summary.get("resumed", 0) + 1, pid=os.getpid(), host=platform.node(),
                   earlier_sittings_seconds=summary.get("earlier_sittings_seconds", 0.0) + earlier)
    summary.pop("error", None)
    return TrainingRun(p, run, summary, state, len(state.history)), optimizer


def _splits(p: Prepared) -> dict[str, loop.Split]:
    # (early stopping without a val split is refused by config validation, before any data)
    return {name: loop.to_device(p.model.ops, p.model, *p.dataset.split(name),
                                 p.dataset.weights(name)) for name in SPLITS}


def _alone(m: TrainingRun, optimizer, splits, on_event, stop) -> RunFinished:
    """A run alone, the group of one: its training and files (train_runs), then its figures;
    a failure is raised (the CLI exits non-zero with its reason)."""
    on_event(run_started(m))
    (finished,) = train_runs([m], m.p.model, optimizer, splits, on_event, stop)
    if finished.status == "failed":
        raise TrainingError(finished.summary["error"])
    if finished.status == "completed" and m.p.config.report.plots:
        finished.figures = draw_figures(m.run, m.summary, m.p, on_event)
    on_event(finished)
    return finished


def draw_figures(run: Run, summary: dict, p: Prepared, on_event):
    """The run's figures, drawn here so that every fit (a sweep's trials too) gets them."""
    from mlptrain.experiment.plot import draw_fit_figures  # matplotlib loads only when drawing

    on_event(DrawingFigures(run.run_id, run.path))
    figures = draw_fit_figures(run, p, p.config.report.format)
    summary["figures"] = figures.to_summary()
    run.write_summary(summary)
    return figures


# -- failure modes ------------------------------------------------------------------------------


@contextmanager
def interrupts_marked(run: Run, summary: dict):
    """A KeyboardInterrupt (Ctrl-C; a sweep's SIGTERM) anywhere while a run is open for
    training, its set-up included, marks it interrupted: it resumes from its last checkpoint
    (a run left `running` would look as if its process still trained it)."""
    start = time.perf_counter()
    try:
        yield
    except KeyboardInterrupt:
        with suppress(OSError):
            finish_run(run, summary, "interrupted", start)
        raise


def _check_same_data(run: Run, summary: dict, checksums: dict[str, str], allow: bool) -> None:
    """The data a run resumes on must be the data it started on (its files' SHA-256)."""
    recorded = (summary.get("dataset") or {}).get("checksums") or {}
    changed = changed_files(summary, checksums)
    if not changed:
        return
    if not allow:
        name = changed[0]
        raise DataError(
            f"the dataset changed since run {run.run_id} started: {name} had SHA-256 "
            f"{str(recorded.get(name, 'none'))[:16]}..., now {str(checksums.get(name, 'none'))[:16]}"
            f"...{f' (and {len(changed) - 1} more file(s))' if len(changed) > 1 else ''}. "
            "Resuming would train the rest of the run on other data. Restore the original "
            "file, or pass --allow-data-change to continue on the new data anyway.")
    summary.setdefault("data_changes", []).append(
        {"resumed": summary.get("resumed", 0) + 1, "files": changed,
         "before": {k: recorded.get(k) for k in changed}})
    summary.setdefault("dataset", {})["checksums"] = dict(checksums)


# -- helpers --------------------------------------------------------------------------------------


def start_summary(run: Run, p: Prepared) -> dict[str, Any]:
    config, dataset, model = p.config, p.dataset, p.model
    return {
        "run_id": run.run_id,
        "name": config.name,
        "status": "running",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "pid": os.getpid(), "host": platform.node(),  # tells `mlptrain runs` a killed run
        "config_source": config.source,
        "overrides": config.overrides,
        "ignored_keys": ignored_keys(config),  # set, but read by nothing in this config
        "epochs_planned": config.train.epochs,
        "epochs_completed": 0,
        "final": None,
        "timing": None,
        "device": model.ops.device,
        "dtype": config.train.dtype,
        "path": p.path,  # how the steps run: `cuda graph` or `eager: <reasons>`
        "model": {"sizes": model.sizes, "parameters": model.parameter_count,
                  "activation": model.activation.name, "loss": model.loss.name},
        "dataset": {"name": dataset.name, "source": dataset.source,
                    "input_shape": list(dataset.input_shape),  # predict reshapes images to it
                    "checksums": dataset.checksums,
                    "samples": {k: int(len(dataset.targets(k))) for k in SPLITS},
                    "task": dataset.task,
                    "class_names": dataset.class_names,  # eval and predict show them
                    "notes": dataset.notes,
                    "encoding": dataset.encoding,  # a table's columns as inputs (data/csv.py)
                    # its statistics are in preprocess.npz (saved_scaler reads them back)
                    **({"standardized": True} if dataset.scaler is not None else {}),
                    # ... and the target's (saved_target_scale)
                    **({"target_standardized": True} if dataset.target_scale else {}),
                    # what weighs the loss's rows (data/weights.py), where anything does
                    **({"weights": dataset.weighting} if dataset.weighting else {})},
        "versions": {"mlptrain": mlptrain.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
    }


