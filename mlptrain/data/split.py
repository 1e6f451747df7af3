"""Seeded random split of a labelled dataset, e.g. to hold out a validation set."""

from __future__ import annotations

import numpy as np


def split_indices(n: int, fraction: float, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(keep_rows, split_rows): round(fraction * n) random rows of n split off, each part as
    sorted row indices, so that both keep the rows' original order and the result depends
    only on the rng's state."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"split fraction must be in [0, 1], got {fraction}")
    n_split = round(fraction * n)
    order = rng.permutation(n)
    return np.sort(order[n_split:]), np.sort(order[:n_split])


def hold_out_test(n: int, fraction: float, rng: np.random.Generator, notes: list[str]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """split_indices of a file's n rows into (kept, test) by [data] test_fraction; a split that
    rounds to no row (0.001 of 178) is named in `notes`, which fit shows: the run then ends
    with no test score ("test accuracy -") and nothing said why."""
    keep, test = split_indices(n, fraction, rng)
    if not len(test):
        notes.append(f"[data] test_fraction = {fraction:g} of {n} rows held out no row, so the "
                     "run has no test score; raise test_fraction to get one")
    return keep, test
