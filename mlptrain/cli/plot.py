"""`mlptrain plot RUN`: draws a saved run's figures; the drawing itself is mlptrain.reports."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from mlptrain.cli.common import RUN_HELP, RunsDir, a_path, err, fail, find_run, interrupted
from mlptrain.config import PLOT_FORMATS
from mlptrain.errors import MlptrainError
from mlptrain.runs import RunStore


def plot(
    run: str = typer.Argument("latest", metavar="RUN", help=RUN_HELP),
    out_dir: Optional[Path] = typer.Option(None, "--out", metavar="DIR", parser=a_path,
                                           help="Folder for the figures (default: the run "
                                                "directory)."),
    fmt: str = typer.Option("png", "--format", metavar="png|svg", help="Image format: png or svg."),
    runs_dir: Optional[Path] = RunsDir,
):
    """Draw a saved run's figures into its directory (or --out).

    Loss and accuracy curves and the confusion matrix for every run; the decision boundary for
    2-D inputs; weight images, activations per class and mistakes for images. A sweep's trials
    draw none while the sweep runs (unless `sweep --trial-figures`): this draws a trial's, and
    its summary.json then lists them.
    """
    if fmt not in PLOT_FORMATS:
        raise typer.BadParameter(f"{fmt!r} is not one of {', '.join(PLOT_FORMATS)}.",
                                 param_hint="--format")
    try:
        from mlptrain.experiment.plot import plot_saved_run

        drawn = plot_saved_run(find_run(RunStore(runs_dir), run, weights=True), out_dir, fmt)
    except MlptrainError as exc:
        fail(exc)
    except KeyboardInterrupt:
        interrupted()
    for path in drawn.files:
        print(path)  # one file a line on stdout, for scripts
    for note in drawn.omitted + drawn.skipped:
        err.print(f"[dim]not drawn: {escape(note)}[/dim]", highlight=False, soft_wrap=True)
