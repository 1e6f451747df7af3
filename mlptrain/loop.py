"""The training loop: epochs of declared steps, validation, early stopping, events.

What a step does is the Step's (step.py); the loop only orders the batches, runs each epoch
(eagerly, step by step through `EagerStep`, or as a device backend's replayed epoch graph when
`backend.epoch_path` finds nothing in the way), checkpoints, evaluates and stops early. It takes
the Step and its few own settings (`LoopSettings`), never the whole config.

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
from mlptrain.regularize import MaxNorm, dropout_of
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
    loss: float  # running mean of the epoch's training loss
    accuracy: float
    samples_per_second: float


@dataclass
class EpochEnded:
    epoch: int
    epochs: int
    metrics: dict[str, Any]


@dataclass
class EarlyStopped:
    epoch: int
    best_epoch: int


Event = EpochStarted | StepsDone | EpochEnded | EarlyStopped


# -- data on the device -------------------------------------------------------------------------


@dataclass
class Split:
    """One split's inputs (N, D) and targets on the backend's device."""

    X: Any
    targets: Any

    @property
    def size(self) -> int:
        return self.X.shape[0]


def to_device(ops, model: MLP, X: np.ndarray, y: np.ndarray) -> Split:
    """Moves a split to the device once, in the model's dtype and the loss's target format."""
    return Split(ops.asarray(X, model.dtype), model.loss.targets(ops.xp, y, model.dtype))


def evaluate(model: MLP, split: Split, batch_size: int) -> tuple[float, float]:
    """(mean loss, accuracy) of the model on a whole split, in large batches."""
    ops = model.ops
    loss_total, correct_total = 0.0, 0
    for start, stop, ws, logits in model.forward_batches(split.X, batch_size):
        loss_sum, correct = ops.loss_forward(model.loss, logits, split.targets[start:stop],
                                             ws.loss_cache)
        loss_total += ops.to_float(loss_sum)  # sync point, once per evaluation batch
        correct_total += int(ops.to_float(correct))
    return loss_total / split.size, correct_total / split.size


# -- the declared step, executed eagerly --------------------------------------------------------


class EagerStep:
    """Executes a Step with the backend's primitives, one batch at a time: augment the batch,
    forward with dropout, loss (with its smoothing), backward, update with the schedule's rate
    and momentum, max-norm. Builds the step's aids for the model once. Its random draws (dropout
    masks, distortions) are keyed by (seed, global step): no generator state to carry."""

    def __init__(self, step: Step, model: MLP, optimizer):
        ops = model.ops
        self.step, self.model, self.optimizer = step, model, optimizer
        model.dropout = dropout_of(step, model)
        hidden = [layer.weight for layer in model.layers[:-1]]  # the output layer stays free
        self.max_norm = MaxNorm(ops, hidden, step.max_norm) if step.max_norm and hidden \
            else None
        a = step.augment
        self.augment = None if a is None else Augmenter(a.shape, step.seed, **a.augmenter_args())

    def __call__(self, ws, targets, index: int):
        """One step on the batch in ws.x (targets alike) as global step `index` (0-based);
        returns the batch's (summed loss, correct) as device scalars."""
        model, schedule = self.model, self.step.schedule
        if self.augment is not None:
            _augment_on_host(model.ops, self.augment, ws.x, index, targets)
        loss_sum, correct = model.loss_and_grad(ws, targets, 1.0 / ws.batch_size, index)
        if self.step.cycles_momentum:
            self.optimizer.momentum = schedule.momentum(index)
        self.optimizer.step(model.params, model.grads, schedule.lr(index))
        if self.max_norm is not None:
            self.max_norm.apply()
        return loss_sum, correct


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
    running: tuple = (0.0, 0, 0)  # the epoch's (loss sum, correct, samples seen) so far
    # the device's epoch graph: the tile and split of each product it timed (the CUDA backend's
    # product_plans()), kept so that a resumed run rounds exactly as the run it continues
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


def fit(eager: EagerStep, train: Split, val: Split | None, settings: LoopSettings,
        shuffle_rng, on_event: Callable[[Event], None] = lambda e: None,
        on_epoch_end: Callable[[TrainState], None] = lambda s: None,
        state: TrainState | None = None, stop: StopFlag | None = None,
        on_checkpoint: Callable[[TrainState], None] = lambda s: None) -> TrainState:
    """Trains for step.epochs (or until early stopping) and returns the final state.

    `state` continues a checkpointed run (None starts afresh). Every step.checkpoint_every
    steps, and when `stop` is set, the loop hands its state to `on_checkpoint` between two
    batches; after a stop it returns with state.interrupted set. With early stopping on, the
    model ends with the weights of the best validation epoch.
    """
    step, model = eager.step, eager.model
    state, stop = state or TrainState(), stop or StopFlag()
    graph = _epoch_graph(eager, train, on_event, state.product_plans)
    if graph is not None:
        state.product_plans = graph.product_plans()
    for epoch in range(state.epoch + 1, step.epochs + 1):
        if stop.is_set:  # asked between epochs (or before the first): resume from here
            on_checkpoint(state)
            state.interrupted = True
            return state
        on_event(EpochStarted(epoch, step.epochs, step.steps_per_epoch))
        start = time.perf_counter()
        if state.order is None:  # a fresh epoch; a resumed one keeps its order
            state.order = shuffle_rng.permutation(train.size)
        order = model.ops.asarray(state.order, np.int64)  # moved to the device once
        if graph is not None:
            done = _replay_epoch(graph, eager, train, order, state, epoch, on_event, stop,
                                 on_checkpoint)
        else:
            done = _run_epoch(eager, train, order, state, epoch, on_event, stop, on_checkpoint)
        if done is None:
            state.interrupted = True
            return state
        loss, acc = done
        record = {"epoch": epoch, "lr": step.schedule.lr(state.step - 1),
                  "train_loss": loss, "train_accuracy": acc}
        if val is not None and val.size:
            record["val_loss"], record["val_accuracy"] = evaluate(model, val,
                                                                  settings.eval_batch_size)
        record["seconds"] = time.perf_counter() - start
        stop_early = state.close_epoch(record, settings, model.state_dict)
        on_epoch_end(state)  # saved before it is announced: what a user saw is on disk
        on_event(EpochEnded(epoch, step.epochs, record))
        if stop_early:
            on_event(EarlyStopped(epoch, state.best_epoch))
            break
    if state.best_params is not None:
        model.load_state_dict(state.best_params, source="the best epoch's weights")
    return state


def _epoch_graph(eager: EagerStep, train: Split, on_event, plans):
    """The device's captured epoch for this step, or None when `epoch_path` gives reasons
    against it (then every epoch runs eagerly). Building it may compile kernels on first use:
    the backend reports that through on_event. `plans`: a resumed run's recorded choices."""
    ops = eager.model.ops
    if epoch_path(eager.step, ops):
        return None
    ops.on_event = on_event
    return ops.epoch_runner(eager.step, eager.model, eager.optimizer, train, plans)


def _run_epoch(eager: EagerStep, train, order, state, epoch, on_event, stop, on_checkpoint):
    """The epoch's steps from state.position on; (mean loss, accuracy), or None if stopped."""
    step, model = eager.step, eager.model
    ops, batch, steps = model.ops, step.batch_size, step.steps_per_epoch
    report_every = max(1, steps // REPORTS_PER_EPOCH)
    # 0 = only at the end of the epoch; otherwise every N global steps, so resumes agree
    checkpoint_every = step.checkpoint_every or math.inf
    loss_sum, correct, seen = state.running
    target_buffers = {}  # batch size -> targets buffer, like the model's workspaces
    start = time.perf_counter()
    for s in range(state.position, steps):
        index = order[s * batch:(s + 1) * batch]
        ws = model.workspace(len(index))
        ops.take_rows(train.X, index, out=ws.x)
        targets = target_buffers.get(len(index))
        if targets is None:
            shape = (len(index), *train.targets.shape[1:])
            targets = target_buffers[len(index)] = ops.empty(shape, train.targets.dtype)
        ops.take_rows(train.targets, index, out=targets)
        batch_loss, batch_correct = eager(ws, targets, state.step)
        state.step += 1
        loss_sum, correct, seen = loss_sum + batch_loss, correct + batch_correct, seen + len(index)
        if (s + 1) % report_every == 0 or s + 1 == steps:
            mean_loss = _finite_mean_loss(ops, loss_sum, seen, step, epoch, s)
            accuracy = ops.to_float(correct) / seen
            rate = seen / max(time.perf_counter() - start, 1e-9)
            on_event(StepsDone(epoch, s + 1, steps, mean_loss, accuracy, rate))
        if (stop.is_set or state.step % checkpoint_every == 0) and s + 1 < steps:
            _finite_mean_loss(ops, loss_sum, seen, step, epoch, s)  # never save a NaN
            state.position, state.running = s + 1, (loss_sum, correct, seen)
            on_checkpoint(state)
            if stop.is_set:
                return None
    return ops.to_float(loss_sum) / seen, ops.to_float(correct) / seen


def _replay_epoch(graph, eager: EagerStep, train, order, state, epoch, on_event, stop,
                  on_checkpoint):
    """The epoch from state.position on as a device backend's captured graph segments: the
    steps run on the device with no host in between. A segment ends where a checkpoint is due
    (every step.checkpoint_every global steps, as on the eager path) or at the epoch's end; a
    stop request is honoured at the next segment end. Progress is reported once per segment
    (one sync each). (mean loss, accuracy), or None if stopped."""
    step, ops = eager.step, eager.model.ops
    steps, batch = step.steps_per_epoch, step.batch_size
    first = state.step - state.position  # the global step of this epoch's step 0
    loss_sum, correct, seen = state.running
    start = time.perf_counter()
    s = state.position
    while s < steps:
        end = steps
        if step.checkpoint_every:  # up to the next global step that is a multiple of it
            end = min(steps, s + step.checkpoint_every - state.step % step.checkpoint_every)
        part_loss, part_correct = graph.run(order, first, s, end)
        rows = min(end * batch, train.size) - s * batch
        state.step += end - s
        loss_sum, correct, seen = loss_sum + part_loss, correct + part_correct, seen + rows
        s = end
        mean_loss = _finite_mean_loss(ops, loss_sum, seen, step, epoch, s - 1)
        rate = seen / max(time.perf_counter() - start, 1e-9)
        on_event(StepsDone(epoch, s, steps, mean_loss, ops.to_float(correct) / seen, rate))
        if s < steps and (stop.is_set or (step.checkpoint_every
                                          and state.step % step.checkpoint_every == 0)):
            state.position, state.running = s, (loss_sum, correct, seen)
            on_checkpoint(state)
            if stop.is_set:
                return None
    return ops.to_float(loss_sum) / seen, ops.to_float(correct) / seen


def _finite_mean_loss(ops, loss_sum, seen, step: Step, epoch, s) -> float:
    mean_loss = ops.to_float(loss_sum) / seen  # sync point, REPORTS_PER_EPOCH per epoch
    check_finite_loss(mean_loss, epoch, s + 1, step.schedule.base_lr)
    return mean_loss


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
