"""A user's own dataset in a NumPy .npz archive.

Expected keys: `X` (N, D) or (N, ...) features and `y` (N,) labels: class indices (integers,
or whole floats), booleans, names (text), one-hot rows (N, C), or values to regress
(data.task); optionally `X_val` / `y_val` (the validation split) and `X_test` / `y_test` with
the same feature count, and `w` (N,), each row of X's sample weight (data/weights.py), with
`w_val` and `w_test` for the rows of X_val and X_test (without them those rows weigh 1).
Everything is validated up front so that a bad file is reported by name and key instead of
failing somewhere inside training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlptrain.arrayfiles import Expect, npz_headers, npz_names, read_npz
from mlptrain.data.dataset import Dataset, Loading
from mlptrain.data.labels import check_class_count, check_two_classes, classes_of, decide_task
from mlptrain.data.paths import data_file, file_sha256
from mlptrain.data.split import hold_out_test
from mlptrain.data.weights import check_sample_weights, rows_of
from mlptrain.errors import DataError

MIN_CLASSES = 2
MAX_LABEL = 2**31 - 1  # a class index; the output layer has max(label) + 1 units
PAIRS = {"train": ("X", "y"), "val": ("X_val", "y_val"), "test": ("X_test", "y_test")}
LABEL_KEYS = tuple(pair[1] for pair in PAIRS.values())  # may hold class names (text)
WEIGHTS = {"train": "w", "val": "w_val", "test": "w_test"}  # each split's sample weights
KEYS = (*(key for pair in PAIRS.values() for key in pair), *WEIGHTS.values())  # the arrays read
NEEDS = "the .npz file holding the arrays X (samples, features) and y (labels)"


@dataclass
class NpzArrays:
    """The validated arrays of a user .npz; X are float64 (N, D), labels int64 class indices
    (N,), or float64 values for regression."""

    X: np.ndarray
    y: np.ndarray
    X_test: np.ndarray | None
    y_test: np.ndarray | None
    n_classes: int  # 1 for regression
    sha256: str
    X_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    task: str = "classification"
    class_names: list[str] | None = None  # booleans: ["False", "True"]
    notes: list[str] = field(default_factory=list)
    w: np.ndarray | None = None  # X's sample weights (N,) float64, where the file has them
    w_val: np.ndarray | None = None  # ... X_val's, and X_test's
    w_test: np.ndarray | None = None


def load_npz(path: Path, task: str = "classification") -> NpzArrays:
    """Read and validate a user's .npz dataset; task is data.task (auto: decided from y)."""
    path = Path(path)
    arrays = read_npz(path, _name(path), DataError, Expect(labels=LABEL_KEYS), keys=KEYS)
    notes: list[str] = []
    X, y = _labelled_pair(path, arrays, "X", "y", notes)
    pairs = {split: _optional_pair(path, arrays, keys, X.shape[1], notes)
             for split, keys in PAIRS.items() if split != "train"}
    labels = {"y": y, **{keys[1]: pairs[split][1] for split, keys in PAIRS.items()
                         if split != "train" and pairs[split][1] is not None}}
    task = decide_task(np.concatenate(list(labels.values())), task,
                       f"Dataset file {path}: array 'y'")
    names = None
    if any(v.dtype.kind == "U" for v in labels.values()):  # class names: numbered in order
        values, names = _named_classes(path, labels, task)
    else:
        values = {key: _targets(path, key, labels[key], task) for key in labels}
    if "X_val" in arrays:
        notes.append(f"validation split: the file's arrays X_val and y_val "
                     f"({len(values['y_val'])} samples) instead of data.val_fraction")
    rows = {"train": X, **{split: pair[0] for split, pair in pairs.items()}}
    w = {split: _sample_weights(path, arrays, split, rows[split]) for split in WEIGHTS}
    if any(v is not None for v in w.values()):
        read = [WEIGHTS[split] for split in WEIGHTS if w[split] is not None]
        plain = [PAIRS[split][0] for split in ("val", "test")
                 if rows[split] is not None and w[split] is None]
        notes.append(f"sample weights: the file's array{'s' * (len(read) > 1)} "
                     f"{' and '.join(read)}" + (
            f" (the rows of its {' and '.join(plain)} weigh 1)" if plain else ""))
    return NpzArrays(
        X=X,
        y=values["y"],
        X_test=pairs["test"][0],
        y_test=values.get("y_test"),
        n_classes=_n_classes(list(values.values()), task),
        sha256=file_sha256(path),
        X_val=pairs["val"][0],
        y_val=values.get("y_val"),
        task=task,
        class_names=names or (["False", "True"] if task == "classification" and all(
            v.dtype.kind == "b" for v in labels.values()) else None),
        notes=notes,
        w=w["train"],
        w_val=w["val"],
        w_test=w["test"],
    )


def npz_dataset(cfg, at: Loading) -> Dataset:
    """The [data] section's .npz as a Dataset: its own test arrays, or test_fraction of it held
    out (seeded like the validation split); its own validation arrays when it has them."""
    path = data_file(cfg, at.near, NEEDS)
    a = load_npz(path, cfg.task)
    X, y, X_test, y_test, w, w_test = a.X, a.y, a.X_test, a.y_test, a.w, a.w_test
    if X_test is None:
        keep, test = hold_out_test(len(y), cfg.test_fraction, at.split_rng, a.notes)
        X, y, X_test, y_test = X[keep], y[keep], X[test], y[test]
        w, w_test = rows_of(a.w, keep), rows_of(a.w, test)
    if a.task == "classification":
        labels = np.concatenate([y, y_test, *([] if a.y_val is None else [a.y_val])])
        check_two_classes(labels, a.class_names, f"Dataset file {path}: array 'y'")
        check_class_count(a.n_classes, len(labels), f"Dataset file {path}")
    return Dataset("npz", X, y, a.X_val, a.y_val, X_test, y_test, a.n_classes, (X.shape[1],),
                   str(path), {path.name: a.sha256}, task=a.task, class_names=a.class_names,
                   notes=a.notes, w_train=w, w_val=a.w_val, w_test=w_test,
                   weighting={"sample_weight": "array 'w'"} if w is not None else {})


def npz_data_shape(cfg, near: Sequence[Path]) -> tuple[int, int, int]:
    """npz_shape of the [data] section's file (classes: at least 2, known after loading)."""
    return (*npz_shape(data_file(cfg, near, NEEDS)), 2)


def npz_shape(path: Path) -> tuple[int, int]:
    """Rows of X (+ X_val, X_test) and features per row, from the arrays' headers alone (a memory
    estimate before loading); DataError as load_npz would raise it for a file it cannot read."""
    headers = npz_headers(path, _name(Path(path)), DataError, keys=("X", "X_val", "X_test"))
    samples, features = 0, 0
    for header in headers.values():
        if header.shape:
            samples += header.shape[0]
            features = math.prod(header.shape[1:])
    return samples, features


def _sample_weights(path: Path, arrays: dict[str, np.ndarray], split: str,
                    X: np.ndarray | None) -> np.ndarray | None:
    """The split's sample weights (w: X's, w_val: X_val's, w_test: X_test's), one per row,
    checked; None where the file has none."""
    key, rows = WEIGHTS[split], PAIRS[split][0]
    if key not in arrays:
        return None
    if X is None:
        raise _bad(path, key, f"sample weights for the rows of {rows}",
                   f"the file has no {rows}; add it (with {PAIRS[split][1]}), or remove {key}")
    w, n = arrays[key], len(X)
    if w.dtype.kind not in "biuf" or w.shape != (n,):
        raise _bad(path, key, f"a 1-D array of {n} sample weights (one per row of {rows})",
                   f"it has dtype {w.dtype} and shape {w.shape}")
    return check_sample_weights(w.astype(np.float64), np.arange(n),
                                f"Dataset file {path}, array {key!r}",
                                lambda row: f"Dataset file {path}, array {key!r}, row {row}")


def npz_weighted(path: Path) -> bool:
    """Whether the .npz weighs its training rows (the array w), from its headers alone."""
    train = WEIGHTS["train"]
    return train in npz_headers(path, _name(Path(path)), DataError, keys=(train,))


def _name(path: Path) -> str:
    return f"Dataset file {path}"



def _optional_pair(
    path: Path, arrays: dict[str, np.ndarray], keys: tuple[str, str], n_features: int,
    notes: list[str],
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """X_test and y_test (or X_val and y_val) when the file has them: both, or neither."""
    present = [key for key in keys if key in arrays]
    if not present:
        return None, None
    if len(present) == 1:
        (found,) = present
        (missing,) = set(keys) - {found}
        raise DataError(
            f"Dataset file {path} has array {found!r} but not {missing!r}: the arrays "
            f"{keys[0]} and {keys[1]} must come as a pair. Add {missing!r} or remove {found!r}."
        )
    X, y = _labelled_pair(path, arrays, *keys, notes)
    if X.shape[1] != n_features:
        raise DataError(
            f"Dataset file {path}: array {keys[0]!r} has {X.shape[1]} features per sample "
            f"but 'X' has {n_features}; expected the same feature count. Build both from the "
            "same feature layout."
        )
    return X, y


def _labelled_pair(
    path: Path, arrays: dict[str, np.ndarray], features_key: str, labels_key: str,
    notes: list[str],
) -> tuple[np.ndarray, np.ndarray]:
    X = _features(path, features_key, _array(path, arrays, features_key))
    y = _labels(path, labels_key, _array(path, arrays, labels_key), X.shape[0], notes)
    return X, y


def _array(path: Path, arrays: dict[str, np.ndarray], key: str) -> np.ndarray:
    if key not in arrays:  # (arrays: the keys read; the message lists all the file holds)
        found = sorted(npz_names(path, _name(path)))
        raise DataError(
            f"Dataset file {path} has no array {key!r} (found: {found}). "
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


LABELS = "a 1-D array of {n} labels (or one-hot rows (N, C))"


def _labels(path: Path, key: str, y: np.ndarray, n_samples: int,
            notes: list[str]) -> np.ndarray:
    """The labels (N,) of array `key` as stored, one-hot rows turned into class indices."""
    expected = LABELS.format(n=n_samples)
    if y.dtype.kind not in "biufU":
        raise _bad(path, key, expected, f"it has dtype {y.dtype}")
    if _one_hot(y):
        notes.append(f"array {key!r} is one-hot ({y.shape[1]} columns): took each row's 1 as "
                     "its class")
        y = np.argmax(y, axis=1)
    if y.ndim != 1:
        raise _bad(path, key, expected, f"it has shape {y.shape}")
    if y.shape[0] != n_samples:
        raise _bad(path, key, expected, f"it has {y.shape[0]} labels")
    return y


def _named_classes(path: Path, labels: dict[str, np.ndarray], task: str
                   ) -> tuple[dict[str, np.ndarray], list[str]]:
    """Labels that are names (text, in every label array alike): classes 0..C-1 in sorted
    order over all of them, so that a name is the same class in each split, and the names."""
    if task != "classification" or any(v.dtype.kind != "U" for v in labels.values()):
        raise DataError(f"Dataset file {path}: the labels are names (text), which are classes; "
                        "every label array (y, y_val, y_test) must hold names, and [data] task "
                        "must be \"classification\" or \"auto\".")
    index, names = classes_of(np.concatenate(list(labels.values())))
    ends = np.cumsum([len(v) for v in labels.values()])
    return dict(zip(labels, np.split(index, ends[:-1]))), names


def _one_hot(y: np.ndarray) -> bool:
    """Rows (N, C >= 2) of zeros with exactly one 1 each."""
    return y.ndim == 2 and y.shape[1] >= 2 and bool(
        ((y == 0) | (y == 1)).all() and (y.sum(axis=1) == 1).all())


def _targets(path: Path, key: str, y: np.ndarray, task: str) -> np.ndarray:
    """Labels as the task takes them: class indices (int64), or values (float64)."""
    return y.astype(np.float64) if task == "regression" else _class_indices(path, key, y)


def _n_classes(labels: list[np.ndarray], task: str) -> int:
    """The output units: the largest class index + 1 (the largest may appear only in the test
    set), at least 2; 1 value to regress."""
    if task == "regression":
        return 1
    return max(MIN_CLASSES, max(int(y.max()) for y in labels if y.size) + 1)


def _class_indices(path: Path, key: str, y: np.ndarray) -> np.ndarray:
    expected = f"a 1-D array of {len(y)} non-negative integer class labels"
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
