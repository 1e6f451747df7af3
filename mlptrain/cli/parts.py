"""Pieces more than one command prints: sparklines, the final-metrics table, and the choice of
a table's layout by the terminal's width."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from mlptrain.cli.common import METRICS_SHOWN, num, r2, real
from mlptrain.data.dataset import SPLITS

BLOCKS = "▁▂▃▄▅▆▇█"  # eight heights, lowest first
SPARK_WIDTH = 40  # characters; longer histories are averaged into this many buckets


def sparkline(values: Sequence[float], width: int = SPARK_WIDTH, log: bool = False) -> str:
    """The values as unicode block heights, min -> '▁' and max -> '█' (buckets of consecutive
    values averaged when there are more than `width`); a flat series sits at mid height; ''
    when there are no finite values."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if not v.size:
        return ""
    if log and (v > 0).all():
        v = np.log(v)  # a falling loss spans decades: heights follow its log
    if v.size > width:
        v = np.array([chunk.mean() for chunk in np.array_split(v, width)])
    lo, hi = v.min(), v.max()
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        return BLOCKS[len(BLOCKS) // 2] * v.size
    levels = np.rint((v - lo) / (hi - lo) * (len(BLOCKS) - 1)).astype(int)
    return "".join(BLOCKS[i] for i in levels)


def final_table(final: dict, samples: dict | None = None, metric: str = "accuracy") -> Table:
    """Loss and the declared metric (accuracy; or RMSE, with MAE and R^2) of every split a run
    scored at its end (and their sizes, if known)."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    shown = [(METRICS_SHOWN[metric][1], metric, METRICS_SHOWN[metric][2])]
    if metric == "rmse":  # a regression's final scores (experiment/training.py final_metrics)
        shown += [("MAE", "mae", real), ("R^2", "r2", r2)]
    columns = ("split", "loss", *(name for name, _, _ in shown), *(("samples",) if samples else ()))
    for col in columns:
        table.add_column(col, justify="left" if col == "split" else "right")
    for split in SPLITS:
        row = [split, num(final.get(f"{split}_loss")),
               *(show(final.get(f"{split}_{key}")) for _, key, show in shown)]
        table.add_row(*row, *((f"{samples.get(split, 0):,}",) if samples else ()))
    return table


def first_that_fits(console: Console, layouts: Iterable[Table]) -> Table:
    """The first of `layouts` (the same rows, each layout narrower than the one before) whose
    natural width fits the console: nothing wrapped or cut; the last if none does."""
    for table in layouts:
        natural = Measurement.get(console, console.options.update_width(10_000), table).maximum
        if natural <= console.width:
            return table
    return table
