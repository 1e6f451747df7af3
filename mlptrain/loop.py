"""The training loop: epochs of declared steps, validation, early stopping, events.

What a step does is the Step's (step.py); the loop only orders the batches, runs each epoch
(eagerly, step by step through `EagerStep`, or as a device backend's replayed epoch graph when
`backend.epoch_path` finds nothing in the way), checkpoints, evaluates and stops early. It takes
the Step and its few own settings (`LoopSettings`), never the whole config.

One loop for a model of G >= 1 members (model.py): a plain run is a group of one. Each member
keeps its own ledger (a TrainState: records, divergence, early stopping, best weights), its own
shuffle stream and its own rates; a group's steps are captured as graphs where the device can.

The loop never prints. It reports what happens as events (dataclasses below) to a callback,
which the CLI renders as progress; it hands checkpoints and per-epoch metrics to callbacks too,
so the run store stays out of the math.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from mlptrain.backend import epoch_path
from mlptrain.data.augment import Augmenter
from mlptrain.errors import TrainingError
from mlptrain.model import MLP
from mlptrain.regularize import dropout_of, max_norm_of
from mlptrain.schedules import Schedule
from mlptrain.step import Step

REPORTS_PER_EPOCH = 20  # progress updates per epoch; each one reads the device's running loss


# -- events -------------------------------------------------------------------------------------


@dataclass
class EpochStarted:
    epoch: int  # 1-based
    epochs: int
    steps: int


@dataclass
class StepsDone:
    epoch: int
    step: int  # steps done in this epoch
    steps: int
    loss: float  # running mean of the epoch's training loss (member 0's)
    score: float  # ... and of its declared metric (the loss's `metric`: accuracy, rmse)
    samples_per_second: float
    losses: list[float] = field(default_factory=list)  # every member's (a group's)
    scores: list[float] = field(default_factory=list)
    metric: str = "accuracy"  # what score is


@dataclass
class EpochEnded:
    epoch: int
    epochs: int
    metrics: dict[str, Any]
    member: int = 0  # whose record (a group's members each end their epochs)
    metric: str = "accuracy"  # the loss's declared metric: the record holds {split}_{metric}


@dataclass
class EarlyStopped:
    epoch: int
    best_epoch: int
    member: int = 0


@dataclass
class StepsPath:
    """How a group's steps run (G > 1): `cuda graph` when each step replays a captured graph,
    else `eager: <why not>`; said once, when decided."""

    path: str


Event = EpochStarted | StepsDone | EpochEnded | EarlyStopped | StepsPath


# -- data on the device -------------------------------------------------------------------------


@dataclass
class Split:
    """One split's inputs (N, D) and targets on the backend's device. A group's split is a pool
    of samples and `rows` (G, n): member g's samples are rows[g] of the pool."""

    X: Any
    targets: Any
    rows: Any = None
    weights: Any = None  # (N,) float64 sample weights (data/weights.py), or None: all 1

    @property
    def size(self) -> int:
        return self.X.shape[0] if self.rows is None else self.rows.shape[1]


def to_device(ops, model: MLP, X: np.ndarray, y: np.ndarray,
              weights: np.ndarray | None = None) -> Split:
    """Moves a split to the device once, in the model's dtype and the loss's target format
    (its sample weights, if any, in float64)."""
    return Split(ops.asarray(X, model.dtype), model.loss.targets(ops.xp, y, model.dtype),
                 weights=None if weights is None else ops.asarray(weights, np.float64))


def evaluate(model: MLP, split: Split, batch_size: int, outputs: str = ""):
    """(mean loss, {metric: value}) of the model on a whole split, in large batches (the
    metrics the loss declares: accuracy, or RMSE and MAE in the target's units): floats for
    one network, (G,) arrays of every member's own for a group. With the split's sample
    weights the loss is their weighted mean, sum_i w_i l_i / sum_i w_i, as training's; the
    metrics stay unweighted. `outputs` adds, from the same pass, (G, n) float64 on the host:
    each member's "first" output as the loss hands it out (a regression's prediction, in the
    target's units) or its "top" class probability on each sample."""
    ops, totals = model.ops, np.zeros((model.members, 1 + len(model.loss.tallies)))
    kept = np.empty((model.members, split.size)) if outputs else None
    for start, stop, ws, logits, targets in forward_split(model, split, batch_size):
        if outputs:  # before the loss, which may write over the logits
            p = model.loss.probabilities(ops.xp, logits)
            p = p[..., 0] if outputs == "first" else p.max(axis=-1)
            kept[:, start:stop] = ops.to_host(p).reshape(model.members, -1)
        weights = None if split.weights is None else split.weights[start:stop]
        batch = ops.loss_forward(model.loss, logits, targets, ws.loss_cache, weights)
        for i, total in enumerate(batch):  # sync points, once per evaluation batch
            totals[:, i] += ops.to_host(total)
    means = totals / split.size
    if split.weights is not None:  # (load_dataset refuses a split whose weights are all 0)
        means[:, 0] = totals[:, 0] / ops.to_float(split.weights.sum())
    metrics = model.loss.metric_values(means[:, 1:])
    result = (float(means[0, 0]), {k: float(v[0]) for k, v in metrics.items()}) \
        if not model.lead else (means[:, 0], metrics)
    return (*result, kept) if outputs else result


def _metrics_record(split: str, metrics: dict) -> dict[str, float]:
    """{split}_{metric}: each finite value of the loss's metrics (a tally that a resumed
    epoch's checkpoint predates is unknown for that epoch: left out)."""
    return {f"{split}_{k}": float(v) for k, v in metrics.items() if math.isfinite(v)}


def target_spread(model: MLP, split: Split | None) -> np.ndarray | None:
    """(G,) the standard deviation of each member's targets on the split, in the target's
    units, whence an epoch's R^2 = 1 - (RMSE / spread)^2; None for class labels, no split."""
    if model.loss.task != "regression" or split is None or not split.size:
        return None
    xp, t = model.ops.xp, split.targets[..., 0]
    if split.rows is not None:
        t = xp.take(t, split.rows, axis=0)  # (G, n): each member's own
    spread = np.reshape(model.ops.to_host(xp.std(t, axis=-1, dtype=xp.float64)), -1)
    return spread * np.reshape(model.loss.target_std, -1)  # (the loss trains t / std)


def forward_split(model: MLP, split: Split, batch_size: int):
    """Yields (start, stop, ws, logits, targets) for the split's samples in batches: one
    network's as views of its data, a group's members each on their own rows (gathered,
    (G, b, ...)), or all on the same samples. The workspace is reused by the next batch."""
    xp = model.ops.xp
    for start in range(0, split.size, batch_size):
        stop = min(start + batch_size, split.size)
        ws = model.workspace(stop - start)
        if split.rows is not None:
            rows = split.rows[:, start:stop]
            x, targets = xp.take(split.X, rows, axis=0), xp.take(split.targets, rows, axis=0)
        else:
            x = model.ops.asarray(split.X[start:stop], model.dtype)
            targets = split.targets[start:stop]
            if model.lead:  # every member scores the same samples
                targets = xp.broadcast_to(targets, (*model.lead, *targets.shape))
        yield start, stop, ws, model.forward(ws, x), targets


# -- the declared step, executed eagerly --------------------------------------------------------


class EagerStep:
    """Executes a Step with the backend's primitives, one batch at a time: augment the batch,
    forward with dropout, loss (with its smoothing), backward, update with the schedule's rate
    and momentum, max-norm. Builds the step's aids for the model once. Its random draws (dropout
    masks, distortions) are keyed by (seed, global step): no generator state to carry. A
    group's model (G members) runs the same step for every member (its aids are none: see
    step.member_blockers)."""

    def __init__(self, step: Step, model: MLP, optimizer):
        self.step, self.model, self.optimizer = step, model, optimizer
        model.dropout = dropout_of(step, model)
        self.max_norm = max_norm_of(step, model)
        a = step.augment
        self.augment = None if a is None else Augmenter(a.shape, step.seed, **a.augmenter_args())
        # plain SGD of one network: the update is taken inside backward's products, where the
        # backend's products can add into the weights (BLAS's beta: ops.folds_sgd)
        self.folds_sgd = optimizer.plain and not model.lead and model.ops.folds_sgd

    def __call__(self, ws, targets, index: int, lr=None, sums=None, weights=None):
        """One step on the batch in ws.x (targets alike, and its sample `weights` (B,) when
        the step is weighted) as global step `index` (0-based) at rate `lr` (the schedule's
        for that step when None; a group's (G,) rates, one per member); returns the batch's
        (summed loss, *the loss's tallies) as device scalars, or adds them to `sums`
        (..., 1 + tallies): a weighted batch's summed loss is B times its weighted mean
        (nn.batch_weights), so an epoch's mean loss is the mean of its steps' losses."""
        model, schedule = self.model, self.step.schedule
        if self.augment is not None:
            _augment_on_host(model.ops, self.augment, ws.x, index, targets)
        lr = schedule.lr(index) if lr is None else lr
        found = model.loss_and_grad(ws, targets, 1.0 / ws.batch_size, index, sums, weights,
                                    sgd_lr=float(lr) if self.folds_sgd else None)
        if not self.folds_sgd:  # (folded: backward took the step)
            if self.step.cycles_momentum:
                self.optimizer.momentum = schedule.momentum(index)
            self.optimizer.step(model.params, model.grads, lr)
        if self.max_norm is not None:
            self.max_norm.apply()
        return found


def _augment_on_host(ops, augment, x, step: int, targets) -> None:
    """Distorts the batch x (B, D) of global step `step` in place; a device batch makes a round
    trip to the host (the eager GPU path only: the epoch graph distorts on the device). The
    batch's labels (targets: class indices) matter only to per-class limits."""
    labels = ops.to_host(targets) if augment.narrow_classes.size else None
    if ops.device == "cpu":
        augment(x, step, labels)
        return
    host = ops.to_host(x)
    augment(host, step, labels)
    x[...] = ops.asarray(host, x.dtype)


# -- the loop -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoopSettings:
    """What the loop needs beyond the step: evaluation and early stopping."""

    eval_batch_size: int = 8192
    patience: int = 0  # epochs without a validation gain before stopping (0 = never)
    min_delta: float = 0.0  # the gain that counts

    @classmethod
    def from_config(cls, train_cfg) -> LoopSettings:
        """From a [train] config section."""
        return cls(train_cfg.eval_batch_size, train_cfg.patience, train_cfg.min_delta)


@dataclass
class TrainState:
    """Where training stands; with the model, optimizer and RNG states, enough to resume
    exactly, even from the middle of an epoch."""

    epoch: int = 0  # epochs completed
    step: int = 0  # global optimizer steps taken
    best_val_loss: float = math.inf
    best_epoch: int = 0
    best_params: dict[str, np.ndarray] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    interrupted: bool = False  # a stop was requested; the state is a valid checkpoint
    # inside the current epoch (set while one is under way, reset when it ends)
    order: np.ndarray | None = None  # (N,) the epoch's shuffle order, on the host
    position: int = 0  # steps of this epoch done
    # the epoch's (loss sum, the loss's tallies (one, or an array of them), samples seen)
    running: tuple = (0.0, 0, 0)
    # the device's epoch graph: the tile and split of each product it timed (the CUDA backend's
    # product_plans()), or the CPU's timed BLAS thread count, kept so that a resumed run
    # rounds exactly as the run it continues
    product_plans: list[dict] | None = None

    # -- the ledger: what an ended epoch leaves behind, the same for a run alone or a member of
    # -- a group (each member keeps its own TrainState)

    def close_epoch(self, record: dict[str, Any], settings: LoopSettings,
                    weights: Callable[[], dict[str, np.ndarray]]) -> bool:
        """Books the ended epoch's record and its early stopping: `weights()` (host copies) is
        kept when the validation loss improves. True when patience has run out (the state then
        says stopped_early)."""
        self.epoch, self.order, self.position, self.running = record["epoch"], None, 0, \
            (0.0, 0, 0)
        self.history.append(record)
        if settings.patience <= 0 or "val_loss" not in record:
            return False
        if record["val_loss"] < self.best_val_loss - settings.min_delta:
            self.best_val_loss, self.best_epoch = record["val_loss"], record["epoch"]
            self.best_params = weights()
            return False
        self.stopped_early = record["epoch"] - self.best_epoch >= settings.patience
        return self.stopped_early


class StopFlag:
    """Set (by a signal handler, another thread, ...) to ask the loop to stop after the current
    batch; the loop checks it once per step, which costs one attribute read."""

    def __init__(self):
        self.is_set = False

    def set(self) -> None:
        self.is_set = True


@dataclass
class Member:
    """One network of the model (G >= 1) as the loop keeps it: its ledger (state), its shuffle
    stream, its schedule and early stopping; a member whose loss stops being finite fails
    alone (`failed` says why) and, like one stopped early, trains no more (its rate is 0)."""

    state: TrainState
    shuffle: np.random.Generator
    schedule: Schedule
    settings: LoopSettings = field(default_factory=LoopSettings)
    failed: str = ""

    @property
    def frozen(self) -> bool:
        return bool(self.failed) or self.state.stopped_early


def train_members(eager: EagerStep, train: Split, val: Split | None, members: list[Member],
                  on_event: Callable[[Event], None] = lambda e: None,
                  on_epoch_end: Callable[[int, TrainState], None] = lambda g, s: None,
                  stop: StopFlag | None = None,
                  on_checkpoint: Callable[[int, TrainState], None] = lambda g, s: None,
                  eval_batch_size: int = 8192) -> None:
    """Trains every member of eager.model (one network, or a group's G) in lockstep for
    step.epochs, each keeping its own ledger in members[g].state; stops when every member is
    frozen. The members' states must stand at the same step (a group resumes from one epoch
    end). `on_epoch_end(g, state)` hears each member's ended epoch (its record is
    state.history[-1]); `on_checkpoint(g, state)` is asked for a member's checkpoint between
    two batches: every step.checkpoint_every steps, and at a stop (the states are then marked
    interrupted). A KeyboardInterrupt between two batches of a group checkpoints its members
    first; one raised while the last report of an epoch is made ends that epoch first.
    Members with a best validation epoch end with its weights."""
    _Training(eager, train, val, members, on_event, on_epoch_end, stop or StopFlag(),
              on_checkpoint, eval_batch_size).run()


class _Training:
    """The loop's state while it runs: the buffers each step reads (the epoch's pool rows, the
    rates, the running sums per member) and where the members stand."""

    def __init__(self, eager, train, val, members, on_event, on_epoch_end, stop, on_checkpoint,
                 eval_batch_size):
        self.eager, self.train, self.val, self.members = eager, train, val, members
        self.on_event, self.on_epoch_end, self.on_checkpoint = on_event, on_epoch_end, \
            on_checkpoint
        self.stop, self.eval_batch_size = stop, eval_batch_size
        self.step, self.model = eager.step, eager.model
        ops, G = self.model.ops, len(members)
        self.ops, self.group = ops, bool(self.model.lead)
        first = members[0].state
        self.epoch, self.global_step = first.epoch, first.step
        # the epoch's running (loss, *tallies) per member
        self.sums = ops.zeros((G, 1 + len(self.model.loss.tallies)), np.float64)
        self.seen = 0  # samples of the epoch done, per member
        self.at: int | None = first.position  # steps done in the epoch; None inside a step
        self._load_running()  # a stop before the first step checkpoints what was restored
        self.buffers: dict[tuple, Any] = {}  # (name, batch size) -> a batch's targets, weights
        self.index: dict[int, Any] = {}  # batch size -> pool rows (G, B) a captured step reads
        self.lr = ops.zeros((G,), self.model.dtype) if self.group else None
        self.lrs = None  # the epoch's rates (steps, G), on the host (and device for a group)
        self.lrs_device = None  # a group's rates on its device
        self.rows = None  # the epoch's pool rows: its order (N,), or a group's (G, N)
        self.ahead = None  # a group's next orders, drawn while the device trains
        self.graph = self.steps_graphs = None
        # a regression's R^2 per epoch, from its RMSE and each split's spread (fixed)
        self.spreads = {"train": target_spread(self.model, train),
                        "val": target_spread(self.model, val)}

    # -- the epochs -----------------------------------------------------------------------------

    def run(self) -> None:
        self.graph = self._epoch_graph()
        if self.graph is None:  # eager steps: on the CPU, its BLAS threads first
            self._choose_threads()
        try:
            self._epochs()
        finally:
            self.ops.restore_threads()

    def _choose_threads(self) -> None:
        """The backend's thread count for the run's steps (the CPU's BLAS): timed on the
        step itself before a fresh run's first one, or as the run being resumed recorded it
        (the count moves float32 rounding: backend/threads.py); kept in every member's
        product_plans, so that its checkpoints hand it on."""
        first = self.members[0].state
        self.ops.on_event = self.on_event
        record = self.ops.choose_threads(self._trial_step(), first.product_plans,
                                         fresh=first.step == 0)
        if record is not None:
            for m in self.members:
                m.state.product_plans = [record]

    def _trial_step(self):
        """A step on the training split's first rows without its update, for timing: what it
        writes (the workspace, the gradients) every step writes afresh; the weights stay."""
        rows = min(self.step.batch_size, self.train.size)
        index = self.train.rows[:, :rows] if self.train.rows is not None \
            else self.ops.asarray(np.arange(rows), np.int64)

        def trial():
            ws, targets = self._batch(index, rows)
            self.model.loss_and_grad(ws, targets, 1.0 / rows)
        return trial

    def _epochs(self) -> None:
        for epoch in range(self.epoch + 1, self.step.epochs + 1):
            if all(m.frozen for m in self.members):
                break
            if self.stop.is_set:  # asked between epochs (or before the first): resume here
                self._interrupt()
                return
            self.on_event(EpochStarted(epoch, self.step.epochs, self.step.steps_per_epoch))
            begin = time.perf_counter()
            self._begin_epoch(epoch)
            try:
                done = self._steps(epoch)
            except KeyboardInterrupt:
                self._interrupted_by_raise(epoch, begin)
                raise
            if not done:  # a stop, checkpointed; or every member failed
                stopped = not all(m.frozen for m in self.members)
                for m in self.members:
                    m.state.interrupted = stopped
                return
            self._end_epoch(epoch, begin)
        for g, m in enumerate(self.members):
            if m.state.best_params is not None:
                self.model.load_member_state(g, m.state.best_params)

    def _begin_epoch(self, epoch: int) -> None:
        """The epoch's orders (kept by a resumed epoch), pool rows, rates and running sums."""
        for m, order in zip(self.members, self._orders()):
            m.state.order = order
        ops = self.ops
        orders = [m.state.order for m in self.members]
        if self.group:  # member g's positions in its split, as rows of the pool
            G, n = len(orders), self.train.size
            flat = ops.asarray(np.stack(orders) + np.arange(G)[:, None] * n, np.int64)
            self.rows = ops.xp.take(self.train.rows.reshape(-1), flat)  # (G, N)
        else:
            self.rows = ops.asarray(orders[0], np.int64)  # moved to the device once
        first = self.global_step - (self.at or 0)
        self.lrs = self._rates(first)
        if self.group:
            self.lrs_device = ops.asarray(self.lrs, self.model.dtype)
        if not self.at:  # a fresh epoch (a resumed one goes on from the sums it restored)
            self.sums.fill(0)
            self.seen = 0

    def _load_running(self) -> None:
        """The running sums of the epoch under way, as the members' states restored them (the
        members stand at the same step: member 0's count of samples is every member's)."""
        running = [m.state.running for m in self.members]
        rows = []
        for loss_sum, tallies, _ in running:
            tallies = np.ravel(np.asarray(tallies, np.float64))
            unknown = self.sums.shape[1] - 1 - tallies.size  # a tally its checkpoint predates
            rows.append([float(loss_sum), *tallies, *[math.nan] * unknown])
        self.sums[...] = self.ops.asarray(np.array(rows))
        self.seen = int(running[0][2])

    def _orders(self) -> list[np.ndarray]:
        """Each member's shuffle order of the epoch, from its own stream, as it draws it alone
        (drawn ahead where _draw_ahead did; a resumed epoch keeps its own)."""
        if self.ahead is not None:
            orders, states = self.ahead
            self.ahead = None
            for m, state in zip(self.members, states):
                m.shuffle.bit_generator.state = state
            return list(orders)
        return [m.state.order if m.state.order is not None
                else m.shuffle.permutation(self.train.size) for m in self.members]

    def _draw_ahead(self) -> None:
        """The next epoch's orders, drawn while the device trains; the streams are put back as
        they were, so that a checkpoint written before that epoch starts records them
        undrawn."""
        before = [m.shuffle.bit_generator.state for m in self.members]
        orders = [m.shuffle.permutation(self.train.size) for m in self.members]
        self.ahead = orders, [m.shuffle.bit_generator.state for m in self.members]
        for m, state in zip(self.members, before):
            m.shuffle.bit_generator.state = state

    def _rates(self, first: int) -> np.ndarray:
        """(steps, G): each member's learning rate at each step of the epoch whose first
        global step is `first`; 0 for a frozen member (p <- p - 0 (...) stays put). Members of
        one schedule share its rates (each costs a Python call per step)."""
        steps = self.step.steps_per_epoch
        by_schedule = {s: s.lrs(first, steps) for s in {m.schedule for m in self.members}}
        lrs = np.stack([by_schedule[m.schedule] for m in self.members], axis=1)
        lrs[:, [m.frozen for m in self.members]] = 0.0
        return lrs

    def _end_epoch(self, epoch: int, begin: float) -> None:
        """Each member's record of the ended epoch, its ledger and its early stopping."""
        means = self.ops.to_host(self.sums) / self.seen  # (G, 1 + tallies)
        loss = self.model.loss
        train = loss.metric_values(means[:, 1:])
        val = evaluate(self.model, self.val, self.eval_batch_size) \
            if self.val is not None and self.val.size else None
        seconds = time.perf_counter() - begin
        self.epoch, self.at, self.seen = epoch, 0, 0
        for g, m in enumerate(self.members):
            if m.frozen:
                continue
            record = {"epoch": epoch, "lr": m.schedule.lr(self.global_step - 1),
                      "train_loss": float(means[g, 0]),
                      **_metrics_record("train", {k: v[g] for k, v in train.items()})}
            if val is not None:
                val_loss, val_metrics = val if not self.group else \
                    (val[0][g], {k: v[g] for k, v in val[1].items()})
                record.update(val_loss=float(val_loss),
                              **_metrics_record("val", val_metrics))
            for split, spread in self.spreads.items():  # (a regression's metric is its RMSE)
                if spread is not None and spread[g] > 0:
                    record[f"{split}_r2"] = 1.0 - (record[f"{split}_{loss.metric}"] /
                                                   spread[g]) ** 2
            record["seconds"] = seconds
            if not self._finite(g, record["train_loss"], epoch, None):
                continue
            m.state.step = self.global_step
            stop_early = m.state.close_epoch(record, m.settings,
                                             lambda g=g: self.model.member_state(g))
            self.on_epoch_end(g, m.state)  # saved before it is announced: on disk as shown
            self.on_event(EpochEnded(epoch, self.step.epochs, record, g, loss.metric))
            if stop_early:
                self.on_event(EarlyStopped(epoch, m.state.best_epoch, g))

    def _finite(self, g: int, mean_loss: float, epoch: int, step: int | None) -> bool:
        """Whether member g's training loss is still finite; if not, the member fails."""
        try:
            check_finite_loss(mean_loss, epoch, step, self.members[g].schedule.base_lr)
        except TrainingError as exc:
            self.members[g].failed = str(exc)
            return False
        return True

    # -- the steps of an epoch ------------------------------------------------------------------

    def _steps(self, epoch: int) -> bool:
        """The epoch's steps from where it stands; False when a stop (or the members'
        failures) ended it early."""
        if self.graph is not None:
            return self._graph_segments(epoch)
        if self.steps_graphs is None and self.group:
            self.steps_graphs = self._capture_steps()
        if self.steps_graphs:
            return self._replayed_steps(epoch)
        return self._eager_steps(epoch)

    def _eager_steps(self, epoch: int) -> bool:
        """The epoch's steps from self.at on, one at a time from the host; progress every
        few steps, a checkpoint where one is due."""
        steps = self.step.steps_per_epoch
        report_every = max(1, steps // REPORTS_PER_EPOCH)
        # 0 = only at the end of the epoch; otherwise every N global steps, so resumes agree
        checkpoint_every = self.step.checkpoint_every or math.inf
        start = time.perf_counter()
        for s in range(self.at, steps):
            self.at = None  # inside a step: no consistent state to checkpoint
            self._one_step(s)
            self.at = s + 1
            if (s + 1) % report_every == 0 or s + 1 == steps:
                if not self._report(epoch, s + 1, start):
                    return False
            if (self.stop.is_set or self.global_step % checkpoint_every == 0) and s + 1 < steps:
                if not self._checkpoint(epoch, s + 1):
                    return False
                if self.stop.is_set:
                    return False
        return True

    def _one_step(self, s: int) -> None:
        """Step s of the epoch: the batch gathered (a group's members each from their own
        rows), then the declared step at each member's rate."""
        B, ops = self.step.batch_size, self.ops
        index = self.rows[..., s * B:(s + 1) * B]
        rows = index.shape[-1]
        ws, targets = self._batch(index, rows)
        weights = None
        if self.train.weights is not None:  # (a weighted step trains alone: step.aids)
            weights = ops.take_rows(self.train.weights, index,
                                    out=self._rows_buffer("weights", rows))
        if self.group:
            self.lr[...] = self.lrs_device[s]
        lr = self.lr if self.group else float(self.lrs[s, 0])
        self.eager(ws, targets, self.global_step, lr, self.sums, weights)
        self.global_step += 1
        self.seen += rows

    def _batch(self, index, rows: int):
        """(workspace, targets) of a batch of `rows`: the training split's rows `index` (B,),
        or each member's (G, B), gathered into the workspace's input and a targets buffer."""
        ws = self.model.workspace(rows)
        self.ops.take_rows(self.train.X, index, out=ws.x)
        return ws, self.ops.take_rows(self.train.targets, index,
                                      out=self._rows_buffer("targets", rows))

    def _rows_buffer(self, name: str, rows: int):
        """A batch of `rows` of the training split's array `name` (targets, weights), each
        member's: allocated once per batch size."""
        found = self.buffers.get((name, rows))
        if found is None:
            a = getattr(self.train, name)
            found = self.buffers[name, rows] = self.ops.empty(
                (*self.model.lead, rows, *a.shape[1:]), a.dtype)
        return found

    def _report(self, epoch: int, done: int, start: float) -> bool:
        """Progress after `done` steps (one sync); a member whose loss is no longer finite
        fails here. False when no member trains on."""
        means = self.ops.to_host(self.sums) / self.seen  # sync point, a few per epoch
        for g, m in enumerate(self.members):
            if not m.frozen:
                self._finite(g, float(means[g, 0]), epoch, done)
        if all(m.frozen for m in self.members):
            return False
        rate = self.seen / max(time.perf_counter() - start, 1e-9)
        loss = self.model.loss
        scores = [float(x) for x in loss.metric_values(means[:, 1:])[loss.metric]]
        self.on_event(StepsDone(epoch, done, self.step.steps_per_epoch, float(means[0, 0]),
                                scores[0], rate, list(means[:, 0]), scores, loss.metric))
        return True

    def _checkpoint(self, epoch: int, done: int) -> bool:
        """Each training member's checkpoint inside the epoch, after `done` steps (never one
        of a loss that is no longer finite); False when no member trains on."""
        means = self.ops.to_host(self.sums)
        for g, m in enumerate(self.members):
            if m.frozen or not self._finite(g, float(means[g, 0] / self.seen), epoch, done):
                continue
            m.state.step, m.state.position = self.global_step, done
            tallies = means[g, 1:].astype(self.model.loss.tally_type)
            m.state.running = (np.float64(means[g, 0]),
                               tallies[0] if tallies.size == 1 else tallies,
                               np.int64(self.seen))
            self.on_checkpoint(g, m.state)
        return not all(m.frozen for m in self.members)

    def _interrupt(self) -> None:
        """A stop between two batches: every training member checkpointed where it stands."""
        done = self.at or 0
        if done:
            self._checkpoint(self.epoch + 1, done)
        else:
            for g, m in enumerate(self.members):
                if not m.frozen:
                    m.state.step = self.global_step
                    self.on_checkpoint(g, m.state)
        for m in self.members:
            m.state.interrupted = True

    def _interrupted_by_raise(self, epoch: int, begin: float) -> None:
        """A KeyboardInterrupt inside a group's epoch: where the steps stand between two
        batches, the members are checkpointed there (an epoch whose steps are all done is
        ended first: on a device, a replayed epoch always runs to its end), as a sweep's
        groups were always stopped. One network is stopped through the StopFlag; an
        interrupt raised inside its callbacks (a checkpoint being handed to its writer
        thread, say) leaves the last checkpoint, which is never half-written."""
        if self.at is None or not self.group:
            return
        if self.at == self.step.steps_per_epoch:
            self._end_epoch(epoch, begin)
        self._interrupt()

    # -- the device's ways: an epoch graph (one network), captured steps (a group) --------------

    def _epoch_graph(self):
        """The device's captured epoch for one network's step, or None when `epoch_path` gives
        reasons against it (then every epoch runs eagerly). Building it may compile kernels on
        first use: the backend reports that through on_event."""
        ops, state = self.ops, self.members[0].state
        if self.group or epoch_path(self.step, ops):
            return None
        ops.on_event = self.on_event
        graph = ops.epoch_runner(self.step, self.model, self.eager.optimizer, self.train,
                                 state.product_plans)
        state.product_plans = graph.product_plans()
        return graph

    def _graph_segments(self, epoch: int) -> bool:
        """The epoch from self.at on as the epoch graph's segments: the steps run on the device
        with no host in between. A segment ends where a checkpoint is due (every
        step.checkpoint_every global steps, as on the eager path) or at the epoch's end; a
        stop request is honoured at the next segment end. Progress once per segment."""
        step, steps = self.step, self.step.steps_per_epoch
        first = self.global_step - self.at
        start = time.perf_counter()
        s = self.at
        while s < steps:
            end = steps
            if step.checkpoint_every:  # up to the next global step that is a multiple of it
                end = min(steps, s + step.checkpoint_every - self.global_step % step.checkpoint_every)
            self.at = None
            self.sums[0] += self.graph.run(self.rows, first, s, end)  # (1 + tallies,)
            self.global_step += end - s
            self.seen += min(end * step.batch_size, self.train.size) - s * step.batch_size
            self.at = s = end
            if not self._report(epoch, s, start):
                return False
            if s < steps and (self.stop.is_set or (step.checkpoint_every and
                                                   self.global_step % step.checkpoint_every == 0)):
                if not self._checkpoint(epoch, s) or self.stop.is_set:
                    return False
        return True

    def _capture_steps(self) -> dict:
        """A group's step captured as a graph for each batch size of the epoch (its full
        batches and a shorter last one), reading the rows and rates that _select puts in
        place; {} where the device cannot capture (then ops.capture_failure says why) or a
        replay would not run the optimizer's step (optim: `replays`)."""
        ops, steps, optimizer = self.ops, self.step.steps_per_epoch, self.eager.optimizer
        if not optimizer.replays:
            self.on_event(StepsPath(f"eager: {optimizer.kind.value} steps do not replay"))
            return {}
        graphs = {}
        for s in sorted({0, steps - 1}):
            rows = self._rows_in(s)
            graph = ops.capture(lambda r=rows: self._captured_step(r),
                                prepare=None if graphs else self._warm_up)
            if graph is None:
                graphs = {}
                break
            graphs[rows] = graph
        how = "cuda graph" if graphs else f"eager: {ops.capture_failure or ops.device}"
        self.on_event(StepsPath(how))
        return graphs

    def _rows_in(self, s: int) -> int:
        B = self.step.batch_size
        return min(B, self.train.size - s * B)

    def _select(self, s: int) -> int:
        """Step s's pool rows and rates, copied into the buffers a captured step reads (on
        every replay); returns the batch's size."""
        B, rows = self.step.batch_size, self._rows_in(s)
        index = self.index.get(rows)
        if index is None:
            index = self.index[rows] = self.ops.zeros((len(self.members), rows), np.int64)
        index[...] = self.rows[:, s * B:(s + 1) * B]
        self.lr[...] = self.lrs_device[s]
        return rows

    def _captured_step(self, rows: int) -> None:
        ws, targets = self._batch(self.index[rows], rows)
        self.eager(ws, targets, 0, self.lr, self.sums)  # (a group's step draws nothing)

    def _warm_up(self) -> None:
        """Runs the epoch's first and last step once and undoes them: every buffer (both batch
        sizes) and every kernel a step uses then exists, as a capture needs."""
        changed = [self.model.params.flat, *(s.flat for s in self.eager.optimizer.buffers()),
                   self.sums]
        saved = [x.copy() for x in changed]
        for s in sorted({0, self.step.steps_per_epoch - 1}):
            self._captured_step(self._select(s))
        for x, copy in zip(changed, saved):
            x[...] = copy

    def _replayed_steps(self, epoch: int) -> bool:
        """The whole epoch as the captured steps replayed, queued without a wait; the next
        epoch's orders are drawn meanwhile; progress once, at its end."""
        steps = self.step.steps_per_epoch
        start = time.perf_counter()
        self.at = None
        for s in range(steps):
            self.steps_graphs[self._select(s)]()
        self.global_step += steps
        self.seen = self.train.size
        if epoch < self.step.epochs:
            self._draw_ahead()  # on the host while the device trains
        self.at = steps
        return self._report(epoch, steps, start)


def check_finite_loss(mean_loss: float, epoch: int, step: int | None, base_lr: float) -> None:
    """TrainingError when the training loss stopped being finite (in `step` of `epoch`, or at
    the epoch's end when step is None): the run diverged."""
    if math.isfinite(mean_loss):
        return
    where = f"epoch {epoch}" + (f", step {step}" if step is not None else "")
    raise TrainingError(
        f"the training loss became {mean_loss} in {where}. The learning rate ({base_lr}) is "
        "likely too high for this model; lower optimizer.lr, add warmup, or train in float64 "
        "(train.dtype). The run's last checkpoint holds the last good weights.")
