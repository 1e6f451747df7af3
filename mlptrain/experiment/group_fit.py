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

from mlptrain.config import Config
from mlptrain.data.standardize import Standardizer, TargetScale
from mlptrain.errors import ConfigError, RunStoreError
from mlptrain.experiment.drawers import FigureDrawers
from mlptrain.experiment.fit import reopen_training, run_started, start_run
from mlptrain.experiment.training import (RunFinished, TrainingRun, finish_run, os_errors_fail,
                                          train_runs)
from mlptrain.experiment.group_data import GroupData
from mlptrain.experiment.setup import (SPLITS, Prepared, as_saved, check_new_run, prepare,
                                       saved_scaler, saved_target_scale)
from mlptrain.loop import StopFlag
from mlptrain.model import stack_members
from mlptrain.optim import build_optimizer
from mlptrain.runs import RunStore


class MemberRefused(ConfigError):
    """Member `member`'s config asks what its data cannot give (check_new_run); no run of the
    group was made, and the others may train without it."""

    def __init__(self, member: int, message: str):
        super().__init__(message)
        self.member = member


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
    resume = resume or [None] * len(configs)
    # every new member set up and checked before any run is made: a member the data refuses
    # (check_new_run) must not leave the runs of those before it `running`
    fresh = [None if run_id else _prepared(config, datasets)
             for config, run_id in zip(configs, resume)]
    for g, p in enumerate(fresh):
        try:
            if p is not None:
                check_new_run(p)
        except ConfigError as exc:
            raise MemberRefused(g, str(exc)) from None
    members = [start_run(p, store, path="grouped") if p is not None else
               _reopen_member(config, store, datasets, run_id, states, g)
               for g, (config, run_id, p) in enumerate(zip(configs, resume, fresh))]
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
           written: Callable[[TrainingRun], None]) -> list[RunFinished]:
    """The members stacked into one model and trained by the one driver (training.train_runs);
    returns each member's RunFinished (not yet reported). A stop raises KeyboardInterrupt once
    every member is marked interrupted and reported."""
    data = GroupData([m.p for m in members])
    model = stack_members([m.p.model for m in members])
    optimizer = build_optimizer(members[0].p.step.optimizer, model.ops, model.params,
                                [m.p.step.optimizer.weight_decay for m in members])
    optimizer.load_members(states, model.member_sizes)
    finished = train_runs(members, model, optimizer, {name: data.split(name) for name in SPLITS},
                          on_event, stop, written)
    if any(f.status == "interrupted" for f in finished):
        for f in finished:
            on_event(f)
        raise KeyboardInterrupt
    return finished


def _reopen_member(config: Config, store: RunStore, datasets: dict, resume: str,
                   states: dict, g: int) -> TrainingRun:
    """Member g's interrupted run `resume` reopened at its checkpoint, which must end an epoch
    (its optimizer's state goes to states[g])."""
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
