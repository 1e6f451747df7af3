"""checkpoint.npz: everything a run needs to continue exactly where it stopped.

    model.{name}       parameters (host copies)
    optimizer.{name}   optimizer state (velocities, Adam moments and step count)
    rng.{stream}       every random stream's bit-generator state, as JSON
    epoch, step        epochs completed, global optimizer steps taken
    position, order    steps done inside the current epoch and that epoch's shuffle order
    running.*          the current epoch's loss sum, correct count and samples seen, so the
                       resumed epoch reports the same metrics as an uninterrupted one
    best.*             early stopping: the best epoch, its validation loss and weights
    history            the per-epoch metric records written so far, as JSON

The history lives here, not only in metrics.jsonl, so a resume restores metrics that agree
with the checkpoint even if the process died between writing the two files.
"""

from __future__ import annotations

import json

import numpy as np

from mlptrain.errors import RunStoreError, TrainingError
from mlptrain.train import TrainState


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
    })
    if state.best_params is not None:
        arrays.update({f"best.model.{k}": v for k, v in state.best_params.items()})
    return arrays


def restore(arrays: dict[str, np.ndarray], model, optimizer,
            rngs: dict[str, np.random.Generator], source: str) -> TrainState:
    """Loads a checkpoint into the model, optimizer and RNGs; returns the state to go on from."""
    try:
        model.load_state_dict(_prefixed(arrays, "model."), source=source)
        optimizer.load_state_dict(_prefixed(arrays, "optimizer."))
        for name, rng in rngs.items():
            rng.bit_generator.state = json.loads(str(arrays[f"rng.{name}"]))
        best = _prefixed(arrays, "best.model.") or None
        position = int(arrays["position"])
        return TrainState(
            epoch=int(arrays["epoch"]), step=int(arrays["step"]),
            best_val_loss=float(arrays["best.val_loss"]), best_epoch=int(arrays["best.epoch"]),
            best_params=best, history=json.loads(str(arrays["history"])),
            order=np.array(arrays["order"]) if position else None, position=position,
            running=tuple(arrays[f"running.{k}"][()] for k in ("loss_sum", "correct", "seen")))
    except (KeyError, ValueError, TypeError) as exc:
        raise RunStoreError(f"{source} is not a checkpoint this version can resume from "
                            f"({type(exc).__name__}: {exc}).") from None


def _prefixed(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
