"""`mlptrain runs`: list, show, compare and remove runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from mlptrain.cli.common import (
    RUN_HELP,
    RunsDir,
    err,
    fail,
    find_run,
    num,
    out,
    pct,
    secs,
    wide,
)
from mlptrain.cli.parts import final_table, sparkline
from mlptrain.errors import MlptrainError
from mlptrain.runs import RunStore
from mlptrain.runs.query import (
    STATUSES,
    config_changes,
    config_table,
    list_runs,
    read_config,
    run_record,
)
from mlptrain.text import plural


def runs(
    ctx: typer.Context,
    status: Optional[str] = typer.Option(None, "--status", metavar="STATUS", help=f"Only runs with this "
                                         f"status: {', '.join(STATUSES)}."),
    name: Optional[str] = typer.Option(None, "--name", help="Only runs whose name contains "
                                       "this, or matches it as a glob (mnist*)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", metavar="xor|mnist|npz", help="Only runs on this dataset."),
    limit: int = typer.Option(0, "--limit", "-n", min=0, metavar="N", help="At most this many (0 = all)."),
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
                      pct(r["test_accuracy"]), secs(r["seconds"]))
    wide().print(table)


def _styled_status(status: str) -> str:
    color = {"completed": "green", "failed": "red", "damaged": "red", "interrupted": "yellow",
             "stale": "yellow", "running": "cyan"}.get(status, "")
    return f"[{color}]{status}[/{color}]" if color else status


def show(
    run: str = typer.Argument("latest", metavar="RUN", help=RUN_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print summary, metrics and config "
                                 "(as an object) in one JSON object."),
    runs_dir: Optional[Path] = RunsDir,
):
    """One run: its final metrics, its curves as sparklines, and the config keys it changed."""
    try:
        found = find_run(RunStore(runs_dir), run)
        summary, record = found.read_summary(), run_record(found)
        metrics = found.read_metrics() if (found.path / "metrics.jsonl").exists() else []
        config = read_config(found) if as_json else config_changes(found)
    except MlptrainError as exc:
        fail(exc)
    if as_json:
        print(json.dumps({"summary": summary, "metrics": metrics, "config": config}))
        return
    planned = summary.get("epochs_planned")
    out.print(f"[bold]run {found.run_id}[/bold]: {_styled_status(record['status'])}, "
              f"{record['epochs']} of {plural(planned, 'epoch') if planned else '?'}, "
              f"{secs(record['seconds'])}", highlight=False)
    out.print(f"  {found.path}", highlight=False, soft_wrap=True)
    if summary.get("error"):
        out.print(f"  error: {escape(summary['error'])}", highlight=False, soft_wrap=True)
    if summary.get("final"):
        out.print(final_table(summary["final"], (summary.get("dataset") or {}).get("samples")))
    for key in ("train_loss", "val_loss", "train_accuracy", "val_accuracy"):
        series = [m[key] for m in metrics if m.get(key) is not None]
        if series:
            shown = pct if key.endswith("accuracy") else num
            out.print(f"{key:>15} {sparkline(series, log=key.endswith('loss'))}  "
                      f"{shown(series[0])} -> {shown(series[-1])}", highlight=False)
    out.print("config: the keys that differ from the defaults (every key: config.toml, or "
              "--json)", highlight=False)
    for key, value in config.items():
        out.print(f"  {key} = {escape(json.dumps(value))}", highlight=False, soft_wrap=True)


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
        found = [find_run(store, ref) for ref in refs]
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
                              ("time", "seconds", secs)):
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
    out.print(f"{plural(differing, 'config key')} differ{'s' * (differing == 1)} (marked *)",
              highlight=False)


def rm(
    refs: List[str] = typer.Argument(..., metavar="RUN",
                                     help="Runs to delete (ids, prefixes, paths)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Delete without asking."),
    runs_dir: Optional[Path] = RunsDir,
):
    """Delete runs and everything in their directories, after asking (or with --yes). Only
    runs in the runs directory are deleted; of a run directory that is a link, only the link."""
    try:
        store = RunStore(runs_dir)
        found = {}
        for r in (find_run(store, ref) for ref in refs):
            store.check_removable(r)  # every run checked before any is deleted
            found.setdefault(r.path.parent.resolve() / r.path.name, r)
    except MlptrainError as exc:
        fail(exc)
    for r in found.values():
        link = f" -> {r.path.resolve()} (a link: only the link is deleted)" \
            if r.path.is_symlink() else ""
        err.print(f"  {r.path}{link}", highlight=False, soft_wrap=True)
    try:
        agreed = yes or typer.confirm(f"delete {'these' if len(found) > 1 else 'this'} "
                                      f"{plural(len(found), 'run')}?",
                                      default=False, err=True)
    except typer.Abort:  # no answer (stdin closed): never delete on a guess
        agreed = False
    if not agreed:
        err.print("nothing deleted (answer y, or pass --yes)")
        raise typer.Exit(1)
    try:
        for r in found.values():
            target = store.remove(r)
            out.print(f"deleted the link {r.run_id} (its target {target} is left as it was)"
                      if target else f"deleted {r.run_id}", highlight=False, soft_wrap=True)
    except MlptrainError as exc:
        fail(exc)
