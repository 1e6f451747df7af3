"""Datasets as host NumPy arrays: train, validation and test splits, ready for a backend.

`load_dataset` turns a [data] config section into a `Dataset`; the sources themselves live in
xor.py (the blog's noisy XOR), mnist.py (IDX files with pinned checksums) and npz.py (a user's
own arrays).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlptrain.data.mnist import (IMAGE_SIDE, PIXEL_MAX, find_vendored_mnist, load_mnist,
                                 scale_pixels)
from mlptrain.data.npz import load_npz
from mlptrain.data.preprocess import normalize_width
from mlptrain.data.split import split_indices, split_off
from mlptrain.data.standardize import Standardizer
from mlptrain.data.xor import make_xor, xor_test_set
from mlptrain.errors import ConfigError, DataError
from mlptrain.seeding import streams

REPO_MNIST_DIR = Path(__file__).resolve().parents[2] / "data" / "mnist"


@dataclass
class Dataset:
    name: str
    X_train: np.ndarray  # (N, D) float
    y_train: np.ndarray  # (N,) int64 class indices
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    input_shape: tuple[int, ...]  # how one sample looks: (28, 28) for MNIST, (2,) for XOR
    source: str = ""  # where the data came from
    checksums: dict[str, str] = field(default_factory=dict)  # file name -> SHA-256
    # each split's rows of the samples it was drawn from, and those samples, (X, y), where
    # keeping them costs nothing (MNIST's, which the loader keeps): runs of any seed then
    # share them (a group uploads them once)
    rows: dict[str, np.ndarray] = field(default_factory=dict)
    pool: tuple[np.ndarray, np.ndarray] | None = None
    scaler: Standardizer | None = None  # the statistics every split was standardized with

    @property
    def n_features(self) -> int:
        return self.X_train.shape[1]

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        return {"train": (self.X_train, self.y_train), "val": (self.X_val, self.y_val),
                "test": (self.X_test, self.y_test)}[name]


def default_mnist_dir(near: Sequence[Path] = ()) -> Path:
    """Where MNIST is read from when data.path is empty: a vendored copy if one is found (the
    checkout this package runs from, else data/mnist beside `near`, the config file's folder,
    or the working directory, or any of their parents), else a per-user cache that downloads
    fill."""
    found = find_vendored_mnist(REPO_MNIST_DIR, [*near, Path.cwd()])
    if found is not None:
        return found
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "mlptrain" / "mnist"


# sources whose loader keeps its arrays for the next run anyway (load_mnist's cache): their
# Datasets keep them as the pool that every seed's splits are rows of, and a group of any
# seeds uploads that pool once (experiment/group_data.py, sweep/grouping.py)
POOLED_SOURCES = frozenset({"mnist"})
IMAGE_SOURCES = frozenset({"mnist"})  # sources whose samples are square images
# sources of a user's own features, on whatever scales they come: [data] standardize applies
# to them (generated XOR and MNIST's pixels are already on one scale, and stay as they were)
STANDARDIZED_SOURCES = frozenset({"npz"})


def standardizes(cfg) -> bool:
    """Whether a [data] section's splits are standardized (data/standardize.py)."""
    return cfg.standardize and cfg.dataset in STANDARDIZED_SOURCES


def load_dataset(cfg, rngs: dict[str, np.random.Generator], progress=None,
                 near: Sequence[Path] = (), scaler: Standardizer | None = None) -> Dataset:
    """The dataset a [data] config section names, with its seeded validation split. `near`:
    folders (the config file's) beside which a vendored data/mnist is looked for. `scaler`: a
    saved run's statistics, applied instead of fitting the training split's (standardizes)."""
    # the held-out samples follow train.seed unless split_seed fixes them: runs of several
    # seeds then hold out the same digits, and their committee has a validation score
    split_rng = rngs["split"] if cfg.split_seed < 0 else streams(cfg.split_seed)["split"]
    if cfg.dataset == "xor":
        X, y = make_xor(cfg.samples, cfg.noise, rngs["data"])
        X_test, y_test = xor_test_set(cfg.test_samples, cfg.noise)
        base = Dataset("xor", X, y, None, None, X_test, y_test, 2, (2,), source="generated")
    elif cfg.dataset == "mnist":
        where = Path(cfg.path) if cfg.path else default_mnist_dir(near)
        m = load_mnist(where, cfg.mirrors, cfg.download, progress)
        base = Dataset("mnist", preprocess(m.train_images, cfg), m.train_labels, None, None,
                       preprocess(m.test_images, cfg), m.test_labels, 10,
                       (IMAGE_SIDE, IMAGE_SIDE), m.source, m.checksums)
    else:
        base = _npz_dataset(cfg, split_rng)
    keep, held = split_indices(len(base.y_train), cfg.val_fraction, split_rng)
    if cfg.limit:
        keep = keep[:cfg.limit]  # the split is random, so a prefix is a sample
    X, y = base.X_train, base.y_train
    base.rows = {"train": keep, "val": held}
    if cfg.dataset in POOLED_SOURCES:
        base.pool = X, y
    base.X_train, base.y_train, base.X_val, base.y_val = X[keep], y[keep], X[held], y[held]
    if len(base.y_train) == 0:
        raise ConfigError(f"[data] val_fraction = {cfg.val_fraction} leaves no training "
                          f"samples out of {len(base.y_val)}; use a smaller fraction.")
    if standardizes(cfg):  # after the split: the held-out samples never shape the statistics
        _standardize(base, scaler or Standardizer.fit(base.X_train, f"{base.source} (train split)"))
    return base


def _standardize(d: Dataset, scaler: Standardizer) -> None:
    """Every split of d standardized: train and val in place (load_dataset's own copies, rows
    taken from the source's arrays), the test split into a new array (the source's own)."""
    d.scaler = scaler
    for X in (d.X_train, d.X_val):
        scaler.apply(X, out=X)
    d.X_test = scaler.apply(d.X_test)


def preprocess(X: np.ndarray, cfg) -> np.ndarray:
    """The [data] section's fixed transform of MNIST images (N, 784), the same for training,
    evaluation and `predict`: X itself when there is none. X is never changed. The loader's
    arrays (read-only, kept for the next run) keep their transforms too: a group's members of
    any seed then share one pool, which it uploads once."""
    if not cfg.normalize_width:
        return X
    key = (id(X), cfg.normalize_width)
    if key in _preprocessed:  # X is kept with it, so no other array can have its id
        return _preprocessed[key][1]
    out = normalize_width(X, IMAGE_SIDE, cfg.normalize_width)
    if not X.flags.writeable:
        if len(_preprocessed) >= 2:  # the training and test images of one setting
            _preprocessed.clear()
        out.flags.writeable = False
        _preprocessed[key] = (X, out)
    return out


def preprocess_notes(cfg) -> list[str]:
    """What `preprocess` does to every image, in words for `predict` ([]: nothing)."""
    if not cfg.normalize_width:
        return []
    return [f"stretched each digit to {cfg.normalize_width} pixels wide, as the run's training "
            "digits were (data.normalize_width)"]


PIXELS_ABOVE = 1.5  # a largest value above this cannot be a [0, 1] image: 0-255 pixels


def outside_inputs(X: np.ndarray, cfg, dataset: str | None, dtype, where: str,
                   scaler: Standardizer | None = None) -> tuple[np.ndarray, list[str]]:
    """Samples (N, D) from outside a run (`eval --data`, `predict`) made what the run's own
    splits were when its network saw them: the one place that decides it. MNIST's 0-255 pixels
    are scaled to [0, 1] as its loader scales them, then the run's [data] preprocessing
    (`preprocess`) follows, as load_dataset gives it to every split, then the run's stored
    standardization (`scaler`, None where it had none); the values must fit the network's
    `dtype`. Returns (X, notes saying what was done, for the user)."""
    notes = []
    if dataset == "mnist" and X.size and X.max() > PIXELS_ABOVE:
        X = scale_pixels(X)
        notes.append(f"{where} looks like 0-{PIXEL_MAX} pixels: scaled them to [0, 1] (divided "
                     f"by {PIXEL_MAX}), as the training images were")
    X = preprocess(X, cfg)
    notes += preprocess_notes(cfg)
    if scaler is not None:
        X = scaler.apply(X)
        notes.append("standardized each feature with the mean and standard deviation of the "
                     "run's training split (data.standardize)")
    check_range(X, dtype, where)
    return X, notes


def check_dataset_range(dataset: Dataset, dtype) -> None:
    """check_range of a user's own data (generated data lie in the range their config keys
    bound, MNIST's in [0, 1])."""
    if dataset.name == "npz":
        for split in ("train", "val", "test"):
            check_range(dataset.split(split)[0], dtype, f"{dataset.source} ({split} split)")


def check_range(X: np.ndarray, dtype, where: str) -> None:
    """DataError unless every value of X (N, D) is finite in `dtype`, the network's: 1e300
    passes a float64 check, then turns into inf in float32 and NaN in the outputs."""
    limit = np.finfo(dtype).max
    bad = ~(np.abs(X) <= limit)  # NaN fails the comparison too
    if bad.any():
        row, column = (int(i) for i in np.argwhere(bad)[0])
        raise DataError(f"{where}: sample {row} holds {X[row, column]:g} (feature {column}), "
                        f"beyond what the run's {np.dtype(dtype)} network can hold "
                        f"(+-{limit:.3g}); expected finite values like those it was trained on.")


# (id(X), width) -> (X, its transform), for the loader's arrays
_preprocessed: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def _npz_dataset(cfg, rng: np.random.Generator) -> Dataset:
    if not cfg.path:
        raise ConfigError("[data] dataset = 'npz' needs [data] path, the .npz file holding the "
                          "arrays X (samples, features) and y (integer labels).")
    arrays = load_npz(Path(cfg.path))
    X, y, X_test, y_test = arrays.X, arrays.y, arrays.X_test, arrays.y_test
    if X_test is None:
        # no test arrays in the file: hold out test_fraction of it, seeded like the val split
        X, y, X_test, y_test = split_off(X, y, cfg.test_fraction, rng)
    return Dataset("npz", X, y, None, None, X_test, y_test, arrays.n_classes,
                   (X.shape[1],), str(cfg.path), {Path(cfg.path).name: arrays.sha256})
