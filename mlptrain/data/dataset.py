"""What every data source gives: a `Dataset` of host arrays, and what a loader may use.

A source module (xor.py, mnist.py, npz.py, csv.py) turns a [data] config section into a
Dataset; data/__init__.py lists them in one table and carves the validation split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlptrain.data.standardize import Standardizer, TargetScale


SPLITS = ("train", "val", "test")  # a Dataset's splits, in the order runs report them


@dataclass
class Dataset:
    name: str
    # None from load_dataset on for a pooled source: split() copies its rows out of the pool
    X_train: np.ndarray | None  # (N, D) float
    y_train: np.ndarray  # (N,) int64 class indices, or float64 values for regression
    X_val: np.ndarray | None  # None: load_dataset carves it from the training rows
    y_val: np.ndarray | None
    X_test: np.ndarray
    y_test: np.ndarray
    n_classes: int  # 1 for regression
    input_shape: tuple[int, ...]  # how one sample looks: (28, 28) for MNIST, (2,) for XOR
    source: str = ""  # where the data came from (a file's absolute path)
    checksums: dict[str, str] = field(default_factory=dict)  # file name -> SHA-256
    # each split's rows of the samples it was drawn from, and those samples, (X, y), where
    # keeping them costs nothing (MNIST's, which the loader keeps): runs of any seed then
    # share them (a group uploads them once)
    rows: dict[str, np.ndarray] = field(default_factory=dict)
    pool: tuple[np.ndarray, np.ndarray] | None = None
    task: str = "classification"  # or "regression" (data.task, decided by data/labels.py)
    class_names: list[str] | None = None  # class c's name, where labels were not indices
    notes: list[str] = field(default_factory=list)  # what loading did, in words for the user
    # how a table's columns became X (data/csv.py), JSON-able: eval and predict encode a file
    # of the run's the same way
    encoding: dict[str, Any] = field(default_factory=dict)
    scaler: Standardizer | None = None  # the statistics every split was standardized with
    # the statistics a regression loss standardizes y with (the arrays keep y's own values)
    target_scale: TargetScale | None = None
    # each split's weights per row (data/weights.py), None where none are given (every 1),
    # and what gave them, JSON-able ({}: none)
    w_train: np.ndarray | None = None
    w_val: np.ndarray | None = None
    w_test: np.ndarray | None = None
    weighting: dict[str, Any] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return (self.X_train if self.pool is None else self.pool[0]).shape[1]

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Split `name`'s samples (N, D) and targets (N,). A pooled source's training and
        validation samples are copied out of the pool when first asked for: a group of seeds
        reads them as rows of the pool and never asks (an MNIST sweep's 3 seeds: 0.5 GB)."""
        if getattr(self, f"X_{name}") is None:
            setattr(self, f"X_{name}", self.pool[0][self.rows[name]])
        return getattr(self, f"X_{name}"), self.targets(name)

    def targets(self, name: str) -> np.ndarray:
        """Split `name`'s targets (N,), without its samples."""
        return {"train": self.y_train, "val": self.y_val, "test": self.y_test}[name]

    def weights(self, name: str) -> np.ndarray | None:
        """Split `name`'s weights per row (N,), or None: every row weighs 1."""
        return {"train": self.w_train, "val": self.w_val, "test": self.w_test}[name]


def class_names(dataset: Dataset) -> list[str]:
    """Each class's name: the names the data gave, else its index."""
    return list(dataset.class_names or map(str, range(dataset.n_classes)))


@dataclass
class Loading:
    """What a loader may draw on besides its [data] section."""

    rngs: dict[str, np.random.Generator]  # the run's streams (xor draws from "data")
    split_rng: np.random.Generator  # seeds held-out splits (a file without test arrays)
    progress: Callable | None = None  # reports a download (mnist)
    near: Sequence[Path] = ()  # the config file's folder: relative paths are found beside it


@dataclass(frozen=True)
class Source:
    """One dataset name: how it loads, and what is known of it before loading."""

    load: Callable[[Any, Loading], Dataset]  # [data] section -> Dataset (val split not carved)
    # (samples, features, classes) from the config (and a file's headers), for a memory check
    shape: Callable[[Any, Sequence[Path]], tuple[int, int, int]]
    file: str = ""  # what [data] path must name ("": no file); its absolute path is recorded
    pooled: bool = False  # the loader keeps its arrays for the next run (see POOLED_SOURCES)
    images: bool = False  # its samples are square images (augmentation, width normalisation)
