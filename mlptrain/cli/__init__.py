"""The command-line shell: thin commands over the library. Nothing imports this package.

Exit codes: 0 success, 1 an error the tool explains, 2 a usage error, 130 interrupted.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape

import mlptrain
from mlptrain.config import load_config
from mlptrain.errors import MlptrainError
from mlptrain.experiment import evaluate_run, fit_experiment
from mlptrain.runs import RUNS_DIR_ENV, RunStore

app = typer.Typer(
    name="mlptrain",
    help="Train multilayer perceptrons whose every line of math is written by hand.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

RunsDir = typer.Option(None, "--runs-dir", envvar=RUNS_DIR_ENV, show_envvar=True,
                       help="Root folder of the run directories (default: ./runs).")


def _fail(exc: MlptrainError) -> None:
    err.print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _interrupted() -> None:
    err.print("interrupted", highlight=False)
    raise typer.Exit(130)


def _version(value: bool) -> None:
    if value:
        out.print(f"mlptrain {mlptrain.__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version,
                                       is_eager=True, help="Print the version and exit.")):
    """Train multilayer perceptrons whose every line of math is written by hand."""


@app.command()
def fit(
    config: Path = typer.Argument(..., help="A TOML experiment config, e.g. configs/mnist.toml."),
    set_: Optional[List[str]] = typer.Option(
        None, "--set", "-s", metavar="SECTION.KEY=VALUE",
        help="Override one config key (repeatable), e.g. --set train.epochs=5."),
    runs_dir: Optional[Path] = RunsDir,
):
    """Train the model a config describes; writes runs/<run-id>/ (config, metrics, weights)."""
    from mlptrain.cli.render import FitRenderer
    from mlptrain.cli.summary import finish_fit

    # a diverging run overflows before the loop sees a NaN loss and explains it: no numpy noise
    warnings.filterwarnings("ignore", message="(overflow|invalid value)", category=RuntimeWarning)
    try:
        cfg = load_config(config, set_ or [])
        with FitRenderer(out) as renderer:
            finished = fit_experiment(cfg, RunStore(runs_dir), renderer, renderer.download)
        finish_fit(out, cfg, finished)  # plots, then the summary panel (cli/summary.py)
    except MlptrainError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        _interrupted()


@app.command("eval")
def eval_(
    run: str = typer.Argument("latest", help="A run id, a unique prefix of one, a run "
                                             "directory, or `latest`."),
    split: str = typer.Option("test", "--split", help="Which split to evaluate: test, val "
                                                      "or train."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    runs_dir: Optional[Path] = RunsDir,
):
    """Evaluate a saved run's weights on its test split (or --split val|train)."""
    from mlptrain.cli.render import eval_table

    try:
        result = evaluate_run(RunStore(runs_dir), run, split)
    except MlptrainError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        _interrupted()
    if as_json:
        print(json.dumps(result))
    else:
        out.print(eval_table(result))


from mlptrain.cli.plot import plot  # noqa: E402 - after app, _fail and out exist

app.command()(plot)


def main() -> None:
    app()
