"""A user's own dataset in a NumPy .npz archive.

Expected keys: `X` (N, D) or (N, ...) features, `y` (N,) integer class labels, and optionally
`X_test` / `y_test` with the same feature count. Everything is validated up front so that a
bad file is reported by name and key instead of failing somewhere inside training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlptrain.arrayfiles import npz_headers, read_npz
from mlptrain.data.dataset import Dataset, Loading
from mlptrain.data.paths import data_file, file_sha256
from mlptrain.data.split import split_off
from mlptrain.errors import DataError

MIN_CLASSES = 2
MAX_LABEL = 2**31 - 1  # a class index; the output layer has max(label) + 1 units
KEYS = ("X", "y", "X_test", "y_test")  # the arrays read; others in the file are left alone


@dataclass
class NpzArrays:
    """The validated arrays of a user .npz; X are float64 (N, D), labels int64 (N,)."""

    X: np.ndarray
    y: np.ndarray
    X_test: np.ndarray | None
    y_test: np.ndarray | None
    n_classes: int
    sha256: str


def load_npz(path: Path) -> NpzArrays:
    """Read and validate a user's .npz dataset."""
    path = Path(path)
    arrays = read_npz(path, _name(path), DataError, keys=KEYS)
    X, y = _labelled_pair(path, arrays, "X", "y")
    X_test, y_test = _optional_test_pair(path, arrays, n_features=X.shape[1])
    all_labels = [y] if y_test is None else [y, y_test]
    n_classes = max(MIN_CLASSES, max(int(labels.max()) for labels in all_labels) + 1)
    return NpzArrays(
        X=X,
        y=y,
        X_test=X_test,
        y_test=y_test,
        n_classes=n_classes,
        sha256=file_sha256(path),
    )


NEEDS = "the .npz file holding the arrays X (samples, features) and y (integer labels)"


def npz_dataset(cfg, at: Loading) -> Dataset:
    """The [data] section's .npz as a Dataset: its own test arrays, or test_fraction of it held
    out (seeded like the validation split)."""
    path = data_file(cfg, at.near, NEEDS)
    arrays = load_npz(path)
    X, y, X_test, y_test = arrays.X, arrays.y, arrays.X_test, arrays.y_test
    if X_test is None:
        X, y, X_test, y_test = split_off(X, y, cfg.test_fraction, at.split_rng)
    return Dataset("npz", X, y, None, None, X_test, y_test, arrays.n_classes,
                   (X.shape[1],), str(path), {path.name: arrays.sha256})


def npz_data_shape(cfg, near: Sequence[Path]) -> tuple[int, int, int]:
    """npz_shape of the [data] section's file (classes: at least 2, known after loading)."""
    return (*npz_shape(data_file(cfg, near, NEEDS)), 2)


def npz_shape(path: Path) -> tuple[int, int]:
    """Rows of X (+ X_test) and features per row, from the arrays' headers alone (a memory
    estimate before loading); DataError as load_npz would raise it for a file it cannot read."""
    headers = npz_headers(path, _name(Path(path)), DataError, keys=("X", "X_test"))
    samples, features = 0, 0
    for header in headers.values():
        if header.shape:
            samples += header.shape[0]
            features = math.prod(header.shape[1:])
    return samples, features


def _name(path: Path) -> str:
    return f"Dataset file {path}"



def _optional_test_pair(
    path: Path, arrays: dict[str, np.ndarray], n_features: int
) -> tuple[np.ndarray | None, np.ndarray | None]:
    present = {key for key in ("X_test", "y_test") if key in arrays}
    if not present:
        return None, None
    if len(present) == 1:
        (found,) = present
        missing = "y_test" if found == "X_test" else "X_test"
        raise DataError(
            f"Dataset file {path} has array {found!r} but not {missing!r}: the test arrays "
            f"must come as a pair. Add {missing!r} or remove {found!r}."
        )
    X_test, y_test = _labelled_pair(path, arrays, "X_test", "y_test")
    if X_test.shape[1] != n_features:
        raise DataError(
            f"Dataset file {path}: array 'X_test' has {X_test.shape[1]} features per sample "
            f"but 'X' has {n_features}; expected the same feature count. Build both from the "
            "same feature layout."
        )
    return X_test, y_test


def _labelled_pair(
    path: Path, arrays: dict[str, np.ndarray], features_key: str, labels_key: str
) -> tuple[np.ndarray, np.ndarray]:
    X = _features(path, features_key, _array(path, arrays, features_key))
    y = _labels(path, labels_key, _array(path, arrays, labels_key), n_samples=X.shape[0])
    return X, y


def _array(path: Path, arrays: dict[str, np.ndarray], key: str) -> np.ndarray:
    if key not in arrays:
        raise DataError(
            f"Dataset file {path} has no array {key!r} (found: {sorted(arrays)}). "
            "Save the data with numpy.savez(path, X=..., y=...)."
        )
    return arrays[key]


def _bad(path: Path, key: str, expected: str, found: str) -> DataError:
    return DataError(
        f"Dataset file {path}: array {key!r} should be {expected}, but {found}. "
        "Fix the array and save the file again."
    )


def _features(path: Path, key: str, X: np.ndarray) -> np.ndarray:
    expected = "a numeric (N, D) or (N, ...) array with N >= 1 samples and finite values"
    if X.ndim < 2:
        raise _bad(path, key, expected, f"it has {X.ndim} dimension(s), shape {X.shape}")
    if X.size == 0:
        raise _bad(path, key, expected, f"it is empty, shape {X.shape}")
    return X.reshape(X.shape[0], -1).astype(np.float64)  # finite: read_npz checked


def _labels(path: Path, key: str, y: np.ndarray, n_samples: int) -> np.ndarray:
    expected = f"a 1-D array of {n_samples} non-negative integer class labels"
    if y.dtype.kind not in "iuf":
        raise _bad(path, key, expected, f"it has dtype {y.dtype}")
    if y.ndim != 1:
        raise _bad(path, key, expected, f"it has shape {y.shape}")
    if y.shape[0] != n_samples:
        raise _bad(path, key, expected, f"it has {y.shape[0]} labels")
    if y.dtype.kind == "f":
        # Labels saved as floats are common (e.g. from pandas); accept them when exact.
        not_integral = ~np.isfinite(y) | (y != np.round(y))
        if not_integral.any():
            index = int(np.argmax(not_integral))
            raise _bad(path, key, expected, f"label {index} is {y[index].item()}, not an integer")
    if (y < 0).any():
        index = int(np.argmax(y < 0))
        raise _bad(path, key, expected, f"label {index} is negative ({y[index].item()})")
    # before the int64 cast: uint64 2**64-1 would wrap to -1, a float 1e300 to garbage
    if y.size and y.max() > MAX_LABEL:
        index = int(np.argmax(y > MAX_LABEL))
        raise _bad(path, key, expected, f"label {index} is {y[index].item()}, above the "
                   f"largest class index {MAX_LABEL} (each class is one output unit)")
    return y.astype(np.int64)
