"""Re-scoring a saved run: its weights on one split of its own data, or on a .npz of yours.

Besides loss and accuracy, the result holds a per-class report (precision, recall, F1 and
support per class, with macro and support-weighted averages), as scikit-learn's
classification_report gives it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mlptrain import loop
from mlptrain.config import Config, load_config
from mlptrain.data.npz import load_npz
from mlptrain.errors import ConfigError, DataError
from mlptrain.experiment.setup import SPLITS, prepare
from mlptrain.experiment.predict import load_network
from mlptrain.model import MLP
from mlptrain.reports.arrays import run_model
from mlptrain.runs import Run, RunStore
from mlptrain.runs.query import read_final_weights

PIXEL_MAX = 255  # images saved as 8-bit pixels; the network was trained on [0, 1]


def evaluate_run(store: RunStore, ref: str, split: str = "test",
                 data: str | Path | None = None) -> dict[str, Any]:
    """Re-evaluates a saved run's weights on one split of its own data, or, with `data`, on
    the arrays X and y of that .npz file (every sample in it)."""
    if split not in SPLITS:
        raise ConfigError(f"split {split!r} is not one of {', '.join(SPLITS)}.")
    run = store.find(ref)
    config = load_config(run.path / "config.toml")
    notes: list[str] = []
    if data is None:
        p = prepare(config)
        model, (X, y) = p.model, p.dataset.split(split)
        model.load_state_dict(read_final_weights(run), source=str(run.path / "weights.npz"))
        if not len(y):
            raise ConfigError(f"run {run.run_id} has an empty {split} split (val_fraction = 0?).")
    else:
        model = _saved_model(run, config)
        X, y = _outside_data(Path(data), run, model, notes)
    loss, accuracy = loop.evaluate(model, loop.to_device(model.ops, model, X, y),
                                   config.train.eval_batch_size)
    predictions = run_model(model, X, config.train.eval_batch_size).predictions
    return {"run_id": run.run_id, "split": "data" if data is not None else split,
            "data": None if data is None else str(data), "loss": loss, "accuracy": accuracy,
            "samples": int(len(y)), "notes": notes,
            "classes": classification_report(y, predictions, model_classes(model))}


def model_classes(model: MLP) -> int:
    """How many classes the network tells apart (one sigmoid output: two)."""
    return max(2, model.sizes[-1])


def _saved_model(run: Run, config: Config) -> MLP:
    """The run's network with its final weights, shaped from its summary (no data needed)."""
    sizes = run.read_summary()["model"]["sizes"]
    return load_network(config, sizes, read_final_weights(run), str(run.path / "weights.npz"))


def _outside_data(path: Path, run: Run, model: MLP, notes: list[str]):
    """X (N, D) and y (N,) of a .npz, checked against what the network takes."""
    arrays = load_npz(path)
    X, y = arrays.X, arrays.y
    if X.shape[1] != model.sizes[0]:
        raise DataError(f"{path}: X has {X.shape[1]} features per sample, but run "
                        f"{run.run_id} takes {model.sizes[0]}; score data shaped like the "
                        "data it was trained on.")
    if int(y.max()) >= model_classes(model):
        raise DataError(f"{path}: y holds label {int(y.max())}, but run {run.run_id} knows "
                        f"classes 0-{model_classes(model) - 1} only.")
    dataset = (run.read_summary().get("dataset") or {}).get("name")
    if dataset == "mnist" and X.max() > 1.5:
        X = X / PIXEL_MAX
        notes.append(f"X looks like 0-{PIXEL_MAX} pixels: scaled to [0, 1], as the training "
                     "images were")
    return X, y


def classification_report(y_true: np.ndarray, y_pred: np.ndarray,
                          n_classes: int) -> dict[str, Any]:
    """Per class: precision (of the samples predicted as it, the share that are), recall (of
    its samples, the share found), F1 (their harmonic mean) and support (its samples); then
    the plain mean over classes (macro) and the mean weighted by support. A ratio whose
    denominator is 0 is reported as 0.0, as scikit-learn does."""
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    support = np.bincount(y_true, minlength=n_classes).astype(np.float64)
    predicted = np.bincount(y_pred, minlength=n_classes).astype(np.float64)
    hits = np.bincount(y_true[y_true == y_pred], minlength=n_classes).astype(np.float64)
    precision = _ratio(hits, predicted)
    recall = _ratio(hits, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    per_class = [{"class": c, "precision": float(precision[c]), "recall": float(recall[c]),
                  "f1": float(f1[c]), "support": int(support[c])} for c in range(n_classes)]
    weights = support / max(support.sum(), 1)
    return {"per_class": per_class,
            "macro_avg": {"precision": float(precision.mean()), "recall": float(recall.mean()),
                          "f1": float(f1.mean()), "support": int(support.sum())},
            "weighted_avg": {"precision": float(precision @ weights),
                             "recall": float(recall @ weights), "f1": float(f1 @ weights),
                             "support": int(support.sum())}}


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)
