"""What every command shares: the consoles, the runs-dir option, errors turned into exit codes.

Exit codes: 0 success, 1 an error the tool explains, 2 a usage error, 130 interrupted (Ctrl-C,
or SIGTERM: a scheduler's preemption stops as cleanly). Results go to stdout, everything else
(errors, progress next to --json) to stderr. rich honours NO_COLOR (and FORCE_COLOR) from the
environment.
"""

from __future__ import annotations

import json
import math
import os
import signal
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from mlptrain.errors import MlptrainError
from mlptrain.runs import RUNS_DIR_ENV, Run, RunStore
from mlptrain.runs.query import require_weights
from mlptrain.runs.schema import run_metric

EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130

EXIT_CODES_HELP = ("Exit codes: 0 success, 1 an error the tool explains (on stderr), "
                   "2 a usage error, 130 interrupted (Ctrl-C or SIGTERM).")

out = Console()
err = Console(stderr=True)


def pct(x) -> str:
    """An accuracy for people: 0.98321 -> '98.32%', None -> '-'."""
    return "-" if x is None else f"{100 * x:.2f}%"


def real(x) -> str:
    """A value in a target's units (an RMSE): four significant digits, None -> '-'."""
    return "-" if x is None else f"{x:#.4g}".rstrip(".")  # 48.0 -> 48.00, as its neighbours


def r2(x) -> str:
    """A coefficient of determination: three decimals, None -> '-'."""
    return "-" if x is None else f"{x:.3f}"


# each metric a loss declares (nn's Loss.metric) as people read it: (short header, name,
# format); the epoch rows, the progress bars and the closing panel all show it from here
METRICS_SHOWN = {"accuracy": ("acc", "accuracy", pct), "rmse": ("rmse", "RMSE", real)}


def blas_threads(record: dict) -> str:
    """summary.json's blas_threads for a person: `1 (timed: 1 = 2.10 ms, 2 = 3.52 ms a step)`."""
    timed = ", ".join(f"{n} = {ms:.2f} ms" for n, ms in record.get("ms_per_step", {}).items())
    return f"{record['threads']} ({record['how']}" + (f": {timed} a step)" if timed else ")")


def test_scores(summary: dict) -> str:
    """A finished run's test scores in words: its test accuracy, or test RMSE and R^2."""
    final = summary.get("final") or {}
    if run_metric(summary) == "accuracy":
        return f"test accuracy {pct(final.get('test_accuracy'))}"
    return f"test RMSE {real(final.get('test_rmse'))}, R^2 {r2(final.get('test_r2'))}"


def secs(x) -> str:
    """A duration for people: 12.345 -> '12.3s', None -> '-'."""
    return "-" if x is None else f"{x:.1f}s"


def num(x) -> str:
    """A loss for people: four decimals, None -> '-'."""
    return "-" if x is None else f"{x:.4f}"


def wide() -> Console:
    """stdout for a wide table: a pipe or file gets whole lines instead of 80 columns, unless
    COLUMNS names a width."""
    return out if out.is_terminal or "COLUMNS" in os.environ else Console(width=200)


def a_path(text: str) -> Path:
    """A path option's value: `--runs-dir ""` (an unset shell variable) is a usage error, not
    the working directory that Path("") names, and a leading `~` is the home folder (as in
    data.path), where the shell leaves it (MLPTRAIN_RUNS_DIR=~/runs, --out=~/x.toml); every
    path option is read by this one parser."""
    text = str(text)  # (a Path, where a test's CliRunner passes one)
    if not text.strip():
        raise typer.BadParameter("is empty; give a path (an unset shell variable?).")
    return Path(text).expanduser()


RunsDir = typer.Option(None, "--runs-dir", metavar="DIR", envvar=RUNS_DIR_ENV, show_envvar=True,
                       parser=a_path,
                       help="Root folder of the run directories (default: ./runs).")


RUN_HELP = ("A run id, a unique prefix of one, the hash that ends one (77d460), a run name "
            "(its newest run), a run directory, or `latest`.")


def find_run(store: RunStore, ref: str, weights: bool = False) -> Run:
    """The run `ref` names; says on stderr when a name picked it (the newest of that name).
    With `weights`, a run that has none (interrupted, failed) is an error that says why."""
    run = store.find(ref)
    if run.found_as:
        err.print(escape(run.found_as), highlight=False, soft_wrap=True)
    if weights:
        require_weights(run)
    return run


def plain(console: Console, text: str, wrap: bool = False) -> None:
    """`text` printed as it is, never read as markup: a path or name of the user's may hold
    brackets (a runs folder named `[/x]` raised rich's MarkupError, one named `[bold]b` was
    shown as `b`). `wrap`: folded at the console's width, else one line whatever its length."""
    console.print(text, markup=False, highlight=False, soft_wrap=not wrap)


def json_text(value: Any) -> str:
    """`value` as strict JSON, the one way a command writes JSON: JSON has no NaN or Infinity
    (Python's json writes them, and strict parsers, jq among them, reject the line), so a
    non-finite number becomes null, as an unknown one is everywhere else in the output."""
    return json.dumps(_finite(value), allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def hush_numeric_warnings() -> None:
    """A diverging run overflows before the loop sees a non-finite loss and explains it in an
    error: numpy's warnings of it on stderr are noise (training itself runs under np.errstate;
    this covers the rest of the command, its evaluation and figures)."""
    warnings.filterwarnings("ignore", message="(overflow|invalid value|divide by zero)",
                            category=RuntimeWarning)


def fail(exc: MlptrainError) -> None:
    err.print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_ERROR)


def usage(message: str) -> None:
    """A usage error: exit 2, as click does for a bad option."""
    err.print(f"[bold red]usage error:[/bold red] {escape(message)} (see --help)",
              highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_USAGE)


@contextmanager
def sigterm_as_ctrl_c():
    """SIGTERM, what a scheduler sends to preempt a job, raises KeyboardInterrupt inside the
    block as Ctrl-C does: a sweep then marks its trials and runs interrupted, each keeping its
    checkpoint, and exits 130, where the signal's default would end it at once with its runs
    left `running`."""
    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupted() -> None:
    err.print("interrupted", highlight=False)
    raise typer.Exit(EXIT_INTERRUPTED)
