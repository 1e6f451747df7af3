"""Training a run: a new one from a config, or an interrupted one from its checkpoint.

The CLI calls `fit_experiment` / `resume_experiment` and renders their events; nothing here prints.
"""

from __future__ import annotations

import errno
import os
import platform
import time
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

import mlptrain
from mlptrain import loop
from mlptrain.arrayfiles import read_npz
from mlptrain.backend.events import ThreadsChosen
from mlptrain.config import Config, load_config
from mlptrain.experiment.diagnose import run_warnings
from mlptrain.errors import DataError, RunStoreError, TrainingError
from mlptrain.experiment.setup import (SPLITS, Prepared, network_expect, prepare,
                                       prepare_saved)
from mlptrain.model import MLP
from mlptrain.optim import build_optimizer
from mlptrain.runs import Run, RunStore
from mlptrain.runs.checkpoint import CheckpointWriter, checkpoint_arrays, restore


# summary["figures"] of a run that drew none ([report] plots = false); `mlptrain plot RUN`
# draws them and records them there as a fit that draws them does (experiment/plot.py)
FIGURES_NOT_DRAWN = {"files": [], "not_drawn": "[report] plots = false; `mlptrain plot RUN` "
                                               "draws them"}


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


@dataclass
class RunFinished:
    run_id: str
    path: Path
    summary: dict[str, Any]
    figures: Any = None  # experiment.plot.FiguresDrawn when the fit drew them, else None
    member: int = 0

    @property
    def status(self) -> str:  # completed | failed | interrupted
        return self.summary["status"]


def fit_experiment(config: Config, store: RunStore,
                   on_event: Callable[[Any], None] = lambda e: None,
                   data_progress: Callable | None = None,
                   stop: loop.StopFlag | None = None) -> RunFinished:
    """Trains the configured model into a new run directory and returns its summary.

    Setting `stop` ends training after the current batch with a checkpoint; the summary's
    status is then `interrupted` and `resume_experiment` continues the run.
    """
    p = prepare(config, data_progress)
    if config.model.weights:  # start from a saved network instead of the initialisation
        p.model.load_state_dict(_read_weights_file(Path(config.model.weights), p.model),
                                source=config.model.weights)
    optimizer = build_optimizer(p.step.optimizer, p.model.ops, p.model.params)
    splits = _splits(p)
    m = start_run(p, store)
    with os_errors_fail(m.run, m.summary), interrupts_marked(m.run, m.summary):
        return _train(m, optimizer, splits, on_event, stop)


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
    p = prepare_saved(run, summary, load_config(run.path / "config.toml"), data_progress)
    splits = _splits(p)
    m, optimizer = reopen_training(run, summary, p, checkpoint, allow_data_change)
    summary["path"] = p.path
    with os_errors_fail(run, summary), interrupts_marked(run, summary):
        run.write_summary(summary)
        return _train(m, optimizer, splits, on_event, stop)


def stopped_at(epoch: int, position: int, step: int) -> dict[str, int]:
    """Where an interrupted run stands, as its summary records it: the epoch it resumes in
    (epochs done, plus the one it stopped inside) and the global step."""
    return {"epoch": epoch + 1 if position else epoch, "step": step}


@dataclass
class TrainingRun:
    """A run under training, alone or as one member of a group: its prepared config, its run
    and summary, and its ledger (the loop's TrainState)."""

    p: Prepared
    run: Run
    summary: dict
    state: loop.TrainState = field(default_factory=loop.TrainState)
    epochs_before: int = 0  # the epochs a resumed run had done before this sitting


def run_started(m: TrainingRun, member: int = 0) -> RunStarted:
    """The event that a run (alone, or member `member` of a group) starts its training."""
    p, state = m.p, m.state
    return RunStarted(m.run.run_id, m.run.path, p.model.describe(), p.model.parameter_count,
                      {k: len(p.dataset.split(k)[1]) for k in SPLITS}, p.model.ops.device,
                      p.config.train.dtype, (state.epoch, state.position) if state.step
                      else None, m.summary["path"], member)


def start_run(p: Prepared, store: RunStore, path: str | None = None) -> TrainingRun:
    """A new run for p, its config and first summary written (`path`: how its steps run)."""
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
                    p.step)
    with os_errors_fail(run, summary):
        run.open_for_writing()  # one writer per run; removes what a killed writer left
        run.write_metrics(state.history)  # drops any record written after the checkpoint
    earlier = (summary.get("timing") or {}).get("wall_seconds") or 0.0  # the sitting it ended
    summary.update(status="running", epochs_completed=state.epoch, final=None, timing=None,
                   resumed=summary.get("resumed", 0) + 1, pid=os.getpid(), host=platform.node(),
                   earlier_sittings_seconds=summary.get("earlier_sittings_seconds", 0.0) + earlier)
    summary.pop("error", None)
    return TrainingRun(p, run, summary, state, len(state.history)), optimizer


def split_targets(p: Prepared) -> dict[str, np.ndarray]:
    """p's targets of every split, as its dataset holds them (final_metrics scores them)."""
    return {name: p.dataset.split(name)[1] for name in SPLITS}


def _splits(p: Prepared) -> dict[str, loop.Split]:
    # (early stopping without a val split is refused by config validation, before any data)
    return {name: loop.to_device(p.model.ops, p.model, *p.dataset.split(name),
                                 p.dataset.weights(name)) for name in SPLITS}


def _train(m: TrainingRun, optimizer, splits, on_event, stop) -> RunFinished:
    """One run's training (the loop with its one member), then its files."""
    run, summary, p, state = m.run, m.summary, m.p, m.state
    config, model = p.config, p.model
    eager = loop.EagerStep(p.step, model, optimizer)
    on_event(run_started(m))

    writer = CheckpointWriter(run)
    files = _EpochFiles(run, summary, config.train.checkpoint_epochs, p.step.epochs)

    def save_checkpoint(g: int, s: loop.TrainState) -> None:
        writer.write(checkpoint_arrays(model, optimizer, p.rngs, s))

    def save_epoch(g: int, s: loop.TrainState) -> None:
        due = files.due(s)
        if due:  # first: the checkpoint holds the history too, and it is written while
            save_checkpoint(g, s)  # training goes on, so metrics may reach the disk before
        files.ended(s, due)  # it does (a resume rewrites them from its history)

    def heard(event) -> None:  # the BLAS threads chosen go into summary.json as well
        if isinstance(event, ThreadsChosen):
            summary["blas_threads"] = event.record()
        on_event(event)

    settings = loop.LoopSettings.from_config(config.train)
    ledger = loop.Member(state, p.rngs["shuffle"], p.step.schedule, settings)
    start = time.perf_counter()
    try:
        with closing(writer):  # the last checkpoint is on disk before the run is closed
            loop.train_members(eager, splits["train"], splits["val"], [ledger], heard,
                               save_epoch, stop, save_checkpoint, settings.eval_batch_size)
            files.flush()  # the epochs since the last epoch-end files (early stopping, a stop)
        if ledger.failed:
            raise TrainingError(ledger.failed)
    except TrainingError as exc:
        finish_run(run, summary, "failed", start, error=str(exc))
        raise
    seconds = time.perf_counter() - start
    if state.interrupted:
        summary["position"] = stopped_at(state.epoch, state.position, state.step)
        finish_run(run, summary, "interrupted", start)
        finished = RunFinished(run.run_id, run.path, summary)
        on_event(finished)
        return finished
    complete_run(m, model.state_dict(),
                 final_metrics(model, splits, settings.eval_batch_size,
                               [split_targets(p)])[0],
                 run_reference(p, settings.eval_batch_size), seconds)
    figures = draw_figures(run, summary, p, on_event) if config.report.plots else None
    finished = RunFinished(run.run_id, run.path, summary, figures)
    on_event(finished)
    return finished


class _EpochFiles:
    """A run's files at its epoch ends: the checkpoint every `every` epochs, and the metrics
    lines and summary each epoch; with every = 0 (auto), all three at the first epoch's end
    (a run killed later resumes from there), then at most once a FILES_SECONDS, and at the
    last. The summary's epochs_completed is the last epoch whose files are written. A big
    model's checkpoint costs more than its epoch (12 M weights: ~0.4 s per ~96 MB write
    against 0.25 s of training), so it may skip epoch ends; a small table's epoch takes a
    millisecond, against ~3 ms for its files' fsyncs (wine, 200 epochs: 0.5 s of fsync in a
    1.1 s run). A checkpoint holds the history, so a resume rewrites any metrics it lacks or
    runs behind."""

    FILES_SECONDS = 1.0

    def __init__(self, run: Run, summary: dict, every: int, epochs: int):
        self.run, self.summary, self.every, self.epochs = run, summary, every, epochs
        self.pending: list[dict] = []  # ended epochs' records not yet on disk
        self.written: float | None = None  # when they last were (None: not yet)

    def due(self, s: loop.TrainState) -> bool:
        """Whether the epoch that `s` just ended gets a checkpoint."""
        if s.epoch == self.epochs:
            return True
        if self.every:
            return s.epoch % self.every == 0
        return self.written is None or \
            time.perf_counter() - self.written >= self.FILES_SECONDS

    def ended(self, s: loop.TrainState, checkpointed: bool) -> None:
        self.pending.append(s.history[-1])
        if self.every or checkpointed:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.run.append_metrics(*self.pending)
            self.summary["epochs_completed"] = self.pending[-1]["epoch"]
            self.run.write_summary(self.summary)
            self.pending, self.written = [], time.perf_counter()


def complete_run(m: TrainingRun, weights: dict, final: dict, reference: dict,
                 seconds: float) -> None:
    """A finished run (alone or a group's member) written whole: its weights, final metrics, warnings, predict's
    reference and timing (`seconds`: this sitting's training wall time); completed."""
    p, run, summary, state = m.p, m.run, m.summary, m.state
    run.write_weights(weights)
    summary.update(final=final, stopped_early=state.stopped_early, best_epoch=state.best_epoch,
                   warnings=run_warnings(state.history, final, p.dataset),
                   reference=reference)
    summary.pop("position", None)
    if not p.config.report.plots:  # complete without them; a sweep's trials are, by default
        summary["figures"] = dict(FIGURES_NOT_DRAWN)
    summary["timing"] = run_timing(summary, state.history, m.epochs_before, seconds,
                                   len(p.dataset.split("train")[1]))
    finish_run(run, summary, "completed", time.perf_counter() - seconds)


def run_timing(summary: dict, history: list[dict], epochs_before: int, seconds: float,
               train_samples: int) -> dict[str, float]:
    """A finished run's timing: this sitting's wall time and rates (`epochs_before`: the epochs
    a resumed run had done before it), and the whole run's over every sitting."""
    epochs_here = max(len(history) - epochs_before, 1)
    return {
        "wall_seconds": seconds,
        "seconds_per_epoch": seconds / epochs_here,
        "samples_per_second": train_samples * epochs_here / seconds,
        # the epochs alone (their metrics' seconds): wall minus set-up (compiling, tuning) and
        # waits for checkpoint writes, which dominate a big model's short epochs
        "training_seconds": sum(r["seconds"] for r in history[epochs_before:]),
        # a run resumed across sittings (a GPU lease, a killed job) is timed whole as well; a
        # sitting that was killed outright recorded no wall time and adds none
        "sittings": summary.get("resumed", 0) + 1,
        "run_wall_seconds": summary.get("earlier_sittings_seconds", 0.0) + seconds,
        "run_training_seconds": sum(r["seconds"] for r in history),  # the epochs it kept
    }


def draw_figures(run: Run, summary: dict, p: Prepared, on_event):
    """The run's figures, drawn here so that every fit (a sweep's trials too) gets them."""
    from mlptrain.experiment.plot import draw_fit_figures  # matplotlib loads only when drawing

    on_event(DrawingFigures(run.run_id, run.path))
    figures = draw_fit_figures(run, p, p.config.report.format)
    summary["figures"] = figures.to_summary()
    run.write_summary(summary)
    return figures


def run_reference(p: Prepared, batch: int, images: dict | None = None,
                  top: np.ndarray | None = None) -> dict[str, Any]:
    """What predict compares a user's input with: statistics of this run's own data
    (`images`: predict.image_ranges of its training split, and `top`: the model's largest
    class probability on each validation sample, when already computed)."""
    from mlptrain.experiment.predict import (probabilities, reference_statistics,
                                             training_image_ranges)

    X_val = p.dataset.split("val")[0]
    if p.model.loss.task == "regression":  # no class probabilities: no `uncertain` bar
        X_val, top = X_val[:0], None
    if top is None:
        top = probabilities(p.model, X_val, batch).max(axis=1) if len(X_val) else np.zeros(0)
    if images is None:
        images = training_image_ranges(p.dataset)
    return reference_statistics(p.dataset.split("train")[0], top, p.dataset.input_shape,
                                images)


def final_metrics(model: MLP, splits: dict[str, loop.Split], batch: int,
                  targets: list[dict[str, np.ndarray]]) -> list[dict[str, Any]]:
    """Each member's (a run alone: its one) loss and declared metric (accuracy, or RMSE) of
    the final weights on every split (None for an empty split); for a regression loss also
    MAE and R^2 in the target's units (evaluate.regression_scores) against `targets[g]`:
    split -> member g's targets as its dataset holds them."""
    from mlptrain.experiment.evaluate import regression_scores

    finals: list[dict[str, Any]] = [{} for _ in range(model.members)]
    metric, regression = model.loss.metric, model.loss.task == "regression"
    for name, split in splits.items():
        scores = loop.evaluate(model, split, batch) if split.size else (None, None)
        predicted = loop.predict_split(model, split, batch) if regression and split.size \
            else None  # (G, n)
        for g, final in enumerate(finals):
            final[f"{name}_loss"], final[f"{name}_{metric}"] = \
                (s if s is None or not model.lead else s[g] for s in scores)
            if regression:
                more = regression_scores(targets[g][name], predicted[g]) \
                    if predicted is not None else {"mae": None, "r2": None}
                final[f"{name}_mae"], final[f"{name}_r2"] = more["mae"], more["r2"]
    return finals


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


@contextmanager
def os_errors_fail(run: Run, summary: dict):
    """Any OSError while a run is written (a full disk, a read-only or vanished directory)
    becomes a RunStoreError naming the file and the cause; the run is marked failed if the
    summary can still be written. Every file written before stays whole (writes are atomic),
    so the run resumes from its last checkpoint once the cause is fixed."""
    start = time.perf_counter()
    try:
        yield
    except OSError as exc:
        marked = False
        with suppress(OSError):
            summary.setdefault("timing", None)
            finish_run(run, summary, "failed", start, error=_os_error_text(exc))
            marked = True
        state = "marked failed" if marked else "left as it was (its summary cannot be written)"
        raise RunStoreError(
            f"{_os_error_text(exc)} The run {run.run_id} is {state}; the files it wrote before "
            f"are kept. Fix the cause, then continue it with `mlptrain fit --resume "
            f"{run.run_id}`.") from None


def _os_error_text(exc: OSError) -> str:
    code = errno.errorcode.get(exc.errno or 0, "")
    what = f"{exc.strerror or exc}{f' ({code})' if code else ''}"
    hint = {errno.ENOSPC: " The disk is full.", errno.EDQUOT: " The disk quota is used up.",
            errno.EROFS: " The file system is mounted read-only.",
            errno.EACCES: " No permission to write there."}.get(exc.errno, "")
    return f"cannot write {exc.filename or 'a run file'}: {what}.{hint}"


def _check_same_data(run: Run, summary: dict, checksums: dict[str, str], allow: bool) -> None:
    """The data a run resumes on must be the data it started on (its files' SHA-256)."""
    recorded = (summary.get("dataset") or {}).get("checksums") or {}
    changed = sorted(name for name in set(recorded) | set(checksums)
                     if recorded.get(name) != checksums.get(name))
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


def _read_weights_file(path: Path, model: MLP) -> dict[str, np.ndarray]:
    """The starting weights: finite, each array the shape of the model's parameter of its name
    (checked from the headers, before any data is read); blamed on the file, not on training."""
    return read_npz(path, f"[model] weights = {str(path)!r}", DataError,
                    network_expect(model))


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
                    "samples": {k: int(len(dataset.split(k)[1])) for k in SPLITS},
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


def finish_run(run: Run, summary: dict, status: str, start: float, error: str = "") -> None:
    summary["status"] = status
    summary["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if error:
        summary["error"] = error
    if summary["timing"] is None:
        summary["timing"] = {"wall_seconds": time.perf_counter() - start}
    run.write_summary(summary)

