"""Renders the library's events for a person: rich progress on a terminal, plain lines elsewhere."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from rich.console import Console, Group, RenderableType
from rich.constrain import Constrain
from rich.filesize import decimal
from rich.markup import escape
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column, Table
from rich.text import Text

from mlptrain.cli.common import METRICS_SHOWN, blas_threads, num, pct, plain, r2, real, test_scores
from mlptrain.cli.epochs import HISTORY, EpochRows, PlainLog
from mlptrain.data.mnist import DownloadProgress
from mlptrain.experiment import RunFinished, RunStarted
from mlptrain.backend.events import KernelsCompiled, KernelsCompiling, ThreadsChosen
from mlptrain.loop import EarlyStopped, EpochEnded, EpochStarted, StepsDone
from mlptrain.text import plural

# The terminal echoes ^C where the cursor is, after the live display's last line. A line that
# fills the width leaves the cursor in the last column, so the echo wraps onto a new line and
# rich, which moves up as many lines as it drew, erases one too few: the top bar stays on the
# screen twice. Drawing a few columns short of the width leaves room for the echo.
ECHO_ROOM = 3
MIN_BAR = 10  # columns: a row's free text shows only where the bar keeps at least this
REDRAWS = 10  # a second, at most


class EtaColumn(ProgressColumn):
    """`eta 0:01:23`: the time left at this sitting's pace so far (done since the task's `since`
    field, over its elapsed time). rich's own estimate forgets samples older than 30 s, so it
    shows -:--:-- after the first epoch and whenever an epoch takes longer."""

    def render(self, task: Task) -> Text:
        done = task.completed - task.fields.get("since", 0)
        if task.total is None or done <= 0 or not task.elapsed:
            return Text("eta -:--:--", style="progress.remaining")
        minutes, seconds = divmod(int(task.elapsed * (task.total - task.completed) / done), 60)
        hours, minutes = divmod(minutes, 60)
        return Text(f"eta {hours:d}:{minutes:02d}:{seconds:02d}", style="progress.remaining")


class InfoColumn(ProgressColumn):
    """A task's free text, its `info` field: a tuple of parts, of which the first `shown` are
    drawn (LiveProgress decides how many fit), each whole: they hold numbers."""

    shown = 0

    def render(self, task: Task) -> Text:
        return Text(" ".join(task.fields["info"][:self.shown]), no_wrap=True)


class LiveProgress(Progress):
    """rich's Progress laid out for 80 columns and up: each row has its description (long ones
    cut with an ellipsis), bar, count, elapsed time and ETA, then as many of its `info` parts
    as fit whole beside a bar of MIN_BAR. `above` gives the lines drawn above the bars (a list
    replaced whole, never changed in place: the display redraws from another thread). Drawn
    ECHO_ROOM columns short of the terminal's width."""

    def __init__(self, console: Console, description_width: int, disable: bool = False,
                 above: Callable[[], list[str]] = list):
        self.screen, self.above = console, above  # set before Progress.__init__, which renders
        self.drawn = -math.inf  # when refresh() last drew
        self.info = InfoColumn(table_column=Column(no_wrap=True))
        super().__init__(
            TextColumn("{task.description}", table_column=Column(
                no_wrap=True, overflow="ellipsis", max_width=description_width)),
            BarColumn(bar_width=None, table_column=Column(ratio=1, max_width=40)),
            TextColumn("{task.fields[count]}", table_column=Column(no_wrap=True)),
            TimeElapsedColumn(), EtaColumn(), self.info,
            console=console, transient=False, expand=True, disable=disable,
            refresh_per_second=REDRAWS)

    def refresh(self) -> None:
        """Redraws, at most REDRAWS times a second. rich redraws on every add_task, which fit
        calls once an epoch: with epochs of milliseconds (XOR), drawing took about as long as
        training. The display's own thread redraws as often, and stopping it draws the last
        state."""
        now = time.monotonic()
        if now - self.drawn >= 1 / REDRAWS:
            self.drawn = now
            super().refresh()

    def get_renderable(self) -> RenderableType:
        width = max(20, self.screen.width - ECHO_ROOM)
        tasks = [task for task in self.tasks if task.visible]
        self.info.shown = max((len(task.fields["info"]) for task in tasks), default=0)
        while self.info.shown and self._row_width(tasks) > width:
            self.info.shown -= 1
        lines = [Text(line, no_wrap=True, overflow="ellipsis") for line in self.above()]
        return Constrain(Group(*lines, super().get_renderable()), width=width)

    def _row_width(self, tasks: list[Task]) -> int:
        """The width the rows need, with a bar of MIN_BAR (rich's grid: a space between columns)."""
        widths = []
        for column in self.columns:
            cells = [] if isinstance(column, BarColumn) else [column(task) for task in tasks]
            widest = max((Measurement.get(self.screen, self.screen.options, cell).maximum
                          for cell in cells), default=MIN_BAR)
            widths.append(min(widest, column.get_table_column().max_width or widest))
        return sum(widths) + len(widths) - 1


class FitRenderer:
    """Turns fit events into output. Use as a context manager around the fit call."""

    def __init__(self, console: Console, live: bool | None = None, quiet: bool = False):
        self.console, self.quiet = console, quiet
        self.live = console.is_terminal if live is None else live
        self.rows: EpochRows | None = None  # the epochs, from the first that ends
        self.log: PlainLog | None = None
        self.in_view: list[str] = []  # the live display's epoch rows
        self.progress = LiveProgress(console, description_width=10, disable=not self.live,
                                     above=lambda: self.in_view)
        self.epoch_task = self.batch_task = None
        self.download_tasks: dict[str, int] = {}

    @classmethod
    def for_options(cls, progress: str, quiet: bool, as_json: bool) -> FitRenderer:
        """progress auto|always|never, --quiet, --json: with --json, stdout holds the JSON
        alone, so anything for a person goes to stderr."""
        console = Console(stderr=as_json, force_terminal=True if progress == "always" else None)
        live = {"auto": None, "always": True, "never": False}[progress]
        return cls(console, live=False if quiet else live, quiet=quiet)

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def download(self, p: DownloadProgress) -> None:
        if p.done_bytes == 0:  # the file's name: at 80 columns its bar has no room for it
            size = f" ({p.total_bytes:,} bytes)" if p.total_bytes else ""
            plain(self.console, f"downloading {p.file}{size}", wrap=True)
        if not self.live:
            return
        task = self.download_tasks.get(p.file)
        if task is None:
            task = self.progress.add_task("download", total=p.total_bytes, info=(p.file,),
                                          count="")
            self.download_tasks[p.file] = task
        total = f"/{decimal(p.total_bytes)}" if p.total_bytes else ""
        self.progress.update(task, completed=p.done_bytes, count=f"{decimal(p.done_bytes)}{total}")

    def __call__(self, event) -> None:
        handler = getattr(self, f"_on_{type(event).__name__}", None)
        if handler and not (self.quiet and type(event).__name__ != "RunFinished"):
            handler(event)

    def _on_RunStarted(self, e: RunStarted) -> None:
        c = self.console
        c.print(f"[bold]run[/bold] {e.run_id}  ({e.device}, {e.dtype})")
        if e.train_path:
            c.print(f"  path: {e.train_path}", highlight=False)
        if e.resumed_at:
            epochs, steps = e.resumed_at
            c.print(f"  resuming after {plural(epochs, 'epoch')}" + (
                f" and {plural(steps, 'step')} of epoch {epochs + 1}" if steps else ""))
        for line in e.layers:
            c.print(f"  {line}")
        sizes = ", ".join(f"{k} {v:,}" for k, v in e.samples.items())
        c.print(f"  {e.parameters:,} parameters; samples: {sizes}")

    def _on_KernelsCompiling(self, e: KernelsCompiling) -> None:
        self.console.print(f"  compiling CUDA kernels (first use): {e.kernels} kernels ...",
                           highlight=False)

    def _on_KernelsCompiled(self, e: KernelsCompiled) -> None:
        self.console.print(f"  compiled {e.kernels} CUDA kernels in {e.seconds:.1f} s "
                           "(cached for later runs)", highlight=False)

    def _on_ThreadsChosen(self, e: ThreadsChosen) -> None:
        self.console.print(f"  BLAS threads: {blas_threads(e.record())}", highlight=False)

    def _on_EpochStarted(self, e: EpochStarted) -> None:
        if self.epoch_task is None:
            done = e.epoch - 1  # a resumed run starts part-way: its ETA counts from here
            self.epoch_task = self.progress.add_task("epochs", total=e.epochs, info=(),
                                                     completed=done, count=f"{done}/{e.epochs}",
                                                     since=done)
        if self.batch_task is not None:
            self.progress.remove_task(self.batch_task)
        self.batch_task = self.progress.add_task(f"epoch {e.epoch}", total=e.steps, info=(),
                                                 count=f"0/{e.steps}")

    def _on_StepsDone(self, e: StepsDone) -> None:
        short, _, shown = METRICS_SHOWN[e.metric]
        info = (f"loss {e.loss:.4f} {short} {shown(e.score)}",
                f"{e.samples_per_second:,.0f} samples/s")  # the second where there is room
        self.progress.update(self.batch_task, completed=e.step, info=info,
                             count=f"{e.step}/{e.steps}")
        # the epochs bar moves within the epoch too, so its ETA starts with the first steps
        self.progress.update(self.epoch_task, completed=e.epoch - 1 + e.step / e.steps)

    def _on_EpochEnded(self, e: EpochEnded) -> None:
        if self.rows is None:
            self.rows = EpochRows(e.epochs, e.metric)
            self.log = PlainLog(self.rows)
        metrics = {**e.metrics, "epoch": e.epoch}
        self.rows.add(metrics)
        self.progress.update(self.epoch_task, completed=e.epoch, count=f"{e.epoch}/{e.epochs}")
        if self.live:  # the last epochs and the best stay in view; the scrollback stays clean
            self.in_view = self.rows.in_view(max(1, min(HISTORY, self.console.height - 8)))
        else:
            self._print(self.log.ended(metrics))

    def _on_EarlyStopped(self, e: EarlyStopped) -> None:
        if not self.live:
            self._print(self.log.closing())
        self.console.print(f"early stopping after epoch {e.epoch}: validation loss has not "
                           f"improved since epoch {e.best_epoch}; keeping that epoch's weights")

    def _on_RunFinished(self, e: RunFinished) -> None:
        self.progress.stop()
        if self.log is not None and not self.live and not self.quiet:
            self._print(self.log.closing())
        s = e.summary
        if s["status"] != "completed":
            return  # the CLI says how to resume
        if self.quiet:
            plain(self.console, f"run {e.run_id}: completed, {test_scores(s)}; saved in {e.path}")
            return
        # otherwise the closing summary panel follows (cli/summary.py, finish_fit)

    def _print(self, lines: list[str]) -> None:
        for line in lines:
            plain(self.console, line)


MAX_CLASS_ROWS = 50  # eval's per-class rows: beyond, the classes with most samples (--json: all)


def eval_report(result: dict) -> Group:
    """eval: the overall scores, then precision, recall, F1 and support per class (a
    regression: loss, RMSE, MAE and R^2, in the target's units)."""
    scored = escape(result["data"]) if result["data"] else f"its {result['split']} split"
    head = (f"[bold]run {escape(result['run_id'])}[/bold] on {scored} "
            f"({plural(result['samples'], 'sample')})\n")
    if "rmse" in result:  # evaluate_run's answer for a regression
        return Group(head + f"loss {num(result['loss'])}  RMSE [bold]{real(result['rmse'])}"
                     f"[/bold]  MAE {real(result['mae'])}  R^2 [bold]{r2(result['r2'])}[/bold]")
    head += f"loss {num(result['loss'])}  accuracy [bold]{pct(result['accuracy'])}[/bold]\n"
    table = Table(show_edge=False, header_style="bold")
    for col in ("class", "precision", "recall", "F1", "support"):
        table.add_column(col, justify="right")
    report = result["classes"]
    rows = report["per_class"]
    if len(rows) > MAX_CLASS_ROWS:  # hundreds of classes: the best supported, and a count
        kept = {id(r) for r in sorted(rows, key=lambda r: -r["support"])[:MAX_CLASS_ROWS]}
        rows = [r for r in rows if id(r) in kept]
    for row in rows:
        table.add_row(escape(str(row.get("name", row["class"]))), *_prf(row))
    if len(rows) < len(report["per_class"]):
        table.add_row(f"({len(report['per_class']) - len(rows):,} more)", "", "", "", "",
                      style="dim")
    table.add_section()
    for label, key in (("macro avg", "macro_avg"), ("weighted avg", "weighted_avg")):
        table.add_row(label, *_prf(report[key]))
    return Group(head, table)


def _prf(row: dict) -> list[str]:
    return [pct(row["precision"]), pct(row["recall"]), pct(row["f1"]), f"{row['support']:,}"]


def plan_text(config, plan, runs_root) -> str:
    """fit --dry-run: the model, the data and what a run would do, as plain lines."""
    t, o = config.train, config.optimizer
    lines = [f"dry run of {config.source} (name {config.name!r}): nothing is trained or "
             "written",
             *(f"note: {note}" for note in plan.ignored),
             f"device {plan.device}, dtype {plan.dtype}",
             f"path: {plan.path}",
             f"data: {plan.dataset} from {plan.source or 'generated'}; samples "
             + ", ".join(f"{k} {v:,}" for k, v in plan.samples.items())
             + ("; features standardized by the train split's mean and std"
                if plan.standardized else ""),
             f"  task: {plan.task}" + (", one real-valued target" if plan.task == "regression"
                                       else f", {plural(len(plan.classes), 'class', 'classes')} "
                                            f"({_listed(plan.classes)})"),
             *(f"  {note}" for note in plan.notes),
             "model:", *(f"  {line}" for line in plan.layers),
             f"  {plan.parameters:,} parameters",
             f"plan: {plural(plan.epochs, 'epoch')} x {plural(plan.steps_per_epoch, 'step')} "
             f"of batch "
             f"{min(t.batch_size, plan.samples['train'])} = "
             f"{plural(plan.epochs * plan.steps_per_epoch, 'step')}",
             f"  optimizer {o.name}, lr {o.lr:g}, schedule {config.schedule.name}"
             + (f", early stopping after {plural(t.patience, 'epoch')} without gain" if t.patience
                else ""),
             "  step: " + (", ".join(plan.aids) if plan.aids else "plain (no training aids)"),
             "  checkpoint " + (f"every {plural(plan.checkpoint_every, 'step')} and " if
                                plan.checkpoint_every else "") + _epoch_ends(t.checkpoint_epochs),
             f"  run directory: a new one under {runs_root}"]
    return "\n".join(lines)


def _listed(names: list[str], shown: int = 10) -> str:
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")


def _epoch_ends(every: int) -> str:
    if not every:
        return "at epoch ends, at most one a second, and at the last"
    return "at every epoch end" if every == 1 else \
        f"at the end of every {every} epochs and of the last"
