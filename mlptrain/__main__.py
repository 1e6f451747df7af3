"""`python -m mlptrain` runs the command-line tool."""

from mlptrain.cli import main

main()
