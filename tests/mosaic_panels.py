"""Reads back a figure of images drawn as one mosaic (reports.figures._image_grid): the tiles
are found from the mosaic's NaN gaps alone and each text from where it stands, so a test checks
what a reader sees (this image, under this title) without knowing the layout's sizes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Panel:
    pixels: np.ndarray  # the tile's pixels, as drawn
    above: list[str] = field(default_factory=list)  # the texts standing over the tile
    below: list[str] = field(default_factory=list)  # the texts hanging under it


def mosaic_panels(fig) -> list[Panel]:
    """The non-empty tiles of the figure's one image, row by row, with their texts."""
    (ax,) = fig.axes
    (image,) = ax.get_images()
    mosaic = np.ma.filled(image.get_array(), np.nan)
    filled = np.isfinite(mosaic)
    rows, columns = _bands(filled.any(axis=1)), _bands(filled.any(axis=0))
    panels = {(r, c): Panel(mosaic[top:bottom, left:right])
              for r, (top, bottom) in enumerate(rows) for c, (left, right) in enumerate(columns)
              if filled[top:bottom, left:right].any()}
    for text in ax.texts:
        x, y = text.get_position()
        (c,) = [c for c, (left, right) in enumerate(columns) if left - 0.5 <= x <= right - 0.5]
        if text.get_verticalalignment() == "bottom":  # a title: over the first row below it
            r = min(r for r, (top, _) in enumerate(rows) if y <= top - 0.5)
            panels[r, c].above.append(text.get_text())
        else:  # a note: under the last row above it
            r = max(r for r, (_, bottom) in enumerate(rows) if y >= bottom - 0.5)
            panels[r, c].below.append(text.get_text())
    return [panels[key] for key in sorted(panels)]


def _bands(mask: np.ndarray) -> list[tuple[int, int]]:
    """The [start, stop) runs of True in a 1-D mask."""
    edges = np.flatnonzero(np.diff(np.concatenate([[False], mask, [False]]).astype(int)))
    return list(zip(edges[::2], edges[1::2]))
