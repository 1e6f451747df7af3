"""Preprocessing: one fixed transform of every image, applied alike to the training, validation
and test digits and to the inputs `predict` reads, before a network sees any of them.

Width normalisation. The committees of Meier, Ciresan, Gambardella & Schmidhuber (2011, "Better
digit recognition with a committee of simple neural nets") and Ciresan et al. (2011, arXiv
1103.4487) train each member on the digits normalised to a different width (10, 12, ..., 20
pixels, and the original), so that members that see the digits differently make different
mistakes. Measured here (configs/mnist-deep.toml, one H200): seven widths disagreed on 57 test
digits against 43 for seven seeds, but five of the six normalised members were weaker than
one that saw the digits as given, and the committee did no better (README, "Accuracy").

Each digit is stretched or squeezed horizontally about the centre of its ink's bounding box
until the box is `width` pixels wide; every row keeps its height and its vertical place. With
the box's columns [c0, c1] (edges c0 and c1 + 1, width w = c1 + 1 - c0, centre m) and the
factor k = width / w, output column x (centre x + 1/2) reads the source row at

    s(x) = m + (x + 1/2 - m) / k

through a triangle filter of half-width r = max(1, 1/k) in source pixels, its weights summing
to one: linear interpolation where the digit widens, an average over the 1/k columns that
merge where it narrows (so a thin stroke is not skipped). Columns outside the image are
background (0). A blank image, or one already `width` wide (k = 1, s(x) = x + 1/2, weight 1 on
column x alone), comes back unchanged.
"""

from __future__ import annotations

import numpy as np

INK = 0.1  # a pixel above this (of 1) belongs to the digit's box: faint edge pixels do not
CHUNK = 2048  # images per batched product: bounds the (n, side, 5 side) weight array


def normalize_width(X: np.ndarray, side: int, width: int) -> np.ndarray:
    """(N, side * side) images, rows of pixels in [0, 1] -> a new array of the same shape and
    dtype with each digit `width` pixels wide."""
    out = np.empty_like(X)
    for start in range(0, len(X), CHUNK):
        images = X[start:start + CHUNK].reshape(-1, side, side)  # (n, row, column)
        weights = _column_weights(images, width).astype(X.dtype)  # (n, out column, column)
        out[start:start + CHUNK] = (images @ weights.transpose(0, 2, 1)).reshape(-1, side * side)
    return out


def _column_weights(images: np.ndarray, width: int) -> np.ndarray:
    """(n, side, side): weight of source column j in output column x, per image."""
    n, side, _ = images.shape
    inked = (images > INK).any(axis=1)  # (n, column)
    blank = ~inked.any(axis=1)
    c0 = np.where(blank, 0, inked.argmax(axis=1))
    c1 = np.where(blank, side - 1, side - 1 - inked[:, ::-1].argmax(axis=1))
    w = (c1 + 1 - c0).astype(np.float64)
    k = np.where(blank, 1.0, width / w)[:, None]  # (n, 1)
    m = ((c0 + c1 + 1) / 2.0)[:, None]
    s = m + (np.arange(side) + 0.5 - m) / k  # (n, out column): where each column reads
    r = np.maximum(1.0, 1.0 / k)[:, :, None]  # (n, 1, 1) the filter's half-width
    # every column a filter that touches the image can reach (r <= side), the background
    # beyond the image included, so that the weights sum to one before the columns off the
    # image (all 0) are dropped
    j = np.arange(-2 * side, 3 * side) + 0.5  # (5 side,) source column centres
    tri = np.maximum(0.0, 1.0 - np.abs(j[None, None, :] - s[:, :, None]) / r)  # (n, side, 5 side)
    total = tri.sum(axis=2, keepdims=True)  # 0 where a column reads background alone
    tri /= np.where(total > 0, total, 1.0)
    return tri[:, :, 2 * side:3 * side]
