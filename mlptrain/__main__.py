"""`python -m mlptrain` runs the command-line tool."""

from mlptrain.cli import main

if __name__ == "__main__":  # not in worker processes that import this module (spawn)
    main()
