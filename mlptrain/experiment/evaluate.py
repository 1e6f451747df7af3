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
from mlptrain.config import Config
from mlptrain.data import check_range, outside_inputs
from mlptrain.data.csv import table_inputs
from mlptrain.data.npz import load_npz
from mlptrain.errors import ConfigError, DataError
from mlptrain.experiment.predict import check_outputs, open_network
from mlptrain.experiment.setup import (SPLITS, changed_files, prepare_run, run_config,
                                       saved_scaler)
from mlptrain.model import MLP
from mlptrain.reports.arrays import run_model
from mlptrain.runs import Run, RunStore
from mlptrain.runs.query import require_weights


# why a split a run scores can be empty, for the message that says so
EMPTY_WHY = {"val": "val_fraction = 0?",
             "test": "a table too small for test_fraction to hold out a row?",
             "train": "no training samples?"}


def evaluate_run(store: RunStore, ref: str, split: str = "test",
                 data: str | Path | None = None) -> dict[str, Any]:
    """Re-evaluates a saved run's weights on one split of its own data, or, with `data`, on
    the arrays X and y of that .npz file (every sample in it)."""
    if split not in SPLITS:
        raise ConfigError(f"split {split!r} is not one of {', '.join(SPLITS)}.")
    run = store.find(ref)
    config = run_config(run)
    notes: list[str] = []
    sample_weights = None  # a split of the run's own is weighed as its training was
    if data is None:
        require_weights(run)
        p = prepare_run(run)
        model, (X, y) = p.model, p.dataset.split(split)
        changed = changed_files(run.read_summary(), p.dataset.checksums)
        if changed:  # else the scores differ from the run's record without a word
            notes.append(f"the data changed since the run read it ({', '.join(changed)}: "
                         "another SHA-256): these scores are of the files as they are now")
        sample_weights = p.dataset.weights(split)
        if not len(y):
            raise ConfigError(f"run {run.run_id} has an empty {split} split ({EMPTY_WHY[split]}).")
    else:
        model = _saved_model(run, config)
        X, y = _outside_data(Path(data), run, config, model, notes)
        if (run.read_summary().get("dataset") or {}).get("weights"):
            notes.append("the loss is unweighted: the run's class and sample weights weigh "
                         "its own splits only")
    with np.errstate(over="ignore", invalid="ignore"):  # check_outputs says what went wrong
        outputs = run_model(model, X, config.train.eval_batch_size, hidden=False)
    if data is not None:  # the run's own data trained it: its outputs are finite
        check_outputs(outputs.probabilities, X, f"{data} (array X)")
    loss, metrics = loop.evaluate(model, loop.to_device(model.ops, model, X, y, sample_weights),
                                  config.train.eval_batch_size)
    score = metrics[model.loss.metric]
    scored = {"run_id": run.run_id, "split": "data" if data is not None else split,
              "data": None if data is None else str(data), "loss": loss}
    if model.loss.task == "regression":  # RMSE as the loop scores it; MAE, R^2 from the values
        scores = regression_scores(y, outputs.probabilities[:, 0])
        return {**scored, "rmse": score, "mae": scores["mae"], "r2": scores["r2"],
                "samples": int(len(y)), "notes": notes}
    accuracy, predictions = score, outputs.predictions
    report = classification_report(y, predictions, model_classes(model))
    names = (run.read_summary().get("dataset") or {}).get("class_names")
    for row in report["per_class"] if names else ():
        row["name"] = names[row["class"]]
    return {**scored, "accuracy": accuracy, "samples": int(len(y)), "notes": notes,
            "classes": report}


def model_classes(model: MLP) -> int:
    """How many classes the network tells apart (one sigmoid output: two)."""
    return max(2, model.sizes[-1])


def _saved_model(run: Run, config: Config) -> MLP:
    """The run's network with its final weights, shaped from its summary (no data needed)."""
    require_weights(run)
    return open_network(run, config, run.read_summary()["model"]["sizes"])


def _outside_data(path: Path, run: Run, config: Config, model: MLP, notes: list[str]):
    """X (N, D) and y (N,) of a .npz (or, for a run trained on a table, of a CSV encoded as
    its table was), checked against what the network takes and made what the run's own splits
    were (outside_inputs: pixel scale, the run's preprocessing and standardization)."""
    summary = run.read_summary()
    dataset = summary.get("dataset") or {}
    if path.suffix.lower() == ".csv":
        X, y, done = table_inputs(path, dataset.get("encoding") or {}, labelled=True)
        notes += done
    else:  # read as the run's target was (whole-number values may still be a regression's)
        arrays = load_npz(path, dataset.get("task") or "classification")
        X, y = arrays.X, _as_run_classes(arrays, dataset.get("class_names"), path, run)
    if X.shape[1] != model.sizes[0]:
        raise DataError(f"{path}: X has {X.shape[1]} features per sample, but run "
                        f"{run.run_id} takes {model.sizes[0]}; score data shaped like the "
                        "data it was trained on.")
    if model.loss.task == "classification" and int(y.max()) >= model_classes(model):
        raise DataError(f"{path}: y holds label {int(y.max())}, but run {run.run_id} knows "
                        f"classes 0-{model_classes(model) - 1} only.")
    X, done = outside_inputs(X, config.data, dataset.get("name"), model.dtype,
                             f"{path} (array X)", saved_scaler(run, summary))
    if model.loss.task == "regression":  # the loss takes the targets in the network's dtype
        check_range(y, model.dtype, str(path))
    notes += done
    return X, y


def _as_run_classes(arrays, run_names: list[str] | None, path: Path, run: Run) -> np.ndarray:
    """A file's labels as the run's class indices: a file of names (text) numbers its own
    classes in its own sorted order, which are the run's only by its names."""
    if not arrays.class_names or arrays.class_names == run_names:
        return arrays.y
    known = {name: c for c, name in enumerate(run_names or [])}
    unknown = sorted(set(arrays.class_names) - set(known))
    if unknown:
        raise DataError(f"{path}: y holds the class {unknown[0]!r}, which run {run.run_id} "
                        f"does not know (its classes: {', '.join(known) or 'indices'}).")
    return np.array([known[name] for name in arrays.class_names], np.int64)[arrays.y]


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


def regression_scores(y_true: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    """RMSE, MAE and R^2 of predictions (N,) against targets (N,), both in the target's units,
    as scikit-learn's mean_squared_error (squared=False), mean_absolute_error and r2_score
    give them: R^2 = 1 - SS_res / SS_tot, SS_tot about the mean of these targets (None when
    they are all equal: no spread to explain); None for no samples."""
    y, r = np.asarray(y_true, np.float64), np.asarray(predicted, np.float64)
    if not len(y):
        return {"rmse": None, "mae": None, "r2": None}
    residual = r - y
    total = float(np.sum((y - y.mean()) ** 2))
    return {"rmse": float(np.sqrt(np.mean(residual ** 2))),
            "mae": float(np.mean(np.abs(residual))),
            "r2": 1.0 - float(residual @ residual) / total if total > 0 else None}


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)
