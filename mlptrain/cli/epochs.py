"""fit's epoch lines: one aligned row per epoch under a header, and which rows to show.

A live display keeps the last HISTORY rows in view, plus the best epoch's when it is older. The
plain output (a pipe, a log) prints every epoch of a run of up to PLAIN_LINES epochs; of a longer
run, the first epoch, every k-th (k the smallest of 2, 5, 10, 20, 50, ... that keeps at most
PLAIN_LINES rows), the last, the best and any whose train loss rose: a 2,000-epoch run prints
every 10th epoch. The best epoch is the one of lowest validation loss (the one early
stopping keeps), or of lowest train loss without a validation split.
"""

from __future__ import annotations

import math
from collections import deque
from itertools import count
from typing import Any

from mlptrain.cli.common import METRICS_SHOWN, num
from mlptrain.experiment.diagnose import RISE_FACTOR

HISTORY = 10  # epoch rows a live display keeps above its bars
PLAIN_LINES = 200  # about as many epoch rows as a log gets, however many epochs
# (header, width) of the columns after the epoch's: a row and its marks fit 77 columns
# up to 999 epochs, and the numbers alone up to 99,999; "acc" is the loss's metric's header
COLUMNS = (("train loss", 10), ("acc", 7), ("val loss", 10), ("acc", 7), ("lr", 9),
           ("time", 7))
BEST, ROSE = "best", "loss up"  # the marks after a row


def stride(epochs: int, lines: int) -> int:
    """Every how many epochs a log prints a row: 1 for up to `lines` epochs, else the smallest
    of 2, 5, 10, 20, 50, 100, ... that prints at most `lines` (every 10th of 2,000)."""
    for decade in count():
        for k in (1, 2, 5):
            if epochs <= lines * k * 10 ** decade:
                return k * 10 ** decade
    raise AssertionError("unreachable")


class EpochRows:
    """The epochs a fit has ended, as text rows: the recent ones, the best, the marks."""

    def __init__(self, epochs: int, metric: str = "accuracy"):
        self.epochs, self.metric = epochs, metric  # metric: the one the loss declares
        short = METRICS_SHOWN[metric][0]
        self.columns = tuple((short if name == "acc" else name, width)
                             for name, width in COLUMNS)
        self.epoch_width = len(f"epoch {epochs}/{epochs}")
        self.recent: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self.best: dict[str, Any] | None = None
        self.first_loss: float | None = None  # of this sitting's first epoch

    def add(self, metrics: dict[str, Any]) -> None:
        """An epoch ended (metrics as the loop reports them, `epoch` included)."""
        self.recent.append(metrics)
        if self.first_loss is None:
            self.first_loss = metrics["train_loss"]
        if self.best is None or _score(metrics) < _score(self.best):
            self.best = metrics

    def header(self) -> str:
        return " ".join([f"{'epoch':<{self.epoch_width}}",
                         *(f"{name:>{width}}" for name, width in self.columns)])

    def row(self, m: dict[str, Any], mark_best: bool = True) -> str:
        """Epoch m's row; marked `best` if it is the best so far (and mark_best), `loss up`
        if its loss rose."""
        epoch = f"epoch {m['epoch']}/{self.epochs}"
        shown = METRICS_SHOWN[self.metric][2]
        cells = (num(m["train_loss"]), shown(m[f"train_{self.metric}"]), num(m.get("val_loss")),
                 shown(m.get(f"val_{self.metric}")), f"{m['lr']:.4g}", f"{m['seconds']:.2f}s")
        marks = [mark for mark, on in ((BEST, mark_best and m is self.best),
                                       (ROSE, self.rose(m))) if on]
        return " ".join([f"{epoch:<{self.epoch_width}}",
                         *(f"{cell:>{width}}" for cell, (_, width) in zip(cells, self.columns)),
                         *marks])

    def rose(self, m: dict[str, Any]) -> bool:
        """Whether the train loss rose above RISE_FACTOR times the first epoch's (the rule of
        the run's `diverged` warning), or is not finite."""
        loss = m["train_loss"]
        return not math.isfinite(loss) or loss > RISE_FACTOR * self.first_loss

    def in_view(self, lines: int = HISTORY) -> list[str]:
        """The live display's rows: the header, the best epoch's if it is older than the last
        `lines` epochs, then those."""
        recent = list(self.recent)[-lines:]
        older_best = [self.best] if self.best is not None and all(
            m is not self.best for m in recent) else []
        return [self.header(), *(self.row(m) for m in [*older_best, *recent])]


def _score(m: dict[str, Any]) -> float:
    """Lower is better: the validation loss, or the train loss without a validation split."""
    loss = m.get("val_loss")
    loss = m["train_loss"] if loss is None else loss
    return loss if math.isfinite(loss) else math.inf


class PlainLog:
    """Which rows the plain output prints, as epochs end: see the module's docstring."""

    def __init__(self, rows: EpochRows):
        self.rows = rows
        self.every = stride(rows.epochs, PLAIN_LINES)
        self.printed: list[dict[str, Any]] = []
        self.pending: dict[str, Any] | None = None  # the latest epoch, not yet printed

    def ended(self, m: dict[str, Any]) -> list[str]:
        """The lines to print now that epoch m ended (after EpochRows.add)."""
        lines = []
        if not self.printed:
            if self.every > 1:
                lines.append(f"(showing one epoch in {self.every}, and the first, last, best "
                             "and any whose loss rose)")
            lines.append(self.rows.header())
        self.pending = m
        last = m["epoch"] == self.rows.epochs
        if not self.printed or m["epoch"] % self.every == 0 or last or self.rows.rose(m):
            lines += self._row(m, final=last)
        return lines

    def closing(self) -> list[str]:
        """The lines to print when the run stops (its last epoch, early stopping, Ctrl-C): the
        last epoch, if it was not printed, then the best with its mark, unless it is the last
        row. A second call prints nothing."""
        lines = self._row(self.pending, final=True) if self.pending is not None else []
        best = self.rows.best
        if best is not None and (not self.printed or self.printed[-1] is not best):
            lines += self._row(best, final=True)
        return lines

    def _row(self, m: dict[str, Any], final: bool) -> list[str]:
        """m's row, marked best only once the run has stopped (a log's rows are not revised:
        `best so far` would mark most of them)."""
        self.printed.append(m)
        self.pending = None
        return [self.rows.row(m, mark_best=final)]
