"""Predictions from a saved run on a user's own input: an image file, a .npy/.npz array, or a
CSV table for a run trained on one.

Images are turned into what the network saw in training: grayscale, scaled to [0, 1], and, for
MNIST, cleaned into a light digit on black framed as MNIST's are (experiment/digits.py: uneven
light removed, polarity decided from the border, contrast stretched, the digit centred by mass).
Every sample is then compared with statistics of the run's own data, recorded at the end of
its fit (`reference_statistics`): an input far outside them gets an `out of distribution`
warning rather than only a confident answer.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlptrain import nn
from mlptrain.arrayfiles import read_npy, read_npz
from mlptrain.backend import get_backend
from mlptrain.data import outside_inputs
from mlptrain.data.csv import table_inputs
from mlptrain.errors import DataError
from mlptrain.experiment.digits import clean_digit
from mlptrain.experiment.setup import run_config, run_weights_expect, saved_loss, saved_scaler
from mlptrain.model import MLP
from mlptrain.runs import Run, RunStore
from mlptrain.text import plural

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
ARRAY_SUFFIXES = (".npy", ".npz", ".csv")  # a .csv for a run trained on a table


@dataclass
class Inputs:
    X: np.ndarray  # (N, D) samples; once predict() passed them to outside_inputs, as trained
    kind: str  # "image" or "array"
    image: np.ndarray | None = None  # (H, W) in [0, 1]: what the network sees, for a preview
    # (set once the input is what the network takes: outside_inputs)
    notes: list[str] = field(default_factory=list)  # what was done to the input, for the user
    path: Path | None = None  # the file it came from


@dataclass
class Prediction:
    run_id: str
    inputs: list[Inputs]  # one per file, in the order given (a folder's files sorted by name)
    probabilities: np.ndarray  # (N, C): every file's samples, in order; (N, 1) predicted
    # values, in the target's units, for a regression
    warnings: list[list[str]]  # per sample: why its answer may be unreliable ([] = none)
    class_names: list[str] | None = None  # class c's name, where the run's data named them
    task: str = "classification"  # or "regression": the run's loss's

    def values(self) -> list[float]:
        """A regression's prediction for each sample, in the target's units."""
        return [float(v) for v in self.probabilities[:, 0]]

    def name(self, c: int) -> str:
        """Class c as a person knows it: its name, else its index."""
        return self.class_names[c] if self.class_names else str(c)

    def top(self, k: int) -> list[list[tuple[int, float]]]:
        """Per sample, the k most probable classes as (class, probability), best first."""
        order = np.argsort(-self.probabilities, axis=1, kind="stable")[:, :k]
        return [[(int(c), float(p[c])) for c in row] for row, p in zip(order, self.probabilities)]

    def sources(self) -> list[tuple[Inputs, int]]:
        """Per sample, the input it came from and its index within that input."""
        return [(inputs, i) for inputs in self.inputs for i in range(len(inputs.X))]


def predict(store: RunStore, ref: str, input_paths: Path | list[Path],
            invert: bool | None = None) -> Prediction:
    """Loads a run's network (no training data needed) and scores each input with it: files,
    or folders (their image and array files). invert: None decides each image's polarity from
    its border; True/False forces dark ink on paper / light ink on dark."""
    run = store.find(ref)
    config = run_config(run)
    summary = run.read_summary()
    sizes = summary["model"]["sizes"]
    dataset = summary.get("dataset") or {}
    input_shape = tuple(dataset.get("input_shape") or _square_or_flat(sizes[0]))
    model = open_network(run, config, sizes)
    scaler = saved_scaler(run, summary)
    paths = expand_inputs([input_paths] if isinstance(input_paths, (str, Path)) else input_paths)
    inputs = [read_inputs(path, sizes[0], input_shape, dataset.get("name"), invert,
                          dataset.get("encoding"))
              for path in paths]
    for i in inputs:  # as the run's own splits were when the network saw them
        i.X, notes = outside_inputs(i.X, config.data, dataset.get("name"), model.dtype,
                                    f"input {i.path}", scaler)
        i.notes += notes
        if len(input_shape) == 2 and len(i.X) == 1:
            i.image = i.X[0].reshape(input_shape)
    X = np.concatenate([i.X for i in inputs])
    probs = np.concatenate([outside_probabilities(model, i.X, f"input {i.path}")
                            for i in inputs])
    reference = summary.get("reference")
    warnings = [out_of_distribution(x, p, reference, input_shape) for x, p in zip(X, probs)]
    return Prediction(run.run_id, inputs, probs, warnings, dataset.get("class_names"),
                      model.loss.task)


def expand_inputs(paths: list[Path]) -> list[Path]:
    """Files as given; a folder becomes its image and array files, sorted by name."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in
                            (*IMAGE_SUFFIXES, *ARRAY_SUFFIXES))
            if not inside:
                raise DataError(f"folder {path} holds no image ({', '.join(IMAGE_SUFFIXES)}) "
                                f"or array ({', '.join(ARRAY_SUFFIXES)}) files to predict.")
            found += inside
        else:
            found.append(path)
    return found


def load_network(config, sizes: list[int], weights: dict, source: str, dtype=None,
                 loss: nn.Loss | None = None) -> MLP:
    """A saved run's network on the CPU, in `dtype` (default: the run's), without dropout;
    `loss`: the run's (saved_loss), else a classifier's for `sizes`."""
    model = _network(config, sizes, dtype, loss)
    model.load_state_dict(weights, source=source)
    return model


def open_network(run: Run, config, sizes: list[int]) -> MLP:
    """load_network of the run's weights.npz, whose headers are checked against the network
    before any of its data is read."""
    return checked_weights(run, config, sizes)[0]


def checked_weights(run: Run, config, sizes: list[int]) -> tuple[MLP, dict[str, np.ndarray]]:
    """(open_network's network, the arrays of weights.npz as the file holds them): names and
    shapes checked against the network the run's summary describes, as every reader's are."""
    model = _network(config, sizes, loss=saved_loss(run, config))
    weights = run.read_weights(run_weights_expect(model))
    model.load_state_dict(weights, source=str(run.path / "weights.npz"))
    return model, weights


def _network(config, sizes: list[int], dtype=None, loss: nn.Loss | None = None) -> MLP:
    n_classes = 2 if sizes[-1] == 1 else sizes[-1]  # one output: sigmoid over two classes
    m = config.model  # inference only: no training step, so no label smoothing or dropout
    return MLP(get_backend("cpu"), sizes, nn.make_activation(m.activation, m.leaky_slope),
               loss or nn.make_loss(m.loss, n_classes), np.dtype(dtype or config.train.dtype))


def probabilities(model: MLP, X: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    """(N, C) class probabilities (a regression's (N, 1) predictions, in the target's units),
    through the one batched evaluation pass."""
    ops = model.ops
    return np.concatenate([
        np.asarray(ops.to_host(model.loss.probabilities(ops.xp, logits)), np.float64)
        for _, _, _, logits in model.forward_batches(X, batch_size)])


def outside_probabilities(model: MLP, X: np.ndarray, where: str) -> np.ndarray:
    """probabilities() of samples from outside the run (see check_outputs)."""
    with np.errstate(over="ignore", invalid="ignore"):  # check_outputs says what went wrong
        probs = probabilities(model, X)
    check_outputs(probs, X, where)
    return probs


def check_outputs(probs: np.ndarray, X: np.ndarray, where: str) -> None:
    """DataError for a sample whose class probabilities are not finite: values that fit the
    network's dtype can still overflow inside it (1e30 pixels), and NaN must not reach an
    answer (nor --json, which has no NaN)."""
    bad = ~np.isfinite(probs).all(axis=1)
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(f"{where}: sample {row} drives the network's outputs out of range (its "
                        f"class probabilities are NaN; its largest |value| is "
                        f"{np.abs(X[row]).max():g}); expected values like those the run was "
                        "trained on.")


# -- how far an input is from the training data --------------------------------------------------

INK_LEVEL = 0.5  # an image pixel above this (of 1) counts as ink
TAILS = (0.1, 99.9)  # percentiles of the training images bounding "like the training data"
UNCERTAIN = 1.0  # percentile of the validation set's top probabilities below which to warn


def image_ranges(X_train: np.ndarray | None, input_shape: tuple[int, ...],
                 per_image: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """For images, the range of the ink fraction and of the mean intensity over the training
    images ({} otherwise): the part of reference_statistics that depends on the data alone.
    `per_image`: image_measures(X_train), when already known (X_train is then not read)."""
    if len(input_shape) != 2:
        return {}
    ink, mean = image_measures(X_train) if per_image is None else per_image
    if not len(ink):
        return {}
    return {"ink_fraction": [float(v) for v in np.percentile(ink, TAILS)],
            "mean_intensity": [float(v) for v in np.percentile(mean, TAILS)]}


# id(a pool's images) -> (those images, their image_measures): one pool, held with its array
_pool_measures: dict[int, tuple[np.ndarray, tuple]] = {}


def training_image_ranges(dataset) -> dict:
    """image_ranges of a dataset's training split. A pooled source's (MNIST, its loader's
    read-only arrays, kept for the next run) from measures of every image of the pool, taken
    once per process, without copying the split's images out of it: a sweep's trials in one
    process share the pool, and measuring each trial's 54,000 training images again took
    0.06 s of it."""
    pool, shape = dataset.pool[0] if dataset.pool is not None else None, dataset.input_shape
    if pool is None or pool.flags.writeable or len(shape) != 2:
        return image_ranges(dataset.split("train")[0], shape)
    if id(pool) not in _pool_measures:  # a pool kept with its measures cannot share its id
        _pool_measures.clear()
        _pool_measures[id(pool)] = (pool, image_measures(pool))
    rows = dataset.rows["train"]  # the training split is these rows of the pool (load_dataset)
    return image_ranges(None, shape, tuple(m[rows] for m in _pool_measures[id(pool)][1]))


def image_measures(X, xp=np) -> tuple:
    """(ink fraction, mean intensity) of each image (row) of X, an array of xp."""
    return xp.mean(xp.greater(X, INK_LEVEL), axis=1), xp.mean(X, axis=1)


def reference_statistics(images: dict, top_val: np.ndarray) -> dict:
    """What predict compares an input with, from a finished run's own data: for images the
    range of the ink fraction and of the mean intensity over the training images (`images`,
    image_ranges's answer), and for every run the validation set's low percentile of the top
    class probability."""
    ref: dict = dict(images)
    if len(top_val):
        ref["top_probability"] = float(np.percentile(top_val, UNCERTAIN))
    ref["percentiles"] = list(TAILS)
    return ref


def out_of_distribution(x: np.ndarray, probs: np.ndarray, reference: dict | None,
                        input_shape: tuple[int, ...]) -> list[str]:
    """Why one sample (D,) with class probabilities (C,) looks unlike the run's data; []."""
    if not reference:
        return []
    warnings = []
    lo_p, hi_p = reference.get("percentiles", TAILS)
    for key, value, what in (("ink_fraction", (x > INK_LEVEL).mean(), "of its pixels are ink"),
                             ("mean_intensity", x.mean(), "is its mean intensity")):
        if key in reference and len(input_shape) == 2:
            lo, hi = reference[key]
            if not lo <= value <= hi:
                warnings.append(f"out of distribution: {100 * value:.1f}% {what}; the training "
                                f"images have {100 * lo:.1f}%-{100 * hi:.1f}% ({lo_p:g}th-"
                                f"{hi_p:g}th percentile), so the answer is unreliable")
    top = reference.get("top_probability")
    if top is not None and probs.max() < top:
        warnings.append(f"uncertain: the top probability {100 * probs.max():.1f}% is below that "
                        f"of {100 - UNCERTAIN:g}% of the validation images ({100 * top:.1f}%)")
    return warnings


def _square_or_flat(n_features: int) -> tuple[int, ...]:
    side = math.isqrt(n_features)
    return (side, side) if side * side == n_features else (n_features,)


# -- reading inputs -------------------------------------------------------------------------------


def read_inputs(path: Path, n_features: int, input_shape: tuple[int, ...],
                dataset: str | None, invert: bool | None = None,
                encoding: dict | None = None) -> Inputs:
    """One input file as samples; `encoding`: how the run's table became inputs (a CSV's)."""
    if not path.is_file():
        raise DataError(f"input {path} does not exist (or is not a file). Give a PNG/JPEG "
                        "image, a .npy/.npz array or a .csv table.")
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        inputs = _read_image(path, n_features, input_shape, dataset, invert)
    elif suffix == ".csv":
        X, _, notes = table_inputs(path, encoding or {}, labelled=False)
        inputs = Inputs(X, "table", None, [f"read {plural(len(X), 'row')} of {path.name}",
                                           *notes])
    elif suffix in (".npy", ".npz"):
        inputs = _read_array(path, n_features, input_shape)
    else:
        raise DataError(f"input {path}: unknown file type {suffix or '(none)'!r}; expected an "
                        f"image ({', '.join(IMAGE_SUFFIXES)}), an array (.npy, .npz) or a table (.csv).")
    inputs.path = path
    return inputs


def _read_image(path: Path, n_features: int, input_shape, dataset,
                invert: bool | None = None) -> Inputs:
    try:
        from PIL import Image, UnidentifiedImageError  # only predict needs Pillow
    except ImportError:
        raise DataError("reading an image needs Pillow: pip install pillow") from None
    if len(input_shape) != 2:
        raise DataError(f"input {path} is an image, but this run's network takes "
                        f"{n_features} features that are not an image; give a .npy array.")
    try:
        with warnings.catch_warnings():  # a decompression bomb: Pillow warns, then refuses
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                gray = _flatten_alpha(image).convert("L")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"input {path} is too large to read safely ({exc}); give an image of "
                        "a few megapixels at most.") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"input {path} is not a readable image ({exc}).") from None
    pixels = np.asarray(gray, np.float64) / 255.0  # (H, W) in [0, 1], as training scaled them
    notes = [f"read {gray.width}x{gray.height} image as grayscale"]
    if dataset == "mnist" and tuple(input_shape) == (28, 28):
        cleaned = clean_digit(pixels, invert)
        pixels = cleaned.pixels
        notes += cleaned.notes
    else:
        if invert or (invert is None and _border(pixels).mean() > 0.5):  # ink on paper
            pixels = 1.0 - pixels
            notes.append("inverted it: the training images are light on a dark background")
        pixels = _resize(pixels, input_shape, Image)
        notes.append(f"resized it to {input_shape[1]}x{input_shape[0]}")
    return Inputs(pixels.reshape(1, -1), "image", None, notes)


def _flatten_alpha(image):
    """Transparent pixels become white paper, not black ink."""
    if image.mode in ("RGBA", "LA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        from PIL import Image
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba)
    return image


def _border(pixels: np.ndarray) -> np.ndarray:
    return np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])


def _resize(pixels: np.ndarray, shape, Image) -> np.ndarray:
    image = Image.fromarray(np.uint8(np.clip(pixels, 0, 1) * 255 + 0.5))
    resized = image.resize((shape[1], shape[0]), Image.Resampling.LANCZOS)
    return np.asarray(resized, np.float64) / 255.0


def _read_array(path: Path, n_features: int, input_shape) -> Inputs:
    """The samples of a .npy, or of a .npz's array X (or its only array): real and finite, as
    arrayfiles checks every array it reads."""
    if path.suffix.lower() == ".npz":
        arrays = read_npz(path, f"input {path}")
        if "X" in arrays:
            array = arrays["X"]
        elif len(arrays) == 1:
            (array,) = arrays.values()
        else:
            raise DataError(f"input {path} holds {', '.join(arrays)}; name the samples X.")
    else:
        array = read_npy(path, f"input {path}")
    if array.size == 0 or array.size % n_features:
        raise DataError(f"input {path} has shape {array.shape}, which is not one or more "
                        f"samples of {n_features} features (or {input_shape}).")
    one = array.shape in ((n_features,), tuple(input_shape))
    X = array.reshape(1 if one else -1, n_features).astype(np.float64)
    notes = [f"read {X.shape[0]} sample{'s' if X.shape[0] > 1 else ''} of {n_features} "
             f"features from an array of shape {array.shape}"]
    return Inputs(X, "array", None, notes)

