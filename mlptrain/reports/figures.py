"""Drawing: each function turns the arrays of one figure (arrays.py) into a matplotlib Figure.

The functions draw exactly the arrays they are given (no hidden recomputation), so a test can
read the data back from the figure's artists and compare it with the run's files.
"""

from __future__ import annotations

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
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
    SEQUENTIAL,
    SPLIT_COLOURS,
    new_figure,
    styled,
    text_colour_on,
)


MARKED_EPOCHS = 30  # up to this many epochs each point gets a marker (one alone is no line)


@styled
def draw_curves(c: Curves, title: str) -> Figure:
    """Loss (left) and accuracy (right) per epoch; the test score is a star at its epoch."""
    fig = new_figure(9, 3.6)
    ax_loss, ax_acc = fig.subplots(1, 2)
    marker = "o" if len(c.epochs) <= MARKED_EPOCHS else None
    for ax, series, key in ((ax_loss, c.loss, "loss"), (ax_acc, c.accuracy, "accuracy")):
        for split, values in series.items():
            ax.plot(c.epochs, values, label=split, color=SPLIT_COLOURS[split], lw=1.5,
                    marker=marker, ms=4)
        if c.test:
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
    ax_acc.set_ylabel("accuracy")
    ax_acc.yaxis.set_major_formatter(PercentFormatter(xmax=1))
    accuracies = [v for values in c.accuracy.values() for v in values] + \
        ([c.test["accuracy"]] if c.test else [])
    if accuracies:  # never beyond 0-100%, at least 10 points tall
        lo, hi = min(accuracies), max(accuracies)
        pad = max(0.1 * (hi - lo), 0.05 - (hi - lo) / 2, 0.005)
        ax_acc.set_ylim(max(0.0, lo - pad), min(1.0 + 0.01, hi + pad))
    fig.suptitle(title)
    return fig


@styled
def draw_decision_boundary(grid: ProbabilityGrid, X: np.ndarray, y: np.ndarray,
                           title: str) -> Figure:
    """P(class 1) as a filled contour over the input plane, the 0.5 line, and the data on top
    (two classes); with more classes, the predicted class as filled regions."""
    fig = new_figure(5.4, 4.6)
    ax = fig.subplots()
    n_classes = grid.probabilities.shape[-1]
    if n_classes == 2:
        p1 = grid.probabilities[..., 1]  # (S, S)
        filled = ax.contourf(grid.xs, grid.ys, p1, levels=np.linspace(0, 1, 11),
                             cmap=DIVERGING, alpha=0.8)
        ax.contour(grid.xs, grid.ys, p1, levels=[0.5], colors="k", linewidths=1.2)
        fig.colorbar(filled, ax=ax, label="P(class 1)", ticks=np.linspace(0, 1, 6))
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
    ax.set_title(title)
    return fig


@styled
def draw_weight_grid(mosaic: np.ndarray, limit: float, which: str, title: str) -> Figure:
    """First-layer weights, one tile per hidden unit, on one colour scale [-limit, limit]
    (values beyond it drawn at the ends of the scale)."""
    fig = new_figure(7.5, 7.0)
    ax = fig.subplots()
    image = ax.imshow(mosaic, cmap=_with_blank(DIVERGING), vmin=-limit, vmax=limit,
                      interpolation="nearest")
    ax.set_axis_off()
    clipped = np.nanmax(np.abs(mosaic)) > limit
    fig.colorbar(image, ax=ax, shrink=0.8, extend="both" if clipped else "neither",
                 label="weight: blue < 0 < red, one scale for all units")
    ax.set_title(f"{title}\nfirst-layer weights, row by row: {which}")
    return fig


@styled
def draw_activation_heatmap(mean: np.ndarray, units: np.ndarray, which: str,
                            title: str) -> Figure:
    """mean (C, U): the mean activation of hidden units `units` (U,) over each class's samples."""
    fig = new_figure(max(5.0, min(12.0, 2.0 + 0.16 * mean.shape[1])), 4.0)
    ax = fig.subplots()
    image = ax.imshow(mean, cmap=SEQUENTIAL, aspect="auto", interpolation="nearest")
    fig.colorbar(image, ax=ax, label="mean activation")
    ax.set_yticks(range(mean.shape[0]))
    ax.set_ylabel("class")
    step = max(1, len(units) // 32)  # at most ~32 unit labels
    ax.set_xticks(range(0, len(units), step), [str(u) for u in units[::step]],
                  rotation=90 if len(units) > 16 else 0, fontsize=7)
    ax.set_xlabel("hidden unit")
    ax.set_title(f"{title}\nmean activation per class on the test set: {which}")
    return fig


@styled
def draw_confusion(counts: np.ndarray, title: str) -> Figure:
    """counts (C, C): rows are true classes, columns predicted; each cell shows its count."""
    n = counts.shape[0]
    fig = new_figure(max(4.4, 1.6 + 0.5 * n), max(3.6, 1.2 + 0.5 * n))
    ax = fig.subplots()
    # log-like scale by count so the off-diagonal errors stay visible beside a full diagonal
    image = ax.imshow(np.log1p(counts), cmap=COUNTS, interpolation="nearest")
    for (i, j), count in np.ndenumerate(counts):
        # the cell's own colour, through the image's norm and map, decides the text's
        cell = image.cmap(image.norm(np.log1p(count)))
        ax.text(j, i, f"{count}", ha="center", va="center", fontsize=8 if n > 5 else 10,
                color=text_colour_on(cell))
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    total, right = counts.sum(), np.trace(counts)
    ax.set_title(f"{title}\ntest set: {right:,} of {total:,} right ({100 * right / max(total, 1):.2f}%)"
                 "\n(colour: log(1 + count))")
    return fig


@styled
def draw_misclassified(images: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray,
                       confidence: np.ndarray, errors: int, total: int, title: str) -> Figure:
    """images (K, h, w): test images the model got wrong, tiled into one mosaic (arrays.
    image_mosaic), each titled true -> predicted."""
    k = len(images)
    fig, ax, tiles = _image_grid(images, image=0.9, gap=0.25, text=(0.38, 0.05), top=0.6)
    for (x, top, _), t, p, conf in zip(tiles, y_true, y_pred, confidence):
        ax.text(x, top, f"true {t}, pred {p}\n({100 * conf:.0f}%)", fontsize=8,
                ha="center", va="bottom")
    shown = f"the first {k}" if k < errors else "all"
    fig.suptitle(f"{title}\n{errors:,} of {total:,} test images misclassified; {shown} shown "
                 "(pred: predicted class and its probability)")
    return fig


@styled
def draw_committee_mistakes(images: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray,
                            confidence: np.ndarray, votes: np.ndarray, errors: int, total: int,
                            title: str) -> Figure:
    """images (K, h, w): samples a committee got wrong, tiled into one mosaic (arrays.
    image_mosaic), each titled true -> predicted (with the averaged probability) and, below,
    the class each of the M members voted (votes (K, M))."""
    k = len(images)
    fig, ax, tiles = _image_grid(images, image=1.2, gap=0.1, text=(0.22, 0.22), top=0.75)
    for (x, top, bottom), t, p, conf, vote in zip(tiles, y_true, y_pred, confidence, votes):
        ax.text(x, top, f"true {t}, pred {p} ({100 * conf:.0f}%)", fontsize=7.5,
                ha="center", va="bottom")
        ax.text(x, bottom, "votes " + " ".join(str(v) for v in vote), fontsize=7,
                ha="center", va="top")
    shown = f"the first {k}" if k < errors else "all"
    fig.suptitle(f"{title}\n{errors:,} of {total:,} samples misclassified by the committee; "
                 f"{shown} shown\n(pred: the class of the averaged probabilities, and that "
                 "probability; votes: each member's class, in the order given)")
    return fig


MOSAIC_COLUMNS = 8
SIDE = 0.25  # inches left and right of the mosaic, for texts wider than their image
TEXT_PAD = (6, 3)  # points between an image and its title (as an axes' title), and its note


def _image_grid(images: np.ndarray, image: float, gap: float, text: tuple[float, float],
                top: float):
    """A figure of one axes, axes off, showing `images` (K, h, w) as one mosaic up to 8 a row,
    the gaps white: (figure, axes, each image's (x centre, y above, y below) in data
    coordinates, where its texts go). In inches: image, about the width of one image; gap,
    the room between neighbouring images; text, the room above each image for its title and
    below it for a note; top, the figure title's. One image on one axes placed by hand: an
    axes per image made the figure of 32 images three times as slow to draw and save."""
    k, h, w = images.shape
    columns = min(MOSAIC_COLUMNS, max(k, 1))
    # whole screen pixels per image pixel, so that every image pixel is drawn the same size
    scale = max(1, round(image * DPI / w))
    above, below = (int(np.ceil(t * DPI / scale)) for t in text)  # in image pixels
    spacing = (above + below, int(np.ceil(gap * DPI / scale)))
    mosaic = arrays.image_mosaic(images, columns, spacing)
    side, head = round(SIDE * DPI), round(top * DPI) + above * scale  # screen pixels
    size = (2 * side + mosaic.shape[1] * scale, head + (mosaic.shape[0] + below) * scale)
    fig = new_figure(size[0] / DPI, size[1] / DPI, layout=None)
    ax = fig.add_axes((side / size[0], below * scale / size[1],
                       mosaic.shape[1] * scale / size[0], mosaic.shape[0] * scale / size[1]))
    ax.imshow(mosaic, cmap=_with_blank("gray_r"), vmin=0, vmax=1, interpolation="nearest",
              aspect="auto")
    ax.set_axis_off()
    pad_above, pad_below = (p / 72 * DPI / scale for p in TEXT_PAD)  # in image pixels
    corners = (arrays.tile_corner(i, columns, (h, w), spacing) for i in range(k))
    return fig, ax, [(left + (w - 1) / 2, top - 0.5 - pad_above, top + h - 0.5 + pad_below)
                     for top, left in corners]


def _with_blank(name: str):
    """The named colour map, drawing NaN (the gaps between tiles) as white."""
    from matplotlib import colormaps

    return colormaps[name].with_extremes(bad="white")
