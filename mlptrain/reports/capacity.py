"""The capacity figure: test accuracy (a regression sweep's: test R^2) against hidden width,
on a log2 axis.

One line per combination of the sweep's other (non-seed) axes: the mean over seeds with a band of
one standard deviation, every trial as a dot, and the parameter count of each width on the top
axis. `capacity_series` computes what is drawn from a sweep summary; `draw_capacity` draws it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window; before pyplot is imported

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import NullLocator

from mlptrain.runs import atomic_write_bytes

AXIS = "model.hidden"
FORMATS = ("png", "svg")
# the sweep's headline metric (sweep/summary.py) -> (factor drawn, axis label, name in the title)
SCORES = {"test_accuracy": (100, "test accuracy (%)", "accuracy"),
          "test_r2": (1, "test R^2", "R^2")}


@dataclass
class CapacitySeries:
    label: str  # the other axes' coordinates, "" when width is the only non-seed axis
    widths: np.ndarray  # (W,) hidden units, increasing
    mean: np.ndarray  # (W,) mean test accuracy (or R^2: `score`) over the completed trials
    std: np.ndarray  # (W,) sample std (0 where fewer than two trials)
    parameters: list[int | None]  # (W,) parameter count of each width
    trials: list[tuple[int, float]] = field(default_factory=list)  # (width, accuracy) each
    score: str = "test_accuracy"  # a key of SCORES


def _width(value: Any) -> int | None:
    """A one-hidden-layer width (16 or [16]); None for deeper models."""
    if isinstance(value, list):
        return value[0] if len(value) == 1 else None
    return value


def capacity_series(summary: dict[str, Any],
                    score: str = "test_accuracy") -> list[CapacitySeries]:
    """Series of (width, mean, std) of `score` (a key of SCORES) from a sweep summary's
    groups, one per other-axes point."""
    by_label: dict[str, list[dict[str, Any]]] = {}
    for group in summary["groups"]:
        width = _width(group["point"].get(AXIS))
        if width is None or group["mean"].get(score) is None:
            continue
        label = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in group["point"].items()
                          if k != AXIS)
        by_label.setdefault(label, []).append({**group, "width": width})
    series = []
    for label, groups in by_label.items():
        groups.sort(key=lambda g: g["width"])
        widths = [g["width"] for g in groups]
        trials = [(_width(r[AXIS]), r[score]) for r in summary["trials"]
                  if r["status"] == "completed" and _width(r[AXIS]) in widths
                  and _label(r, groups[0]["point"]) == label]
        series.append(CapacitySeries(
            label, np.array(widths),
            np.array([g["mean"][score] for g in groups]),
            np.array([g["std"][score] or 0.0 for g in groups]),
            [g["parameters"] for g in groups], trials, score))
    return series


def draw_sweep(summary: dict[str, Any], score: str, stem: Path, formats=("png",),
               title: str = "") -> list[Path]:
    """draw_capacity of a sweep summary's capacity_series (of `score`); [] where it has none."""
    series = capacity_series(summary, score)
    return draw_capacity(series, stem, formats, title) if series else []


def _label(row: dict[str, Any], point: dict[str, Any]) -> str:
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={row[k]}" for k in point if k != AXIS)


def draw_capacity(series: list[CapacitySeries], stem: Path, formats=("png",),
                  title: str = "") -> list[Path]:
    """Draws the figure and saves it as stem.png (and stem.svg ...); returns the files."""
    fig, ax = plt.subplots(figsize=(7.5, 4.8), layout="constrained")
    k, label, name = SCORES[series[0].score]  # k: 100 draws an accuracy in percent
    for s in series:
        line, = ax.plot(s.widths, k * s.mean, marker="o", label=s.label or "mean over seeds")
        ax.fill_between(s.widths, k * (s.mean - s.std), k * (s.mean + s.std),
                        color=line.get_color(), alpha=0.2, linewidth=0)
        ax.errorbar(s.widths, k * s.mean, yerr=k * s.std, fmt="none",
                    ecolor=line.get_color(), capsize=3)
        if s.trials:
            w, acc = zip(*s.trials)
            ax.scatter(w, k * np.array(acc), s=10, color=line.get_color(), alpha=0.5,
                       zorder=3)
    ax.set_xscale("log", base=2)
    widths = sorted({int(w) for s in series for w in s.widths})
    ax.set_xticks(widths, [str(w) for w in widths])
    ax.xaxis.set_minor_locator(NullLocator())  # log axes add unlabelled-looking minor ticks
    ax.set_xlabel("hidden units (log2 scale)")
    ax.set_ylabel(label)
    ax.grid(True, alpha=0.3)
    _parameter_axis(ax, series[0])
    ax.legend(loc="lower right", title="band: \u00b11 std over seeds")
    ax.set_title(f"{title}: {name} vs hidden width" if title else f"{name} vs hidden width")
    files = []
    for fmt in formats:
        if fmt not in FORMATS:
            raise ValueError(f"figure format {fmt!r} is not one of {', '.join(FORMATS)}")
        path = stem.with_suffix(f".{fmt}")
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, dpi=150)
        atomic_write_bytes(path, buffer.getvalue())  # as every file of a run is written
        files.append(path)
    plt.close(fig)
    return files


def _parameter_axis(ax, s: CapacitySeries) -> None:
    """The parameter count of each width, on a top axis sharing the width positions."""
    top = ax.secondary_xaxis("top")
    top.set_ticks(s.widths, labels=[_short(p) for p in s.parameters])
    top.xaxis.set_minor_locator(NullLocator())
    top.set_xlabel("parameters")
    top.tick_params(labelsize=8)


def _short(count: int | None) -> str:
    if count is None:
        return "?"
    if count >= 10_000:
        return f"{count / 1000:.0f}k"
    if count >= 1000:
        return f"{count / 1000:.1f}k"
    return str(count)
