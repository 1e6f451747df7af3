"""The command-line shell: thin commands over the library (see app.py). Nothing imports it."""

from mlptrain.cli.app import app, main

__all__ = ["app", "main"]
