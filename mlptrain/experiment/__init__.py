"""What the commands do, as library calls: setup, fit, evaluate, predict, gradcheck.

Nothing here prints: a call returns its result, or reports events to the callback it is given,
and raises the project's own errors.
"""

from mlptrain.experiment.evaluate import evaluate_run
from mlptrain.experiment.fit import (RunFinished, RunStarted, final_metrics, fit_experiment,
                                     resume_experiment)
from mlptrain.experiment.setup import SPLITS, Plan, Prepared, plan, prepare

__all__ = ["SPLITS", "Plan", "Prepared", "RunFinished", "RunStarted", "evaluate_run",
           "final_metrics", "fit_experiment", "plan", "prepare", "resume_experiment"]
