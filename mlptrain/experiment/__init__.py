"""What the commands do, as library calls: setup, fit, evaluate, predict, gradcheck.

Nothing here prints: a call returns its result, or reports events to the callback it is given,
and raises the project's own errors.
"""

from mlptrain.experiment.evaluate import evaluate_run
from mlptrain.experiment.fit import DrawingFigures, RunStarted, fit_experiment, resume_experiment
from mlptrain.experiment.training import RunFinished, final_metrics
from mlptrain.experiment.setup import SPLITS, Plan, Prepared, plan, prepare

__all__ = ["SPLITS", "DrawingFigures", "Plan", "Prepared", "RunFinished", "RunStarted", "evaluate_run",
           "final_metrics", "fit_experiment", "plan", "prepare", "resume_experiment"]
