"""What `fit` and `eval` do, as library calls: config -> data -> model -> loop -> run store.

The CLI calls `fit_experiment` and `evaluate_run` and renders their events; nothing here prints.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

import mlptrain
from mlptrain import train as loop
from mlptrain.backend import get_backend
from mlptrain.config import Config, load_config
from mlptrain.data import Dataset, load_dataset
from mlptrain.data.augment import build_augmenter
from mlptrain.errors import ConfigError, DataError, TrainingError
from mlptrain.model import MLP, build_model
from mlptrain.optim import build_optimizer
from mlptrain.regularize import build_dropout
from mlptrain.runs import Run, RunStore, npz_arrays
from mlptrain.seeding import streams

SPLITS = ("train", "val", "test")


@dataclass
class RunStarted:
    run_id: str
    path: Path
    layers: list[str]
    parameters: int
    samples: dict[str, int]  # split -> size
    device: str
    dtype: str


@dataclass
class RunFinished:
    run_id: str
    path: Path
    summary: dict[str, Any]


@dataclass
class Prepared:
    """Everything a run needs, built from a config but not yet trained."""

    config: Config
    dataset: Dataset
    model: MLP
    rngs: dict[str, np.random.Generator]


def prepare(config: Config, data_progress: Callable | None = None) -> Prepared:
    """Resolves device, data and the initialised model."""
    rngs = streams(config.train.seed)
    ops = get_backend(config.train.device)
    dataset = load_dataset(config.data, rngs, data_progress)
    model = build_model(config.model, ops, dataset.n_features, dataset.n_classes,
                        np.dtype(config.train.dtype))
    model.initialize(config.model.init, rngs["init"])
    model.dropout = build_dropout(config.model, model.sizes, ops, rngs["dropout"], model.dtype)
    return Prepared(config, dataset, model, rngs)


def fit_experiment(config: Config, store: RunStore,
                   on_event: Callable[[Any], None] = lambda e: None,
                   data_progress: Callable | None = None) -> RunFinished:
    """Trains the configured model into a new run directory and returns its summary."""
    p = prepare(config, data_progress)
    model, dataset, ops = p.model, p.dataset, p.model.ops
    if config.model.weights:  # start from a saved network instead of the initialisation
        model.load_state_dict(_read_weights_file(Path(config.model.weights)),
                              source=config.model.weights)
    optimizer = build_optimizer(config.optimizer, ops, model.params)
    splits = {name: loop.to_device(ops, model, *dataset.split(name)) for name in SPLITS}
    if config.train.patience and not splits["val"].size:
        raise ConfigError("[train] patience > 0 (early stopping) needs a validation split, but "
                          "[data] val_fraction = 0; set one or turn early stopping off.")
    augment = build_augmenter(config.data, dataset.input_shape, p.rngs["augment"])
    run = store.create(config.name)
    run.write_config(config.to_toml())
    summary = _start_summary(run, p)
    run.write_summary(summary)
    on_event(RunStarted(run.run_id, run.path, model.describe(), model.parameter_count,
                        {k: s.size for k, s in splits.items()}, ops.device, config.train.dtype))

    def save_epoch(state: loop.TrainState) -> None:
        run.append_metrics(state.history[-1])
        run.write_checkpoint(_checkpoint(model, optimizer, p.rngs["shuffle"], state))
        summary["epochs_completed"] = state.epoch
        run.write_summary(summary)

    start = time.perf_counter()
    try:
        state = loop.fit(model, optimizer, splits["train"], splits["val"], config,
                         p.rngs["shuffle"], on_event, save_epoch, augment)
    except KeyboardInterrupt:
        _finish(run, summary, "interrupted", start)
        raise
    except TrainingError as exc:
        _finish(run, summary, "failed", start, error=str(exc))
        raise
    seconds = time.perf_counter() - start
    run.write_weights(model.state_dict())
    summary["final"] = final_metrics(model, splits, config.train.eval_batch_size)
    summary["stopped_early"], summary["best_epoch"] = state.stopped_early, state.best_epoch
    summary["timing"] = {
        "wall_seconds": seconds,
        "seconds_per_epoch": seconds / max(state.epoch, 1),
        "samples_per_second": splits["train"].size * state.epoch / seconds,
    }
    _finish(run, summary, "completed", start)
    finished = RunFinished(run.run_id, run.path, summary)
    on_event(finished)
    return finished


def final_metrics(model: MLP, splits: dict[str, loop.Split], batch: int) -> dict[str, Any]:
    """Loss and accuracy of the final weights on every split (None for an empty split)."""
    final: dict[str, Any] = {}
    for name, split in splits.items():
        loss, acc = loop.evaluate(model, split, batch) if split.size else (None, None)
        final[f"{name}_loss"], final[f"{name}_accuracy"] = loss, acc
    return final


def evaluate_run(store: RunStore, ref: str, split: str = "test") -> dict[str, Any]:
    """Re-evaluates a saved run's weights on one split of its own data."""
    if split not in SPLITS:
        raise ConfigError(f"split {split!r} is not one of {', '.join(SPLITS)}.")
    run = store.find(ref)
    config = load_config(run.path / "config.toml")
    p = prepare(config)
    p.model.load_state_dict(run.read_weights(), source=str(run.path / "weights.npz"))
    data = loop.to_device(p.model.ops, p.model, *p.dataset.split(split))
    if not data.size:
        raise ConfigError(f"run {run.run_id} has an empty {split} split (val_fraction = 0?).")
    loss, accuracy = loop.evaluate(p.model, data, config.train.eval_batch_size)
    return {"run_id": run.run_id, "split": split, "loss": loss, "accuracy": accuracy,
            "samples": data.size}


# -- helpers --------------------------------------------------------------------------------------


def _read_weights_file(path: Path) -> dict[str, np.ndarray]:
    try:
        return npz_arrays(path.read_bytes())
    except FileNotFoundError:
        raise DataError(f"[model] weights = {str(path)!r}: the file does not exist. Give a "
                        "weights.npz written by a run, or leave it empty to initialise.") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"[model] weights = {str(path)!r} is not a readable .npz file ({exc}).")


def _checkpoint(model, optimizer, shuffle_rng, state: loop.TrainState) -> dict[str, np.ndarray]:
    arrays = {f"model.{k}": v for k, v in model.state_dict().items()}
    arrays.update({f"optimizer.{k}": v for k, v in optimizer.state_dict().items()})
    arrays["shuffle_rng"] = np.array(json.dumps(shuffle_rng.bit_generator.state))
    arrays["epoch"], arrays["step"] = np.array(state.epoch), np.array(state.step)
    return arrays


def _start_summary(run: Run, p: Prepared) -> dict[str, Any]:
    config, dataset, model = p.config, p.dataset, p.model
    return {
        "run_id": run.run_id,
        "name": config.name,
        "status": "running",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config_source": config.source,
        "overrides": config.overrides,
        "epochs_planned": config.train.epochs,
        "epochs_completed": 0,
        "final": None,
        "timing": None,
        "device": model.ops.device,
        "dtype": config.train.dtype,
        "model": {"sizes": model.sizes, "parameters": model.parameter_count,
                  "activation": model.activation.name, "loss": model.loss.name},
        "dataset": {"name": dataset.name, "source": dataset.source,
                    "checksums": dataset.checksums,
                    "samples": {k: int(len(dataset.split(k)[1])) for k in SPLITS}},
        "versions": {"mlptrain": mlptrain.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
    }


def _finish(run: Run, summary: dict, status: str, start: float, error: str = "") -> None:
    summary["status"] = status
    summary["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if error:
        summary["error"] = error
    if summary["timing"] is None:
        summary["timing"] = {"wall_seconds": time.perf_counter() - start}
    run.write_summary(summary)

