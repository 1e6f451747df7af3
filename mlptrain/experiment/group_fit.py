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
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np

from mlptrain.config import Config
from mlptrain.errors import RunStoreError, TrainingError
from mlptrain.experiment.diagnose import training_warnings
from mlptrain.experiment.drawers import FigureDrawers
from mlptrain.experiment.fit import (finish_run, os_errors_fail, reopen_run, run_reference,
                                     run_timing, start_summary, stopped_at)
from mlptrain.experiment.group_data import GroupData, ImageRanges
from mlptrain.experiment.setup import SPLITS, Prepared, prepare
from mlptrain.model import MLP, stack_members
from mlptrain.loop import (REPORTS_PER_EPOCH, LoopSettings, StopFlag, TrainState,
                           check_finite_loss)
from mlptrain.optim import SGD, build_optimizer
from mlptrain.runs import Run, RunStore
from mlptrain.runs.checkpoint import checkpoint_arrays

EVAL_ELEMENTS = 1 << 24  # activations per evaluation chunk (64 MB in float32), all members


@dataclass
class MemberStarted:
    member: int  # position in the group
    run_id: str
    path: Any
    parameters: int


@dataclass
class GroupProgress:
    epoch: int
    epochs: int
    step: int  # steps done in this epoch
    steps: int
    losses: list[float]  # each member's running training loss of the epoch
    accuracies: list[float]


@dataclass
class MemberFinished:
    member: int
    run_id: str
    status: str  # completed | failed | interrupted
    final: dict[str, Any] = field(default_factory=dict)
    epochs: int = 0
    error: str = ""


@dataclass
class _Member:
    p: Prepared
    run: Run
    summary: dict
    state: TrainState = field(default_factory=TrainState)  # its ledger, as loop.fit keeps it
    failed: str = ""
    epochs_done: int = 0  # > 0 when resumed from a checkpoint at this epoch's end
    velocity: dict | None = None  # the resumed checkpoint's SGD velocities, by parameter

    @property
    def frozen(self) -> bool:
        """Trains no more: failed or stopped early (its rate is 0 from here on)."""
        return bool(self.failed) or self.state.stopped_early


def fit_group(configs: list[Config], store: RunStore,
              on_event: Callable[[Any], None] = lambda e: None,
              stop: StopFlag | None = None,
              resume: list[str | None] | None = None) -> list[MemberFinished]:
    """Trains every config of the group into a new run, or, where `resume` names one, on in
    that interrupted run from its checkpoint (every such checkpoint at the end of the same
    epoch, and the new members only where that epoch is 0); returns how each ended. A member
    whose loss stops being finite fails alone (its rate drops to 0; the others go on). A stop
    request (or Ctrl-C) marks every member interrupted, writes each training member's
    checkpoint (the format `fit` writes: `mlptrain fit --resume RUN` continues it alone) and
    raises KeyboardInterrupt."""
    stop = stop or StopFlag()
    datasets: dict[int, Any] = {}  # seed -> its dataset (the split is drawn with the seed)
    members = [_start_member(config, store, datasets, run_id)
               for config, run_id in zip(configs, resume or [None] * len(configs))]
    start_epoch = members[0].epochs_done
    if any(m.epochs_done != start_epoch for m in members):  # sweep/grouping.py plans this
        for m in members:
            finish_run(m.run, m.summary, "interrupted", time.perf_counter())
        raise RunStoreError("a group resumes only members whose checkpoints end the same "
                            "epoch; run the others alone (`mlptrain fit --resume RUN`).")
    for g, m in enumerate(members):
        m.summary["group"] = {"members": len(members), "position": g}
        on_event(MemberStarted(g, m.run.run_id, m.run.path, m.p.model.parameter_count))
    # the figure drawers start now, so that their start-up overlaps the training
    plots = lambda m: m.p.config.report.plots  # noqa: E731
    with FigureDrawers([str(m.run.path) for m in members if plots(m)]) as drawers:
        def draw(m: _Member) -> None:  # each member as soon as its run is written
            if plots(m):
                drawers.submit(str(m.run.path), m.p.config.report.format)

        finished = _train(members, start_epoch, on_event, stop, draw)
        drawn = [m for m, f in zip(members, finished) if plots(m) and f.status == "completed"]
        for m, figures in zip(drawn, drawers.records()):  # what its summary.json now says
            m.summary["figures"] = figures
    for f in finished:
        on_event(f)
    return finished


def _train(members: list[_Member], start_epoch: int, on_event, stop: StopFlag,
           written: Callable[[_Member], None]) -> list:
    """The group's epochs from start_epoch on, then each member's final scores and files
    (`written(member)` as each completed member's run is); returns each member's
    MemberFinished (not yet reported)."""
    data = GroupData([m.p for m in members])
    step = members[0].p.step
    model = stack_members([m.p.model for m in members])
    ops = model.ops
    decays = np.array([m.p.step.optimizer.weight_decay for m in members])
    optimizer = SGD(ops, model.params, step.optimizer.momentum, step.optimizer.nesterov,
                    ops.asarray(decays, model.dtype) if decays.any() else 0.0)
    for g, m in enumerate(members):
        if m.velocity:
            optimizer.velocity.load_member(ops, g, model.member_sizes[g], m.velocity)
    epochs = _Epochs(model, optimizer, members, data)
    start = time.perf_counter()
    try:
        for epoch in range(start_epoch + 1, step.epochs + 1):
            if stop.is_set:
                raise KeyboardInterrupt
            epochs.run(epoch, on_event, stop)
            if all(m.frozen for m in members):
                break
    except KeyboardInterrupt:
        _interrupt(epochs, start, on_event)
        raise
    wall = time.perf_counter() - start
    for g, m in enumerate(members):
        if m.state.best_params is not None:  # early stopping: the best validation epoch's
            model.load_member_state(g, m.state.best_params)
    scores = {name: _scores(model, data, name) for name in SPLITS}  # every member at once
    val = data.rows["val"]  # each member's top probabilities there, for predict's reference
    tops = ops.to_host(_top_probabilities(model, data.X_flat, val)) if val.shape[1] \
        else np.zeros(val.shape)
    images = ImageRanges(data)
    finished = []
    for g, m in enumerate(members):
        finished.append(_complete(model, g, m, scores, tops[g], wall, images))
        if finished[-1].status == "completed":
            written(m)
    return finished


def _start_member(config: Config, store: RunStore, datasets: dict,
                  resume: str | None) -> _Member:
    p = prepare(config, dataset=datasets.get(config.train.seed))
    datasets[config.train.seed] = p.dataset
    if resume is not None:
        return _resume_member(p, store.find(resume))
    run = store.create(config.name)
    summary = start_summary(run, p)
    summary["path"] = "grouped"
    with os_errors_fail(run, summary):
        run.write_config(config.to_toml())
        run.write_summary(summary)
    return _Member(p, run, summary)


def _resume_member(p: Prepared, run: Run) -> _Member:
    """An interrupted member's run reopened at its checkpoint, which must end an epoch."""
    summary = run.read_summary()
    optimizer, state = reopen_run(run, summary, p, run.read_checkpoint())
    if state.position:
        raise RunStoreError(f"run {run.run_id} stopped inside epoch {state.epoch + 1}; a group "
                            "resumes from epoch ends only: `mlptrain fit --resume "
                            f"{run.run_id}` continues it alone.")
    velocity = {k.removeprefix("velocity."): v for k, v in optimizer.state_dict().items()}
    with os_errors_fail(run, summary):
        run.write_summary(summary)
    return _Member(p, run, summary, state, epochs_done=state.epoch, velocity=velocity)


class _Epochs:
    """Runs the group's epochs: each member's shuffle order and rates uploaded into buffers
    that stay put, then the epoch's steps, eagerly (with progress every few steps) or, on a
    device that can capture, each step a graph replayed, from the first epoch on. One graph
    per batch size rather than one per epoch: capturing a whole epoch (422 steps of some 20
    launches each) cost 0.3 s of Python in the first epoch on an H200, and replaying a step
    costs the host about as little as replaying an epoch does."""

    def __init__(self, model: MLP, optimizer: SGD, members: list[_Member], data: GroupData):
        self.model, self.optimizer, self.members, self.data = model, optimizer, members, data
        self.step = members[0].p.step
        ops, G = model.ops, model.members
        self.xp = ops.xp
        self.order = ops.zeros((G, data.n), np.int64)  # rows of the flattened pools
        self.lrs = ops.zeros((self.step.steps_per_epoch, G), model.dtype)
        self.lr = ops.zeros((G,), model.dtype)  # this step's rates, set before each step
        self.sums = ops.zeros((G, 2), np.float64)  # the epoch's running (loss, correct)
        self.rows_of: dict[int, tuple] = {}  # batch size -> its (pool rows, targets) buffers
        self.graphs, self.tried_capture, self.begin = None, False, 0.0  # graphs: rows -> step
        self.ahead = None  # the next epoch's orders and the shuffle streams after them
        # where training stands, for checkpoints: epochs done, steps done in the next one and
        # its orders (G, N) on the host; None while steps are under way (no consistent state)
        self.at: tuple | None = (0, 0, None)

    def run(self, epoch: int, on_event, stop: StopFlag) -> None:
        model, data, step = self.model, self.data, self.step
        ops, steps = model.ops, step.steps_per_epoch
        first = (epoch - 1) * steps
        self.begin = time.perf_counter()  # the epoch's record counts its seconds from here
        self.at = None  # the shuffle streams move on: no checkpoint until steps are done
        order = self.orders()
        data.order_rows(order, out=self.order)
        self.lrs[...] = ops.asarray(self.rates(first), model.dtype)
        if not self.tried_capture:  # the first epoch this process runs
            self.tried_capture = True
            self.graphs = self.capture()
            how = ("cuda graph" if self.graphs is not None
                   else f"eager: {ops.capture_failure or ops.device}")
            for m in self.members:  # how the steps ran, as fit's summary["path"] says it
                m.summary["group"]["steps"] = how
        self.sums.fill(0)
        if self.graphs is not None:
            for s in range(steps):  # queued: nothing here waits for the device
                self.select(s)
                self.graphs[self._rows(s)]()
            if epoch < step.epochs:
                self.draw_ahead()  # on the host while the device trains
            self.at = (epoch - 1, steps, order)
            self.progress(epoch, steps, on_event)  # the first wait for the device
        else:
            report_every = max(1, steps // REPORTS_PER_EPOCH)
            for lo in range(0, steps, report_every):
                hi = min(lo + report_every, steps)
                self.at = None
                self.steps(lo, hi)
                self.at = (epoch - 1, hi, order)
                self.progress(epoch, hi, on_event)
                if stop.is_set and hi < steps:
                    raise KeyboardInterrupt
        self.finish(epoch)

    def train_step(self, rows: int) -> None:
        """One step of every member on the pool rows that select() put in place: each member's
        batch gathered, its loss and gradient (the batch's sums added to self.sums), its SGD
        update at its own rate."""
        model, ops = self.model, self.model.ops
        index, targets = self.buffers(rows)
        ws = model.workspace(rows)
        ops.take_rows(self.data.X_flat, index, out=ws.x)  # (G, B, D)
        ops.take_rows(self.data.y_flat, index, out=targets)
        model.loss_and_grad(ws, targets, 1.0 / rows, sums=self.sums)
        self.optimizer.step(model.params, model.grads, self.lr)

    def buffers(self, rows: int) -> tuple:
        """(pool rows (G, B), targets (G, B, ...)) for batches of `rows`, made once."""
        found = self.rows_of.get(rows)
        if found is None:
            ops, y, G = self.model.ops, self.data.y_flat, self.model.members
            found = self.rows_of[rows] = (ops.zeros((G, rows), np.int64),
                                          ops.zeros((G, rows, *y.shape[1:]), y.dtype))
        return found

    def orders(self) -> np.ndarray:
        """(G, N): each member's order for the epoch from its own shuffle stream, as loop.fit
        draws it alone (drawn ahead, where draw_ahead did)."""
        streams = [m.p.rngs["shuffle"] for m in self.members]
        if self.ahead is None:
            return np.stack([rng.permutation(self.data.n) for rng in streams])
        order, states = self.ahead
        self.ahead = None
        for rng, state in zip(streams, states):
            rng.bit_generator.state = state
        return order

    def draw_ahead(self) -> None:
        """The next epoch's orders, drawn now; the streams are put back as they were, so that
        a checkpoint written before that epoch starts records them undrawn."""
        streams = [m.p.rngs["shuffle"] for m in self.members]
        before = [rng.bit_generator.state for rng in streams]
        order = np.stack([rng.permutation(self.data.n) for rng in streams])
        self.ahead = order, [rng.bit_generator.state for rng in streams]
        for rng, state in zip(streams, before):
            rng.bit_generator.state = state

    def rates(self, first: int) -> np.ndarray:
        """(steps, G): every member's learning rate at each step of the epoch whose first
        global step is `first`; 0 for a frozen member (p <- p - 0 (...) stays put). Members of
        one schedule share its rates (a sweep's usually all do; each costs a Python call per
        step)."""
        steps = self.step.steps_per_epoch
        schedules = [m.p.step.schedule for m in self.members]
        rates = {s: s.lrs(first, steps) for s in set(schedules)}
        lrs = np.stack([rates[s] for s in schedules], axis=1)
        lrs[:, [m.frozen for m in self.members]] = 0.0
        return lrs

    def capture(self) -> dict | None:
        """The step captured as a graph for each batch size of the epoch (its full batches
        and a shorter last one), reading the rows and rates that select() puts in place;
        None where the device cannot capture (then ops.capture_failure says why)."""
        ops, last = self.model.ops, self.step.steps_per_epoch - 1
        graphs = {}
        for s in sorted({0, last}):
            rows = self._rows(s)
            graph = ops.capture(lambda r=rows: self.train_step(r),
                                prepare=None if graphs else self.warm_up)
            if graph is None:
                return None
            graphs[rows] = graph
        return graphs

    def finish(self, epoch: int) -> None:
        """Records the epoch whose steps are all done; the state then ends it."""
        self.at = None
        self.record(epoch, time.perf_counter() - self.begin)
        self.at = (epoch, 0, None)

    def settle(self) -> None:
        """Finishes an epoch whose steps are all done but which a Ctrl-C caught in its
        progress report (on a device, the captured epoch always runs to its end), so that the
        checkpoints end it and a group can resume from them."""
        if self.at is not None and self.at[1] == self.step.steps_per_epoch:
            self.finish(self.at[0] + 1)

    def steps(self, lo: int, hi: int) -> None:
        """Steps lo..hi-1 of the epoch, eagerly."""
        for s in range(lo, hi):
            self.select(s)
            self.train_step(self._rows(s))

    def select(self, s: int) -> None:
        """Step s's rows of the epoch's order and its rates, copied into the buffers that the
        step reads (and a captured step reads again on every replay)."""
        B = self.step.batch_size
        index, _ = self.buffers(self._rows(s))
        index[...] = self.order[:, s * B:(s + 1) * B]
        self.lr[...] = self.lrs[s]

    def _rows(self, s: int) -> int:
        B = self.step.batch_size
        return min(B, self.data.n - s * B)

    def warm_up(self) -> None:
        """Runs the epoch's first and last step once and undoes them: every buffer (both batch
        sizes) and every kernel a step uses then exists, as a capture needs."""
        changed = (self.model.params.flat, self.optimizer.velocity.flat)
        saved, at = [x.copy() for x in changed], self.at
        self.at = None
        last = self.step.steps_per_epoch - 1
        self.steps(0, 1)
        if last:
            self.steps(last, last + 1)
        for x, copy in zip(changed, saved):  # (run() clears the running sums after capture)
            x[...] = copy
        self.at = at

    def checkpoint(self, g: int) -> dict | None:
        """Member g's checkpoint in the format `fit` writes (runs/checkpoint.py), as if it had
        trained alone to this point; None while no consistent state exists."""
        if self.at is None:
            return None
        done, position, order = self.at
        model, m, steps = self.model, self.members[g], self.step.steps_per_epoch
        p = m.p
        p.model.load_state_dict(model.member_state(g), source="the group's weights")
        optimizer = build_optimizer(p.step.optimizer, p.model.ops, p.model.params)
        velocity = self.optimizer.velocity.member(model.ops, g, model.member_sizes[g])
        optimizer.load_state_dict({f"velocity.{k}": v for k, v in velocity.items()})
        loss_sum, correct = model.ops.to_host(self.sums[g]) if position else (0.0, 0)
        seen = min(position * self.step.batch_size, self.data.n)
        state = replace(m.state, epoch=done, step=done * steps + position,
                        history=list(m.state.history), order=order[g] if position else None,
                        position=position,
                        running=(np.float64(loss_sum), np.int64(correct), np.int64(seen)))
        return checkpoint_arrays(p.model, optimizer, p.rngs, state)

    def progress(self, epoch: int, done: int, on_event) -> None:
        seen = min(done * self.step.batch_size, self.data.n)
        sums = self.model.ops.to_host(self.sums) / seen
        on_event(GroupProgress(epoch, self.step.epochs, done, self.step.steps_per_epoch,
                               list(sums[:, 0]), list(sums[:, 1])))

    def record(self, epoch: int, seconds: float) -> None:
        """Each member's epoch record, appended to its run; a member whose loss stopped being
        finite fails here (and trains no more)."""
        n, steps = self.data.n, self.step.steps_per_epoch
        train = self.model.ops.to_host(self.sums) / n  # (G, 2): mean loss, accuracy
        val = _scores(self.model, self.data, "val")
        for g, m in enumerate(self.members):
            if m.frozen:
                continue
            record = {"epoch": epoch, "lr": m.p.step.schedule.lr(epoch * steps - 1),
                      "train_loss": float(train[g, 0]), "train_accuracy": float(train[g, 1])}
            if val is not None:
                record["val_loss"], record["val_accuracy"] = val[0][g], val[1][g]
            record["seconds"] = seconds
            try:
                check_finite_loss(record["train_loss"], epoch, None, m.p.step.schedule.base_lr)
            except TrainingError as exc:  # this member fails alone; the others go on
                m.failed = str(exc)
                continue
            # its ledger: a member whose patience runs out freezes with its best epoch's weights
            m.state.close_epoch(record, LoopSettings.from_config(m.p.config.train),
                                lambda g=g: self.model.member_state(g))
            m.run.append_metrics(record)


def _forward_chunks(model: MLP, X, y, rows):
    """(slice, workspace, logits (G, b, C), targets (G, b) or None) for consecutive chunks of
    the samples, each of about EVAL_ELEMENTS activations over all members: member g scores
    X[rows[g]], y[rows[g]] (rows (G, n) of X (P, D), y (P,), a pool of samples), or, with rows
    None, every member the same X (n, D), y (n,)."""
    xp, G = model.ops.xp, model.members
    n = X.shape[0] if rows is None else rows.shape[1]
    size = max(64, EVAL_ELEMENTS // (G * sum(model.sizes)))
    for start in range(0, n, size):
        chunk = slice(start, min(start + size, n))
        ws = model.workspace(chunk.stop - start)
        if rows is None:  # (b, D) @ (G, D, O) broadcasts over the members
            x = X[chunk]
            t = None if y is None else xp.broadcast_to(y[chunk], (G, chunk.stop - start))
        else:
            index = rows[:, chunk]  # (G, b)
            x = xp.take(X, index, axis=0)
            t = None if y is None else xp.take(y, index, axis=0)
        yield chunk, ws, model.forward(ws, x), t


def _scores(model: MLP, data: GroupData, name: str):
    """([loss per member], [accuracy per member]) on a split, or None when it is empty."""
    X, y, rows = data.split(name)
    n = X.shape[0] if rows is None else rows.shape[1]
    if not n:
        return None
    ops = model.ops
    sums = np.zeros((model.members, 2))
    for _, ws, logits, t in _forward_chunks(model, X, y, rows):
        loss_sum, correct = ops.loss_forward(model.loss, logits, t, ws.loss_cache)
        sums += np.stack([ops.to_host(loss_sum), ops.to_host(correct)], axis=1)
    return [float(v) / n for v in sums[:, 0]], [float(v) / n for v in sums[:, 1]]


def _top_probabilities(model: MLP, X, rows):
    """(G, n) float64: each member's largest class probability on its own samples X[rows[g]]
    (rows (G, n) of X (P, D), a pool of samples)."""
    xp = model.ops.xp
    top = xp.empty(rows.shape, xp.float64)
    for chunk, _, logits, _ in _forward_chunks(model, X, None, rows):
        top[:, chunk] = model.loss.probabilities(xp, logits).max(axis=-1)
    return top


def _complete(model: MLP, g: int, m: _Member, scores: dict, top: np.ndarray,
              wall: float, images: ImageRanges) -> MemberFinished:
    """Writes member g's run: weights, final metrics (`scores`: split -> per-member loss and
    accuracy lists), summary (with `top`, its largest class probability on each validation
    sample)."""
    p, run, summary = m.p, m.run, m.summary
    history = m.state.history
    epochs = summary["epochs_completed"] = len(history)
    if m.failed:
        finish_run(run, summary, "failed", time.perf_counter() - wall, error=m.failed)
        return MemberFinished(g, run.run_id, "failed", epochs=epochs, error=m.failed)
    with os_errors_fail(run, summary):
        run.write_weights(model.member_state(g))
        final = {}
        for name, split in scores.items():
            final[f"{name}_loss"], final[f"{name}_accuracy"] = \
                (split[0][g], split[1][g]) if split else (None, None)
        summary["final"] = final
        summary["stopped_early"], summary["best_epoch"] = m.state.stopped_early, \
            m.state.best_epoch
        summary["warnings"] = training_warnings(history, p.dataset.n_classes)
        summary["reference"] = run_reference(p, p.config.train.eval_batch_size, images(p), top)
        summary["timing"] = run_timing(summary, history, m.epochs_done, wall,
                                       len(p.dataset.split("train")[1]))
        finish_run(run, summary, "completed", time.perf_counter() - wall)
    return MemberFinished(g, run.run_id, "completed", final, epochs)


def _interrupt(epochs: _Epochs, start: float, on_event) -> None:
    """Every member marked interrupted; each one still training gets its checkpoint (none
    when the stop came while steps were under way: then rerunning trains it afresh)."""
    epochs.settle()
    for g, m in enumerate(epochs.members):
        m.summary["epochs_completed"] = len(m.state.history)
        try:
            arrays = None if m.frozen else epochs.checkpoint(g)
        except TrainingError:  # diverged in this very epoch: nothing worth resuming
            arrays = None
        if arrays is not None:
            with os_errors_fail(m.run, m.summary):
                m.run.write_checkpoint(arrays)
            m.summary["position"] = stopped_at(
                *(int(arrays[key]) for key in ("epoch", "position", "step")))
        finish_run(m.run, m.summary, "interrupted", start)
        on_event(MemberFinished(g, m.run.run_id, "interrupted", epochs=len(m.state.history)))
