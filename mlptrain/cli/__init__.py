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
    finally:
        _forget_escaped_interrupts()


def _forget_escaped_interrupts() -> None:
    """The exit code chosen above is the one the process ends with. A KeyboardInterrupt (Ctrl-C,
    a sweep's SIGTERM) that escaped an `exec` of source text on its way to a handler here
    (scipy's array-API shim imports through one, dataclasses build methods through one) leaves
    CPython's mark "ended by an unhandled Ctrl-C" set, caught or not, and the interpreter then
    ends itself by SIGINT (exit -2) instead. Each exec of source text clears that mark."""
    exec("pass")


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
