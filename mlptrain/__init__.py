"""mlptrain: multilayer perceptrons derived and written by hand, trained from the command line."""

__version__ = "0.1.0"
