"""Renders the library's events for a person: rich progress on a terminal, plain lines elsewhere."""

from __future__ import annotations

from rich.console import Console
from rich.filesize import decimal
from rich.progress import (BarColumn, Progress, TaskProgressColumn,
                           TextColumn, TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table

from mlptrain.data.mnist import DownloadProgress
from mlptrain.experiment import RunFinished, RunStarted
from mlptrain.train import EarlyStopped, EpochEnded, EpochStarted, StepsDone


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _num(x) -> str:
    return "-" if x is None else f"{x:.4f}"


class FitRenderer:
    """Turns fit events into output. Use as a context manager around the fit call."""

    def __init__(self, console: Console):
        self.console = console
        self.live = console.is_terminal
        self.progress = Progress(
            TextColumn("{task.description:>9}"), BarColumn(), TextColumn("{task.fields[count]}"),
            TaskProgressColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            console=console, transient=False, disable=not self.live)
        self.epoch_task = self.batch_task = None
        self.download_tasks: dict[str, int] = {}

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def download(self, p: DownloadProgress) -> None:
        if not self.live:
            if p.done_bytes == 0:
                size = f" ({p.total_bytes:,} bytes)" if p.total_bytes else ""
                self.console.print(f"downloading {p.file}{size}", highlight=False)
            return
        task = self.download_tasks.get(p.file)
        if task is None:
            task = self.progress.add_task("download", total=p.total_bytes, info=p.file, count="")
            self.download_tasks[p.file] = task
        total = f"/{decimal(p.total_bytes)}" if p.total_bytes else ""
        self.progress.update(task, completed=p.done_bytes, count=f"{decimal(p.done_bytes)}{total}")

    def __call__(self, event) -> None:
        handler = getattr(self, f"_on_{type(event).__name__}", None)
        if handler:
            handler(event)

    def _on_RunStarted(self, e: RunStarted) -> None:
        c = self.console
        c.print(f"[bold]run[/bold] {e.run_id}  ({e.device}, {e.dtype})")
        for line in e.layers:
            c.print(f"  {line}")
        sizes = ", ".join(f"{k} {v:,}" for k, v in e.samples.items())
        c.print(f"  {e.parameters:,} parameters; samples: {sizes}")

    def _on_EpochStarted(self, e: EpochStarted) -> None:
        if self.epoch_task is None:
            self.epoch_task = self.progress.add_task("epochs", total=e.epochs, info="",
                                                     count=f"0/{e.epochs}")
        if self.batch_task is not None:
            self.progress.remove_task(self.batch_task)
        self.batch_task = self.progress.add_task(f"epoch {e.epoch}", total=e.steps, info="",
                                                 count=f"0/{e.steps}")

    def _on_StepsDone(self, e: StepsDone) -> None:
        info = (f"loss {e.loss:.4f} acc {100 * e.accuracy:.2f}% "
                f"{e.samples_per_second:,.0f} samples/s")
        self.progress.update(self.batch_task, completed=e.step, info=info,
                             count=f"{e.step}/{e.steps}")

    def _on_EpochEnded(self, e: EpochEnded) -> None:
        m = e.metrics
        line = (f"epoch {e.epoch}/{e.epochs}  train loss {m['train_loss']:.4f} "
                f"acc {_pct(m['train_accuracy'])}  val loss {_num(m.get('val_loss'))} "
                f"acc {_pct(m.get('val_accuracy'))}  lr {m['lr']:.4g}  {m['seconds']:.2f}s")
        self.progress.update(self.epoch_task, completed=e.epoch, info=line.split("  ", 1)[1],
                             count=f"{e.epoch}/{e.epochs}")
        if not self.live:
            self.console.print(line, highlight=False, soft_wrap=True)

    def _on_EarlyStopped(self, e: EarlyStopped) -> None:
        self.console.print(f"early stopping after epoch {e.epoch}: validation loss has not "
                           f"improved since epoch {e.best_epoch}; keeping that epoch's weights")

    def _on_RunFinished(self, e: RunFinished) -> None:
        self.progress.stop()  # the closing summary panel follows (cli/summary.py, finish_fit)


def eval_table(result: dict) -> Table:
    table = Table(title=f"run {result['run_id']}", title_justify="left", min_width=60)
    for col in ("split", "loss", "accuracy", "samples"):
        table.add_column(col)
    table.add_row(result["split"], _num(result["loss"]), _pct(result["accuracy"]),
                  f"{result['samples']:,}")
    return table
