"""Drawing: each function turns the arrays of one figure (arrays.py) into a matplotlib Figure.

The functions draw exactly the arrays they are given (no hidden recomputation), so a test can
read the data back from the figure's artists and compare it with the run's files.
"""

from __future__ import annotations

import functools

import numpy as np
from matplotlib.backends.backend_agg import RendererAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.ticker import (
    FormatStrFormatter,
    LogLocator,
    MaxNLocator,
    NullFormatter,
    PercentFormatter,
)

from mlptrain.reports import arrays
from mlptrain.reports.arrays import Curves, ProbabilityGrid
from mlptrain.reports.style import (
    COUNTS,
    DIVERGING,
    DPI,
    RC,
    SEQUENTIAL,
    SPLIT_COLOURS,
    new_figure,
    styled,
    text_colour_on,
)


MARKED_EPOCHS = 30  # up to this many epochs each point gets a marker (one alone is no line)
TEXT_LINE = 1.2  # a line of text is this many times its font size tall (matplotlib's spacing)
TITLE_PAD = 6  # points between an axes and its title (rcParams["axes.titlepad"])
EDGE = 0.1  # inches between the outermost text and the figure's edge (12 pixels)
DIGIT = 0.64  # a digit's width in DejaVu Sans, in font sizes (most tick labels are digits)
TICK_ROOM = 7  # points from an axes' side to its tick labels: a tick (3.5), a pad (3.5)
LABEL_PAD = 4  # points between tick labels and the axis label (rcParams["axes.labelpad"])
LINE = RC["font.size"] * TEXT_LINE  # points: a line of text at the base size (tick, axis labels)
SUPTITLE = 1.2 * RC["font.size"]  # a figure title's size in points ("large")
COLORBAR = (0.2, 0.17)  # inches between an image and its colour bar, and the bar's width
COLORBAR_ROOM = 1.1  # inches right of an image for its colour bar with tick labels and label
MOSAIC_COLUMNS = 8  # images a row in the grids of mistakes
SIDE = 0.25  # inches left and right of such a mosaic, for texts wider than their image
TEXT_PAD = (6, 3)  # points between an image and its title (as an axes' title), and its note


@styled
def draw_curves(c: Curves, title: str) -> Figure:
    """Loss (left) and the loss's metric (right: accuracy, or RMSE; and a regression's R^2)
    per epoch; the test score is a star at its epoch."""
    panels = 3 if c.r2 else 2
    fig = new_figure(_title_width(4.5 * panels, title, SUPTITLE), 3.6)
    axes = [fig.add_axes((0, 0, 1, 1)) for _ in range(panels)]  # placed at the end
    ax_loss, ax_acc = axes[:2]
    marker = "o" if len(c.epochs) <= MARKED_EPOCHS else None
    for ax, series, key in zip(axes, (c.loss, c.score, c.r2), ("loss", c.metric, "r2")):
        for split, values in series.items():
            ax.plot(c.epochs, values, label=split, color=SPLIT_COLOURS[split], lw=1.5,
                    marker=marker, ms=4)
        if c.test and c.test.get(key) is not None:
            ax.plot([c.test_epoch], [c.test[key]], "*", ms=12, color=SPLIT_COLOURS["test"],
                    label=f"test (epoch {c.test_epoch})", zorder=3)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        if c.epochs:  # whole epochs, half an epoch of room each side (one epoch: 0.5 to 1.5)
            ax.set_xlim(min(c.epochs) - 0.5, max(c.epochs) + 0.5)
        ax.legend(frameon=False)
        ax.grid(alpha=0.3)
    losses = [v for values in c.loss.values() for v in values] + ([c.test["loss"]] if c.test else [])
    losses = [v for v in losses if np.isfinite(v)]
    if losses and min(losses) > 0:
        ax_loss.set_yscale("log")  # losses fall over decades; a linear axis hides the late part
        ax_loss.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax_loss.yaxis.set_major_formatter(FormatStrFormatter("%g"))  # 0.05, not 5 x 10^-2
        ax_loss.yaxis.set_minor_formatter(NullFormatter())
        lo, hi = min(losses), max(losses)
        if hi < 2 * lo:  # one epoch, or a flat history: at least a factor 4 around it
            middle = np.sqrt(lo * hi)
            ax_loss.set_ylim(min(lo, middle / 2) / 1.1, max(hi, middle * 2) * 1.1)
    ax_loss.set_ylabel("loss (mean per sample)")
    if c.metric == "accuracy":
        _accuracy_axis(ax_acc, c)
    else:
        ax_acc.set_ylabel("RMSE (target units)")
    if c.r2:
        axes[2].set_ylabel("R$^2$")
    _side_by_side(fig, axes, top=_suptitle(fig, title))
    return fig


def _accuracy_axis(ax_acc, c: Curves) -> None:
    ax_acc.set_ylabel("accuracy")
    ax_acc.yaxis.set_major_formatter(PercentFormatter(xmax=1))
    accuracies = [v for values in c.score.values() for v in values] + \
        ([c.test["accuracy"]] if c.test else [])
    if accuracies:  # never beyond 0-100%, at least 10 points tall
        lo, hi = min(accuracies), max(accuracies)
        pad = max(0.1 * (hi - lo), 0.05 - (hi - lo) / 2, 0.005)
        ax_acc.set_ylim(max(0.0, lo - pad), min(1.0 + 0.01, hi + pad))


@styled
def draw_decision_boundary(grid: ProbabilityGrid, X: np.ndarray, y: np.ndarray,
                           title: str) -> Figure:
    """P(class 1) as a filled contour over the input plane, the 0.5 line, and the data on top
    (two classes); with more classes, the predicted class as filled regions."""
    fig = new_figure(_title_width(5.4, title), 4.6)
    ax = fig.add_axes((0, 0, 1, 1))  # placed once its limits are known
    n_classes = grid.probabilities.shape[-1]
    if n_classes == 2:
        p1 = grid.probabilities[..., 1]  # (S, S)
        filled = ax.contourf(grid.xs, grid.ys, p1, levels=np.linspace(0, 1, 11),
                             cmap=DIVERGING, alpha=0.8)
        ax.contour(grid.xs, grid.ys, p1, levels=[0.5], colors="k", linewidths=1.2)
        point_colours = ListedColormap(["#2166ac", "#b2182b"])  # the ends of DIVERGING
    else:
        predicted = grid.probabilities.argmax(axis=-1)
        point_colours = ListedColormap([f"C{i % 10}" for i in range(n_classes)])
        ax.contourf(grid.xs, grid.ys, predicted, levels=np.arange(n_classes + 1) - 0.5,
                    cmap=point_colours, alpha=0.35)
    ax.scatter(X[:, 0], X[:, 1], c=y, cmap=point_colours, vmin=0, vmax=n_classes - 1, s=12,
               edgecolors="white", linewidths=0.4)
    for k in range(n_classes):  # legend entries for the classes of the points
        ax.scatter([], [], color=point_colours(k), edgecolors="white", label=f"class {k}")
    ax.legend(loc="upper right", fontsize=8, framealpha=0.8)
    ax.set_xlabel("input 1")
    ax.set_ylabel("input 2")
    ax.set_aspect("equal")
    _place_equal(fig, ax, top=_title_room(title), right=COLORBAR_ROOM if n_classes == 2 else 0)
    _fit_title(fig, ax, title)
    if n_classes == 2:
        _colorbar(fig, filled, ax, label="P(class 1)", ticks=np.linspace(0, 1, 6))
    return fig


@styled
def draw_weight_grid(mosaic: np.ndarray, limit: float, which: str, title: str) -> Figure:
    """First-layer weights, one tile per hidden unit, on one colour scale [-limit, limit]
    (values beyond it drawn at the ends of the scale)."""
    title = f"{title}\nfirst-layer weights, row by row: {which}"
    top = _title_room(title)
    # the figure fits the mosaic, which fits within 7.5 x 7 inches with its title and colour bar
    scale = _pixel_scale(mosaic.shape, (7.5 - 2 * EDGE - COLORBAR_ROOM, 7.0 - EDGE - top))
    width, height = (n * scale / DPI for n in mosaic.shape[::-1])
    fig = new_figure(_title_width(2 * EDGE + width + COLORBAR_ROOM, title), EDGE + height + top)
    # centred, at whole pixels from the edge like the pixels it shows
    left = round((fig.get_figwidth() - width - COLORBAR_ROOM) / 2 * DPI) / DPI
    ax = _add_axes(fig, (left, EDGE, width, height))
    image = ax.imshow(mosaic, cmap=_with_blank(DIVERGING), vmin=-limit, vmax=limit,
                      interpolation="nearest", aspect="auto")
    ax.set_axis_off()
    clipped = np.nanmax(np.abs(mosaic)) > limit
    _colorbar(fig, image, ax, shrink=0.8, extend="both" if clipped else "neither",
              label="weight: blue < 0 < red, one scale for all units")
    _fit_title(fig, ax, title)
    return fig


@styled
def draw_activation_heatmap(mean: np.ndarray, units: np.ndarray, which: str,
                            title: str) -> Figure:
    """mean (C, U): the mean activation of hidden units `units` (U,) over each class's samples."""
    title = f"{title}\nmean activation per class on the test set: {which}"
    size = (_title_width(max(5.0, min(12.0, 2.0 + 0.16 * mean.shape[1])), title), 4.0)
    fig = new_figure(*size)
    step = max(1, len(units) // 32)  # at most ~32 unit labels
    labels = [str(u) for u in units[::step]]
    rotated = len(units) > 16
    left = _axis_room(_digits_width(mean.shape[0] - 1))
    bottom = _axis_room(_digits_width(max(labels, key=len, default=""), 7) if rotated
                        else 7 * TEXT_LINE)
    ax = _add_axes(fig, (left, bottom, size[0] - left - COLORBAR_ROOM - EDGE,
                         size[1] - bottom - _title_room(title)))
    image = ax.imshow(mean, cmap=SEQUENTIAL, aspect="auto", interpolation="nearest")
    _colorbar(fig, image, ax, label="mean activation")
    ax.set_yticks(range(mean.shape[0]))
    ax.set_ylabel("class")
    ax.set_xticks(range(0, len(units), step), labels, rotation=90 if rotated else 0, fontsize=7)
    ax.set_xlabel("hidden unit")
    _fit_title(fig, ax, title)
    return fig


@styled
def draw_confusion(counts: np.ndarray, title: str) -> Figure:
    """counts (C, C): rows are true classes, columns predicted; each cell shows its count."""
    n = counts.shape[0]
    total, right = counts.sum(), np.trace(counts)
    title = (f"{title}\ntest set: {right:,} of {total:,} right "
             f"({100 * right / max(total, 1):.2f}%)\n(colour: log(1 + count))")
    fig = new_figure(_title_width(max(4.4, 1.6 + 0.5 * n), title), max(3.6, 1.2 + 0.5 * n))
    ax = fig.add_axes((0, 0, 1, 1))  # placed once its tick labels are known
    # log-like scale by count so the off-diagonal errors stay visible beside a full diagonal
    image = ax.imshow(np.log1p(counts), cmap=COUNTS, interpolation="nearest")
    # each cell's own colour, through the image's norm and map, decides its text's
    cells = image.cmap(image.norm(np.log1p(counts)))  # (C, C, 4)
    for (i, j), count in np.ndenumerate(counts):
        ax.text(j, i, f"{count}", ha="center", va="center", fontsize=8 if n > 5 else 10,
                color=text_colour_on(cells[i, j]))
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    _place_equal(fig, ax, top=_title_room(title), right=0)
    _fit_title(fig, ax, title)
    return fig


@styled
def draw_predictions(y_true: np.ndarray, y_pred: np.ndarray, r2: float | None,
                     title: str) -> Figure:
    """A regression's test set: predicted against true values (left; the diagonal is a perfect
    fit) and the residuals, predicted - true, against the prediction (right; a pattern there
    is what the model missed)."""
    fig = new_figure(_title_width(9, title, SUPTITLE), 3.8)
    ax_fit, ax_res = fig.add_axes((0, 0, 1, 1)), fig.add_axes((0, 0, 1, 1))  # placed at the end
    colour = SPLIT_COLOURS["test"]
    ax_fit.scatter(y_true, y_pred, s=10, color=colour, alpha=0.7)
    lo, hi = float(min(y_true.min(), y_pred.min())), float(max(y_true.max(), y_pred.max()))
    ax_fit.plot([lo, hi], [lo, hi], color="k", lw=1, label="predicted = true")
    ax_fit.set_xlabel("true value")
    ax_fit.set_ylabel("predicted value")
    ax_fit.legend(frameon=False, title=None if r2 is None else f"R^2 = {r2:.3f}")
    ax_res.scatter(y_pred, y_pred - y_true, s=10, color=colour, alpha=0.7)
    ax_res.axhline(0.0, color="k", lw=1)
    ax_res.set_xlabel("predicted value")
    ax_res.set_ylabel("residual (predicted - true)")
    for ax in (ax_fit, ax_res):
        ax.grid(alpha=0.3)
    _side_by_side(fig, (ax_fit, ax_res), top=_suptitle(fig, f"{title}\ntest set"))
    return fig


@styled
def draw_misclassified(images: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray,
                       confidence: np.ndarray, errors: int, total: int, title: str) -> Figure:
    """images (K, h, w): test images the model got wrong, tiled into one mosaic (arrays.
    image_mosaic), each titled true -> predicted."""
    shown = f"the first {len(images)}" if len(images) < errors else "all"
    title = (f"{title}\n{errors:,} of {total:,} test images misclassified; {shown} shown "
             "(pred: predicted class and its probability)")
    fig, ax, tiles = _image_grid(images, title, image=0.9, gap=0.25, text=(0.38, 0.05))
    for (x, top, _), t, p, conf in zip(tiles, y_true, y_pred, confidence):
        ax.text(x, top, f"true {t}, pred {p}\n({100 * conf:.0f}%)", fontsize=8,
                ha="center", va="bottom")
    return fig


@styled
def draw_committee_mistakes(images: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray,
                            confidence: np.ndarray, votes: np.ndarray, errors: int, total: int,
                            title: str) -> Figure:
    """images (K, h, w): samples a committee got wrong, tiled into one mosaic (arrays.
    image_mosaic), each titled true -> predicted (with the averaged probability) and, below,
    the class each of the M members voted (votes (K, M))."""
    shown = f"the first {len(images)}" if len(images) < errors else "all"
    title = (f"{title}\n{errors:,} of {total:,} samples misclassified by the committee; "
             f"{shown} shown\n(pred: the class of the averaged probabilities, and that "
             "probability; votes: each member's class, in the order given)")
    fig, ax, tiles = _image_grid(images, title, image=1.2, gap=0.1, text=(0.22, 0.22))
    for (x, top, bottom), t, p, conf, vote in zip(tiles, y_true, y_pred, confidence, votes):
        ax.text(x, top, f"true {t}, pred {p} ({100 * conf:.0f}%)", fontsize=7.5,
                ha="center", va="bottom")
        ax.text(x, bottom, "votes " + " ".join(str(v) for v in vote), fontsize=7,
                ha="center", va="top")
    return fig


def _image_grid(images: np.ndarray, title: str, image: float, gap: float,
                text: tuple[float, float]):
    """A figure titled `title` of one axes, axes off, showing `images` (K, h, w) as one mosaic
    up to 8 a row, the gaps white: (figure, axes, each image's (x centre, y above, y below) in
    data coordinates, where its texts go). In inches: image, about the width of one image;
    gap, the room between neighbouring images; text, the room above each image for its title
    and below it for a note. One image on one axes placed by hand: an axes per image made
    the figure of 32 images three times as slow to draw and save."""
    k, h, w = images.shape
    columns = min(MOSAIC_COLUMNS, max(k, 1))
    # whole screen pixels per image pixel, so that every image pixel is drawn the same size
    scale = max(1, round(image * DPI / w))
    above, below = (int(np.ceil(t * DPI / scale)) for t in text)  # in image pixels
    spacing = (above + below, int(np.ceil(gap * DPI / scale)))
    mosaic = arrays.image_mosaic(images, columns, spacing)
    # in screen pixels: the figure wide enough for its title too
    width = max(2 * round(SIDE * DPI) + mosaic.shape[1] * scale,
                round((_text_width(title, SUPTITLE) + 2 * EDGE) * DPI))
    side = (width - mosaic.shape[1] * scale) // 2
    head = round(_title_room(title, SUPTITLE) * DPI) + above * scale
    fig = new_figure(width / DPI, (head + (mosaic.shape[0] + below) * scale) / DPI)
    ax = _add_axes(fig, tuple(v / DPI for v in (side, below * scale, mosaic.shape[1] * scale,
                                                 mosaic.shape[0] * scale)))
    ax.imshow(mosaic, cmap=_with_blank("gray_r"), vmin=0, vmax=1, interpolation="nearest",
              aspect="auto")
    ax.set_axis_off()
    _suptitle(fig, title)
    pad_above, pad_below = (p / 72 * DPI / scale for p in TEXT_PAD)  # in image pixels
    corners = (arrays.tile_corner(i, columns, (h, w), spacing) for i in range(k))
    return fig, ax, [(left + (w - 1) / 2, top - 0.5 - pad_above, top + h - 0.5 + pad_below)
                     for top, left in corners]


def _add_axes(fig: Figure, rect: tuple[float, float, float, float]):
    """An axes at rect (left, bottom, width, height) in inches from the figure's lower left
    corner: placed by hand, as a layout engine would measure every text by drawing the figure
    once more before saving it (a third of the time of a figure with a few axes)."""
    return fig.add_axes(_fractions(fig, rect))


def _fractions(fig: Figure, rect: tuple[float, float, float, float]):
    """rect (left, bottom, width, height) in inches as fractions of the figure."""
    return tuple(np.divide(rect, np.tile(fig.get_size_inches(), 2)))


def _side_by_side(fig: Figure, axes, top: float) -> None:
    """Places `axes` in a row, equally wide, `top` inches below the figure's top, each with
    room on its left for its y tick labels as they are now and below for its x axis."""
    width, height = fig.get_size_inches()
    lefts = [_axis_room(_tick_labels_width(ax.yaxis)) for ax in axes]
    bottom = _axis_room(LINE)
    each = (width - sum(lefts) - 2 * EDGE) / len(axes)  # the last x tick label can overhang
    for i, (ax, left) in enumerate(zip(axes, lefts)):
        ax.set_position(_fractions(fig, (sum(lefts[:i + 1]) + i * each, bottom, each,
                                         height - bottom - top)))


def _place_equal(fig: Figure, ax, top: float, right: float) -> None:
    """Places `ax`, whose x and y units are drawn the same length, as large as its limits
    allow, centred in the figure less the room of its tick and axis labels, `top` inches at
    the top and `right` inches at the right."""
    width, height = fig.get_size_inches()
    left, bottom = _axis_room(_tick_labels_width(ax.yaxis)), _axis_room(LINE)
    room = (width - left - right - EDGE, height - bottom - top)
    ratio = np.ptp(ax.get_ylim()) / np.ptp(ax.get_xlim())  # height / width
    box = (min(room[0], room[1] / ratio), min(room[1], room[0] * ratio))
    ax.set_position(_fractions(fig, (left + (room[0] - box[0]) / 2,
                                     bottom + (room[1] - box[1]) / 2, *box)))


def _tick_labels_width(axis) -> float:
    """Points taken by the widest of the axis's major tick labels (from their characters)."""
    low, high = sorted(axis.get_view_interval())
    ticks = [t for t in axis.get_major_locator()() if low <= t <= high]
    return _digits_width(max(axis.get_major_formatter().format_ticks(ticks), key=len, default=""))


def _digits_width(text, size: float = RC["font.size"]) -> float:
    """Points taken by str(text) in digits and the like at `size` points."""
    return max(1, len(str(text))) * DIGIT * size


def _axis_room(tick_labels: float) -> float:
    """Inches beside an axes for its tick labels (`tick_labels` points deep from the axes'
    side), its axis label, and the figure's edge."""
    return (tick_labels + TICK_ROOM + LINE + LABEL_PAD) / 72 + EDGE


def _pixel_scale(shape: tuple[int, int], room: tuple[float, float]) -> float:
    """Screen pixels per pixel of an image of `shape` (rows, columns) that fills at most room
    (width, height) inches: a whole number where at least one fits, so that every image pixel
    is drawn the same size."""
    scale = min(room[0] * DPI / shape[1], room[1] * DPI / shape[0])
    return int(scale) if scale >= 1 else scale


def _colorbar(fig: Figure, image, ax, shrink: float = 1.0, **kwargs):
    """A colour bar for `image` right of `ax`, `shrink` times its height, centred on it."""
    left, bottom, right, top = ax.get_position().extents * np.tile(fig.get_size_inches(), 2)
    height = (top - bottom) * shrink
    cax = _add_axes(fig, (right + COLORBAR[0], bottom + (top - bottom - height) / 2,
                          COLORBAR[1], height))
    return fig.colorbar(image, cax=cax, **kwargs)


def _title_width(width: float, title: str, size: float = RC["axes.titlesize"]) -> float:
    """`width` inches, or more if a title (`size` points) needs more between the edges."""
    return max(width, _text_width(title, size) + 2 * EDGE)


def _fit_title(fig: Figure, ax, title: str) -> None:
    """Titles the placed `ax` centred on it, or moved sideways just enough to stay within the
    figure (made wide enough by _title_width)."""
    width = _text_width(title, RC["axes.titlesize"])
    left, right = ax.get_position().intervalx * fig.get_figwidth()
    centre = np.clip((left + right) / 2, EDGE + width / 2, fig.get_figwidth() - EDGE - width / 2)
    ax.set_title(title, x=(centre - left) / (right - left))


@functools.lru_cache(maxsize=64)
def _text_width(text: str, size: float) -> float:
    """Inches taken by the longest line of `text` at `size` points, as drawn at DPI (hinted
    glyphs: wider than the font's outlines say)."""
    font, renderer = FontProperties(size=size), _renderer()
    return max(renderer.get_text_width_height_descent(line, font, ismath=False)[0]
               for line in text.split("\n")) / DPI


@functools.cache
def _renderer() -> RendererAgg:
    """An Agg renderer at DPI that only measures texts, before their figure exists."""
    return RendererAgg(1, 1, DPI)


def _suptitle(fig: Figure, title: str) -> float:
    """Titles the figure at the top; returns the inches it takes (as _title_room)."""
    fig.suptitle(title, y=1 - EDGE / fig.get_figheight())
    return _title_room(title, SUPTITLE)


def _title_room(title: str, size: float = RC["axes.titlesize"]) -> float:
    """Inches above an axes for its title (`size` points, one line per line of text)."""
    lines = title.count("\n") + 1
    return (lines * TEXT_LINE * size + TITLE_PAD) / 72 + EDGE


def _with_blank(name: str):
    """The named colour map, drawing NaN (the gaps between tiles) as white."""
    from matplotlib import colormaps

    return colormaps[name].with_extremes(bad="white")
