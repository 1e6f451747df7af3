"""Runs a sweep: skips the trials already completed, runs the rest on an executor, keeps the
trial list current as events arrive, and writes the summary and the capacity figure.

Nothing here prints: the sweep's own events and the trials' events go to `on_event`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlptrain.errors import MlptrainError
from mlptrain.experiment.drawers import FigureProcess
from mlptrain.runs import atomic_write_text
from mlptrain.runs.checkpoint import epoch_end
from mlptrain.sweep.grid import SweepSpec
from mlptrain.sweep.store import SweepDir
from mlptrain.sweep.summary import group_rows, summary_csv, sweep_metrics, trial_rows
from mlptrain.sweep.trial import TrialFinished, TrialStarted, TrialTask

CAPACITY_AXIS = "model.hidden"
CAPACITY_CODE = "mlptrain.reports.capacity"  # the capacity figure's (FigureProcess imports it)


@dataclass
class SweepStarted:
    sweep_id: str
    path: Path
    trials: list[dict[str, Any]]  # index, name, point of every trial in the sweep
    to_run: list[int]  # indices about to run; the others completed in an earlier run
    executor: str
    continued: list[int] = field(default_factory=list)  # of to_run: from their checkpoints


@dataclass
class SweepFinished:
    sweep_id: str
    path: Path
    summary: dict[str, Any]
    files: list[Path] = field(default_factory=list)
    wall_seconds: float = 0.0
    trial_figures: bool = False  # whether the trials drew their runs' figures ([report] plots)


@dataclass
class SweepInterrupted:
    sweep_id: str
    path: Path
    counts: dict[str, int]  # status -> trials


def run_sweep(spec: SweepSpec, runs_root: str | Path, executor,
              on_event: Callable[[Any], None] = lambda e: None,
              figure_formats: tuple[str, ...] = ("png",)) -> SweepFinished:
    """Runs every trial of `spec` not yet completed under runs_root/sweeps/<sweep id>/."""
    root = Path(runs_root).resolve()  # workers may run elsewhere: give them absolute paths
    sweep = SweepDir(root, spec)
    sweep.open()
    figure = None
    try:
        tasks = _pending(sweep, root)
        on_event(SweepStarted(spec.sweep_id, sweep.path,
                              [{"index": t.index, "name": t.name, "point": t.point}
                               for t in spec.trials],
                              [t.index for t in tasks], executor.describe(),
                              [t.index for t in tasks if t.resume]))
        start = time.perf_counter()
        figure = FigureProcess(CAPACITY_CODE) if _draws_capacity(spec, figure_formats) \
            else None

        def handle(event) -> None:
            _record(sweep, event)
            on_event(event)

        try:
            executor.run(tasks, handle)
        except KeyboardInterrupt:
            for record in sweep.records.values():
                if record["status"] == "running":
                    record["status"] = "interrupted"
            sweep.write_trials()
            write_summary(sweep, figure_formats, figure)
            on_event(SweepInterrupted(spec.sweep_id, sweep.path, _counts(sweep)))
            raise
        wall = time.perf_counter() - start
        summary, files = write_summary(sweep, figure_formats, figure, wall)
    finally:
        if figure is not None:
            figure.close()
        sweep.close()
    finished = SweepFinished(spec.sweep_id, sweep.path, summary, files, wall,
                             any(t.config.report.plots for t in spec.trials))
    on_event(finished)
    return finished


def pending_tasks(spec: SweepSpec, runs_root: str | Path) -> list[TrialTask]:
    """What running the sweep now would do (sweep --dry-run), read without taking its lock."""
    root = Path(runs_root).resolve()
    sweep = SweepDir(root, spec)
    sweep.adopt_finished_runs()  # in memory, as the sweep would on opening
    return _pending(sweep, root)


def _pending(sweep: SweepDir, root: Path) -> list[TrialTask]:
    """The trials not yet completed, each afresh or on from its interrupted run."""
    return [_task(sweep, t, root) for t in sweep.spec.trials if not sweep.is_done(t.index)]


def _task(sweep: SweepDir, trial, root: Path) -> TrialTask:
    """A trial to run: afresh, or on from its interrupted run's checkpoint. A checkpoint that
    cannot be read starts the trial afresh as a new run (a resume of it would fail on every
    rerun of the sweep); the old run stays listed among the trial's previous runs."""
    resume, epoch, afresh = sweep.resumable(trial.index), None, ""
    if resume:
        try:
            epoch = epoch_end(root / resume / "checkpoint.npz")
        except MlptrainError as exc:
            why = str(exc).rstrip(".")
            resume, afresh = None, f"checkpoint of run {resume} unreadable ({why})"
    return TrialTask(trial.index, trial.name, trial.config, str(root), sweep.mark(trial.index),
                     resume, epoch, afresh)


def _record(sweep: SweepDir, event) -> None:
    """Keeps trials.json current: a trial is running once its run exists, then its end."""
    if isinstance(event, TrialStarted):
        record = sweep.records[event.index]
        if record["run_id"] != event.run_id:  # a new run, not one continued: timed afresh
            if record["run_id"]:
                record["previous_runs"].append(record["run_id"])
            record["seconds"] = None
        record.update(status="running", run_id=event.run_id, parameters=event.parameters,
                      final=None, error="")
        _mark_run(sweep, record)
    elif isinstance(event, TrialFinished):
        record = sweep.records[event.index]
        same_run = event.run_id in (None, record["run_id"])  # None: stopped before it started
        earlier = (record.get("seconds") or 0.0) if same_run else 0.0  # its earlier sittings
        run_id = record["run_id"]
        if event.run_id and run_id not in (None, event.run_id):
            record["previous_runs"].append(run_id)
        record.update({k: v for k, v in asdict(event).items() if k not in ("index", "name")})
        record["seconds"] = earlier + event.seconds
        record["run_id"] = event.run_id or run_id  # a resume refused before it started: its run
        if event.run_id and event.status == "completed":
            _mark_run(sweep, record)  # Dask reports no start: mark the run at its end
    elif not sweep.unwritten:
        return
    sweep.write_trials(soon=True)  # any event writes what was held back, once due


def _mark_run(sweep: SweepDir, record: dict[str, Any]) -> None:
    """Writes sweep.json into the trial's run, so the run names the sweep it belongs to."""
    run_dir = sweep.runs_root / record["run_id"]
    if run_dir.is_dir():  # a Dask worker may have written it on another machine
        atomic_write_text(run_dir / "sweep.json",
                          json.dumps(sweep.mark(record["index"]), indent=2) + "\n")


def _counts(sweep: SweepDir) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in sweep.records.values():
        counts[record["status"]] = counts.get(record["status"], 0) + 1
    return counts


def write_summary(sweep: SweepDir, figure_formats: tuple[str, ...],
                  figure: FigureProcess | None, wall_seconds: float | None = None
                  ) -> tuple[dict[str, Any], list[Path]]:
    """summary.json, summary.csv and (with a model.hidden axis) the capacity figure, which
    `figure` draws."""
    axes = [a.key for a in sweep.spec.axes]
    records = [sweep.records[t.index] for t in sweep.spec.trials]
    metrics = sweep_metrics(records)
    rows = trial_rows(axes, records, metrics)
    groups = group_rows(axes, rows, metrics=metrics)
    summary = {"sweep_id": sweep.spec.sweep_id, "name": sweep.spec.name, "axes": axes,
               "counts": _counts(sweep), "wall_seconds": wall_seconds,
               "trials": rows, "groups": groups}
    files = [sweep.write_text("summary.json", json.dumps(summary, indent=2) + "\n"),
             sweep.write_text("summary.csv", summary_csv(axes, rows, groups, metrics))]
    if figure is not None:  # the headline: accuracy, or R^2
        files += figure.draw("draw_sweep", summary, metrics[0], sweep.path / "capacity",
                             figure_formats, sweep.spec.name)
    return summary, files


def _draws_capacity(spec: SweepSpec, figure_formats: tuple[str, ...]) -> bool:
    """Whether the sweep draws its capacity figure: a model.hidden axis and a format."""
    return bool(figure_formats) and CAPACITY_AXIS in [a.key for a in spec.axes]
