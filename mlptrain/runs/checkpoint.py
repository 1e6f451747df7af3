"""checkpoint.npz: everything a run needs to continue exactly where it stopped.

    model.{name}       parameters (host copies)
    optimizer.{name}   optimizer state (velocities, Adam moments and step count)
    rng.{stream}       every random stream's bit-generator state, as JSON
    epoch, step        epochs completed, global optimizer steps taken
    position, order    steps done inside the current epoch and that epoch's shuffle order
    running.*          the current epoch's loss sum, correct count (a regression's summed
                       squared error, in `correct`) and samples seen, so the
                       resumed epoch reports the same metrics as an uninterrupted one
    best.*             early stopping: the best epoch, its validation loss and weights
    history            the per-epoch metric records written so far, as JSON
    product_plans      the device epoch graph's tile and K-split per matrix product, or the
                       CPU's timed BLAS threads ([{"blas_threads": n}]; absent where untimed),
                       as JSON: a resume keeps them, so it sums in the same order
    format             FORMAT below; absent in checkpoints of format 1

Format 2: dropout masks (and augmentation parameters) are drawn from the counter-based generator
keyed by (seed, global step), so the step counter alone restores them. Format 1 drew them from
sequential streams saved as rng.dropout / rng.augment: its runs without dropout or augmentation
resume exactly as before; with either, a resume is refused (the draws after it would be neither
the old run's nor a new one's).

The history lives here, not only in metrics.jsonl, so a resume restores metrics that agree
with the checkpoint even if the process died between writing the two files.
"""

from __future__ import annotations

import json
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from mlptrain.arrayfiles import npz_headers, read_npz
from mlptrain.errors import RunStoreError, TrainingError
from mlptrain.loop import TrainState
from mlptrain.runs.schema import CHECKPOINT, check_metrics_record

FORMAT = 2


class CheckpointWriter:
    """Writes a run's checkpoints on a thread of its own, one at a time, while training goes on:
    a big model's checkpoint (12 M weights: ~96 MB) takes longer to write than its epoch takes
    to train. What it writes is already a host copy (checkpoint_arrays), which later steps
    cannot change, and each write replaces the file atomically, so a kill mid-write leaves the
    previous checkpoint. A write's error is raised by the next `write` or by `close`."""

    def __init__(self, run) -> None:
        self._run = run
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="checkpoint")
        self._pending: Future | None = None

    def write(self, arrays: dict[str, np.ndarray]) -> None:
        self.wait()  # one in flight: at most two checkpoints' copies in memory
        self._pending = self._pool.submit(self._run.write_checkpoint, arrays)

    def wait(self) -> None:
        """Returns once the last checkpoint handed over is on disk."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown()


def checkpoint_arrays(model, optimizer, rngs: dict[str, np.random.Generator],
                      state: TrainState) -> dict[str, np.ndarray]:
    """The checkpoint of a training state; TrainingError if a parameter is not finite (a
    diverged run keeps its last good checkpoint instead)."""
    params = model.state_dict()
    bad = [name for name, p in params.items() if not np.isfinite(p).all()]
    if bad:
        raise TrainingError(
            f"{bad[0]} holds non-finite values after step {state.step}: training diverged. "
            "Lower optimizer.lr, add warmup (schedule.warmup_epochs), or train in float64 "
            "(train.dtype); the run's last checkpoint keeps the last good weights.")
    arrays = {f"model.{k}": v for k, v in params.items()}
    arrays.update({f"optimizer.{k}": v for k, v in optimizer.state_dict().items()})
    for name, rng in rngs.items():
        arrays[f"rng.{name}"] = np.array(json.dumps(rng.bit_generator.state))
    loss_sum, correct, seen = (np.asarray(model.ops.to_host(v)) for v in state.running)
    arrays.update({
        "epoch": np.array(state.epoch), "step": np.array(state.step),
        "position": np.array(state.position),
        "order": state.order if state.order is not None else np.zeros(0, np.int64),
        "running.loss_sum": loss_sum, "running.correct": correct, "running.seen": seen,
        "best.epoch": np.array(state.best_epoch), "best.val_loss": np.array(state.best_val_loss),
        "history": np.array(json.dumps(state.history)),
        "format": np.array(FORMAT),
    })
    if state.product_plans is not None:
        arrays["product_plans"] = np.array(json.dumps(state.product_plans))
    if state.best_params is not None:
        arrays.update({f"best.model.{k}": v for k, v in state.best_params.items()})
    return arrays


def restore(arrays: dict[str, np.ndarray], model, optimizer,
            rngs: dict[str, np.random.Generator], source: str, step=None,
            train_size: int | None = None) -> TrainState:
    """Loads a checkpoint into the model, optimizer and RNGs; returns the state to go on from.
    `step`, the run's declared Step, tells whether an older format can still resume exactly;
    with `train_size`, the run's training samples, a checkpoint that stopped inside an epoch
    must hold a shuffle order of exactly those (the batches are gathered by its indices)."""
    version = int(arrays["format"]) if "format" in arrays else 1
    if version > FORMAT:
        raise RunStoreError(f"{source} has checkpoint format {version}, newer than this "
                            f"mlptrain reads ({FORMAT}); resume it with the version that "
                            "wrote it.")
    if version < 2 and step is not None and (step.has_dropout or step.augment is not None):
        raise RunStoreError(
            f"{source} was written by an older mlptrain (checkpoint format {version}) that "
            "drew dropout masks and augmentations from sequential random streams; this one "
            "draws them by (seed, step), so resuming would not continue the same run. Start "
            "a new run from its config with `mlptrain fit`, or resume it with the older "
            "version.")
    # (`step` names the step count below)
    planned, batch = (None, None) if step is None else (step.epochs, step.batch_size)
    try:
        _check_shadow_shapes(arrays, model.params)
        model.load_state_dict(_prefixed(arrays, "model."), source=source)
        optimizer.load_state_dict(_prefixed(arrays, "optimizer."))
        for name, rng in rngs.items():
            rng.bit_generator.state = json.loads(str(arrays[f"rng.{name}"]))
        best = _prefixed(arrays, "best.model.") or None
        epoch, step, position = (_count(arrays, k) for k in ("epoch", "step", "position"))
        order = np.array(arrays["order"]) if position else None
        if order is not None and (order.ndim != 1 or order.dtype.kind not in "iu"
                                  or position > len(order)):
            raise ValueError(f"'order' is {order.dtype} {order.shape}, expected integer "
                             f"indices with at least position = {position} of them")
        if order is not None and train_size is not None and not _is_shuffle(order, train_size):
            raise ValueError(f"'order' holds {len(order)} indices that are not a shuffle of "
                             f"the run's {train_size} training samples (a checkpoint of "
                             "another run or config?)")
        seen = int(np.asarray(arrays["running.seen"]))
        if order is not None and batch is not None and seen != position * batch:
            raise ValueError(f"it saw {seen} samples in {position} steps of the epoch, not "
                             f"{position * batch} in steps of {batch} (a checkpoint of "
                             "another run or config?)")
        if planned is not None and epoch > planned:
            raise ValueError(f"it ends epoch {epoch}, but the run plans {planned} (a "
                             "checkpoint of another run or config?)")
        history = json.loads(str(arrays["history"]))
        plans = (json.loads(str(arrays["product_plans"])) if "product_plans" in arrays
                 else None)
        if plans is not None and not (isinstance(plans, list)
                                      and all(isinstance(p, dict) for p in plans)):
            raise ValueError("product_plans is not a list of records")
        problem = "history is not a list" if not isinstance(history, list) else next(
            (p for p in map(check_metrics_record, history) if p), None)
        if problem or len(history) != epoch:
            raise ValueError(problem or f"history holds {len(history)} epochs, expected {epoch}")
        return TrainState(
            epoch=epoch, step=step,
            best_val_loss=float(arrays["best.val_loss"]), best_epoch=int(arrays["best.epoch"]),
            best_params=best, history=history, order=order, position=position,
            running=tuple(arrays[f"running.{k}"][()] for k in ("loss_sum", "correct", "seen")),
            product_plans=plans)
    except (KeyError, ValueError, TypeError, RecursionError) as exc:
        raise RunStoreError(f"{source} is not a checkpoint this version can resume from "
                            f"({type(exc).__name__}: {exc}).") from None


def epoch_end(path) -> int | None:
    """The epoch whose end a checkpoint file holds; None when it stopped inside an epoch.
    RunStoreError when the file cannot be read (every array's header is checked; only the
    two counters are read)."""
    npz_headers(path, str(path), RunStoreError, CHECKPOINT)  # all of them, cheaply
    arrays = read_npz(path, str(path), RunStoreError, CHECKPOINT, keys=("position", "epoch"))
    try:
        position = _count(arrays, "position")
        return None if position else _count(arrays, "epoch")
    except (KeyError, ValueError) as exc:
        raise RunStoreError(f"{path} is not a checkpoint this version can resume from "
                            f"({type(exc).__name__}: {exc}).") from None


def _check_shadow_shapes(arrays: dict[str, np.ndarray], params: dict) -> None:
    """Each array that shadows a parameter (its best copy, its optimizer state) has that
    parameter's shape: one number would broadcast into a whole velocity without a word."""
    for name, p in params.items():
        for key, value in arrays.items():
            if key.startswith(("best.model.", "optimizer.")) and key.endswith(f".{name}") \
                    and np.shape(value) != tuple(p.shape):
                raise ValueError(f"{key!r} has shape {np.shape(value)}, expected "
                                 f"{tuple(p.shape)} (that of {name})")


def _is_shuffle(order: np.ndarray, size: int) -> bool:
    """Whether `order` is a permutation of range(size): what the batches gather by (an index
    beyond the samples would be clipped to the last, silently)."""
    return len(order) == size and np.array_equal(np.sort(order), np.arange(size))


def _count(arrays: dict[str, np.ndarray], key: str) -> int:
    """A non-negative integer scalar (ValueError otherwise)."""
    value = np.asarray(arrays[key])
    if value.shape != () or value.dtype.kind not in "iu" or int(value) < 0:
        raise ValueError(f"{key!r} is {value.dtype} {value.shape}, expected a count")
    return int(value)


def _prefixed(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
