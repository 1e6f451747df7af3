"""The end of `fit`: one summary panel, listing the figures the fit drew (if [report] plots).

The panel gathers what a person wants after training: the final metrics of every split, the time
it took, a sparkline of the loss per epoch, where the run and its plots are.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from mlptrain.cli.common import blas_threads, plain, test_scores
from mlptrain.cli.parts import final_table, sparkline
from mlptrain.config import Config
from mlptrain.experiment import RunFinished
from mlptrain.runs import Run
from mlptrain.runs.schema import run_metric
from mlptrain.text import plural


def fit_panel(finished: RunFinished, metrics: list[dict], plots: list[Path],
              plot_note: str = "", plot_seconds: float | None = None) -> Panel:
    """The closing panel of a fit: metrics, loss sparkline, time, run directory, plot files."""
    s = finished.summary
    final, timing = s.get("final") or {}, s.get("timing") or {}
    table = final_table(final, s["dataset"]["samples"], run_metric(s))

    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column(overflow="fold")
    losses = [r.get("train_loss") for r in metrics]
    if losses:
        facts.add_row("loss", f"[cyan]{sparkline(losses, log=True)}[/cyan] "
                              f"{losses[0]:.3g} -> {losses[-1]:.3g}")
        facts.add_row("", "[dim]train loss per epoch, log scale[/dim]")
    epochs = s.get("epochs_completed", len(metrics))
    sittings = timing.get("sittings", 1)
    span = plural(epochs, "epoch")
    if sittings > 1 and timing.get("seconds_per_epoch"):  # the rates are this sitting's
        span = f"the last {round(timing['wall_seconds'] / timing['seconds_per_epoch'])} of {span}"
    time_line = f"{timing.get('wall_seconds', 0):.1f} s for {span}"
    if timing.get("samples_per_second"):
        time_line += (f" ({timing['seconds_per_epoch']:.2f} s/epoch, "
                      f"{timing['samples_per_second']:,.0f} samples/s)")
    if s.get("stopped_early"):
        time_line += f"; stopped early, kept epoch {s.get('best_epoch')}"
    facts.add_row("time", time_line)
    training, wall = timing.get("training_seconds"), timing.get("wall_seconds") or 0
    if training is not None and training < 0.8 * wall:  # this session's epochs, if resumed
        per_epoch = timing["seconds_per_epoch"] * training / wall
        facts.add_row("", f"[dim]of which training {training:.1f} s ({_per_epoch(per_epoch)}); "
                          "the rest is compiling, evaluation and checkpoints[/dim]")
    if sittings > 1:
        facts.add_row("", f"the whole run, over {sittings} sittings: "
                          f"{timing['run_training_seconds']:.1f} s of training, "
                          f"{timing['run_wall_seconds']:.1f} s wall")
    if s.get("blas_threads"):
        facts.add_row("", f"BLAS threads: {blas_threads(s['blas_threads'])}")
    if plot_seconds is not None:
        facts.add_row("", f"plots drawn afterwards in {plot_seconds:.1f} s")
    facts.add_row("run", escape(str(finished.path)))
    for i, note in enumerate(s["dataset"].get("notes") or []):  # what loading the data did
        facts.add_row("data" if i == 0 else "", escape(note))
    for i, note in enumerate(s.get("ignored_keys") or []):  # keys set that nothing read
        facts.add_row("config" if i == 0 else "", escape(note))
    if plots or plot_note:
        names = escape(", ".join(p.name for p in plots))
        facts.add_row("plots", f"{names}  {plot_note}" if names and plot_note else names or plot_note)
    for warning in s.get("warnings") or []:
        facts.add_row("[yellow]warning[/yellow]", f"[yellow]{escape(warning)}[/yellow]")
    warned = f", {len(s['warnings'])} warning{'s' if len(s['warnings']) > 1 else ''}" \
        if s.get("warnings") else ""
    colour = "green" if s.get("status") == "completed" and not warned else "yellow"
    return Panel(Group(table, "", facts), title=f"run {escape(finished.run_id)}: {s['status']}"
                 f"{warned}",
                 title_align="left", border_style=colour, expand=False)


def finish_fit(console: Console, config: Config, finished: RunFinished,
               quiet: bool = False) -> None:
    """Prints the closing panel, with the figures the fit drew ([report] plots)."""
    plots, note, seconds = [], "", None
    drawn = finished.figures
    if drawn is not None and drawn.error:  # the run itself is complete and saved: say so
        note = f"[red]not drawn: {escape(drawn.error)}[/red] (retry with `mlptrain plot`)"
    elif drawn is not None:
        plots, seconds = drawn.files, drawn.seconds
        note = "; ".join(f"[dim]not drawn: {escape(n)}[/dim]" for n in drawn.omitted)
    else:
        note = "[dim]off (\\[report] plots = false); draw them with `mlptrain plot`[/dim]"
    if quiet:
        for warning in finished.summary.get("warnings") or []:
            console.print(f"[yellow]warning: {escape(warning)}[/yellow]", soft_wrap=True)
        return
    metrics = Run(finished.path).read_metrics()
    console.print(fit_panel(finished, metrics, plots, note, seconds))
    plain(console, f"{test_scores(finished.summary)}; run saved in {finished.path}")


def _per_epoch(seconds: float) -> str:
    return f"{seconds:.2f} s/epoch" if seconds >= 0.1 else f"{seconds * 1000:.1f} ms/epoch"
