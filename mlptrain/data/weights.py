"""How much each row's loss counts: [data] class_weight and sample_weight.

A row's weight is its sample weight (a table's column named by data.sample_weight, or an npz's
arrays `w`, `w_val`, `w_test`) times its class's weight (data.class_weight: "balanced", or a
table {class name = weight}); each split keeps its rows' weights, so the validation and test
losses are weighed as training's is. Without either every weight is 1 and the Dataset holds none
(None): then training runs the plain step, operation for operation. Weights shape the loss alone
(nn.batch_weights); accuracy and the errors (RMSE, MAE) stay unweighted.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mlptrain.data.dataset import SPLITS, Dataset, class_names
from mlptrain.errors import ConfigError, DataError

BALANCED = "balanced"  # scikit-learn's: n_samples / (n_classes * count_c), on the train split


def rows_of(array: np.ndarray | None, rows: np.ndarray) -> np.ndarray | None:
    """These rows of an array of weights (or samples); None where there is no array."""
    return None if array is None else array[rows]


def check_sample_weights(values, rows: np.ndarray, where: str,
                         place: Callable[[int], str]) -> np.ndarray:
    """Sample weights (N,) float64: `values` (None: a missing or unreadable one) at `rows`;
    DataError naming the first that is missing, not finite or negative (`place(row)` says
    where), or saying that all of them (`where`) are 0."""
    out = np.empty(len(rows))
    for i, row in enumerate(rows):
        value = values[row]
        if value is None or not np.isfinite(value) or value < 0:
            shown = "is missing or not a finite number" if value is None else f"is {value:g}"
            raise DataError(f"{place(int(row))}: the sample weight {shown}; expected a finite "
                            "number >= 0 in every row (0 leaves a row out of the loss).")
        out[i] = value
    if len(out) and not out.any():
        raise DataError(f"{where}: every sample weight is 0, so no row would count in the "
                        "loss; give some rows a positive weight.")
    return out


def class_weights(setting: str | dict[str, float], dataset: Dataset) -> np.ndarray:
    """Each class's weight (C,) for data.class_weight = `setting`: "balanced" from the training
    split's counts (a class absent from it weighs 1: it has no training row to weigh), or a
    table by class name (classes it leaves out weigh 1)."""
    names = class_names(dataset)
    if dataset.task != "classification":
        raise ConfigError(f"[data] class_weight = {setting!r} weighs classes, but the data's "
                          "target is regressed (its task is 'regression'); weigh its rows "
                          "with data.sample_weight instead, or remove class_weight.")
    out = np.ones(len(names))
    if setting == BALANCED:
        counts = np.bincount(dataset.y_train, minlength=len(names)).astype(np.float64)
        present = counts > 0
        out[present] = len(dataset.y_train) / (present.sum() * counts[present])
        return out
    for name, weight in setting.items():
        if name not in names:
            listed = ", ".join(repr(n) for n in names[:20]) + (", ..." if len(names) > 20 else "")
            raise ConfigError(f"[data] class_weight names the class {name!r}, which the data "
                              f"does not have; its classes are {listed}.")
        out[names.index(name)] = weight
    return out


def weigh(dataset: Dataset, class_weight: str | dict[str, float]) -> None:
    """Every split's weights: the sample weights its loader found (dataset.weighting's
    "sample_weight" says whose) times the class weights data.class_weight asks for ("" or
    {}: none); dataset.weighting records what was used. Nothing changes when neither is
    given. DataError for a non-empty split whose weights are all 0 (its loss: 0 / 0)."""
    source = dataset.weighting.get("sample_weight")
    if not class_weight and not source:
        return
    per_class = class_weights(class_weight, dataset) if class_weight else None
    for split in SPLITS:
        y = dataset.targets(split)
        w = dataset.weights(split)
        w = np.ones(len(y)) if w is None else w
        if per_class is not None:
            w = w * per_class[y]
        if len(w) and not w.any():
            raise DataError(f"{dataset.source}: every weight of the {split} split is 0, so its "
                            "loss is undefined; give some of its rows a positive weight.")
        setattr(dataset, f"w_{split}", w)
    dataset.weighting = {"sample_weight": source or None, "class_weight": class_weight or None}
    if per_class is not None:
        dataset.weighting["class_weights"] = dict(zip(class_names(dataset),
                                                      per_class.tolist()))
    dataset.notes.append(describe(dataset.weighting))


def describe(weighting: dict) -> str:
    """What weighs the loss, in words (the run's notes, fit --dry-run)."""
    parts = []
    if weighting.get("sample_weight"):
        parts.append(f"its sample weight ({weighting['sample_weight']})")
    if weighting.get("class_weights"):
        shown = ", ".join(f"{name} {w:.4g}" for name, w in
                          list(weighting["class_weights"].items())[:8])
        parts.append(f"its class's weight ({shown})")
    return ("the loss weighs each row by " + " times ".join(parts) + "; accuracy, RMSE and MAE "
            "stay unweighted")
