"""Seeded random split of a labelled dataset, e.g. to hold out a validation set."""

from __future__ import annotations

import numpy as np


def split_off(
    X: np.ndarray, y: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Move round(fraction * N) random rows into a second part.

    Returns (X_keep, y_keep, X_split, y_split). Both parts keep the rows' original order, so
    the result depends only on the rng state, not on how callers later index it.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"split fraction must be in [0, 1], got {fraction}")
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
    n_split = round(fraction * len(X))
    order = rng.permutation(len(X))
    split_rows = np.sort(order[:n_split])
    keep_rows = np.sort(order[n_split:])
    return X[keep_rows], y[keep_rows], X[split_rows], y[split_rows]
