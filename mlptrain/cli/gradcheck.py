"""`mlptrain gradcheck CONFIG`: analytic against numeric gradients, per layer, PASS or FAIL."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from mlptrain.cli.common import EXIT_ERROR, fail, json_text, out
from mlptrain.config import load_config
from mlptrain.errors import MlptrainError
from mlptrain.experiment.gradcheck import EPS, TOLERANCE
from mlptrain.experiment.gradcheck import gradcheck as check_gradients
from mlptrain.model import architecture


def gradcheck(
    config: Path = typer.Argument(..., metavar="CONFIG", help="The TOML config whose model and data to check."),
    set_: Optional[List[str]] = typer.Option(
        None, "--set", "-s", metavar="SECTION.KEY=VALUE", help="Override one key (repeatable)."),
    batch: int = typer.Option(8, "--batch", min=1, metavar="N", help="Samples of the training data used."),
    entries: int = typer.Option(30, "--entries", min=0, metavar="N", help="Entries checked per parameter "
                                "array, picked at random (0 = all: slow for big layers)."),
    seed: int = typer.Option(0, "--seed", min=0, metavar="N", help="Picks the batch and the entries."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
):
    """Check the configured model's gradients against central finite differences in float64.

    Exits 0 when every layer passes and 1 when one fails.
    """
    try:
        report = check_gradients(load_config(config, set_ or []), batch, entries, seed)
    except MlptrainError as exc:
        fail(exc)
    if as_json:
        print(json_text({"passed": report.passed, "activation": report.activation,
                         "loss": report.loss, "sizes": report.sizes, "batch": report.batch,
                         "dropout": report.dropout,
                         "tolerance": TOLERANCE, "checks": [
                             {**c.__dict__, "passed": c.passed} for c in report.checks]}))
    else:
        out.print(f"gradcheck of {architecture(report.sizes, report.activation)} + "
                  f"{report.loss}, float64, batch of {report.batch}, step {EPS:g}"
                  + (", dropout masks held fixed" if report.dropout else ""),
                  highlight=False)
        table = Table(show_edge=False)
        for col in ("parameter", "shape", "checked", "max |grad|", "max rel error", ""):
            table.add_column(col, justify="left" if col in ("parameter", "shape") else "right")
        for c in report.checks:
            verdict = "[green]PASS[/green]" if c.passed else "[bold red]FAIL[/bold red]"
            table.add_row(c.name, "x".join(map(str, c.shape)), f"{c.checked:,}/{c.size:,}",
                          f"{c.max_abs_gradient:.2e}", f"{c.max_rel_error:.2e}", verdict)
        out.print(table)
        out.print("[green]PASS[/green]: every gradient matches" if report.passed else
                  f"[bold red]FAIL[/bold red]: relative error above {TOLERANCE:g}")
    if not report.passed:
        raise typer.Exit(EXIT_ERROR)
