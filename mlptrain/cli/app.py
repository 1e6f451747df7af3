"""The command-line app: every command is registered here, and nowhere else.

Each command lives in its own module as a plain function (a thin shell over one library call);
this module only names them. Nothing outside `mlptrain.cli` imports the CLI.
Exit codes: 0 success, 1 an error the tool explains, 2 a usage error, 130 interrupted.
"""

from __future__ import annotations

import typer

import mlptrain
from mlptrain.cli import config as config_cmd
from mlptrain.cli import evaluate, fit, gradcheck, plot, predict, runs, sweep
from mlptrain.cli.common import EXIT_CODES_HELP, out
from mlptrain.cli.shell import Command, Group, reflow

app = typer.Typer(
    name="mlptrain",
    cls=Group,
    help="Train multilayer perceptrons whose every line of math is written by hand.\n\n"
         + EXIT_CODES_HELP,
    no_args_is_help=True,
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


def command(group: typer.Typer, function, name: str | None = None, **options) -> None:
    """Registers one command, built with the shell's Command class (plain help and errors)."""
    options.setdefault("help", reflow(function.__doc__))
    group.command(name, cls=Command, epilog=EXIT_CODES_HELP, **options)(function)


command(app, fit.fit)
command(app, fit.fit, "train", hidden=True)  # what other tools call it: the same command
command(app, evaluate.eval_, "eval")
command(app, predict.predict)
command(app, plot.plot)
command(app, gradcheck.gradcheck)
command(app, sweep.sweep)

config_app = typer.Typer(cls=Group, help="Work with config files without training.",
                         no_args_is_help=True)
command(config_app, config_cmd.config_check, "check")
command(config_app, config_cmd.config_init, "init")
app.add_typer(config_app, name="config")

runs_app = typer.Typer(cls=Group, help="List, show, compare and remove runs.",
                       epilog=EXIT_CODES_HELP)
runs_app.callback(invoke_without_command=True)(runs.runs)
command(runs_app, runs.runs, "ls", help="List runs (the same as `mlptrain runs`).")
command(runs_app, runs.show, "show")
command(runs_app, runs.compare, "compare")
command(runs_app, runs.rm, "rm")
app.add_typer(runs_app, name="runs")


def main() -> None:
    app()
