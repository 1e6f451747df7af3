"""The end of `fit`: draw the run's figures (if [report] plots), then one summary panel.

The panel gathers what a person wants after training: the final metrics of every split, the time
it took, a sparkline of the loss per epoch, where the run and its plots are.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from mlptrain.cli.common import num, pct
from mlptrain.config import Config
from mlptrain.errors import MlptrainError
from mlptrain.experiment import RunFinished
from mlptrain.runs import Run

BLOCKS = "▁▂▃▄▅▆▇█"  # eight heights, lowest first
SPARK_WIDTH = 40  # characters; longer histories are averaged into this many buckets


def sparkline(values: Sequence[float], width: int = SPARK_WIDTH, log: bool = False) -> str:
    """The values as unicode block heights, min -> '▁' and max -> '█' (buckets of consecutive
    values averaged when there are more than `width`); '' when there are none."""
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


def fit_panel(finished: RunFinished, metrics: list[dict], plots: list[Path],
              plot_note: str = "", plot_seconds: float | None = None) -> Panel:
    """The closing panel of a fit: metrics, loss sparkline, time, run directory, plot files."""
    s = finished.summary
    final, timing = s.get("final") or {}, s.get("timing") or {}
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("split", "loss", "accuracy", "samples"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for split in ("train", "val", "test"):
        table.add_row(split, num(final.get(f"{split}_loss")), pct(final.get(f"{split}_accuracy")),
                      f"{s['dataset']['samples'][split]:,}")

    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column(overflow="fold")
    losses = [r.get("train_loss") for r in metrics]
    if losses:
        facts.add_row("loss", f"[cyan]{sparkline(losses, log=True)}[/cyan] "
                              f"{losses[0]:.3g} -> {losses[-1]:.3g}")
        facts.add_row("", "[dim]train loss per epoch, log scale[/dim]")
    epochs = s.get("epochs_completed", len(metrics))
    time_line = f"{timing.get('wall_seconds', 0):.1f} s for {epochs} epochs"
    if timing.get("samples_per_second"):
        time_line += (f" ({timing['seconds_per_epoch']:.2f} s/epoch, "
                      f"{timing['samples_per_second']:,.0f} samples/s)")
    if s.get("stopped_early"):
        time_line += f"; stopped early, kept epoch {s.get('best_epoch')}"
    facts.add_row("time", time_line)
    if plot_seconds is not None:
        facts.add_row("", f"plots drawn afterwards in {plot_seconds:.1f} s")
    facts.add_row("run", escape(str(finished.path)))
    if plots or plot_note:
        names = escape(", ".join(p.name for p in plots))
        facts.add_row("plots", f"{names}  {plot_note}" if names and plot_note else names or plot_note)
    colour = "green" if s.get("status") == "completed" else "yellow"
    return Panel(Group(table, "", facts), title=f"run {escape(finished.run_id)}: {s['status']}",
                 title_align="left", border_style=colour, expand=False)


def finish_fit(console: Console, config: Config, finished: RunFinished,
               quiet: bool = False) -> None:
    """Draws the run's figures (after training, so they never slow it) and prints the panel;
    with `quiet` the figures are still drawn but nothing is printed."""
    plots, note, seconds = [], "", None
    if config.report.plots:
        # imported here: matplotlib loads only when plots are drawn
        from mlptrain.experiment.plot import plot_run

        start = time.perf_counter()
        try:
            spinner = console.status("drawing plots") if console.is_terminal and not quiet \
                else contextlib.nullcontext()
            with spinner:
                drawn = plot_run(Run(finished.path), fmt=config.report.format)
            plots, seconds = drawn.files, time.perf_counter() - start
        except MlptrainError as exc:  # the run itself is complete and saved: say so, go on
            note = f"[red]not drawn: {escape(str(exc))}[/red] (retry with `mlptrain plot`)"
    else:
        note = "[dim]off (\\[report] plots = false); draw them with `mlptrain plot`[/dim]"
    if quiet:
        return
    metrics = Run(finished.path).read_metrics()
    console.print(fit_panel(finished, metrics, plots, note, seconds))
    final = finished.summary.get("final") or {}
    console.print(f"test accuracy {pct(final.get('test_accuracy'))}; run saved in "
                  f"{finished.path}", highlight=False, soft_wrap=True)
