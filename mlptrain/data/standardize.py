"""Per-feature standardization of a user's own data: x' = (x - mean) / std.

Raw features on scales of 1e3-1e5 make the first layer's products huge, the softmax saturate
and SGD diverge at any usable rate (issue 29: scikit-learn's wine set trained to 14% test
accuracy, 92% once scaled). The statistics are fitted on the training split alone, after the
validation split is carved out, so nothing of the held-out samples leaks into them; the run
stores them (preprocess.npz) and everything that feeds its network outside samples (`eval
--data`, `predict`, the exported ONNX graph) applies the same ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlptrain.errors import DataError, RunStoreError

FILE = "preprocess.npz"  # where a run keeps its statistics: keys `mean` and `std`, (D,) float64


@dataclass(frozen=True, eq=False)
class Standardizer:
    """The statistics of one training split: mean (D,) and std (D,), float64; a constant
    feature has std 1, so it is centred and never divided by 0."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, X: np.ndarray, where: str) -> Standardizer:
        """The statistics of X (N, D), N >= 1: the training split named by `where`."""
        X = np.asarray(X, np.float64)
        # compared exactly: a mean of N equal floats may round off their value, and dividing
        # that rounding by itself would turn a constant feature into a column of +-1
        constant = (X == X[0]).all(axis=0)
        mean = np.where(constant, X[0], X.mean(axis=0))
        std = np.where(constant, 1.0, X.std(axis=0))
        bad = ~np.isfinite(mean) | ~np.isfinite(std)
        if bad.any():
            feature = int(np.argmax(bad))
            raise DataError(
                f"{where}: feature {feature} has values too large to standardize (up to "
                f"{np.abs(X[:, feature]).max():.3g}: their mean or spread overflows); divide "
                "it by a power of ten in the file, or set [data] standardize = false.")
        return cls(mean, std)

    def apply(self, X: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(X - mean) / std in float64: a new array, or `out` (X itself for a loader's own
        copy: a large file is then not held twice)."""
        out = np.subtract(np.asarray(X, np.float64), self.mean, out=out)
        return np.divide(out, self.std, out=out)

    def arrays(self) -> dict[str, np.ndarray]:
        """What the run's preprocess.npz holds."""
        return {"mean": self.mean, "std": self.std}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], where: str) -> Standardizer:
        """The statistics read back from a run's preprocess.npz (`where` names it); the
        reader checked each array's shape, and its values finite."""
        std = np.asarray(arrays["std"], np.float64)
        if (std <= 0).any():
            raise RunStoreError(f"{where}: std holds {std[std <= 0][0]:g}, not a spread a "
                                "feature can have (it is > 0, or 1 for a constant feature); the "
                                "file was changed after the run wrote it.")
        return cls(np.asarray(arrays["mean"], np.float64), std)

    def same_as(self, other: Standardizer | None) -> bool:
        return (other is not None and np.array_equal(self.mean, other.mean)
                and np.array_equal(self.std, other.std))
