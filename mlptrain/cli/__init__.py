"""The command-line shell: thin commands over the library (see app.py). Nothing imports it.

`main` is the console script's entry point (and `python -m mlptrain`'s). It imports the app
itself, inside its guard: importing NumPy, Typer and the commands takes ~0.3 s, and a Ctrl-C in
that time must end like any other, with one line and exit code 130, not a traceback.
"""

import importlib
import os
import signal
import sys

EXIT_INTERRUPTED = 130  # as cli.common says; not imported from there: that is the slow part


def main() -> None:
    try:
        _load_app().main()
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # we are leaving: a second Ctrl-C too
        os.write(2, b"\ninterrupted\n")
        sys.exit(EXIT_INTERRUPTED)


def _load_app():
    """The app module. Importing it binds this package's `app` to the submodule; rebind it to
    the Typer app, which is what `mlptrain.cli.app` has always named."""
    module = importlib.import_module("mlptrain.cli.app")
    globals()["app"] = module.app
    return module


def __getattr__(name: str):
    """`from mlptrain.cli import app` (tests) imports the app on first use."""
    if name == "app":
        return _load_app().app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["app", "main"]
