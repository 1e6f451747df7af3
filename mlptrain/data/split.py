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
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
    keep_rows, split_rows = split_indices(len(X), fraction, rng)
    return X[keep_rows], y[keep_rows], X[split_rows], y[split_rows]


def split_indices(n: int, fraction: float, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(keep_rows, split_rows): split_off's two parts as sorted row indices of the N rows."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"split fraction must be in [0, 1], got {fraction}")
    n_split = round(fraction * n)
    order = rng.permutation(n)
    return np.sort(order[n_split:]), np.sort(order[:n_split])
