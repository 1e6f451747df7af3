"""How every figure looks and how it reaches a file: matplotlib's Agg renderer, no window, ever.

Figures are built as `matplotlib.figure.Figure` objects on an Agg canvas, never through pyplot, so
no GUI backend is ever loaded and no global figure list grows; the Agg backend is still selected
on import for any code that reaches pyplot later. Figure modules (figures.py, capacity.py, ...)
take `new_figure`, `save_figure` and the colours below from here, so all of them look alike.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")  # before anything imports pyplot: files only, never a window

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mlptrain.errors import ConfigError, RunStoreError
from mlptrain.runs import atomic_write_bytes

FORMATS = ("png", "svg")
DPI = 120
SAVE_OPTIONS = {
    # zlib's fastest level: a third of the encoding time (0.08 s -> 0.05 s for an MNIST run's
    # five figures) for files 9% larger
    "png": {"pil_kwargs": {"compress_level": 1}},
    # text kept as text and the date left out, so the same figure gives the same bytes
    "svg": {"metadata": {"Date": None}},
}

# one colour per split, the same in every figure
SPLIT_COLOURS = {"train": "#1f77b4", "val": "#ff7f0e", "test": "#d62728"}
DIVERGING = "RdBu_r"  # signed values around 0 (weights): blue < 0 < red
SEQUENTIAL = "viridis"  # magnitudes (activations)
COUNTS = "Blues"  # counts (confusion matrix)
RC = {"font.size": 9, "axes.titlesize": 10, "axes.spines.top": False,
      "axes.spines.right": False, "axes.grid": False}


def styled(draw):
    """Decorates a drawing function so everything it creates follows RC (and nothing else does:
    the settings are not changed globally)."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(RC):
            return draw(*args, **kwargs)

    return wrapper


def new_figure(width: float, height: float) -> Figure:
    """An empty figure of width x height inches on an Agg canvas, with no layout engine: its
    caller places the axes (an automatic layout measures every text by drawing the figure once
    more before saving it)."""
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ConfigError(f"plot format {fmt!r} is not one of {', '.join(FORMATS)}.")
    return fmt


def save_figure(fig: Figure, path: Path) -> Path:
    """Renders `fig` in the format its suffix names and writes it atomically; returns the path."""
    fmt = check_format(path.suffix.lstrip("."))
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=DPI, **SAVE_OPTIONS[fmt])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as exc:
        raise RunStoreError(f"cannot write the figure {path}: {exc}.") from None
    return path


def relative_luminance(rgb) -> float:
    """WCAG 2's relative luminance of an sRGB colour (components in [0, 1])."""
    c = np.asarray(rgb, np.float64)[:3]
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return float(linear @ [0.2126, 0.7152, 0.0722])


def contrast_ratio(a, b) -> float:
    """WCAG 2's contrast ratio of two colours: 1 (none) to 21 (black on white)."""
    la, lb = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def text_colour_on(background) -> str:
    """Black or white, whichever contrasts more with the background colour (RGB(A))."""
    white = contrast_ratio(background, (1.0, 1.0, 1.0))
    black = contrast_ratio(background, (0.0, 0.0, 0.0))
    return "white" if white > black else "black"


def symmetric_limit(values, percentile: float = 100.0) -> float:
    """The bound v of a colour scale [-v, v] centred on 0: the `percentile` of the finite |values|
    (100: every value fits; a little less keeps a few extremes from washing out the rest)."""
    finite = np.abs(np.asarray(values, dtype=np.float64))
    finite = finite[np.isfinite(finite)]
    limit = float(np.percentile(finite, percentile)) if finite.size else 0.0
    return limit if limit > 0 else 1.0
