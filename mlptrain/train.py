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
    for start in range(0, split.size, batch_size):
        stop = min(start + batch_size, split.size)
        ws = model.workspace(stop - start)
        ws.x[...] = split.X[start:stop]
        loss_sum, correct = model.evaluate_batch(ws, split.targets[start:stop])
        loss_total += ops.to_float(loss_sum)  # sync point, once per evaluation batch
        correct_total += int(ops.to_float(correct))
    return loss_total / split.size, correct_total / split.size


# -- the loop -----------------------------------------------------------------------------------


@dataclass
class TrainState:
    """Where training stands; enough, with the model and optimizer, to resume."""

    epoch: int = 0  # epochs completed
    step: int = 0  # global optimizer steps taken
    best_val_loss: float = math.inf
    best_epoch: int = 0
    best_params: dict[str, np.ndarray] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False


def fit(model: MLP, optimizer, train: Split, val: Split | None, cfg, shuffle_rng,
        on_event: Callable[[Event], None] = lambda e: None,
        on_epoch_end: Callable[[TrainState], None] = lambda s: None,
        augment: Callable | None = None) -> TrainState:
    """Trains for cfg.train.epochs (or until early stopping) and returns the final state.

    With early stopping on, the model ends with the weights of the best validation epoch.
    `augment`, if given, distorts each training batch (B, D) in place on the host.
    """
    tc, state = cfg.train, TrainState()
    aids = (augment, build_max_norm(cfg.model, model))
    batch = min(tc.batch_size, train.size)
    steps = math.ceil(train.size / batch)
    for epoch in range(1, tc.epochs + 1):
        on_event(EpochStarted(epoch, tc.epochs, steps))
        start = time.perf_counter()
        # the epoch's shuffle order, drawn on the host and moved to the device once
        order = model.ops.asarray(shuffle_rng.permutation(train.size), np.int64)
        loss, acc = _run_epoch(model, optimizer, train, order, batch, cfg, state, epoch, on_event,
                               *aids)
        record = {"epoch": epoch, "lr": learning_rate(cfg.schedule, cfg.optimizer.lr,
                                                      state.step - 1, steps, tc.epochs),
                  "train_loss": loss, "train_accuracy": acc}
        if val is not None and val.size:
            record["val_loss"], record["val_accuracy"] = evaluate(model, val, tc.eval_batch_size)
        record["seconds"] = time.perf_counter() - start
        state.epoch = epoch
        state.history.append(record)
        stop = _early_stopping(model, state, record, tc)
        on_epoch_end(state)  # saved before it is announced: what a user saw is on disk
        on_event(EpochEnded(epoch, tc.epochs, record))
        if stop:
            state.stopped_early = True
            on_event(EarlyStopped(epoch, state.best_epoch))
            break
    if state.best_params is not None:
        model.load_state_dict(state.best_params, source="the best epoch's weights")
    return state


def _run_epoch(model, optimizer, train, order, batch, cfg, state, epoch, on_event,
               augment=None, max_norm=None):
    ops = model.ops
    steps = math.ceil(train.size / batch)
    report_every = max(1, steps // REPORTS_PER_EPOCH)
    loss_sum, correct, seen = 0.0, 0, 0
    target_buffers = {}  # batch size -> targets buffer, like the model's workspaces
    start = time.perf_counter()
    for step in range(steps):
        index = order[step * batch:(step + 1) * batch]
        ws = model.workspace(len(index))
        ops.take_rows(train.X, index, out=ws.x)
        if augment is not None:
            augment(ws.x)  # in place, on the host (NumPy backend: ws.x is a host array)
        targets = target_buffers.get(len(index))
        if targets is None:
            shape = (len(index), *train.targets.shape[1:])
            targets = target_buffers[len(index)] = ops.empty(shape, train.targets.dtype)
        ops.take_rows(train.targets, index, out=targets)
        lr = learning_rate(cfg.schedule, cfg.optimizer.lr, state.step, steps, cfg.train.epochs)
        batch_loss, batch_correct = model.loss_and_grad(ws, targets, 1.0 / len(index))
        if cfg.optimizer.name == "sgd":  # onecycle may move the momentum against the rate
            optimizer.momentum = momentum(cfg.schedule, cfg.optimizer.momentum, state.step,
                                          steps, cfg.train.epochs)
        optimizer.step(model.params, model.grads, lr)
        if max_norm is not None:
            max_norm.apply()
        state.step += 1
        loss_sum, correct, seen = loss_sum + batch_loss, correct + batch_correct, seen + len(index)
        if (step + 1) % report_every == 0 or step + 1 == steps:
            mean_loss = ops.to_float(loss_sum) / seen  # sync point, REPORTS_PER_EPOCH per epoch
            if not math.isfinite(mean_loss):
                raise TrainingError(
                    f"the training loss became {mean_loss} in epoch {epoch}, step {step + 1}. "
                    f"The learning rate ({cfg.optimizer.lr}) is likely too high for this model; "
                    "lower optimizer.lr, add warmup, or train in float64 (train.dtype).")
            accuracy = ops.to_float(correct) / seen
            rate = seen / max(time.perf_counter() - start, 1e-9)
            on_event(StepsDone(epoch, step + 1, steps, mean_loss, accuracy, rate))
    return ops.to_float(loss_sum) / seen, ops.to_float(correct) / seen


def _early_stopping(model, state: TrainState, record, tc) -> bool:
    """Tracks the best validation loss; True when patience has run out."""
    if tc.patience <= 0 or "val_loss" not in record:
        return False
    if record["val_loss"] < state.best_val_loss - tc.min_delta:
        state.best_val_loss, state.best_epoch = record["val_loss"], record["epoch"]
        state.best_params = model.state_dict()
        return False
    return record["epoch"] - state.best_epoch >= tc.patience
