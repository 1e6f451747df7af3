"""A user's own dataset in a NumPy .npz archive.

Expected keys: `X` (N, D) or (N, ...) features, `y` (N,) integer class labels, and optionally
`X_test` / `y_test` with the same feature count. Everything is validated up front so that a
bad file is reported by name and key instead of failing somewhere inside training.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlptrain.errors import DataError

MIN_CLASSES = 2
MAX_LABEL = 2**31 - 1  # a class index; the output layer has max(label) + 1 units
# Array kinds that hold real numbers: bool, signed int, unsigned int, float.
NUMERIC_KINDS = "biuf"


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
    content = _read_bytes(path)
    with _open_archive(path, content) as archive:
        X, y = _labelled_pair(path, archive, "X", "y")
        X_test, y_test = _optional_test_pair(path, archive, n_features=X.shape[1])
    all_labels = [y] if y_test is None else [y, y_test]
    n_classes = max(MIN_CLASSES, max(int(labels.max()) for labels in all_labels) + 1)
    return NpzArrays(
        X=X,
        y=y,
        X_test=X_test,
        y_test=y_test,
        n_classes=n_classes,
        sha256=hashlib.sha256(content).hexdigest(),
    )


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(
            f"Dataset file {path} does not exist. Expected a .npz archive with arrays X and y; "
            "check the path (relative paths are resolved from the current directory)."
        ) from None
    except OSError as error:
        raise DataError(
            f"Dataset file {path} cannot be read ({error}). Expected a readable .npz archive "
            "with arrays X and y; check the path and its permissions."
        ) from None


def _open_archive(path: Path, content: bytes) -> np.lib.npyio.NpzFile:
    not_npz = (
        f"Dataset file {path} is not a .npz archive"
        " (expected a zip of arrays written by numpy.savez or numpy.savez_compressed"
    )
    try:
        # No pickles: a dataset file must never be able to run code.
        loaded = np.load(io.BytesIO(content), allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(
            f"{not_npz}, found something numpy cannot read: {error}). Save the data with "
            "numpy.savez(path, X=..., y=...)."
        ) from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DataError(
            f"{not_npz}, found a single .npy array of shape {loaded.shape}). Save the data with "
            "numpy.savez(path, X=..., y=...)."
        )
    return loaded


def _optional_test_pair(
    path: Path, archive: np.lib.npyio.NpzFile, n_features: int
) -> tuple[np.ndarray | None, np.ndarray | None]:
    present = {key for key in ("X_test", "y_test") if key in archive.files}
    if not present:
        return None, None
    if len(present) == 1:
        (found,) = present
        missing = "y_test" if found == "X_test" else "X_test"
        raise DataError(
            f"Dataset file {path} has array {found!r} but not {missing!r}: the test arrays "
            f"must come as a pair. Add {missing!r} or remove {found!r}."
        )
    X_test, y_test = _labelled_pair(path, archive, "X_test", "y_test")
    if X_test.shape[1] != n_features:
        raise DataError(
            f"Dataset file {path}: array 'X_test' has {X_test.shape[1]} features per sample "
            f"but 'X' has {n_features}; expected the same feature count. Build both from the "
            "same feature layout."
        )
    return X_test, y_test


def _labelled_pair(
    path: Path, archive: np.lib.npyio.NpzFile, features_key: str, labels_key: str
) -> tuple[np.ndarray, np.ndarray]:
    X = _features(path, features_key, _array(path, archive, features_key))
    y = _labels(path, labels_key, _array(path, archive, labels_key), n_samples=X.shape[0])
    return X, y


def _array(path: Path, archive: np.lib.npyio.NpzFile, key: str) -> np.ndarray:
    if key not in archive.files:
        raise DataError(
            f"Dataset file {path} has no array {key!r} (found: {sorted(archive.files)}). "
            "Save the data with numpy.savez(path, X=..., y=...)."
        )
    try:
        return archive[key]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise DataError(
            f"Dataset file {path}: array {key!r} cannot be read ({error}). Expected a plain "
            "numeric array (object arrays are refused); re-save it with numpy.savez."
        ) from None


def _bad(path: Path, key: str, expected: str, found: str) -> DataError:
    return DataError(
        f"Dataset file {path}: array {key!r} should be {expected}, but {found}. "
        "Fix the array and save the file again."
    )


def _features(path: Path, key: str, X: np.ndarray) -> np.ndarray:
    expected = "a numeric (N, D) or (N, ...) array with N >= 1 samples and finite values"
    if X.dtype.kind not in NUMERIC_KINDS:
        raise _bad(path, key, expected, f"it has dtype {X.dtype}")
    if X.ndim < 2:
        raise _bad(path, key, expected, f"it has {X.ndim} dimension(s), shape {X.shape}")
    if X.size == 0:
        raise _bad(path, key, expected, f"it is empty, shape {X.shape}")
    flat = X.reshape(X.shape[0], -1).astype(np.float64)
    bad_values = ~np.isfinite(flat)
    if bad_values.any():
        row = int(np.argwhere(bad_values)[0][0])
        found = f"it holds {int(bad_values.sum())} NaN/inf value(s), the first in row {row}"
        raise _bad(path, key, expected, found)
    return flat


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
