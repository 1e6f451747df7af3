"""The command-line app: every command is registered here, and nowhere else.

Each command lives in its own module as a plain function (a thin shell over one library call);
this module only names them. Nothing outside `mlptrain.cli` imports the CLI.
Exit codes: 0 success, 1 an error the tool explains, 2 a usage error, 130 interrupted.
"""

from __future__ import annotations

import typer

import mlptrain
from mlptrain.cli import config as config_cmd
from mlptrain.cli import ensemble, evaluate, fit, gradcheck, plot, predict, runs, sweep
from mlptrain.cli.common import EXIT_CODES_HELP, out

app = typer.Typer(
    name="mlptrain",
    help="Train multilayer perceptrons whose every line of math is written by hand.\n\n"
         + EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        out.print(f"mlptrain {mlptrain.__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version,
                                       is_eager=True, help="Print the version and exit.")):
    """Train multilayer perceptrons whose every line of math is written by hand."""


app.command(epilog=EXIT_CODES_HELP)(fit.fit)
app.command("eval", epilog=EXIT_CODES_HELP)(evaluate.eval_)
app.command(epilog=EXIT_CODES_HELP)(ensemble.ensemble)
app.command(epilog=EXIT_CODES_HELP)(predict.predict)
app.command(epilog=EXIT_CODES_HELP)(plot.plot)
app.command(epilog=EXIT_CODES_HELP)(gradcheck.gradcheck)
app.command()(sweep.sweep)

config_app = typer.Typer(help="Work with config files without training.", no_args_is_help=True)
config_app.command("check", epilog=EXIT_CODES_HELP)(config_cmd.config_check)
app.add_typer(config_app, name="config")

runs_app = typer.Typer(help="List, show, compare and remove runs.", epilog=EXIT_CODES_HELP)
runs_app.callback(invoke_without_command=True)(runs.runs)
runs_app.command("show", epilog=EXIT_CODES_HELP)(runs.show)
runs_app.command("compare", epilog=EXIT_CODES_HELP)(runs.compare)
runs_app.command("rm", epilog=EXIT_CODES_HELP)(runs.rm)
app.add_typer(runs_app, name="runs")


def main() -> None:
    app()
