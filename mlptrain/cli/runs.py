"""`mlptrain runs`: list, show, compare and remove runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from mlptrain.cli.common import RunsDir, err, fail, out, pct, wide
from mlptrain.errors import MlptrainError
from mlptrain.runs.query import STATUSES, config_table, list_runs, run_record
from mlptrain.runs import RunStore


SPARK = "▁▂▃▄▅▆▇█"


def _secs(x) -> str:
    return "-" if x is None else f"{x:.1f}s"


def sparkline(values: list[float], width: int = 50) -> str:
    """Block characters scaled between the series' min and max; a long series is averaged
    down to `width` buckets."""
    if not values:
        return ""
    if len(values) > width:
        edges = [round(i * len(values) / width) for i in range(width + 1)]
        values = [sum(values[a:b]) / (b - a) for a, b in zip(edges[:-1], edges[1:])]
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(SPARK[round((v - low) / span * (len(SPARK) - 1))] for v in values)


def runs(
    ctx: typer.Context,
    status: Optional[str] = typer.Option(None, "--status", help=f"Only runs with this "
                                         f"status: {', '.join(STATUSES)}."),
    name: Optional[str] = typer.Option(None, "--name", help="Only runs whose name contains "
                                       "this, or matches it as a glob (mnist*)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Only runs on this dataset."),
    limit: int = typer.Option(0, "--limit", "-n", min=0, help="At most this many (0 = all)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list on stdout."),
    runs_dir: Optional[Path] = RunsDir,
):
    """List runs, newest first: id, name, dataset, model, status, accuracies, time."""
    if ctx.invoked_subcommand is not None:
        return
    if status and status not in STATUSES:
        raise typer.BadParameter(f"{status!r} is not one of {', '.join(STATUSES)}",
                                 param_hint="--status")
    try:
        records = list_runs(RunStore(runs_dir), status, name, dataset, limit or None)
    except MlptrainError as exc:
        fail(exc)
    if as_json:
        print(json.dumps(records))
        return
    if not records:
        err.print(f"no runs in {RunStore(runs_dir).root}" + (" match" if status or name
                                                             or dataset else ""))
        return
    table = Table(show_edge=False)
    for col in ("id", "name", "dataset", "model", "status", "best val", "test", "time"):
        table.add_column(col, justify="right" if col in ("best val", "test", "time") else "left",
                         no_wrap=col == "id")
    for r in records:
        table.add_row(r["id"], r["name"] or "-", r["dataset"] or "-", r["model"] or "-",
                      _styled_status(r["status"]), pct(r["best_val_accuracy"]),
                      pct(r["test_accuracy"]), _secs(r["seconds"]))
    wide().print(table)


def _styled_status(status: str) -> str:
    color = {"completed": "green", "failed": "red", "damaged": "red", "interrupted": "yellow",
             "stale": "yellow", "running": "cyan"}.get(status, "")
    return f"[{color}]{status}[/{color}]" if color else status


def show(
    run: str = typer.Argument("latest", help="A run id, unique prefix, directory or `latest`."),
    as_json: bool = typer.Option(False, "--json", help="Print summary, metrics and config "
                                 "as one JSON object."),
    runs_dir: Optional[Path] = RunsDir,
):
    """One run: its config, final metrics and loss/accuracy curves as sparklines."""
    try:
        found = RunStore(runs_dir).find(run)
        summary, record = found.read_summary(), run_record(found)
        metrics = found.read_metrics() if (found.path / "metrics.jsonl").exists() else []
        config_text = (found.path / "config.toml").read_text(encoding="utf-8")
    except MlptrainError as exc:
        fail(exc)
    if as_json:
        print(json.dumps({"summary": summary, "metrics": metrics, "config": config_text}))
        return
    out.print(f"[bold]run {found.run_id}[/bold]: {_styled_status(record['status'])}, "
              f"{record['epochs']} of {summary.get('epochs_planned')} epochs, "
              f"{_secs(record['seconds'])}", highlight=False)
    out.print(f"  {found.path}", highlight=False, soft_wrap=True)
    if summary.get("error"):
        out.print(f"  error: {escape(summary['error'])}", highlight=False, soft_wrap=True)
    out.print(escape(config_text.rstrip()), highlight=False)
    final = summary.get("final")
    if final:
        table = Table(title="final", title_justify="left")
        for col in ("split", "loss", "accuracy"):
            table.add_column(col)
        for split in ("train", "val", "test"):
            loss = final.get(f"{split}_loss")
            table.add_row(split, "-" if loss is None else f"{loss:.4f}",
                          pct(final.get(f"{split}_accuracy")))
        out.print(table)
    for key in ("train_loss", "val_loss", "train_accuracy", "val_accuracy"):
        series = [m[key] for m in metrics if m.get(key) is not None]
        if series:
            out.print(f"{key:>15} {sparkline(series)}  {series[0]:.4g} -> {series[-1]:.4g}",
                      highlight=False)


def compare(
    refs: List[str] = typer.Argument(..., metavar="RUN",
                                     help="Two or more runs (ids, prefixes, paths)."),
    only_diff: bool = typer.Option(False, "--diff", help="Show only the config keys that "
                                   "differ."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
    runs_dir: Optional[Path] = RunsDir,
):
    """Runs side by side: results, then every config key, differences highlighted."""
    if len(refs) < 2:
        raise typer.BadParameter("give at least two runs to compare", param_hint="RUN")
    try:
        store = RunStore(runs_dir)
        found = [store.find(ref) for ref in refs]
        records, rows = [run_record(r) for r in found], config_table(found)
    except MlptrainError as exc:
        fail(exc)
    if as_json:
        print(json.dumps({"runs": records, "config": [
            {"key": k, "values": v, "differs": d} for k, v, d in rows]}))
        return
    table = Table(show_edge=False)
    table.add_column("")
    for r in records:
        table.add_column(r["id"], overflow="fold")
    for label, key, show_ in (("status", "status", str), ("best val", "best_val_accuracy", pct),
                              ("test", "test_accuracy", pct), ("epochs", "epochs", str),
                              ("time", "seconds", _secs)):
        table.add_row(label, *(show_(r[key]) for r in records))
    table.add_section()
    differing = 0
    for key, values, differs in rows:
        if only_diff and not differs:
            continue
        differing += differs
        cells = [escape(json.dumps(v)) if v is not None else "-" for v in values]
        if differs:
            table.add_row(f"[bold yellow]* {key}[/bold yellow]",
                          *(f"[bold yellow]{c}[/bold yellow]" for c in cells))
        else:
            table.add_row(f"  {key}", *cells)
    wide().print(table)
    out.print(f"{differing} config keys differ (marked *)", highlight=False)


def rm(
    refs: List[str] = typer.Argument(..., metavar="RUN",
                                     help="Runs to delete (ids, prefixes, paths)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Delete without asking."),
    runs_dir: Optional[Path] = RunsDir,
):
    """Delete runs and everything in their directories, after asking (or with --yes)."""
    try:
        store = RunStore(runs_dir)
        found = list({r.path: r for r in (store.find(ref) for ref in refs)}.values())
    except MlptrainError as exc:
        fail(exc)
    for r in found:
        err.print(f"  {r.path}", highlight=False, soft_wrap=True)
    try:
        agreed = yes or typer.confirm(f"delete {'these' if len(found) > 1 else 'this'} "
                                      f"{len(found)} run{'s' * (len(found) > 1)}?",
                                      default=False, err=True)
    except typer.Abort:  # no answer (stdin closed): never delete on a guess
        agreed = False
    if not agreed:
        err.print("nothing deleted (answer y, or pass --yes)")
        raise typer.Exit(1)
    try:
        for r in found:
            r.remove()
            out.print(f"deleted {r.run_id}", highlight=False)
    except MlptrainError as exc:
        fail(exc)
