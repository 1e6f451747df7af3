"""Training a group of configs as one model of G members (model.py), each into its own run.

Each member is prepared exactly as `fit` prepares it alone (its data split, its initial
weights, its shuffle stream), trained in lockstep with the others, and written as a run that
`eval`, `plot`, `predict` and `ensemble` read like any other: config, per-epoch metrics,
weights, summary, figures. A member trained in a group reaches the weights it reaches alone,
up to the rounding of a different summation order (tested to 1e-9 in float64).

Which configs may share a group is the sweep's decision (sweep/grouping.py); this module
trusts it. Nothing here prints: events go to `on_event`.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from mlptrain.config import Config
from mlptrain.data.standardize import Standardizer, TargetScale
from mlptrain.errors import RunStoreError, TrainingError
from mlptrain.experiment.drawers import FigureDrawers
from mlptrain.experiment.fit import (RunFinished, TrainingRun, complete_run, final_metrics,
                                     finish_run, os_errors_fail, reopen_training,
                                     run_reference, run_started, split_targets, start_run,
                                     stopped_at)
from mlptrain.experiment.group_data import GroupData, ImageRanges
from mlptrain.experiment.setup import (SPLITS, Prepared, as_saved, prepare, saved_scaler,
                                       saved_target_scale)
from mlptrain.model import MLP, stack_members
from mlptrain.loop import (EagerStep, LoopSettings, Member, Split, StepsPath, StopFlag,
                           TrainState, forward_split, train_members)
from mlptrain.optim import build_optimizer
from mlptrain.runs import RunStore
from mlptrain.runs.checkpoint import checkpoint_arrays

EVAL_ELEMENTS = 1 << 24  # activations per evaluation chunk (64 MB in float32), all members


def fit_group(configs: list[Config], store: RunStore,
              on_event: Callable[[Any], None] = lambda e: None,
              stop: StopFlag | None = None,
              resume: list[str | None] | None = None) -> list[RunFinished]:
    """Trains every config of the group into a new run, or, where `resume` names one, on in
    that interrupted run from its checkpoint (every such checkpoint at the end of the same
    epoch, and the new members only where that epoch is 0); returns how each ended. A member
    whose loss stops being finite fails alone (its rate drops to 0; the others go on). A stop
    request (or Ctrl-C) marks every member interrupted, writes each training member's
    checkpoint (the format `fit` writes: `mlptrain fit --resume RUN` continues it alone) and
    raises KeyboardInterrupt."""
    stop = stop or StopFlag()
    datasets: dict[tuple, Any] = {}  # _data_key -> its dataset (the split follows the seed)
    states: dict[int, dict] = {}  # a resumed member's optimizer state (its state_dict)
    members = [_start_member(config, store, datasets, run_id, states, g)
               for g, (config, run_id) in enumerate(zip(configs, resume or [None] * len(configs)))]
    start_epoch = members[0].epochs_before
    if any(m.epochs_before != start_epoch for m in members):  # sweep/grouping.py plans this
        for m in members:
            finish_run(m.run, m.summary, "interrupted", time.perf_counter())
        raise RunStoreError("a group resumes only members whose checkpoints end the same "
                            "epoch; run the others alone (`mlptrain fit --resume RUN`).")
    for g, m in enumerate(members):
        m.summary["group"] = {"members": len(members), "position": g}
        on_event(run_started(m, g))
    # the figure drawers start now, so that their start-up overlaps the training
    plots = lambda m: m.p.config.report.plots  # noqa: E731
    with FigureDrawers([str(m.run.path) for m in members if plots(m)]) as drawers:
        def draw(m: TrainingRun) -> None:  # each member as soon as its run is written
            if plots(m):
                drawers.submit(str(m.run.path), m.p.config.report.format)

        finished = _train(members, states, on_event, stop, draw)
        drawn = [m for m, f in zip(members, finished) if plots(m) and f.status == "completed"]
        for m, figures in zip(drawn, drawers.records()):  # what its summary.json now says
            m.summary["figures"] = figures
    for f in finished:
        on_event(f)
    return finished


def _train(members: list[TrainingRun], states: dict[int, dict], on_event, stop: StopFlag,
           written: Callable[[TrainingRun], None]) -> list:
    """The group's epochs (loop.train_members), then each member's final scores and files
    (`written(member)` as each completed member's run is); returns each member's
    RunFinished (not yet reported)."""
    data = GroupData([m.p for m in members])
    step = members[0].p.step  # the members' steps differ in their seeds, rates and decay only
    model = stack_members([m.p.model for m in members])
    optimizer = build_optimizer(step.optimizer, model.ops, model.params,
                                [m.p.step.optimizer.weight_decay for m in members])
    optimizer.load_members(states, model.member_sizes)
    ledgers = [Member(m.state, m.p.rngs["shuffle"], m.p.step.schedule,
                      LoopSettings.from_config(m.p.config.train)) for m in members]
    batch = max(64, EVAL_ELEMENTS // (model.members * sum(model.sizes)))
    writer = _Writer(model, optimizer, members)

    def heard(event) -> None:
        if isinstance(event, StepsPath):
            for m in members:  # how the steps ran, as fit's summary["path"] says it
                m.summary["group"]["steps"] = event.path
        on_event(event)

    start = time.perf_counter()
    try:
        train_members(EagerStep(step, model, optimizer), data.split("train"),
                      data.split("val"), ledgers, heard, writer.epoch_ended, stop,
                      writer.checkpoint, batch)
    except KeyboardInterrupt:
        _interrupt(members, start, on_event)
        raise
    if any(m.state.interrupted for m in ledgers):
        _interrupt(members, start, on_event)
        raise KeyboardInterrupt
    wall = time.perf_counter() - start
    finals = final_metrics(model, {name: data.split(name) for name in SPLITS}, batch,
                           [split_targets(m.p) for m in members])  # every member at once
    val = data.split("val")  # each member's top probabilities there, for predict's reference
    tops = _top_probabilities(model, val, batch) if val.size else [None] * model.members
    images = ImageRanges(data)
    finished = []
    for g, (m, ledger) in enumerate(zip(members, ledgers)):
        finished.append(_complete(model, g, m, ledger.failed, finals[g], tops[g], wall, images))
        if finished[-1].status == "completed":
            written(m)
    return finished


class _Writer:
    """What the loop hands a group's member, written to its own run: each ended epoch's record,
    and its checkpoint in the format `fit` writes (runs/checkpoint.py), as if it had trained
    alone (`mlptrain fit --resume RUN` continues it so)."""

    def __init__(self, model: MLP, optimizer, members: list[TrainingRun]):
        self.model, self.optimizer, self.members = model, optimizer, members

    def epoch_ended(self, g: int, state: TrainState) -> None:
        self.members[g].run.append_metrics(state.history[-1])

    def checkpoint(self, g: int, state: TrainState) -> None:
        m, model = self.members[g], self.model
        p = m.p
        p.model.load_state_dict(model.member_state(g), source="the group's weights")
        optimizer = build_optimizer(p.step.optimizer, p.model.ops, p.model.params)
        optimizer.load_state_dict(self.optimizer.member_state(g, model.member_sizes[g]))
        try:
            arrays = checkpoint_arrays(p.model, optimizer, p.rngs, state)
        except TrainingError:  # diverged in this very epoch: nothing worth resuming
            return
        with os_errors_fail(m.run, m.summary):
            m.run.write_checkpoint(arrays)
        m.summary["position"] = stopped_at(state.epoch, state.position, state.step)


def _top_probabilities(model: MLP, split: Split, batch: int) -> np.ndarray:
    """(G, n) float64 on the host: each member's largest class probability on its samples."""
    xp = model.ops.xp
    top = xp.empty(split.rows.shape, xp.float64)
    for start, stop, _, logits, _ in forward_split(model, split, batch):
        top[:, start:stop] = model.loss.probabilities(xp, logits).max(axis=-1)
    return model.ops.to_host(top)


def _start_member(config: Config, store: RunStore, datasets: dict, resume: str | None,
                  states: dict, g: int) -> TrainingRun:
    """Member g's run: a new one, or the interrupted run `resume` reopened at its checkpoint,
    which must end an epoch (its optimizer's state goes to states[g])."""
    if resume is None:
        p = _prepared(config, datasets)
        return start_run(p, store, path="grouped")
    run = store.find(resume)
    summary = run.read_summary()
    scaler = saved_scaler(run, summary)  # the run's own statistics, read back, never refitted
    p = _prepared(as_saved(config, scaler), datasets, scaler, saved_target_scale(run, summary))
    m, optimizer = reopen_training(run, summary, p, run.read_checkpoint())
    if m.state.position:
        raise RunStoreError(f"run {run.run_id} stopped inside epoch {m.state.epoch + 1}; a "
                            "group resumes from epoch ends only: `mlptrain fit --resume "
                            f"{run.run_id}` continues it alone.")
    states[g] = optimizer.state_dict()
    with os_errors_fail(run, summary):
        run.write_summary(summary)
    return m


def _prepared(config: Config, datasets: dict, scaler: Standardizer | None = None,
              target: TargetScale | None = None) -> Prepared:
    """prepare(config), sharing the data of the members before it that load the same samples:
    those of one seed (it draws the split), standardized alike (a new member fits its
    training split's statistics; a resumed one applies those its run stored, `scaler` and
    `target`, as prepare_saved does)."""
    stats = None if scaler is None else (scaler.mean.tobytes(), scaler.std.tobytes())
    key = (config.train.seed, config.data.standardize, stats)
    p = prepare(config, dataset=datasets.get(key), scaler=scaler, target=target)
    datasets[key] = p.dataset
    return p


def _complete(model: MLP, g: int, m: TrainingRun, failed: str, final: dict, top, wall: float,
              images: ImageRanges) -> RunFinished:
    """Writes member g's run: weights, `final` metrics, summary (with `top`, its largest class
    probability on each validation sample); or, where its training `failed`, the reason."""
    p, run, summary = m.p, m.run, m.summary
    summary["epochs_completed"] = len(m.state.history)
    if failed:
        finish_run(run, summary, "failed", time.perf_counter() - wall, error=failed)
        return RunFinished(run.run_id, run.path, summary, member=g)
    with os_errors_fail(run, summary):
        complete_run(m, model.member_state(g), final,
                     run_reference(p, p.config.train.eval_batch_size, images(p), top), wall)
    return RunFinished(run.run_id, run.path, summary, member=g)


def _interrupt(members: list[TrainingRun], start: float, on_event) -> None:
    """Every member marked interrupted; the loop wrote each training member's checkpoint
    where it stood (none when the stop came while a step was under way: then the last one
    stands, or, without one, rerunning trains the member afresh)."""
    for g, m in enumerate(members):
        m.summary["epochs_completed"] = len(m.state.history)
        finish_run(m.run, m.summary, "interrupted", start)
        on_event(RunFinished(m.run.run_id, m.run.path, m.summary, member=g))
