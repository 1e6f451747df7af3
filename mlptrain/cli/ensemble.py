"""`mlptrain ensemble RUN RUN ...`: a committee of saved runs, class probabilities averaged."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mlptrain.cli.common import (RunsDir, a_path, fail, interrupted, json_text, out, pct,
                                 plain, r2, real, secs)
from mlptrain.cli.parts import first_that_fits
from mlptrain.errors import MlptrainError
from mlptrain.runs import RunStore
from mlptrain.sweep.store import completed_trial_runs, find_sweep


class CommitteeSplit(str, Enum):
    test = "test"
    val = "val"


def ensemble(
    runs: Optional[List[str]] = typer.Argument(
        None, metavar="RUNS", help="Two or more runs of one dataset: run ids, unique "
        "prefixes, run directories."),
    sweep: Optional[str] = typer.Option(
        None, "--sweep", metavar="SWEEP", help="Add every trial of a sweep (its id as `sweep` "
        "printed it, a unique prefix, or latest); all must have completed."),
    split: CommitteeSplit = typer.Option(CommitteeSplit.test, "--split", case_sensitive=False,
                                         help="Which split the committee scores (val: the "
                                              "members must hold out the same samples, with "
                                              "one train.seed or one data.split_seed)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    figure: Optional[Path] = typer.Option(
        None, "--figure", metavar="FILE", parser=a_path,
        help="Also draw the committee's misclassified images with each member's vote into "
        "FILE (.png or .svg)."),
    runs_dir: Optional[Path] = RunsDir,
):
    """Average several runs' class probabilities (regression runs: their predictions) and score
    the committee on their test split.

    The members are the RUNS named, and with --sweep every trial of that sweep: `mlptrain
    ensemble --sweep latest` scores the committee a seed sweep just trained.
    """
    # here, not at the top: matplotlib would slow every other command's start by a third
    from mlptrain.experiment.ensemble import check_figure_path, committee, draw_mistakes

    try:
        if figure is not None:
            check_figure_path(figure)  # before the members load: they may take minutes
        store = RunStore(runs_dir)
        refs = list(runs or [])
        if sweep is not None:
            refs += [str(path) for path in completed_trial_runs(store.root,
                                                                find_sweep(store.root, sweep))]
        members = committee(store, refs, split.value)
        drawn = draw_mistakes(members, figure) if figure is not None else None
    except MlptrainError as exc:
        fail(exc)
    except KeyboardInterrupt:
        interrupted()
    result = members.to_dict()
    if drawn is not None:
        result["figure"] = str(drawn)
    if as_json:
        print(json_text(result))
        return
    refs = store.short_refs()
    if result.get("task") == "regression":
        out.print(regression_table(result, refs))
        return
    out.print(members_table(result, out, refs))
    out.print(per_class_table(result, out))
    plain(out, verdict(result, refs), wrap=True)
    if drawn is not None:
        plain(out, f"figure of its mistakes: {drawn}")


def members_table(r: dict, console: Console, refs: dict[str, str]) -> Table:
    """Each member's accuracy, errors and time, then the committee's: with whole run ids where
    they fit, else the hash that ends each (`refs`); a long name folds onto more lines."""
    def layout(short: bool) -> Table:
        table = Table(title=f"committee of {r['size']} on the {r['split']} split "
                            f"({r['samples']:,} samples)", title_justify="left", min_width=60)
        for col, justify in (("member", "left"), ("name", "left"), ("accuracy", "right"),
                             ("errors", "right"), ("time", "right")):
            table.add_column(col, justify=justify, no_wrap=col != "name", overflow="fold")
        for m in r["members"]:
            differs = " ".join(f"{key.rpartition('.')[2]}={value}"
                               for key, value in m["settings"].items())
            table.add_row(refs.get(m["run_id"], m["run_id"]) if short else m["run_id"],
                          escape(f"{m['name']} {differs}".strip()), pct(m["accuracy"]),
                          f"{m['errors']:,}", secs(m["seconds"]))
        table.add_section()
        table.add_row("[bold]committee[/bold]", "mean of probabilities",
                      f"[bold]{pct(r['accuracy'])}[/bold]", f"{r['errors']:,}",
                      secs(r["seconds"]))
        return table

    return first_that_fits(console, (layout(short) for short in (False, True)))


def regression_table(r: dict, refs: dict[str, str]) -> Table:
    """A regression committee: each member's RMSE, MAE and R^2, then the mean prediction's."""
    table = Table(title=f"committee of {r['size']} on the {r['split']} split "
                        f"({r['samples']:,} samples)", title_justify="left")
    for col in ("member", "RMSE", "MAE", "R^2", "time"):
        table.add_column(col, justify="left" if col == "member" else "right")
    for m in r["members"]:
        table.add_row(refs.get(m["run_id"], m["run_id"]), real(m["rmse"]), real(m["mae"]),
                      r2(m["r2"]), secs(m["seconds"]))
    table.add_section()
    table.add_row("[bold]committee[/bold] (mean prediction)", real(r["rmse"]), real(r["mae"]),
                  f"[bold]{r2(r['r2'])}[/bold]", secs(r["seconds"]))
    return table


def per_class_table(r: dict, console: Console) -> Table:
    """The committee's errors per true class: a column per class where they fit, else a row."""
    title = "committee errors per true class"
    across = Table(title=title, title_justify="left", min_width=60)
    across.add_column("class")
    for c in r["per_class"]:
        across.add_column(str(c["class"]), justify="right")
    across.add_row("wrong", *(str(c["errors"]) for c in r["per_class"]))
    across.add_row("of", *(f"{c['samples']:,}" for c in r["per_class"]))
    down = Table(title=title, title_justify="left")
    for col in ("class", "wrong", "of"):
        down.add_column(col, justify="right")
    for c in r["per_class"]:
        down.add_row(str(c["class"]), str(c["errors"]), f"{c['samples']:,}")
    return first_that_fits(console, (across, down))


def verdict(r: dict, refs: dict[str, str] | None = None) -> str:
    """The committee against its members; the best member named by its entry in `refs` (the
    hash that ends its id), or its id."""
    gain = 100 * (r["accuracy"] - r["best_member"]["accuracy"])
    best = r["best_member"]
    named = (refs or {}).get(best["run_id"], best["run_id"])
    return (f"members disagree on {r['disagreements']:,} of {r['samples']:,} samples\n"
            f"best member {pct(best['accuracy'])} ({named}), mean member "
            f"{pct(r['mean_member_accuracy'])}\n"
            f"committee {pct(r['accuracy'])}: {abs(gain):.2f} points "
            f"{'below' if gain < 0 else 'over'} the best member{_training_time(r)}")


def _training_time(r: dict) -> str:
    if r.get("seconds") is None:
        return ""
    return (f"\nthe members trained in {secs(r['seconds'])} of wall time in all "
            f"({secs(r['training_seconds'])} of it in their epochs)")
