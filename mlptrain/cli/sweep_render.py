"""Renders a sweep's events: one overall bar plus a line per running trial on a terminal, one
line per finished trial elsewhere, and a table of mean +- std per grid point at the end."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mlptrain.cli.common import METRICS_SHOWN, pct, plain, r2, secs
from mlptrain.cli.parts import first_that_fits
from mlptrain.cli.render import LiveProgress
from mlptrain.text import plural
from mlptrain.sweep import (
    SweepFinished,
    SweepInterrupted,
    SweepSpec,
    SweepStarted,
    TrialFinished,
    TrialProgress,
    TrialStarted,
)
from mlptrain.sweep.runner import CAPACITY_AXIS

STATUS_STYLE = {"completed": "green", "failed": "bold red", "interrupted": "yellow"}
DRY_RUN_ROWS = 50  # trials a --dry-run lists; it counts them all


def _value(v: Any) -> str:
    return (" ".join(str(i) for i in v) or "[]") if isinstance(v, list) else str(v)


class SweepRenderer:
    """Turns sweep events into output; a context manager around run_sweep."""

    def __init__(self, console: Console, runs_dir: Path | None = None):
        self.console = console
        self.runs_dir = runs_dir  # --runs-dir as given: the commands it suggests repeat it
        self.live = console.is_terminal
        # a trial's row names its grid point (hidden-256_seed-2), cut if long, before its bar
        self.progress = LiveProgress(console, description_width=26, disable=not self.live)
        self.overall = None
        self.running: dict[int, int] = {}  # trial index -> progress task
        self.first_done: dict[int, int] = {}  # trial index -> steps done at its first report
        self.prefix = ""  # what every trial's name starts with: the sweep's name and `_`
        self.total = self.done = 0
        self.earlier = False  # whether trials ran in an earlier sitting of this sweep

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def __call__(self, event) -> None:
        handler = getattr(self, f"_on_{type(event).__name__}", None)
        if handler:
            handler(event)

    def _on_SweepStarted(self, e: SweepStarted) -> None:
        skipped = len(e.trials) - len(e.to_run)
        self.earlier = bool(skipped or e.continued)
        resumed = f"; {skipped} completed earlier, skipped" if skipped else ""
        if e.continued:
            resumed += f"; {len(e.continued)} continue from their checkpoints"
        self.console.print(f"[bold]sweep[/bold] {e.sweep_id}: {plural(len(e.trials), 'trial')}"
                           f"{resumed}; {e.executor}", highlight=False)
        plain(self.console, f"  {e.path}")
        self.total = len(e.to_run)
        self.overall = self.progress.add_task("[bold]trials[/bold]", total=self.total or 1,
                                              count=f"0/{self.total}", info=())
        prefix = e.sweep_id.rpartition("-")[0] + "_"  # the id is the name and a hash
        if all(t["name"].startswith(prefix) for t in e.trials):
            self.prefix = prefix

    def _on_TrialStarted(self, e: TrialStarted) -> None:
        if self.live:
            point = e.name.removeprefix(self.prefix) or e.name
            self.running[e.index] = self.progress.add_task(f"  {escape(point)}", total=None,
                                                           count="", info=("starting",))

    def _on_TrialProgress(self, e: TrialProgress) -> None:
        task = self.running.get(e.index)
        if task is not None:
            done = (e.epoch - 1) * e.steps + e.step
            # the first report sets where this sitting's pace is counted from (a trial that
            # continues from a checkpoint starts part-way)
            since = self.first_done.setdefault(e.index, done)
            self.progress.update(task, total=e.epochs * e.steps, completed=done, since=since,
                                 count=f"epoch {e.epoch}/{e.epochs}",
                                 info=(_score(e), f"loss {e.loss:.4f}"))

    def _on_TrialFinished(self, e: TrialFinished) -> None:
        task = self.running.pop(e.index, None)
        if task is not None:
            self.progress.remove_task(task)
        self.done += 1
        self.progress.update(self.overall, completed=self.done, count=f"{self.done}/{self.total}")
        style = STATUS_STYLE.get(e.status, "")
        final = e.final or {}
        test = f"test R^2 {r2(final['test_r2'])}" if "test_r2" in final else \
            f"test {pct(final.get('test_accuracy'))}"  # a regression's, else a classifier's
        detail = test if e.status == "completed" else escape(e.error)
        self.console.print(f"[{self.done}/{self.total}] {e.name}: [{style}]{e.status}[/{style}]"
                           f"  {detail}  {secs(e.seconds)}", highlight=False, soft_wrap=True)

    def _on_SweepInterrupted(self, e: SweepInterrupted) -> None:
        self.progress.stop()
        counts = ", ".join(f"{n} {status}" for status, n in e.counts.items())
        self.console.print(f"sweep {e.sweep_id} interrupted ({counts}); run the same command "
                           "again to resume it", highlight=False, soft_wrap=True)

    def _on_SweepFinished(self, e: SweepFinished) -> None:
        self.progress.stop()
        self.console.print(summary_table(e.summary, self.console))
        counts = ", ".join(f"{n} {status}" for status, n in e.summary["counts"].items())
        took = secs(e.wall_seconds)
        if self.earlier:
            whole = sum(r["seconds"] or 0.0 for r in e.summary["trials"])
            took += f" in this sitting; its trials took {secs(whole)} in all"
        self.console.print(f"sweep {e.sweep_id}: {counts}; {took}", highlight=False)
        for path in e.files:
            plain(self.console, f"  {path}")
        done = [t["run_id"] for t in e.summary["trials"] if t["status"] == "completed"]
        if done and not e.trial_figures:
            where = f" --runs-dir {shlex.quote(str(self.runs_dir))}" if self.runs_dir else ""
            plain(self.console, f"each trial is a run (its id in summary.csv); its figures are "
                                f"drawn on demand: mlptrain plot {done[-1]}{where}")


def summary_table(summary: dict[str, Any], console: Console) -> Table:
    """Mean +- std of the test accuracy (a regression's: test R^2) per grid point; where that
    does not fit, the axes under their last names (hidden, not model.hidden), then `test acc`
    for `test accuracy`."""
    groups = summary["groups"]
    point_axes = list(groups[0]["point"]) if groups else []
    regression = bool(groups) and "test_r2" in groups[0]["mean"]
    key, shown = ("test_r2", r2) if regression else ("test_accuracy", pct)
    names = ("test R^2",) * 3 if regression else ("test accuracy", "test accuracy", "test acc")

    def layout(headers: list[str], accuracy: str) -> Table:
        table = Table(title=f"sweep {summary['sweep_id']}", title_justify="left")
        for header in (*headers, "params", "n", accuracy, "std", "time/trial"):
            table.add_column(header, justify="right", no_wrap=True)
        for g in groups:
            mean, std = g["mean"], g["std"]
            params = "-" if g["parameters"] is None else f"{g['parameters']:,}"
            table.add_row(*(_value(g["point"][a]) for a in point_axes), params, str(g["n"]),
                          shown(mean[key]), shown(std[key]),
                          secs(mean["seconds"]))
        return table

    return first_that_fits(console, (
        layout(_axis_names(point_axes, short), accuracy)
        for short, accuracy in zip((False, True, True), names)))


def trials_table(spec: SweepSpec, console: Console, rows: int | None = None) -> Table:
    """The trials a sweep would run (for --dry-run): the first `rows` of them (None: all) and
    how many there are, only those shown built; the axes as in summary_table, and long run
    names folded onto more lines."""
    keys = [a.key for a in spec.axes]
    sampled = f", {spec.samples:,} sampled" if spec.samples else ""
    shown = spec.first(spec.size if rows is None else rows)
    more = f" (the first {len(shown):,} shown)" if len(shown) < spec.size else ""

    def layout(headers: list[str]) -> Table:
        table = Table(title=f"sweep {spec.sweep_id}: {plural(spec.size, 'trial')} of a "
                            f"{spec.grid_size:,}-point grid{sampled}{more}", title_justify="left")
        for key, header in zip(("#", *keys, "run name"), ("#", *headers, "run name")):
            table.add_column(header, justify="left" if key in ("run name", CAPACITY_AXIS)
                             else "right", no_wrap=key != "run name", overflow="fold")
        for t in shown:
            table.add_row(str(t.index), *(_value(t.point[k]) for k in keys), t.name)
        return table

    return first_that_fits(console, (layout(_axis_names(keys, short))
                                     for short in (False, True)))


def _axis_names(keys: list[str], short: bool) -> list[str]:
    """The axes' keys, or (short) the last part of each that no other axis shares, as the
    trials' names spell them (hidden, seed; but train.lr and optimizer.lr stay whole)."""
    if not short:
        return keys
    last = [key.rsplit(".", 1)[-1] for key in keys]
    return [name if last.count(name) == 1 else key for key, name in zip(keys, last)]


def grouping_text(groups: list, alone: list) -> str:
    """How the trials would train when grouped (for --dry-run): the groups and the rest."""
    lines = [f"grouped: {plural(len(groups), 'group')} of "
             f"{', '.join(str(len(g)) for g in groups)} trials, each one batched model"
             if groups else "grouped: none"]
    for i, group in enumerate(groups, 1):
        lines.append(f"  group {i}: trials {', '.join(str(t.index) for t in group)}")
    if alone:
        from mlptrain.sweep.grouping import group_blockers

        inside = ["a checkpoint inside an epoch"] if any(
            t.resumes_inside_an_epoch for t in alone) else []
        reasons = sorted({r for t in alone for r in group_blockers(t.config)}) + inside \
            or ["no partner"]
        lines.append(f"alone: trials {', '.join(str(t.index) for t in alone)} "
                     f"({', '.join(reasons)})")
    return "\n".join(lines)


def _score(e: TrialProgress) -> str:
    """A trial's running metric: `acc 97.3%` (one decimal, as a bar has little room)."""
    if e.metric == "accuracy":
        return f"acc {100 * e.score:.1f}%"
    short, _, shown = METRICS_SHOWN[e.metric]
    return f"{short} {shown(e.score)}"
