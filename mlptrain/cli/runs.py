"""`mlptrain runs`: list, show, compare and remove runs."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mlptrain.cli.common import (
    METRICS_SHOWN,
    RUN_HELP,
    RunsDir,
    err,
    fail,
    find_run,
    json_text,
    num,
    out,
    pct,
    plain,
    r2,
    real,
    secs,
    wide,
)
from mlptrain.cli.parts import final_table, first_that_fits, sparkline
from mlptrain.errors import MlptrainError
from mlptrain.runs import RunStore
from mlptrain.runs.query import (
    STATUSES,
    config_changes,
    config_table,
    list_runs,
    read_config,
    run_record,
    sweep_of,
)
from mlptrain.runs.schema import run_metric
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
        print(json_text(records))
        return
    if not records:
        plain(err, f"no runs in {RunStore(runs_dir).root}" + (" match" if status or name
                                                               or dataset else ""), wrap=True)
        return
    console = wide()
    console.print(runs_table(records, RunStore(runs_dir).short_refs(), console))


# the columns of `runs` after the id: header -> (justified right, the cell of a record)
RUN_COLUMNS = {
    "name": (False, lambda r: escape(r["name"] or "-")),
    "dataset": (False, lambda r: r["dataset"] or "-"),
    "model": (False, lambda r: r["model"] or "-"),
    "status": (False, lambda r: _styled_status(r["status"])),
    "best val": (True, lambda r: pct(r["best_val_accuracy"])),
    "test": (True, lambda r: f"R^2 {r2(r['test_r2'])}" if "test_r2" in r  # a regression
             else pct(r["test_accuracy"])),
    "time": (True, lambda r: secs(r["seconds"])),
}
GIVE_WAY = ("dataset", "model", "time", "best val")  # those a narrow terminal drops, in turn


def runs_table(records: list[dict], refs: dict[str, str], console: Console) -> Table:
    """The runs, as the console's width allows: with whole ids, else with the hash that ends
    each (what `refs` gives: a reference every command takes), then without the columns of
    GIVE_WAY, one by one; without all of them a long name folds onto more lines."""
    def layout(short: bool, gone: tuple[str, ...]) -> Table:
        table = Table(show_edge=False)
        table.add_column("hash" if short else "id", no_wrap=True)
        columns = [c for c in RUN_COLUMNS if c not in gone]
        for col in columns:
            table.add_column(col, justify="right" if RUN_COLUMNS[col][0] else "left",
                             no_wrap=col != "name", overflow="fold")
        for r in records:
            table.add_row(refs.get(r["id"], r["id"]) if short else r["id"],
                          *(RUN_COLUMNS[c][1](r) for c in columns))
        return table

    return first_that_fits(console, [
        layout(False, ()), *(layout(True, GIVE_WAY[:n]) for n in range(len(GIVE_WAY) + 1))])


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
        metrics = found.read_metrics() if found.has("metrics.jsonl") else []
        config = read_config(found) if as_json else config_changes(found)
    except MlptrainError as exc:
        fail(exc)
    if as_json:
        print(json_text({"summary": summary, "metrics": metrics, "config": config}))
        return
    planned = summary.get("epochs_planned")
    out.print(f"[bold]run {found.run_id}[/bold]: {_styled_status(record['status'])}, "
              f"{record['epochs']} of {plural(planned, 'epoch') if planned else '?'}, "
              f"{secs(record['seconds'])}", highlight=False)
    plain(out, f"  {found.path}")
    if summary.get("error"):
        plain(out, f"  error: {summary['error']}")
    metric = run_metric(summary)
    if summary.get("final"):
        out.print(final_table(summary["final"], (summary.get("dataset") or {}).get("samples"),
                              metric))
    for key in ("train_loss", "val_loss", f"train_{metric}", f"val_{metric}"):
        series = [m[key] for m in metrics if m.get(key) is not None]
        if series:
            shown = num if key.endswith("loss") else METRICS_SHOWN[metric][2]
            out.print(f"{key:>15} {sparkline(series, log=key.endswith('loss'))}  "
                      f"{shown(series[0])} -> {shown(series[-1])}", highlight=False)
    out.print("config: the keys that differ from the defaults (every key: config.toml, or "
              "--json)", highlight=False)
    for key, value in config.items():
        out.print(f"  {key} = {escape(json_text(value))}", highlight=False, soft_wrap=True)


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
        print(json_text({"runs": records, "config": [
            {"key": k, "values": v, "differs": d} for k, v, d in rows]}))
        return
    console, short = wide(), store.short_refs()
    ids = [r["id"] for r in records]
    # whole ids where they fit as headers over the results and the keys (long values fold)
    keys_only = [(key, [None] * len(ids), differs) for key, _, differs in rows]
    chosen = first_that_fits(console, (compare_table(records, keys_only, only_diff, headers)
                                       for headers in (ids, [short.get(i, i) for i in ids])))
    headers = [column.header for column in chosen.columns[1:]]
    console.print(compare_table(records, rows, only_diff, headers))
    differing = sum(differs for _, _, differs in rows)
    out.print(f"{plural(differing, 'config key')} differ{'s' * (differing == 1)} (marked *)",
              highlight=False)


def compare_table(records: list[dict], rows: list, only_diff: bool,
                  headers: list[str]) -> Table:
    """Runs side by side under `headers` (their ids, or shorter references): results, then the
    config keys, whole, those that differ marked; long values fold onto more lines."""
    table = Table(show_edge=False)
    table.add_column("", no_wrap=True)
    for header in headers:
        table.add_column(header, overflow="fold")
    scores = [("test RMSE", "test_rmse", real), ("test R^2", "test_r2", r2)] \
        if any("test_r2" in r for r in records) else []  # regression runs among them
    for label, key, show_ in (("status", "status", str), ("best val", "best_val_accuracy", pct),
                              ("test", "test_accuracy", pct), *scores,
                              ("epochs", "epochs", str), ("time", "seconds", secs)):
        table.add_row(label, *(show_(r.get(key)) for r in records))
    table.add_section()
    for key, values, differs in rows:
        if only_diff and not differs:
            continue
        cells = [escape(json_text(v)) if v is not None else "-" for v in values]
        if differs:
            table.add_row(f"[bold yellow]* {key}[/bold yellow]",
                          *(f"[bold yellow]{c}[/bold yellow]" for c in cells))
        else:
            table.add_row(f"  {key}", *cells)
    return table


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
        sweep = sweep_of(r)  # its sweep's summary goes on naming it until the sweep runs again
        trial = f" (a trial of sweep {sweep}: running that sweep again trains it anew)" \
            if sweep else ""
        plain(err, f"  {r.path}{link}{trial}")
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
            plain(out, f"deleted the link {r.run_id} (its target {target} is left as it was)"
                  if target else f"deleted {r.run_id}")
    except MlptrainError as exc:
        fail(exc)
