"""Predictions from a saved run on a user's own input: an image file or a .npy/.npz array.

Images are turned into what the network saw in training: grayscale, scaled to [0, 1], and, for
MNIST, a light digit on a dark background framed as the MNIST images are (the digit's bounding
box fitted into 20x20 pixels and centred by its centre of mass in 28x28). A dark-on-light image
(ink on paper) is inverted, and the result says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlptrain.backend import get_backend
from mlptrain.config import load_config
from mlptrain.errors import DataError
from mlptrain.model import MLP, build_model
from mlptrain.runs import RunStore, npz_arrays

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
MNIST_BOX = 20  # MNIST digits fill a 20x20 box inside the 28x28 image


@dataclass
class Inputs:
    X: np.ndarray  # (N, D) float64 samples, scaled as in training
    kind: str  # "image" or "array"
    image: np.ndarray | None = None  # (H, W) in [0, 1]: what the network sees, for a preview
    notes: list[str] = field(default_factory=list)  # what was done to the input, for the user


@dataclass
class Prediction:
    run_id: str
    inputs: Inputs
    probabilities: np.ndarray  # (N, C)

    def top(self, k: int) -> list[list[tuple[int, float]]]:
        """Per sample, the k most probable classes as (class, probability), best first."""
        order = np.argsort(-self.probabilities, axis=1, kind="stable")[:, :k]
        return [[(int(c), float(p[c])) for c in row] for row, p in zip(order, self.probabilities)]


def predict(store: RunStore, ref: str, input_path: Path) -> Prediction:
    """Loads a run's network (no training data needed) and scores the input with it."""
    run = store.find(ref)
    summary = run.read_summary()
    config = load_config(run.path / "config.toml")
    sizes = summary["model"]["sizes"]
    dataset = summary.get("dataset") or {}
    input_shape = tuple(dataset.get("input_shape") or _square_or_flat(sizes[0]))
    model = load_network(config, sizes, run.read_weights(), str(run.path / "weights.npz"))
    inputs = read_inputs(Path(input_path), sizes[0], input_shape, dataset.get("name"))
    return Prediction(run.run_id, inputs, probabilities(model, inputs.X))


def load_network(config, sizes: list[int], weights: dict, source: str, dtype=None) -> MLP:
    """A saved run's network on the CPU, in `dtype` (default: the run's), without dropout."""
    n_classes = 2 if sizes[-1] == 1 else sizes[-1]  # one output: sigmoid over two classes
    model = build_model(config.model, get_backend("cpu"), sizes[0], n_classes,
                        np.dtype(dtype or config.train.dtype))
    model.load_state_dict(weights, source=source)
    return model


def probabilities(model: MLP, X: np.ndarray) -> np.ndarray:
    """(N, C) class probabilities of a batch."""
    ws = model.workspace(X.shape[0])
    ws.x[...] = model.ops.asarray(X, model.dtype)
    logits = model.forward(ws)
    return np.asarray(model.ops.to_host(model.loss.probabilities(model.ops.xp, logits)),
                      np.float64)


def _square_or_flat(n_features: int) -> tuple[int, ...]:
    side = math.isqrt(n_features)
    return (side, side) if side * side == n_features else (n_features,)


# -- reading inputs -------------------------------------------------------------------------------


def read_inputs(path: Path, n_features: int, input_shape: tuple[int, ...],
                dataset: str | None) -> Inputs:
    if not path.is_file():
        raise DataError(f"input {path} does not exist (or is not a file). Give a PNG/JPEG "
                        "image or a .npy/.npz array.")
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return _read_image(path, n_features, input_shape, dataset)
    if suffix in (".npy", ".npz"):
        return _read_array(path, n_features, input_shape, dataset)
    raise DataError(f"input {path}: unknown file type {suffix or '(none)'!r}; expected an "
                    f"image ({', '.join(IMAGE_SUFFIXES)}) or an array (.npy, .npz).")


def _read_image(path: Path, n_features: int, input_shape, dataset) -> Inputs:
    try:
        from PIL import Image, UnidentifiedImageError  # only predict needs Pillow
    except ImportError:
        raise DataError("reading an image needs Pillow: pip install pillow") from None
    if len(input_shape) != 2:
        raise DataError(f"input {path} is an image, but this run's network takes "
                        f"{n_features} features that are not an image; give a .npy array.")
    try:
        with Image.open(path) as image:
            image.load()
            gray = _flatten_alpha(image).convert("L")
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"input {path} is not a readable image ({exc}).") from None
    pixels = np.asarray(gray, np.float64) / 255.0  # (H, W) in [0, 1], as training scaled them
    notes = [f"read {gray.width}x{gray.height} image as grayscale"]
    if _border(pixels).mean() > 0.5:  # a light background: ink on paper, unlike MNIST
        pixels = 1.0 - pixels
        notes.append("inverted it: the training digits are light on a dark background")
    if dataset == "mnist" and tuple(input_shape) == (28, 28):
        pixels = _frame_like_mnist(pixels, Image)
        notes.append("fitted the digit into 20x20 and centred it in 28x28, as MNIST is")
    else:
        pixels = _resize(pixels, input_shape, Image)
        notes.append(f"resized it to {input_shape[1]}x{input_shape[0]}")
    return Inputs(pixels.reshape(1, -1), "image", pixels, notes)


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


def _frame_like_mnist(pixels: np.ndarray, Image) -> np.ndarray:
    ink = pixels > 0.2 * pixels.max() if pixels.max() > 0 else np.zeros_like(pixels, bool)
    if not ink.any():
        return _resize(pixels, (28, 28), Image)
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    box = pixels[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    scale = MNIST_BOX / max(box.shape)
    h, w = max(1, round(box.shape[0] * scale)), max(1, round(box.shape[1] * scale))
    digit = _resize(box, (h, w), Image)
    framed = np.zeros((28, 28))
    top, left = (28 - h) // 2, (28 - w) // 2
    framed[top:top + h, left:left + w] = digit
    # shift so the centre of mass sits at the centre, as LeCun et al. framed the digits
    mass = framed.sum()
    cy = (framed.sum(axis=1) @ np.arange(28)) / mass
    cx = (framed.sum(axis=0) @ np.arange(28)) / mass
    dy, dx = round(13.5 - cy), round(13.5 - cx)
    dy = int(np.clip(dy, -top, 28 - top - h))
    dx = int(np.clip(dx, -left, 28 - left - w))
    return np.roll(framed, (dy, dx), axis=(0, 1))


def _read_array(path: Path, n_features: int, input_shape, dataset) -> Inputs:
    try:
        if path.suffix.lower() == ".npz":
            arrays = npz_arrays(path.read_bytes())
            if "X" in arrays:
                array = arrays["X"]
            elif len(arrays) == 1:
                (array,) = arrays.values()
            else:
                raise DataError(f"input {path} holds {', '.join(arrays)}; name the samples X.")
        else:
            array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"input {path} is not a readable {path.suffix} array ({exc}).") from None
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise DataError(f"input {path} holds {array.dtype} values; expected numbers.")
    if array.size == 0 or array.size % n_features:
        raise DataError(f"input {path} has shape {array.shape}, which is not one or more "
                        f"samples of {n_features} features (or {input_shape}).")
    one = array.shape in ((n_features,), tuple(input_shape))
    X = array.reshape(1 if one else -1, n_features).astype(np.float64)
    notes = [f"read {X.shape[0]} sample{'s' if X.shape[0] > 1 else ''} of {n_features} "
             f"features from an array of shape {array.shape}"]
    if dataset == "mnist" and np.issubdtype(array.dtype, np.integer) and X.max() > 1:
        X /= 255.0
        notes.append("scaled the integer pixels to [0, 1] (divided by 255), as in training")
    if not np.isfinite(X).all():
        raise DataError(f"input {path} holds NaN or infinite values.")
    image = X[0].reshape(input_shape) if len(input_shape) == 2 and X.shape[0] == 1 else None
    return Inputs(X, "array", image, notes)

