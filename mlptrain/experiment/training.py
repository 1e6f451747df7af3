"""A run under training, alone or as a member of a group: the one driver of training
(`train_runs`: the loop's epochs, then each member's scores and files), the files a run writes
as it trains (its epoch-end records, summary and checkpoints) and how it ends (completed,
failed, interrupted).

`fit` trains a run alone through it (a group of one); `group_fit` trains a group's members
through it. Nothing here prints: events go to `on_event`.
"""

from __future__ import annotations

import errno
import time
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mlptrain import loop
from mlptrain.backend.events import ThreadsChosen
from mlptrain.errors import RunStoreError, TrainingError
from mlptrain.experiment.diagnose import run_warnings, unscaled_data
from mlptrain.experiment.setup import SPLITS, Prepared
from mlptrain.model import MLP
from mlptrain.optim import build_optimizer
from mlptrain.runs import Run
from mlptrain.runs.checkpoint import CheckpointWriter, checkpoint_arrays


# summary["figures"] of a run that drew none ([report] plots = false); `mlptrain plot RUN`
# draws them and records them there as a fit that draws them does (experiment/plot.py)
FIGURES_NOT_DRAWN = {"files": [], "not_drawn": "[report] plots = false; `mlptrain plot RUN` "
                                               "draws them"}


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


def split_targets(p: Prepared) -> dict[str, np.ndarray]:
    """p's targets of every split, as its dataset holds them (final_metrics scores them)."""
    return {name: p.dataset.targets(name) for name in SPLITS}


EVAL_ELEMENTS = 1 << 24  # a group's activations per evaluation chunk (64 MB in float32)


def train_runs(members: list[TrainingRun], model: MLP, optimizer, splits: dict[str, loop.Split],
               on_event, stop, written: Callable[[TrainingRun], None] = lambda m: None
               ) -> list[RunFinished]:
    """The one driver of training, for a run alone (model is its own) and a group's members
    (model stacks theirs) alike: the loop's epochs, each member's epoch-end files, then each
    member's final scores, weights and summary (`written(m)` as each completed one is on
    disk). A member whose loss stops being finite fails alone; a stop leaves every member
    interrupted, each training one checkpointed where it stood. Returns each member's
    RunFinished, not yet reported; a KeyboardInterrupt marks and reports every member
    interrupted, then goes on up."""
    # a diverging run overflows before the loop sees a non-finite loss and says why in its
    # error: numpy's warnings on the way are noise, here as in a sweep's worker processes
    # (whose stderr no `fit` filter reaches)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return _train_runs(members, model, optimizer, splits, on_event, stop, written)


def _train_runs(members: list[TrainingRun], model: MLP, optimizer,
                splits: dict[str, loop.Split], on_event, stop,
                written: Callable[[TrainingRun], None]) -> list[RunFinished]:
    settings = loop.LoopSettings.from_config(members[0].p.config.train)
    batch = settings.eval_batch_size if not model.lead else \
        max(64, EVAL_ELEMENTS // (model.members * sum(model.sizes)))
    ledgers = [loop.Member(m.state, m.p.rngs["shuffle"], m.p.step.schedule,
                           loop.LoopSettings.from_config(m.p.config.train)) for m in members]
    files = [_MemberFiles(m, g, model, optimizer) for g, m in enumerate(members)]

    def heard(event) -> None:
        if isinstance(event, loop.StepsPath):  # how a group's steps ran, as fit's path says
            for m in members:
                m.summary["group"]["steps"] = event.path
        elif isinstance(event, ThreadsChosen):  # the CPU's BLAS threads, kept in the summary
            for m in members:
                m.summary["blas_threads"] = event.record()
        on_event(event)

    start = time.perf_counter()
    try:
        with ExitStack() as closing_all:  # every checkpoint is on disk before runs close
            for f in files:
                closing_all.enter_context(f)
            loop.train_members(loop.EagerStep(members[0].p.step, model, optimizer),
                               splits["train"], splits["val"], ledgers, heard,
                               lambda g, s: files[g].epoch_ended(s, ledgers[g]), stop,
                               lambda g, s: files[g].checkpoint(s, ledgers[g]), batch)
    except KeyboardInterrupt:
        for g, m in enumerate(members):
            on_event(_stopped(m, g, start))
        raise
    if any(m.state.interrupted for m in members):
        return [_stopped(m, g, start) for g, m in enumerate(members)]
    seconds = time.perf_counter() - start
    finals, tops = final_metrics(model, splits, batch, [split_targets(m.p) for m in members])
    images: dict[int, dict] = {}  # id(dataset) -> its training images' ranges (run_reference)
    finished = []
    for g, (m, ledger) in enumerate(zip(members, ledgers)):
        run, summary = m.run, m.summary
        if ledger.failed:
            finish_run(run, summary, "failed", start, error=_failure(ledger.failed, m.p))
        else:
            with os_errors_fail(run, summary):
                reference = run_reference(m.p, tops[g], images)
                complete_run(m, model.member_state(g), finals[g], reference, seconds)
            written(m)
        finished.append(RunFinished(run.run_id, run.path, summary, member=g))
    return finished


def _failure(error: str, p: Prepared) -> str:
    """Why a run failed: its loss's divergence, and the data's scale where that is the likelier
    cause than the learning rate the message blames."""
    unscaled = unscaled_data(p.dataset)
    return f"{error} The data's own scale is the likelier cause: {unscaled}." if unscaled \
        else error


def _stopped(m: TrainingRun, g: int, start: float) -> RunFinished:
    """Member g marked interrupted where its state stands (its last checkpoint resumes it)."""
    state = m.state
    m.summary["position"] = stopped_at(state.epoch, state.position, state.step)
    finish_run(m.run, m.summary, "interrupted", start)
    return RunFinished(m.run.run_id, m.run.path, m.summary, member=g)


class _MemberFiles:
    """A member's files while it trains (alone, or in a group as if alone): its ended
    epochs' records and summary (_EpochFiles), its checkpoints (in the format a run alone
    writes, on their own thread), and a write error named as that run's (os_errors_fail). A
    group's members checkpoint only when stopped: a sweep that is killed trains them afresh,
    and their many small files would cost the sweep more than they save it."""

    def __init__(self, m: TrainingRun, g: int, model: MLP, optimizer):
        self.m, self.g, self.model, self.optimizer = m, g, model, optimizer
        self.at_epoch_ends = not model.lead
        self.files = _EpochFiles(m.run, m.summary, m.p.config.train.checkpoint_epochs,
                                 m.p.step.epochs)
        self.writer = CheckpointWriter(m.run)

    def __enter__(self):
        return self

    def __exit__(self, kind, *_) -> None:
        with os_errors_fail(self.m.run, self.m.summary):
            self.writer.close()
            if kind is None or issubclass(kind, KeyboardInterrupt):
                self.files.flush()  # epochs since the last files (early stopping, a stop)

    def epoch_ended(self, state: loop.TrainState, ledger: loop.Member) -> None:
        due = self.files.due(state)
        if due and self.at_epoch_ends:  # first: the checkpoint holds the history too, and it
            self.checkpoint(state, ledger)  # is written while training goes on, so metrics
        with os_errors_fail(self.m.run, self.m.summary):  # may reach the disk first (a
            self.files.ended(state, due)  # resume rewrites them from its history)

    def checkpoint(self, state: loop.TrainState, ledger: loop.Member) -> None:
        """The member's checkpoint, in the format `fit` writes (runs/checkpoint.py):
        `mlptrain fit --resume RUN` continues a group's member alone."""
        p, model, optimizer = self.m.p, self.model, self.optimizer
        if model is not p.model:  # a group's: the member's weights and state, alone
            p.model.load_state_dict(model.member_state(self.g), source="the group's weights")
            optimizer = build_optimizer(p.step.optimizer, p.model.ops, p.model.params)
            optimizer.load_state_dict(
                self.optimizer.member_state(self.g, model.member_sizes[self.g]))
        try:
            arrays = checkpoint_arrays(p.model, optimizer, p.rngs, state)
        except TrainingError as exc:  # diverged: its last checkpoint keeps good weights
            ledger.failed = str(exc)
            return
        with os_errors_fail(self.m.run, self.m.summary):
            self.writer.write(arrays)


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
                                   len(p.dataset.targets("train")))
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


def run_reference(p: Prepared, top: np.ndarray | None, images: dict[int, dict]) -> dict[str, Any]:
    """What predict compares a user's input with: statistics of this run's own data (its
    training images' ranges, measured once per pool for a group's seeds alike, and kept in
    `images` by id(dataset) for the members that share it: 24 members' took 0.14 s; `top`:
    the model's largest class probability on each validation sample, none for a regression,
    whose predictions have no `uncertain` bar)."""
    from mlptrain.experiment.predict import reference_statistics, training_image_ranges

    if id(p.dataset) not in images:
        images[id(p.dataset)] = training_image_ranges(p.dataset)
    return reference_statistics(images[id(p.dataset)], np.zeros(0) if top is None else top)


def final_metrics(model: MLP, splits: dict[str, loop.Split], batch: int,
                  targets: list[dict[str, np.ndarray]]) -> tuple[list[dict[str, Any]], list]:
    """Each member's (a run alone: its one) loss and declared metric (accuracy, or RMSE) of
    the final weights on every split (None for an empty split); for a regression loss also
    MAE and R^2 in the target's units (evaluate.regression_scores) against `targets[g]`:
    split -> member g's targets as its dataset holds them. Also, from the validation pass,
    each member's largest class probability on each validation sample ((n,) float64, for
    predict's reference; None for a regression or no validation split)."""
    from mlptrain.experiment.evaluate import regression_scores

    finals: list[dict[str, Any]] = [{} for _ in range(model.members)]
    tops: list = [None] * model.members
    metric, regression = model.loss.metric, model.loss.task == "regression"
    for name, split in splits.items():
        outputs = "first" if regression else "top" if name == "val" else ""
        loss, metrics, *kept = loop.evaluate(model, split, batch, outputs) if split.size \
            else (None, {})
        score = metrics.get(metric)
        if kept and not regression:
            tops = list(kept[0])
        for g, final in enumerate(finals):
            final[f"{name}_loss"], final[f"{name}_{metric}"] = \
                (s if s is None or not model.lead else s[g] for s in (loss, score))
            if regression:
                more = regression_scores(targets[g][name], kept[0][g]) \
                    if kept else {"mae": None, "r2": None}
                final[f"{name}_mae"], final[f"{name}_r2"] = more["mae"], more["r2"]
    return finals, tops


# -- failure modes ------------------------------------------------------------------------------


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


def finish_run(run: Run, summary: dict, status: str, start: float, error: str = "") -> None:
    summary["status"] = status
    summary["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if error:
        summary["error"] = error
    if summary["timing"] is None:
        summary["timing"] = {"wall_seconds": time.perf_counter() - start}
    run.write_summary(summary)
