"""Training a run: a new one from a config, or an interrupted one from its checkpoint.

The CLI calls `fit_experiment` / `resume_experiment` and renders their events; nothing here prints.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

import mlptrain
from mlptrain import train as loop
from mlptrain.config import Config, load_config
from mlptrain.errors import ConfigError, DataError, RunStoreError, TrainingError
from mlptrain.experiment.setup import SPLITS, Prepared, prepare
from mlptrain.model import MLP
from mlptrain.optim import build_optimizer
from mlptrain.runs import Run, RunStore, npz_arrays
from mlptrain.runs.checkpoint import checkpoint_arrays, restore


@dataclass
class RunStarted:
    run_id: str
    path: Path
    layers: list[str]
    parameters: int
    samples: dict[str, int]  # split -> size
    device: str
    dtype: str
    resumed_at: tuple[int, int] | None = None  # (epochs completed, steps into the next)


@dataclass
class RunFinished:
    run_id: str
    path: Path
    summary: dict[str, Any]


def fit_experiment(config: Config, store: RunStore,
                   on_event: Callable[[Any], None] = lambda e: None,
                   data_progress: Callable | None = None,
                   stop: loop.StopFlag | None = None) -> RunFinished:
    """Trains the configured model into a new run directory and returns its summary.

    Setting `stop` ends training after the current batch with a checkpoint; the summary's
    status is then `interrupted` and `resume_experiment` continues the run.
    """
    p = prepare(config, data_progress)
    if config.model.weights:  # start from a saved network instead of the initialisation
        p.model.load_state_dict(_read_weights_file(Path(config.model.weights)),
                                source=config.model.weights)
    optimizer = build_optimizer(config.optimizer, p.model.ops, p.model.params)
    splits = _splits(p)
    run = store.create(config.name)
    run.write_config(config.to_toml())
    summary = _start_summary(run, p)
    run.write_summary(summary)
    return _train(run, summary, p, optimizer, splits, loop.TrainState(), on_event, stop)


def resume_experiment(store: RunStore, ref: str,
                      on_event: Callable[[Any], None] = lambda e: None,
                      data_progress: Callable | None = None,
                      stop: loop.StopFlag | None = None) -> RunFinished:
    """Continues a run from its checkpoint.npz, in its own directory, to the same weights an
    uninterrupted run would have reached."""
    run = store.find(ref)
    summary = run.read_summary()
    if summary.get("status") == "completed":
        raise RunStoreError(f"run {run.run_id} has already completed; there is nothing to "
                            "resume. Start a new run with `mlptrain fit`.")
    checkpoint = run.read_checkpoint()  # before any work: a run without one cannot resume
    config = load_config(run.path / "config.toml")
    p = prepare(config, data_progress)
    optimizer = build_optimizer(config.optimizer, p.model.ops, p.model.params)
    state = restore(checkpoint, p.model, optimizer, p.rngs, str(run.path / "checkpoint.npz"))
    splits = _splits(p)
    run.write_metrics(state.history)  # drops any record written after the checkpoint
    summary.update(status="running", epochs_completed=state.epoch, final=None, timing=None,
                   resumed=summary.get("resumed", 0) + 1, pid=os.getpid(), host=platform.node())
    summary.pop("error", None)
    run.write_summary(summary)
    return _train(run, summary, p, optimizer, splits, state, on_event, stop)


def _splits(p: Prepared) -> dict[str, loop.Split]:
    splits = {name: loop.to_device(p.model.ops, p.model, *p.dataset.split(name))
              for name in SPLITS}
    if p.config.train.patience and not splits["val"].size:
        raise ConfigError("[train] patience > 0 (early stopping) needs a validation split, but "
                          "[data] val_fraction = 0; set one or turn early stopping off.")
    return splits


def _train(run: Run, summary: dict, p: Prepared, optimizer, splits, state: loop.TrainState,
           on_event, stop) -> RunFinished:
    config, model = p.config, p.model
    on_event(RunStarted(run.run_id, run.path, model.describe(), model.parameter_count,
                        {k: s.size for k, s in splits.items()}, model.ops.device,
                        config.train.dtype, resumed_at=(state.epoch, state.position)
                        if state.step else None))

    def save_checkpoint(s: loop.TrainState) -> None:
        run.write_checkpoint(checkpoint_arrays(model, optimizer, p.rngs, s))

    def save_epoch(s: loop.TrainState) -> None:
        save_checkpoint(s)  # first: it holds the history too, so metrics never run ahead of it
        run.append_metrics(s.history[-1])
        summary["epochs_completed"] = s.epoch
        run.write_summary(summary)

    start, epochs_before = time.perf_counter(), len(state.history)
    try:
        state = loop.fit(model, optimizer, splits["train"], splits["val"], config,
                         p.rngs["shuffle"], on_event, save_epoch, state, stop, save_checkpoint,
                         p.augment)
    except KeyboardInterrupt:
        _finish(run, summary, "interrupted", start)
        raise
    except TrainingError as exc:
        _finish(run, summary, "failed", start, error=str(exc))
        raise
    seconds = time.perf_counter() - start
    if state.interrupted:
        summary["position"] = {"epoch": state.epoch + 1 if state.position else state.epoch,
                               "step": state.step}
        _finish(run, summary, "interrupted", start)
        finished = RunFinished(run.run_id, run.path, summary)
        on_event(finished)
        return finished
    run.write_weights(model.state_dict())
    summary["final"] = final_metrics(model, splits, config.train.eval_batch_size)
    summary["stopped_early"], summary["best_epoch"] = state.stopped_early, state.best_epoch
    summary.pop("position", None)
    epochs_here = max(len(state.history) - epochs_before, 1)  # this session's, if resumed
    summary["timing"] = {
        "wall_seconds": seconds,
        "seconds_per_epoch": seconds / epochs_here,
        "samples_per_second": splits["train"].size * epochs_here / seconds,
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


# -- helpers --------------------------------------------------------------------------------------


def _read_weights_file(path: Path) -> dict[str, np.ndarray]:
    try:
        return npz_arrays(path.read_bytes())
    except FileNotFoundError:
        raise DataError(f"[model] weights = {str(path)!r}: the file does not exist. Give a "
                        "weights.npz written by a run, or leave it empty to initialise.") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"[model] weights = {str(path)!r} is not a readable .npz file ({exc}).")


def _start_summary(run: Run, p: Prepared) -> dict[str, Any]:
    config, dataset, model = p.config, p.dataset, p.model
    return {
        "run_id": run.run_id,
        "name": config.name,
        "status": "running",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "pid": os.getpid(), "host": platform.node(),  # tells `mlptrain runs` a killed run
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
                    "input_shape": list(dataset.input_shape),  # predict reshapes images to it
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

