"""Datasets as host NumPy arrays: train, validation and test splits, ready for a backend.

`load_dataset` turns a [data] config section into a `Dataset` through SOURCES, the one table of
dataset names: xor.py (the blog's noisy XOR), mnist.py (IDX files with pinned checksums),
npz.py (a user's own arrays), csv.py (a user's own table). A new source is its own module plus one line there.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mlptrain.data.cache import user_cache
from mlptrain.data.csv import NEEDS as CSV_NEEDS
from mlptrain.data.csv import csv_dataset, csv_shape
from mlptrain.data.dataset import Dataset, Loading, Source, class_names
from mlptrain.data.mnist import (IMAGE_SIDE, N_DIGITS, PIXEL_MAX, find_vendored_mnist,
                                 load_mnist, scale_pixels)
from mlptrain.data.npz import npz_data_shape, npz_dataset, npz_weighted
from mlptrain.data.npz import NEEDS as NPZ_NEEDS
from mlptrain.data.paths import data_file
from mlptrain.data.preprocess import normalize_width
from mlptrain.data.split import split_indices
from mlptrain.data.standardize import Standardizer
from mlptrain.data.weights import rows_of, weigh
from mlptrain.data.xor import make_xor, xor_test_set
from mlptrain.errors import ConfigError, DataError
from mlptrain.seeding import streams

REPO_MNIST_DIR = Path(__file__).resolve().parents[2] / "data" / "mnist"
MNIST_SAMPLES = 70_000  # train + test images

def default_mnist_dir(near: Sequence[Path] = ()) -> Path:
    """Where MNIST is read from when data.path is empty: a vendored copy if one is found (the
    checkout this package runs from, else data/mnist beside `near`, the config file's folder,
    or the working directory, or any of their parents), else a per-user cache that downloads
    fill."""
    found = find_vendored_mnist(REPO_MNIST_DIR, [*near, Path.cwd()])
    if found is not None:
        return found
    return user_cache() / "mnist"


def _xor_dataset(cfg, at: Loading) -> Dataset:
    X, y = make_xor(cfg.samples, cfg.noise, at.rngs["data"])
    X_test, y_test = xor_test_set(cfg.test_samples, cfg.noise)
    return Dataset("xor", X, y, None, None, X_test, y_test, 2, (2,), source="generated")


def _mnist_dataset(cfg, at: Loading) -> Dataset:
    where = Path(cfg.path) if cfg.path else default_mnist_dir(at.near)
    m = load_mnist(where, cfg.mirrors, cfg.download, at.progress)
    return Dataset("mnist", preprocess(m.train_images, cfg), m.train_labels, None, None,
                   preprocess(m.test_images, cfg), m.test_labels, N_DIGITS,
                   (IMAGE_SIDE, IMAGE_SIDE), m.source, m.checksums)


# Every dataset name, keyed as [data] dataset spells it: config.DATASETS, `config init
# --dataset` and the rules on which keys a dataset reads come from here. A pooled source's
# loader keeps its arrays for the next run anyway (load_mnist's cache): its Datasets keep them
# as the pool that every seed's splits are rows of, and a group of any seeds uploads that pool
# once (experiment/group_data.py, sweep/grouping.py).
SOURCES: dict[str, Source] = {
    "xor": Source(_xor_dataset, lambda cfg, near: (cfg.samples + cfg.test_samples, 2, 2)),
    "mnist": Source(_mnist_dataset, lambda cfg, near: (MNIST_SAMPLES, IMAGE_SIDE**2, N_DIGITS),
                    pooled=True, images=True),
    "npz": Source(npz_dataset, npz_data_shape, file=NPZ_NEEDS),
    "csv": Source(csv_dataset, csv_shape, file=CSV_NEEDS),
}
DATASETS = tuple(SOURCES)
POOLED_SOURCES = frozenset(name for name, s in SOURCES.items() if s.pooled)
IMAGE_SOURCES = frozenset(name for name, s in SOURCES.items() if s.images)
FILE_SOURCES = frozenset(name for name, s in SOURCES.items() if s.file)  # a user's own file
# sources of a user's own features, on whatever scales they come: [data] standardize applies
# to them (generated XOR and MNIST's pixels are already on one scale, and stay as they were)
STANDARDIZED_SOURCES = FILE_SOURCES


def standardizes(cfg) -> bool:
    """Whether a [data] section's splits are standardized (data/standardize.py)."""
    return cfg.standardize and cfg.dataset in STANDARDIZED_SOURCES


def load_dataset(cfg, rngs: dict[str, np.random.Generator], progress=None,
                 near: Sequence[Path] = (), scaler: Standardizer | None = None) -> Dataset:
    """The dataset a [data] config section names, with its seeded validation split. `near`:
    folders (the config file's) beside which a relative data.path or a vendored data/mnist is
    looked for. `scaler`: a saved run's statistics, applied instead of fitting the training
    split's (standardizes)."""
    # the held-out samples follow train.seed unless split_seed fixes them: runs of several
    # seeds then hold out the same digits, and their committee has a validation score
    split_rng = rngs["split"] if cfg.split_seed < 0 else streams(cfg.split_seed)["split"]
    base = SOURCES[cfg.dataset].load(cfg, Loading(rngs, split_rng, progress, near))
    given = base.X_val is not None  # the file's own validation split (its note says so)
    keep, held = split_indices(len(base.y_train), 0.0 if given else cfg.val_fraction, split_rng)
    if cfg.limit:
        keep = keep[:cfg.limit]  # the split is random, so a prefix is a sample
    X, y, w = base.X_train, base.y_train, base.w_train
    base.rows = {"train": keep, "val": held}
    if cfg.dataset in POOLED_SOURCES:  # its samples stay rows of the pool (Dataset.split)
        base.pool, X = (X, y), None
    base.X_train, base.y_train, base.w_train = rows_of(X, keep), y[keep], rows_of(w, keep)
    if not given:
        base.X_val, base.y_val, base.w_val = rows_of(X, held), y[held], rows_of(w, held)
    if len(base.y_train) == 0:
        raise ConfigError(f"[data] val_fraction = {cfg.val_fraction} leaves no training "
                          f"samples out of {len(base.y_val)}; use a smaller fraction.")
    _note_untrained_classes(base)
    weigh(base, cfg.class_weight)  # the training split's class counts are known now
    if scaler is not None:  # a saved run's, for the inputs its network takes
        check_saved_width(base, len(scaler.mean))
    if standardizes(cfg):  # after the split: the held-out samples never shape the statistics
        _standardize(base, scaler or Standardizer.fit(base.X_train, f"{base.source} (train split)"))
    return base


def check_saved_width(dataset: Dataset, trained: int) -> None:
    """DataError when a saved run's data file, read again (eval, plot, export, fit --resume),
    now gives another number of inputs per sample than the run's network takes: a column or
    feature was added or removed since (the statistics, then the weights, would not fit)."""
    if dataset.n_features != trained:
        raise DataError(f"{dataset.source} now gives {dataset.n_features} inputs per sample, but "
                        f"the run was trained on {trained}: the file changed since the run read "
                        "it. Restore the file it trained on (its SHA-256 is in the run's "
                        "summary.json), or train a new run on this one.")


def _note_untrained_classes(d: Dataset) -> None:
    """A note naming the classes that only the held-out splits have (a rare class the random
    split held out, a file's own test arrays): the network gets no row to learn them from, so
    it never answers them, and its score on them is 0 however well it trained."""
    if d.task != "classification":
        return
    held = set(np.unique(d.y_val).tolist()) | set(np.unique(d.y_test).tolist())
    missing = sorted(held - set(np.unique(d.y_train).tolist()))
    if missing:
        names = class_names(d)
        listed = ", ".join(repr(names[c]) for c in missing[:8]) + (", ..." if len(missing) > 8
                                                                  else "")
        d.notes.append(f"no training rows for {len(missing)} class(es) the validation or test "
                       f"split holds ({listed}): the network cannot learn to answer them")


def data_shape(cfg, near: Sequence[Path] = ()) -> tuple[int, int, int]:
    """(samples, features, classes) the [data] section will load, known without loading it."""
    return SOURCES[cfg.dataset].shape(cfg, near)


def weighted(cfg, near: Sequence[Path] = ()) -> bool:
    """Whether the [data] section's rows carry weights (data/weights.py), known without loading
    them: data.class_weight, data.sample_weight, or an npz's array w (from its headers)."""
    if cfg.class_weight or cfg.sample_weight:
        return True
    return cfg.dataset == "npz" and npz_weighted(data_file(cfg, near, NPZ_NEEDS))


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
    if dataset == "mnist":
        _check_pixels(X, where)
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


PIXEL_SLACK = 1.0  # what a resampling filter may overshoot the pixel range by (Lanczos rings)


def _check_pixels(X: np.ndarray, where: str) -> None:
    """DataError for a value no image holds: an MNIST run's inputs are pixels, in [0, 1] or
    0-255 (1e30 "pixels", scaled by 255, got a confident answer and a mean intensity of 4e29%
    in its warning); a resampled image's slight overshoot passes."""
    bad = (X < -PIXEL_SLACK) | (X > PIXEL_MAX + PIXEL_SLACK)
    if bad.any():
        row, column = (int(i) for i in np.argwhere(bad)[0])
        raise DataError(f"{where}: sample {row} holds {X[row, column]:g} (pixel {column}), "
                        f"which no image holds; an MNIST run's inputs are pixels, in [0, 1] or "
                        f"0-{PIXEL_MAX}.")


def check_dataset_range(dataset: Dataset, dtype) -> None:
    """check_range of a user's own data (generated data lie in the range their config keys
    bound, MNIST's in [0, 1])."""
    if dataset.name in FILE_SOURCES:
        for split in ("train", "val", "test"):
            X, y = dataset.split(split)
            check_range(X, dtype, f"{dataset.source} ({split} split)")
            if dataset.task == "regression":
                check_range(y, dtype, f"{dataset.source} ({split} split)")


def check_range(X: np.ndarray, dtype, where: str) -> None:
    """DataError unless every value of X (N, D), or of targets X (N,) to regress, is finite in
    `dtype`, the network's: 1e300 passes a float64 check, then turns into inf in float32 and
    NaN in the outputs (a regression's targets are taken in that dtype too: 1e39 gave an
    RMSE of inf and an R^2 of NaN)."""
    limit = np.finfo(dtype).max
    bad = ~(np.abs(X) <= limit)  # NaN fails the comparison too
    if bad.any():
        at = tuple(int(i) for i in np.argwhere(bad)[0])
        what = f"feature {at[1]}" if X.ndim == 2 else "its target"
        raise DataError(f"{where}: sample {at[0]} holds {X[at]:g} ({what}), "
                        f"beyond what the run's {np.dtype(dtype)} network can hold "
                        f"(+-{limit:.3g}); expected finite values like those it was trained on.")


# (id(X), width) -> (X, its transform), for the loader's arrays
_preprocessed: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

