"""The training loop: epochs of seeded mini-batch steps, validation, early stopping, events.

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

from mlptrain.errors import TrainingError
from mlptrain.model import MLP
from mlptrain.optim import learning_rate, momentum
from mlptrain.regularize import build_max_norm

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


# -- the loop -----------------------------------------------------------------------------------


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


class StopFlag:
    """Set (by a signal handler, another thread, ...) to ask the loop to stop after the current
    batch; the loop checks it once per step, which costs one attribute read."""

    def __init__(self):
        self.is_set = False

    def set(self) -> None:
        self.is_set = True


def fit(model: MLP, optimizer, train: Split, val: Split | None, cfg, shuffle_rng,
        on_event: Callable[[Event], None] = lambda e: None,
        on_epoch_end: Callable[[TrainState], None] = lambda s: None,
        state: TrainState | None = None, stop: StopFlag | None = None,
        on_checkpoint: Callable[[TrainState], None] = lambda s: None,
        augment: Callable | None = None) -> TrainState:
    """Trains for cfg.train.epochs (or until early stopping) and returns the final state.

    `state` continues a checkpointed run (None starts afresh). Every cfg.train.checkpoint_every
    steps, and when `stop` is set, the loop hands its state to `on_checkpoint` between two
    batches; after a stop it returns with state.interrupted set. With early stopping on, the
    model ends with the weights of the best validation epoch. `augment`, if given, distorts
    each training batch (B, D) in place on the host.
    """
    tc, state, stop = cfg.train, state or TrainState(), stop or StopFlag()
    aids = (augment, build_max_norm(cfg.model, model))
    batch = min(tc.batch_size, train.size)
    steps = math.ceil(train.size / batch)
    for epoch in range(state.epoch + 1, tc.epochs + 1):
        if stop.is_set:  # asked between epochs (or before the first): resume from here
            on_checkpoint(state)
            state.interrupted = True
            return state
        on_event(EpochStarted(epoch, tc.epochs, steps))
        start = time.perf_counter()
        if state.order is None:  # a fresh epoch; a resumed one keeps its order
            state.order = shuffle_rng.permutation(train.size)
        order = model.ops.asarray(state.order, np.int64)  # moved to the device once
        done = _run_epoch(model, optimizer, train, order, batch, cfg, state, epoch, on_event,
                          stop, on_checkpoint, *aids)
        if done is None:
            state.interrupted = True
            return state
        loss, acc = done
        record = {"epoch": epoch, "lr": learning_rate(cfg.schedule, cfg.optimizer.lr,
                                                      state.step - 1, steps, tc.epochs),
                  "train_loss": loss, "train_accuracy": acc}
        if val is not None and val.size:
            record["val_loss"], record["val_accuracy"] = evaluate(model, val, tc.eval_batch_size)
        record["seconds"] = time.perf_counter() - start
        state.epoch, state.order, state.position, state.running = epoch, None, 0, (0.0, 0, 0)
        state.history.append(record)
        stop_early = _early_stopping(model, state, record, tc)
        on_epoch_end(state)  # saved before it is announced: what a user saw is on disk
        on_event(EpochEnded(epoch, tc.epochs, record))
        if stop_early:
            state.stopped_early = True
            on_event(EarlyStopped(epoch, state.best_epoch))
            break
    if state.best_params is not None:
        model.load_state_dict(state.best_params, source="the best epoch's weights")
    return state


def _run_epoch(model, optimizer, train, order, batch, cfg, state, epoch, on_event, stop,
               on_checkpoint, augment=None, max_norm=None):
    """The epoch's steps from state.position on; (mean loss, accuracy), or None if stopped."""
    ops = model.ops
    steps = math.ceil(train.size / batch)
    # onecycle with momentum_low moves SGD's momentum against the rate, step by step
    cycle_momentum = cfg.optimizer.name == "sgd" and cfg.optimizer.momentum > 0 \
        and cfg.schedule.name == "onecycle" and cfg.schedule.momentum_low > 0
    # a device's captured whole-epoch graph runs the plain step only: no per-step host work
    plain = augment is None and max_norm is None and model.dropout is None \
        and not getattr(model.loss, "smoothing", 0) and not cycle_momentum \
        and not cfg.train.checkpoint_every
    runner = getattr(ops, "epoch_runner", lambda *args: None)(model, optimizer, train, batch) \
        if plain else None
    if runner is not None and state.position == 0:
        return _replay_epoch(runner, ops, train, order, steps, cfg, state, epoch, on_event)
    report_every = max(1, steps // REPORTS_PER_EPOCH)
    # 0 = only at the end of the epoch; otherwise every N global steps, so resumes agree
    checkpoint_every = cfg.train.checkpoint_every or math.inf
    loss_sum, correct, seen = state.running
    target_buffers = {}  # batch size -> targets buffer, like the model's workspaces
    start = time.perf_counter()
    for step in range(state.position, steps):
        index = order[step * batch:(step + 1) * batch]
        ws = model.workspace(len(index))
        ops.take_rows(train.X, index, out=ws.x)
        if augment is not None:
            _augment_on_host(ops, augment, ws.x)
        targets = target_buffers.get(len(index))
        if targets is None:
            shape = (len(index), *train.targets.shape[1:])
            targets = target_buffers[len(index)] = ops.empty(shape, train.targets.dtype)
        ops.take_rows(train.targets, index, out=targets)
        lr = learning_rate(cfg.schedule, cfg.optimizer.lr, state.step, steps, cfg.train.epochs)
        batch_loss, batch_correct = model.loss_and_grad(ws, targets, 1.0 / len(index))
        if cycle_momentum:
            optimizer.momentum = momentum(cfg.schedule, cfg.optimizer.momentum, state.step,
                                          steps, cfg.train.epochs)
        optimizer.step(model.params, model.grads, lr)
        if max_norm is not None:
            max_norm.apply()
        state.step += 1
        loss_sum, correct, seen = loss_sum + batch_loss, correct + batch_correct, seen + len(index)
        if (step + 1) % report_every == 0 or step + 1 == steps:
            mean_loss = _finite_mean_loss(ops, loss_sum, seen, cfg, epoch, step)
            accuracy = ops.to_float(correct) / seen
            rate = seen / max(time.perf_counter() - start, 1e-9)
            on_event(StepsDone(epoch, step + 1, steps, mean_loss, accuracy, rate))
        if (stop.is_set or state.step % checkpoint_every == 0) and step + 1 < steps:
            _finite_mean_loss(ops, loss_sum, seen, cfg, epoch, step)  # never save a NaN
            state.position, state.running = step + 1, (loss_sum, correct, seen)
            on_checkpoint(state)
            if stop.is_set:
                return None
    return ops.to_float(loss_sum) / seen, ops.to_float(correct) / seen


def _augment_on_host(ops, augment, x) -> None:
    """Distorts the batch x (B, D) in place; a device batch makes a round trip to the host."""
    if ops.device == "cpu":
        augment(x)
        return
    host = ops.to_host(x)
    augment(host)
    x[...] = ops.asarray(host, x.dtype)


def _replay_epoch(runner, ops, train, order, steps, cfg, state, epoch, on_event):
    """A device backend's whole epoch as one captured graph: the steps run on the device with
    no host in between, so progress is reported once, at the end (one sync)."""
    lrs = [learning_rate(cfg.schedule, cfg.optimizer.lr, state.step + s, steps, cfg.train.epochs)
           for s in range(steps)]
    start = time.perf_counter()
    loss_sum, correct = runner.run(order, lrs)
    state.step += steps
    mean_loss = _finite_mean_loss(ops, loss_sum, train.size, cfg, epoch, steps - 1)
    accuracy = ops.to_float(correct) / train.size
    rate = train.size / max(time.perf_counter() - start, 1e-9)
    on_event(StepsDone(epoch, steps, steps, mean_loss, accuracy, rate))
    return mean_loss, accuracy


def _finite_mean_loss(ops, loss_sum, seen, cfg, epoch, step) -> float:
    mean_loss = ops.to_float(loss_sum) / seen  # sync point, REPORTS_PER_EPOCH per epoch
    if not math.isfinite(mean_loss):
        raise TrainingError(
            f"the training loss became {mean_loss} in epoch {epoch}, step {step + 1}. "
            f"The learning rate ({cfg.optimizer.lr}) is likely too high for this model; "
            "lower optimizer.lr, add warmup, or train in float64 (train.dtype). The run's "
            "last checkpoint holds the last good weights.")
    return mean_loss


def _early_stopping(model, state: TrainState, record, tc) -> bool:
    """Tracks the best validation loss; True when patience has run out."""
    if tc.patience <= 0 or "val_loss" not in record:
        return False
    if record["val_loss"] < state.best_val_loss - tc.min_delta:
        state.best_val_loss, state.best_epoch = record["val_loss"], record["epoch"]
        state.best_params = model.state_dict()
        return False
    return record["epoch"] - state.best_epoch >= tc.patience
