"""The data of each figure as plain NumPy arrays, so a test can check what a figure shows.

Nothing here draws: figures.py turns these arrays into pictures. The model functions run the
saved network forward in the same batches as `train.evaluate`, so predictions agree with the
accuracy a run recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlptrain.model import MLP
from mlptrain.runs.schema import run_metric

# -- curves -------------------------------------------------------------------------------------


@dataclass
class Curves:
    """Per-epoch series from metrics.jsonl and the final test point from summary.json."""

    epochs: list[int]
    loss: dict[str, list[float]]  # split -> one value per epoch (train, and val if recorded)
    score: dict[str, list[float]]  # ... of the metric the loss declares
    test_epoch: int | None = None  # the epoch whose weights the test scores belong to
    test: dict[str, float] = field(default_factory=dict)  # loss, metric (empty if none)
    metric: str = "accuracy"  # nn's Loss.metric: accuracy, or rmse
    r2: dict[str, list[float]] = field(default_factory=dict)  # a regression's, per split


def curves(metrics: list[dict[str, Any]], summary: dict[str, Any]) -> Curves:
    """The loss and the loss's declared metric per epoch of each split that recorded them."""
    metric = run_metric(summary)
    c = Curves([int(r["epoch"]) for r in metrics], {}, {}, metric=metric)
    for split in ("train", "val"):
        for series, key in ((c.loss, "loss"), (c.score, metric), (c.r2, "r2")):
            values = _series(metrics, f"{split}_{key}")
            if values is not None:
                series[split] = values
    final = summary.get("final") or {}
    test = {key: final.get(f"test_{key}") for key in ("loss", metric, "r2")}
    if test["loss"] is not None and test[metric] is not None and c.epochs:
        # early stopping keeps the best epoch's weights: that is what the test set scored
        c.test_epoch = summary.get("best_epoch") or c.epochs[-1]
        c.test = {key: value for key, value in test.items() if value is not None}
    return c


def _series(metrics: list[dict[str, Any]], key: str) -> list[float] | None:
    """Every epoch's value of `key`; None where an epoch has none (a split not recorded, or
    a record that lacks it: the curve is left out rather than drawn with a hole)."""
    values = [r.get(key) for r in metrics]
    return [float(v) for v in values] if values and None not in values else None


# -- the model on data --------------------------------------------------------------------------


@dataclass
class Outputs:
    """What the network computes for N inputs, on the host."""

    probabilities: np.ndarray  # (N, C) class probabilities
    predictions: np.ndarray  # (N,) predicted class, decided from the logits as the loss does
    hidden: np.ndarray | None  # (N, H) post-activation values of the first hidden layer


def run_model(model: MLP, X: np.ndarray, batch_size: int, hidden: bool = True) -> Outputs:
    """Forward passes over X (N, D) in batches of `batch_size`; with hidden=False the first
    hidden layer's values are not copied out (N x 2500 floats for a wide net, unused by a
    caller that wants only the outputs)."""
    ops, xp = model.ops, model.ops.xp
    probs, preds, first = [], [], []
    for _, _, ws, logits in model.forward_batches(X, batch_size):  # (B, C), or (B, 1): sigmoid
        # the loss's own rule, so predictions match the recorded accuracy bit for bit
        pred = logits[:, 0] > 0 if logits.shape[1] == 1 else logits.argmax(axis=1)
        probs.append(ops.to_host(model.loss.probabilities(xp, logits)))
        preds.append(ops.to_host(pred).astype(np.int64))
        if hidden:
            first.append(np.array(ops.to_host(ws.acts[1])))  # copied: the workspace is reused
    return Outputs(np.concatenate(probs), np.concatenate(preds),
                   np.concatenate(first) if hidden else None)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C) counts: row = true class, column = predicted class."""
    flat = np.asarray(y_true, np.int64) * n_classes + np.asarray(y_pred, np.int64)
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def mean_activation_per_class(hidden: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, H): the mean activation of each hidden unit over the samples of each class
    (NaN for a class with no samples)."""
    sums = np.zeros((n_classes, hidden.shape[1]))
    np.add.at(sums, np.asarray(y, np.int64), hidden.astype(np.float64))
    counts = np.bincount(y, minlength=n_classes)[:, None]  # (C, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


def misclassified(y_true: np.ndarray, y_pred: np.ndarray, limit: int) -> np.ndarray:
    """Indices of the first `limit` samples the model gets wrong, in data order."""
    return np.flatnonzero(y_true != y_pred)[:limit]


# -- images and grids ---------------------------------------------------------------------------


def weight_grid(weights: np.ndarray, image_shape: tuple[int, int], columns: int,
                pad: int = 1) -> np.ndarray:
    """Tiles the rows of `weights` (U, h*w), each reshaped to an h x w image, into one mosaic,
    row by row, `columns` tiles wide; the `pad`-pixel gaps and empty tiles are NaN."""
    return image_mosaic(np.reshape(weights, (-1, *image_shape)), columns, (pad, pad))


def image_mosaic(images: np.ndarray, columns: int, gap: tuple[int, int]) -> np.ndarray:
    """Tiles `images` (K, h, w) into one mosaic, row by row, `columns` tiles wide, `gap`
    (between rows, between columns) pixels apart; the gaps and empty tiles are NaN."""
    k, h, w = np.shape(images)
    rows = max(1, -(-k // columns))
    gap_y, gap_x = gap
    mosaic = np.full((rows * (h + gap_y) - gap_y, columns * (w + gap_x) - gap_x), np.nan)
    for i, image in enumerate(np.asarray(images, np.float64)):
        top, left = tile_corner(i, columns, (h, w), gap)
        mosaic[top:top + h, left:left + w] = image
    return mosaic


def tile_corner(i: int, columns: int, image_shape: tuple[int, int],
                gap: tuple[int, int]) -> tuple[int, int]:
    """The (row, column) of the top-left pixel of tile i in an `image_mosaic`."""
    r, c = divmod(i, columns)
    return r * (image_shape[0] + gap[0]), c * (image_shape[1] + gap[1])


def strongest_units(weights: np.ndarray, limit: int) -> np.ndarray:
    """Indices of the units (rows of weights (U, D)) to draw: all of them in order if there are
    at most `limit`, else the `limit` with the largest L2 norm, largest first."""
    if len(weights) <= limit:
        return np.arange(len(weights))
    norms = np.linalg.norm(weights, axis=1)
    return np.argsort(-norms, kind="stable")[:limit]


def grid_columns(n: int) -> int:
    """A near-square grid's width for n tiles."""
    return max(1, int(np.ceil(np.sqrt(n))))


@dataclass
class ProbabilityGrid:
    xs: np.ndarray  # (S,) first input's values
    ys: np.ndarray  # (S,) second input's values
    probabilities: np.ndarray  # (S, S, C): [i, j] is the input (xs[j], ys[i])


def probability_grid(model: MLP, X: np.ndarray, steps: int = 200,
                     batch_size: int = 8192) -> ProbabilityGrid:
    """The model's class probabilities on a steps x steps grid around 2-D data X (N, 2)."""
    lo, hi = X.min(axis=0), X.max(axis=0)
    margin = 0.15 * (hi - lo) + 1e-3
    xs = np.linspace(lo[0] - margin[0], hi[0] + margin[0], steps)
    ys = np.linspace(lo[1] - margin[1], hi[1] + margin[1], steps)
    gx, gy = np.meshgrid(xs, ys)  # (S, S) each
    points = np.stack([gx.ravel(), gy.ravel()], axis=1)  # (S*S, 2)
    probs = run_model(model, points, batch_size).probabilities
    return ProbabilityGrid(xs, ys, probs.reshape(steps, steps, -1))
