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

# where a run keeps its statistics: keys `mean` and `std`, (D,) float64, for the features;
# `target_mean` and `target_std`, (1,) float64, for a regression target (TargetScale)
FILE = "preprocess.npz"


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


@dataclass(frozen=True)
class TargetScale:
    """The training split's target mean and std (data.standardize_target): a regression loss
    trains on (y - mean) / std, so that one learning rate suits targets in the hundreds as
    well as in [0, 1], and hands its predictions and RMSE back in y's units (nn._RealTarget).
    A constant target has std 1, as a constant feature."""

    mean: float
    std: float

    @classmethod
    def fit(cls, y: np.ndarray, where: str) -> TargetScale:
        """The statistics of the training split's targets y (N,), N >= 1, named by `where`."""
        y = np.asarray(y, np.float64)
        mean, std = float(y.mean()), float(y.std())
        if not (np.isfinite(mean) and np.isfinite(std)):
            raise DataError(f"{where}: the target has values too large to standardize (up to "
                            f"{np.abs(y).max():.3g}); divide it by a power of ten in the file, "
                            "or set [data] standardize_target = false.")
        return cls(mean, std if std > 0 else 1.0)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"target_mean": np.array([self.mean]), "target_std": np.array([self.std])}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], where: str) -> TargetScale:
        std = float(arrays["target_std"][0])
        if std <= 0:
            raise RunStoreError(f"{where}: target_std holds {std:g}, not a spread a target can "
                                "have (it is > 0); the file was changed after the run wrote it.")
        return cls(float(arrays["target_mean"][0]), std)
