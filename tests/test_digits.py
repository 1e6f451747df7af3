"""The cleaning of a user's digit photo (experiment/digits.py), step by step on made-up images."""

from __future__ import annotations

import numpy as np
import pytest

from mlptrain.experiment import digits


def page(ink_dark: bool = True, gradient: float = 0.0) -> np.ndarray:
    """A 100x100 page with a ring (a drawn 0) and a light gradient across it."""
    y, x = np.mgrid[0:100, 0:100]
    ring = np.abs(np.hypot(x - 50, (y - 50) * 0.7) - 22) < 3
    paper = 0.65 + gradient * (x / 100 - 0.5)
    return np.where(ring, 0.1, paper) if ink_dark else np.where(ring, 0.9, 1 - paper)


def test_otsu_splits_two_clusters():
    values = np.concatenate([np.full(500, 0.2), np.full(100, 0.8)])
    assert 0.2 <= digits.otsu_threshold(values) < 0.8


def test_components_are_8_connected():
    mask = np.array([[1, 0, 0, 1], [0, 1, 0, 1], [0, 0, 0, 0], [1, 1, 0, 0]], bool)
    labels, count = digits._components(mask)
    assert count == 3 and labels[0, 0] == labels[1, 1] != labels[0, 3]


@pytest.mark.parametrize("dark", [True, False])
def test_polarity_comes_from_the_border_even_under_a_gradient(dark):
    assert digits._ink_is_dark(page(dark, gradient=0.3)) is dark


def test_uneven_light_is_not_ink():
    cleaned = digits.clean_digit(page(gradient=0.4))
    framed = cleaned.pixels
    assert cleaned.inverted and framed.shape == (28, 28)
    assert framed[14, 14] == 0 and framed.max() == pytest.approx(1.0)  # a ring: empty middle
    ink = framed > 0.5
    assert 0.05 < ink.mean() < 0.35  # strokes, not a filled block (the old bug)
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 <= 21  # fitted into 20x20
    cy, cx = (np.array(np.nonzero(framed)) * framed[framed > 0]).sum(1) / framed.sum()
    assert abs(cy - 13.5) <= 1 and abs(cx - 13.5) <= 1  # centred by mass


def test_a_blank_gradient_has_no_digit():
    y, x = np.mgrid[0:80, 0:80]
    cleaned = digits.clean_digit(0.5 + 0.3 * x / 80)
    assert not cleaned.pixels.any() and "found no ink" in cleaned.notes[-1]


def test_a_speck_at_the_edge_does_not_shrink_the_digit():
    with_speck = page()
    with_speck[:6, :6] = 0.0  # a dark corner of the page
    np.testing.assert_allclose(digits.clean_digit(with_speck).pixels,
                               digits.clean_digit(page()).pixels, atol=0.15)
