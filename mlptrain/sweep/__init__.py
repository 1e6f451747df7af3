"""Sweeps: a grid over config keys, each point an ordinary run, run side by side, summarized.

    spec = load_sweep("configs/mnist-capacity.toml", grid=["train.seed=0,1"])
    run_sweep(spec, RunStore().root, LocalExecutor(workers=2), on_event)

grid.py expands and validates the grid; trial.py is what a worker runs; executors.py runs trials
in this process or in local processes, cluster.py on Dask; store.py keeps the sweep directory;
summary.py computes per-point statistics; runner.py ties them together.
"""

from mlptrain.sweep.cluster import DaskExecutor
from mlptrain.sweep.executors import InlineExecutor, LocalExecutor, SweepError, available_cores
from mlptrain.sweep.grid import Axis, SweepSpec, Trial, load_sweep, parse_grid_option
from mlptrain.sweep.runner import SweepFinished, SweepInterrupted, SweepStarted, run_sweep
from mlptrain.sweep.trial import TrialFinished, TrialProgress, TrialStarted, TrialTask

__all__ = ["Axis", "DaskExecutor", "InlineExecutor", "LocalExecutor", "SweepError",
           "SweepFinished", "SweepInterrupted", "SweepSpec", "SweepStarted", "Trial",
           "TrialFinished", "TrialProgress", "TrialStarted", "TrialTask", "available_cores",
           "load_sweep", "parse_grid_option", "run_sweep"]
