"""The command-line app: every command is registered here, and nowhere else.

Each command lives in its own module as a plain function (a thin shell over one library call);
this module only names them. Nothing outside `mlptrain.cli` imports the CLI.
Exit codes: 0 success, 1 an error the tool explains, 2 a usage error, 130 interrupted.
"""

from __future__ import annotations

import typer
from rich.markup import escape

import mlptrain
from mlptrain.cli import config as config_cmd
from mlptrain.cli import ensemble, evaluate, export, fit, gradcheck, plot, predict, runs, sweep
from mlptrain.cli.common import EXIT_CODES_HELP, EXIT_ERROR, EXIT_INTERRUPTED, err, out
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
command(app, ensemble.ensemble)
command(app, predict.predict)
command(app, plot.plot)
command(app, gradcheck.gradcheck)
command(app, export.export)
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
    try:
        app()
    except SystemExit as exc:
        if _silent_interrupt(exc):  # Ctrl-C no command caught: say so, as the others do
            err.print("interrupted", highlight=False)
        raise
    except OSError as exc:  # the last resort: an OSError no command turned into an error
        where = f" {exc.filename}:" if exc.filename else ""
        err.print(f"[bold red]error:[/bold red]{escape(where)} {escape(exc.strerror or str(exc))}"
                  f" ({type(exc).__name__}); nothing after it was done.", highlight=False,
                  soft_wrap=True)
        raise SystemExit(EXIT_ERROR) from None


def _silent_interrupt(exc: SystemExit) -> bool:
    """Typer turns a KeyboardInterrupt that escapes a command into exit code 130 without a
    word (raise Exit(130) from the interrupt); tell that apart from our own exits."""
    exit_ = exc.__context__
    return exc.code == EXIT_INTERRUPTED and exit_ is not None \
        and isinstance(exit_.__cause__, KeyboardInterrupt)
