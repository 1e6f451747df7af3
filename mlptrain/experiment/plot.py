"""Every figure of one saved run, from its files: metrics, summary, config and weights.

The run's data is rebuilt from its resolved config exactly as `eval` does (prepare_run),
so the figures describe the same test set the run scored, and plotting never touches training.
A fit that has just finished passes what it prepared instead, so the data is not read twice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from mlptrain.errors import MlptrainError, RunStoreError
from mlptrain.experiment.setup import Prepared, prepare_run
from mlptrain.reports import arrays, figures
from mlptrain.reports.style import check_format, save_figure, symmetric_limit
from mlptrain.runs import Run
from mlptrain.runs.store import is_run_dir

MAX_UNITS = 64  # hidden units drawn in the weight grid and the activation heatmap
CLIP_PERCENTILE = 99.5  # the weight colour scale ends at this percentile of |w|: more contrast
MAX_MISCLASSIFIED = 32  # test images in the grid of mistakes
MAX_POINTS = 2000  # data points drawn over a decision boundary
# classes up to which a figure with a row (or cell) per class is drawn: a confusion matrix of
# hundreds of classes (a regression target read as labels) took minutes to draw a 21,000-pixel
# image nobody can read
MAX_CLASSES = 50

FILE_NAMES = {
    "curves": "curves",
    "boundary": "decision_boundary",
    "weights": "first_layer_weights",
    "activations": "mean_activation",
    "confusion": "confusion_matrix",
    "mistakes": "misclassified",
    "predictions": "predictions",  # a regression's: predicted against true, and residuals
}


@dataclass
class Plots:
    """What `plot_run` wrote, and what it could not draw and why."""

    files: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    omitted: list[str] = field(default_factory=list)  # skipped figures a run of its kind gets
    # elsewhere (too many classes to draw): worth a note wherever the figures are listed
    figures: dict[str, Figure] = field(default_factory=dict)  # key of FILE_NAMES -> figure


@dataclass
class FiguresDrawn:
    """What a fit drew at its end ([report] plots = true); the CLI only shows it."""

    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""  # why drawing failed (the run itself is complete and saved)
    omitted: list[str] = field(default_factory=list)  # Plots.omitted

    def to_summary(self) -> dict:
        """The summary.json record: file names, seconds, the figures omitted and why, and the
        error if any."""
        record = {"files": [p.name for p in self.files], "seconds": round(self.seconds, 3)}
        if self.omitted:
            record["omitted"] = list(self.omitted)
        return {**record, "error": self.error} if self.error else record


def draw_fit_figures(run: Run, prepared: Prepared, fmt: str) -> FiguresDrawn:
    """A completed fit's figures, from the model and data it trained (weights already final);
    a drawing error is recorded, not raised: the run is complete whatever happens here."""
    start = time.perf_counter()
    try:
        drawn = plot_run(run, fmt=fmt, prepared=prepared)
    except MlptrainError as exc:
        return FiguresDrawn([], time.perf_counter() - start, str(exc))
    return FiguresDrawn(drawn.files, time.perf_counter() - start, omitted=drawn.omitted)


def draw_saved_run_figures(path: str, fmt: str) -> dict:
    """A completed run's figures drawn from its files on the CPU, recorded in its summary as a
    fit records them; returns that record. For a process of its own (picklable arguments):
    a group's members are drawn side by side (experiment/group_fit.py)."""
    run = Run(Path(path))
    start = time.perf_counter()
    try:
        drawn = draw_fit_figures(run, prepare_run(run, device="cpu"), fmt)
    except MlptrainError as exc:
        drawn = FiguresDrawn([], time.perf_counter() - start, str(exc))
    summary = run.read_summary()
    summary["figures"] = drawn.to_summary()
    run.write_summary(summary)
    return summary["figures"]


def plot_saved_run(run: Run, out_dir: Path | None = None, fmt: str = "png") -> Plots:
    """`mlptrain plot RUN`: the run's figures (plot_run); drawn into a completed run's own
    folder, they are recorded in its summary as a fit records those it draws, so a run whose
    fit drew none ([report] plots = false, a sweep's trials by default) then lists them."""
    start = time.perf_counter()
    drawn = plot_run(run, out_dir, fmt)
    summary = run.read_summary()
    into_run = out_dir is None or Path(out_dir).resolve() == run.path.resolve()
    if into_run and summary.get("status") == "completed":  # never a summary still being written
        record = FiguresDrawn(drawn.files, time.perf_counter() - start,
                              omitted=drawn.omitted).to_summary()
        earlier = (summary.get("figures") or {}).get("files", [])  # another format's, say
        record["files"] = list(dict.fromkeys(
            [name for name in earlier if (run.path / name).is_file()] + record["files"]))
        summary["figures"] = record
        run.write_summary(summary)
    return drawn


def plot_run(run: Run, out_dir: Path | None = None, fmt: str = "png",
             prepared: Prepared | None = None) -> Plots:
    """Draws the run's figures into out_dir (default: the run directory). `prepared`: the
    model (holding the run's final weights) and data of a fit that just ended; else both are
    rebuilt from the run's files."""
    check_format(fmt)
    out_dir = Path(out_dir) if out_dir is not None else run.path
    if is_run_dir(out_dir) and out_dir.resolve() != run.path.resolve():
        raise RunStoreError(f"--out {out_dir} is the folder of run {out_dir.resolve().name}, "
                            "whose figures these would replace; choose another folder.")
    summary, result = run.read_summary(), Plots()

    def save(key: str, fig: Figure) -> None:
        result.files.append(save_figure(fig, out_dir / f"{FILE_NAMES[key]}.{fmt}"))
        result.figures[key] = fig  # kept for callers (and tests) that inspect what was drawn

    title = f"{summary.get('name', run.run_id)}: {run.run_id}"
    save("curves", figures.draw_curves(arrays.curves(run.read_metrics(), summary), title))
    if not run.has("weights.npz"):
        status = summary.get("status", "unknown")
        result.skipped.append(f"the model's figures: the run has no weights.npz (status {status})")
        return result
    if prepared is None:
        prepared = prepare_run(run)
    config, model, data = prepared.config, prepared.model, prepared.dataset
    X_test, y_test = data.split("test")
    if not len(y_test):  # a table of a few rows: test_fraction of it held out nothing
        result.skipped.append("the figures of test samples: the run has no test samples")
        return result
    if model.loss.task == "regression":  # no classes: no confusion, boundary or image figures
        _regression_figures(model, X_test, y_test, config.train.eval_batch_size, title, save,
                            result)
        return result
    out = arrays.run_model(model, X_test, config.train.eval_batch_size)
    if data.n_classes <= MAX_CLASSES:
        save("confusion", figures.draw_confusion(
            arrays.confusion_matrix(y_test, out.predictions, data.n_classes), title))
    else:
        result.omitted.append(_too_many_classes("the confusion matrix", data.n_classes))
    if data.n_features == 2:
        X, y = data.split("train")
        grid = arrays.probability_grid(model, X, batch_size=config.train.eval_batch_size)
        save("boundary", figures.draw_decision_boundary(grid, X[:MAX_POINTS], y[:MAX_POINTS],
                                                        f"{title}\ntraining data; black line: P(class 1) = 0.5"))
    if len(data.input_shape) == 2:
        _image_figures(model, data, out, title, save, result)
    else:
        result.skipped.append("weight images, activations per class and misclassified images: "
                              "the inputs are not images")
    return result


def _regression_figures(model, X_test, y_test, batch: int, title: str, save,
                        result: Plots) -> None:
    """The test set's predictions against its true values, and the residuals."""
    from mlptrain.experiment.evaluate import regression_scores
    from mlptrain.experiment.predict import probabilities

    predicted = probabilities(model, X_test, batch)[:, 0]
    r2 = regression_scores(y_test, predicted)["r2"]
    save("predictions", figures.draw_predictions(y_test, predicted, r2, title))
    result.skipped.append("confusion matrix, decision boundary and image figures: the target "
                          "is a quantity, not classes")


def _too_many_classes(figure: str, n_classes: int) -> str:
    return (f"{figure}: {n_classes} classes, more than the {MAX_CLASSES} a legible figure "
            "holds (`mlptrain eval RUN` lists every class)")


def _image_figures(model, data, out: arrays.Outputs, title: str, save, result: Plots) -> None:
    if len(model.layers) > 1:
        _hidden_unit_figures(model, data, out, title, save, result)
    else:
        result.skipped.append("weight images and activations per class: the model has no "
                              "hidden layer (model.hidden = [])")
    X_test, y_test = data.split("test")
    wrong = arrays.misclassified(y_test, out.predictions, MAX_MISCLASSIFIED)
    errors = int((y_test != out.predictions).sum())
    confidence = out.probabilities[wrong, out.predictions[wrong]]
    images = X_test[wrong].reshape(-1, *data.input_shape)
    save("mistakes", figures.draw_misclassified(images, y_test[wrong], out.predictions[wrong],
                                                np.asarray(confidence), errors, len(y_test),
                                                title))


def _hidden_unit_figures(model, data, out: arrays.Outputs, title: str, save,
                         result: Plots) -> None:
    """The first hidden layer's input weights as images, and its mean activation per class."""
    y_test = data.targets("test")
    weights = model.state_dict()["layers.0.weight"]  # (H, h*w)
    units = arrays.strongest_units(weights, MAX_UNITS)
    if len(units) == len(weights):
        which = f"all {len(units)} hidden units"
    else:  # the units that learned most stand out from the (random) rest
        which = f"{len(units)} of {len(weights)} hidden units, largest L2 norm first"
    mosaic = arrays.weight_grid(weights[units], data.input_shape, arrays.grid_columns(len(units)))
    limit = symmetric_limit(weights[units], CLIP_PERCENTILE)
    save("weights", figures.draw_weight_grid(mosaic, limit, which, title))
    if data.n_classes > MAX_CLASSES:
        result.omitted.append(_too_many_classes("the mean activations per class",
                                                data.n_classes))
        return
    mean = arrays.mean_activation_per_class(out.hidden, y_test, data.n_classes)  # (C, H)
    save("activations", figures.draw_activation_heatmap(mean[:, units], units, which, title))
