"""data.normalize_width: each digit stretched or squeezed to one width, checked against a
per-pixel reference of the documented formula, hand-worked cases and the real digits; and the
places that must apply it alike (load_dataset's three splits here; predict in test_ensemble.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlptrain.config import parse_config
from mlptrain.data import load_dataset, preprocess
from mlptrain.data.preprocess import INK, normalize_width
from mlptrain.seeding import streams

SIDE = 28


def reference(image: np.ndarray, width: int) -> np.ndarray:
    """The module docstring's formula, one pixel at a time in Python floats."""
    cols = [c for c in range(SIDE) if any(image[r][c] > INK for r in range(SIDE))]
    if not cols:
        return image.copy()
    c0, c1 = cols[0], cols[-1]
    k, m = width / (c1 + 1 - c0), (c0 + c1 + 1) / 2
    r = max(1.0, 1 / k)
    out = np.zeros_like(image)
    for x in range(SIDE):
        s = m + (x + 0.5 - m) / k
        weights = {j: max(0.0, 1 - abs(j + 0.5 - s) / r)
                   for j in range(math.floor(s - r) - 1, math.ceil(s + r) + 2)}
        total = sum(weights.values())
        for row in range(SIDE):
            out[row, x] = sum(w * image[row, j] for j, w in weights.items()
                              if 0 <= j < SIDE) / total if total else 0.0
    return out


def digit(c0: int, c1: int, seed: int = 0) -> np.ndarray:
    """A random 'digit' whose ink spans columns c0..c1 (rows 4..23), float64."""
    image = np.zeros((SIDE, SIDE))
    image[4:24, c0:c1 + 1] = np.random.default_rng(seed).random((20, c1 + 1 - c0))
    image[10, c0] = image[12, c1] = 1.0  # the box's edge columns surely hold ink
    return image


@pytest.mark.parametrize("c0, c1, width", [(9, 18, 20), (3, 24, 10), (12, 15, 14), (5, 20, 17),
                                           (0, 27, 4), (13, 13, 28)])
def test_matches_the_per_pixel_formula(c0, c1, width):
    image = digit(c0, c1)
    got = normalize_width(image.reshape(1, -1), SIDE, width).reshape(SIDE, SIDE)
    np.testing.assert_allclose(got, reference(image, width), rtol=0, atol=1e-12)


def test_a_bar_two_columns_wide_stretched_to_four():
    image = np.zeros((SIDE, SIDE))
    image[:, 13:15] = 1.0  # box: columns 13-14, centre 14, so k = 2 and s(x) = 14 + (x - 13.5) / 2
    row = normalize_width(image.reshape(1, -1), SIDE, 4).reshape(SIDE, SIDE)[5]
    # x = 11: s = 12.75, 1/4 of column 13; x = 12: s = 13.25, 3/4; x = 13, 14: inside; ...
    np.testing.assert_allclose(row[10:18], [0, .25, .75, 1, 1, .75, .25, 0], atol=1e-15)
    assert row.sum() == pytest.approx(4.0)  # twice the ink of the 2-wide bar


def test_squeezing_averages_the_columns_that_merge():
    image = np.zeros((SIDE, SIDE))
    image[:, 4:24:2] = 1.0  # 1-pixel strokes every other column: box 4..22, 19 wide
    row = normalize_width(image.reshape(1, -1), SIDE, 10).reshape(SIDE, SIDE)[0]
    inside = row[9:18]  # the squeezed box, away from its edges: about half ink everywhere
    assert np.all(np.abs(inside - 0.5) < 0.15)  # no stroke skipped, none doubled


def test_identity_blank_dtype_and_the_input_left_alone():
    already = digit(9, 22, seed=1)  # 14 wide
    X = np.stack([already.ravel(), np.zeros(SIDE * SIDE)]).astype(np.float32)
    before = X.copy()
    out = normalize_width(X, SIDE, 14)
    assert out.dtype == np.float32 and np.array_equal(out, before) and np.array_equal(X, before)


def test_real_digits_come_out_of_that_width_about_the_same_centre(mnist_test):
    X = mnist_test[:2000]
    centre = lambda box: (box[:, 0] + box[:, 1] + 1) / 2
    for width in (10, 14, 20):
        before, after = _boxes(X), _boxes(normalize_width(X, SIDE, width))
        widths = after[:, 1] + 1 - after[:, 0]
        # interpolation may lift a faint pixel beside the box over the ink level (or, squeezed,
        # average one below it): a column or so at either edge, rarely more
        assert np.mean((widths >= width - 1) & (widths <= width + 3)) > 0.97, np.unique(widths)
        assert np.mean(np.abs(centre(after) - centre(before)) <= 1.0) > 0.97


def _boxes(X: np.ndarray) -> np.ndarray:
    inked = (X.reshape(-1, SIDE, SIDE) > INK).any(axis=1)
    return np.stack([inked.argmax(axis=1), SIDE - 1 - inked[:, ::-1].argmax(axis=1)], axis=1)


@pytest.fixture(scope="module")
def mnist_test() -> np.ndarray:
    return load_dataset(parse_config("").data, streams(0)).X_test


def test_every_split_is_normalised_and_the_rows_stay_the_same():
    plain = load_dataset(parse_config("").data, streams(3))
    cfg = parse_config("", overrides=["data.normalize_width=12"]).data
    wide, again = load_dataset(cfg, streams(3)), load_dataset(cfg, streams(4))
    for split in ("train", "val", "test"):
        X, y = wide.split(split)
        np.testing.assert_array_equal(y, plain.split(split)[1])
        np.testing.assert_array_equal(X[:50], normalize_width(plain.split(split)[0][:50], SIDE, 12))
    assert np.array_equal(wide.rows["val"], plain.rows["val"])
    # the loader's arrays keep their transform: every seed's splits are rows of one pool
    assert again.pool[0] is wide.pool[0] and again.X_test is wide.X_test
    assert preprocess(plain.X_test, parse_config("").data) is plain.X_test  # none: as given
