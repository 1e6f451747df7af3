"""The figures draw the run's data: each figure's artists are read back and compared with the
run's files (metrics.jsonl, summary.json, weights.npz) or with a direct NumPy computation."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import AxesImage

from mlptrain.config import load_config
from mlptrain.experiment import evaluate_run, fit_experiment, prepare
from mlptrain.experiment import plot as run_plots
from mlptrain.reports import arrays
from mlptrain.experiment.plot import plot_run
from mlptrain.runs import Run, RunStore

from conftest import CONFIGS
from mosaic_panels import mosaic_panels

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _fit(store: RunStore, config: str, *overrides: str) -> Run:
    cfg = load_config(CONFIGS / config, [*overrides, "report.plots=false"])  # drawn by the tests
    return Run(fit_experiment(cfg, store).path)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> RunStore:
    return RunStore(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def xor_run(store) -> Run:
    return _fit(store, "xor.toml")


@pytest.fixture(scope="module")
def mnist_run(store) -> Run:
    return _fit(store, "mnist.toml", "data.limit=2000", "train.epochs=2", "model.hidden=16")


@pytest.fixture(scope="module")
def xor_plots(xor_run):
    return plot_run(xor_run)


@pytest.fixture(scope="module")
def mnist_plots(mnist_run):
    return plot_run(mnist_run)


def _image(fig) -> AxesImage:
    (image,) = [a for ax in fig.axes for a in ax.get_images()]
    return image


def _weights(run: Run) -> dict[str, np.ndarray]:
    return {k: v.astype(np.float64) for k, v in run.read_weights().items()}


def _test_split(run: Run):
    return prepare(load_config(run.path / "config.toml")).dataset.split("test")


# -- which files ----------------------------------------------------------------------------------


def test_xor_run_gets_curves_confusion_and_decision_boundary(xor_run, xor_plots):
    names = sorted(p.name for p in xor_plots.files)
    assert names == ["confusion_matrix.png", "curves.png", "decision_boundary.png"]
    assert all(p.parent == xor_run.path and p.read_bytes().startswith(PNG_MAGIC)
               for p in xor_plots.files)
    assert "not images" in xor_plots.skipped[0]


def test_mnist_run_gets_every_image_figure_and_no_boundary(mnist_run, mnist_plots):
    names = sorted(p.name for p in mnist_plots.files)
    assert names == ["confusion_matrix.png", "curves.png", "first_layer_weights.png",
                     "mean_activation.png", "misclassified.png"]
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in mnist_plots.files)
    assert mnist_plots.skipped == []


def test_svg_into_another_folder(xor_run, tmp_path):
    drawn = plot_run(xor_run, tmp_path / "figs", "svg")
    assert sorted(p.name for p in drawn.files) == ["confusion_matrix.svg", "curves.svg",
                                                   "decision_boundary.svg"]
    for path in drawn.files:
        assert path.parent == tmp_path / "figs" and "<svg" in path.read_text()[:500]


def test_a_run_without_weights_still_gets_its_curves(xor_run, tmp_path):
    copy = tmp_path / xor_run.run_id
    copy.mkdir()
    for name in ("config.toml", "metrics.jsonl", "summary.json"):
        (copy / name).write_bytes((xor_run.path / name).read_bytes())
    drawn = plot_run(Run(copy))
    assert [p.name for p in drawn.files] == ["curves.png"]
    assert "no weights.npz" in drawn.skipped[0]


# -- curves ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["xor", "mnist"])
def test_curves_plot_metrics_jsonl_and_the_final_test_score(which, request):
    run = request.getfixturevalue(f"{which}_run")
    fig = request.getfixturevalue(f"{which}_plots").figures["curves"]
    metrics, summary = run.read_metrics(), run.read_summary()
    epochs = [r["epoch"] for r in metrics]
    for ax, key in zip(fig.axes[:2], ("loss", "accuracy")):
        lines = {line.get_label(): line for line in ax.get_lines()}
        for split in ("train", "val"):
            assert list(lines[split].get_xdata()) == epochs
            assert list(lines[split].get_ydata()) == [r[f"{split}_{key}"] for r in metrics]
        (test,) = [line for label, line in lines.items() if label.startswith("test")]
        assert list(test.get_xdata()) == [epochs[-1]]
        assert list(test.get_ydata()) == [summary["final"][f"test_{key}"]]


def test_curves_mark_the_kept_epoch_after_early_stopping():
    metrics = [{"epoch": e, "train_loss": 1 / e, "train_accuracy": 0.5, "val_loss": v,
                "val_accuracy": 0.5} for e, v in zip((1, 2, 3), (0.5, 0.4, 0.6))]
    summary = {"final": {"test_loss": 0.41, "test_accuracy": 0.9}, "best_epoch": 2}
    c = arrays.curves(metrics, summary)
    assert c.test_epoch == 2 and c.test == {"loss": 0.41, "accuracy": 0.9}
    no_val = arrays.curves([{k: v for k, v in r.items() if "val" not in k} for r in metrics], {})
    assert list(no_val.loss) == ["train"] and no_val.test == {}


# -- confusion matrix -----------------------------------------------------------------------------


def test_confusion_matrix_counts_true_rows_predicted_columns():
    cm = arrays.confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


@pytest.mark.parametrize("which", ["xor", "mnist"])
def test_confusion_sums_to_the_test_set_and_its_trace_is_the_recorded_accuracy(
        which, request, store):
    run = request.getfixturevalue(f"{which}_run")
    fig = request.getfixturevalue(f"{which}_plots").figures["confusion"]
    _, y_test = _test_split(run)
    n = int(y_test.max()) + 1
    # the counts drawn in the cells, read back from the figure
    counts = np.array([int(t.get_text()) for t in fig.axes[0].texts]).reshape(n, n)
    assert counts.sum() == len(y_test)
    np.testing.assert_array_equal(counts.sum(axis=1), np.bincount(y_test, minlength=n))
    accuracy = np.trace(counts) / counts.sum()
    assert accuracy == run.read_summary()["final"]["test_accuracy"]
    assert accuracy == evaluate_run(store, run.run_id)["accuracy"]
    np.testing.assert_array_equal(_image(fig).get_array(), np.log1p(counts))


# -- decision boundary ----------------------------------------------------------------------------


def _xor_probability(w: dict[str, np.ndarray], points: np.ndarray) -> np.ndarray:
    """P(class 1) of the 2-4-1 tanh network, computed directly in float64."""
    hidden = np.tanh(points @ w["layers.0.weight"].T + w["layers.0.bias"])
    z = hidden @ w["layers.1.weight"].T + w["layers.1.bias"]
    return 1 / (1 + np.exp(-z[:, 0]))


def test_probability_grid_is_the_model_probability(xor_run):
    p = prepare(load_config(xor_run.path / "config.toml"))
    p.model.load_state_dict(xor_run.read_weights())
    X, _ = p.dataset.split("train")
    grid = arrays.probability_grid(p.model, X, steps=50)
    gx, gy = np.meshgrid(grid.xs, grid.ys)
    direct = _xor_probability(_weights(xor_run), np.stack([gx.ravel(), gy.ravel()], 1))
    np.testing.assert_allclose(grid.probabilities[..., 1].ravel(), direct, atol=1e-5)
    np.testing.assert_allclose(grid.probabilities.sum(axis=-1), 1, atol=1e-6)
    assert grid.xs[0] < X[:, 0].min() and grid.xs[-1] > X[:, 0].max()


def test_decision_boundary_contours_the_model_probability(xor_run, xor_plots):
    ax = xor_plots.figures["boundary"].axes[0]
    filled, line = [c for c in ax.collections if hasattr(c, "levels")]
    w = _weights(xor_run)
    # the filled levels span 0..1, and the surface filled is the model's P(class 1) on the grid
    assert filled.levels[0] == 0 and filled.levels[-1] == 1
    X, y = prepare(load_config(xor_run.path / "config.toml")).dataset.split("train")
    lo, hi = X.min(axis=0), X.max(axis=0)
    xs, ys = (np.linspace(a - 0.15 * (b - a) - 1e-3, b + 0.15 * (b - a) + 1e-3, 200)
              for a, b in zip(lo, hi))
    gx, gy = np.meshgrid(xs, ys)
    direct = _xor_probability(w, np.stack([gx.ravel(), gy.ravel()], 1))
    assert (filled.zmin, filled.zmax) == pytest.approx((direct.min(), direct.max()), abs=1e-5)
    assert ax.get_xlim() == pytest.approx((xs[0], xs[-1]))
    # the black line is where the model says 0.5: XOR needs it in two pieces
    assert list(line.levels) == [0.5]
    vertices = np.concatenate([path.vertices for path in line.get_paths()])
    assert len(vertices) > 50
    np.testing.assert_allclose(_xor_probability(w, vertices), 0.5, atol=0.02)
    # the points on top are the training data, coloured by label
    points = [c for c in ax.collections if not hasattr(c, "levels") and len(c.get_offsets())]
    np.testing.assert_allclose(points[0].get_offsets(), X)
    np.testing.assert_array_equal(points[0].get_array(), y)


# -- MNIST images ---------------------------------------------------------------------------------


def _tiles(image: AxesImage, n: int) -> list[np.ndarray]:
    """The n 28 x 28 tiles of a weight mosaic, row by row (tiles are 1 pixel apart)."""
    mosaic = np.ma.filled(image.get_array(), np.nan)
    columns = arrays.grid_columns(n)
    return [mosaic[r * 29:r * 29 + 28, c * 29:c * 29 + 28]
            for r, c in (divmod(i, columns) for i in range(n))]


def test_weight_grid_pixels_are_the_saved_weights_on_one_symmetric_scale(mnist_run, mnist_plots):
    W = _weights(mnist_run)["layers.0.weight"]  # (16, 784)
    image = _image(mnist_plots.figures["weights"])
    for unit, tile in enumerate(_tiles(image, 16)):  # 16 units: all of them, in order
        np.testing.assert_allclose(tile, W[unit].reshape(28, 28), rtol=1e-6)
    mosaic = np.ma.filled(image.get_array(), np.nan)
    assert np.isnan(mosaic[28, :]).all() and np.isnan(mosaic[:, 28]).all()  # the gaps
    low, high = image.get_clim()
    assert low == -high  # symmetric around 0; a few extremes (0.5%) beyond it
    assert high == pytest.approx(np.percentile(np.abs(W), run_plots.CLIP_PERCENTILE))
    assert (np.abs(W) > high).mean() == pytest.approx(0.005, abs=0.001)
    assert "all 16 hidden units" in mnist_plots.figures["weights"].axes[0].get_title()


def test_weight_grid_caps_the_units_at_the_strongest_and_says_so(mnist_run, monkeypatch,
                                                                 tmp_path):
    monkeypatch.setattr(run_plots, "MAX_UNITS", 6)
    drawn = plot_run(mnist_run, tmp_path)
    W = _weights(mnist_run)["layers.0.weight"]
    norms = np.linalg.norm(W, axis=1)
    strongest = sorted(range(16), key=lambda u: -norms[u])[:6]
    weights = drawn.figures["weights"]
    assert "6 of 16 hidden units, largest L2 norm first" in weights.axes[0].get_title()
    for unit, tile in zip(strongest, _tiles(_image(weights), 6)):
        np.testing.assert_allclose(tile, W[unit].reshape(28, 28), rtol=1e-6)
    assert np.isfinite(np.ma.filled(_image(weights).get_array(), np.nan)).sum() == 6 * 784
    heatmap = drawn.figures["activations"].axes[0]
    assert _image(drawn.figures["activations"]).get_array().shape == (10, 6)
    assert [t.get_text() for t in heatmap.get_xticklabels()] == [str(u) for u in strongest]


def test_weight_grid_tiles_row_by_row_with_blank_gaps():
    W = np.arange(5 * 6, dtype=float).reshape(5, 6)  # five 2 x 3 "images"
    mosaic = arrays.weight_grid(W, (2, 3), columns=2)
    assert mosaic.shape == (3 * 2 + 2, 2 * 3 + 1)
    np.testing.assert_array_equal(mosaic[3:5, 4:7], W[3].reshape(2, 3))
    assert np.isnan(mosaic[6:8, 4:7]).all()  # the sixth tile is empty


def test_mean_activation_per_class_is_the_direct_computation(mnist_run, mnist_plots):
    w = _weights(mnist_run)
    X, y = _test_split(mnist_run)
    hidden = np.maximum(X @ w["layers.0.weight"].T + w["layers.0.bias"], 0)  # ReLU, float64
    direct = np.stack([hidden[y == k].mean(axis=0) for k in range(10)])  # (10, 16)
    heatmap = mnist_plots.figures["activations"]
    np.testing.assert_allclose(_image(heatmap).get_array(), direct, rtol=1e-4, atol=1e-5)
    assert [t.get_text() for t in heatmap.axes[0].get_xticklabels()] == \
        [str(u) for u in range(16)]


def test_mean_activation_of_a_class_without_samples_is_nan():
    mean = arrays.mean_activation_per_class(np.array([[1.0, 2.0], [3.0, 6.0]]), np.array([0, 0]), 2)
    assert mean[0].tolist() == [2.0, 4.0] and np.isnan(mean[1]).all()


def test_misclassified_grid_shows_test_images_the_model_gets_wrong(mnist_run, mnist_plots):
    X, y = _test_split(mnist_run)
    p = prepare(load_config(mnist_run.path / "config.toml"))
    p.model.load_state_dict(mnist_run.read_weights())
    out = arrays.run_model(p.model, X, 8192)
    predicted = out.predictions
    wrong = np.flatnonzero(predicted != y)[:run_plots.MAX_MISCLASSIFIED]
    panels = mosaic_panels(mnist_plots.figures["mistakes"])
    assert len(panels) == len(wrong) == run_plots.MAX_MISCLASSIFIED
    for panel, i in zip(panels, wrong):
        np.testing.assert_array_equal(panel.pixels, X[i].reshape(28, 28))
        confidence = out.probabilities[i, predicted[i]]
        assert panel.above == [f"true {y[i]}, pred {predicted[i]}\n({100 * confidence:.0f}%)"]
        assert panel.below == []
    assert f"{(predicted != y).sum():,} of 10,000" in mnist_plots.figures["mistakes"]._suptitle \
        .get_text()


def test_three_classes_in_2d_get_a_region_per_predicted_class(tmp_path):
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]])
    y = rng.integers(0, 3, 600)
    np.savez(tmp_path / "blobs.npz", X=centres[y] + rng.normal(0, 0.5, (600, 2)), y=y)
    config = tmp_path / "blobs.toml"
    config.write_text(f'[data]\ndataset = "npz"\npath = "{tmp_path / "blobs.npz"}"\n'
                      '[model]\nhidden = [8, 8]\n[train]\nepochs = 5\nbatch_size = 32\n')
    run = Run(fit_experiment(load_config(config), RunStore(tmp_path / "runs")).path)
    drawn = plot_run(run)
    assert sorted(drawn.figures) == ["boundary", "confusion", "curves"]
    ax = drawn.figures["boundary"].axes[0]
    (regions,) = [c for c in ax.collections if hasattr(c, "levels")]
    assert list(regions.levels) == [-0.5, 0.5, 1.5, 2.5]  # one band per class
    assert _image(drawn.figures["confusion"]).get_array().shape == (3, 3)


def test_beyond_50_classes_the_confusion_matrix_is_omitted_with_a_note(tmp_path):
    """A target of 60 classes (a regression-like integer read as labels) once drew a
    confusion matrix of thousands of pixels a side for minutes: now a note says why none."""
    from typer.testing import CliRunner

    from mlptrain.cli import app

    rng = np.random.default_rng(0)
    y = np.arange(600) % 60
    np.savez(tmp_path / "many.npz", X=rng.normal(size=(600, 4)) + y[:, None] / 10, y=y)
    config = tmp_path / "many.toml"
    config.write_text(f'[data]\ndataset = "npz"\npath = "{tmp_path / "many.npz"}"\n'
                      'task = "classification"\n[model]\nhidden = 8\n[train]\nepochs = 1\n')
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["fit", str(config), "--runs-dir", str(runs)],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    (path,) = runs.iterdir()
    assert sorted(p.name for p in path.glob("*.png")) == ["curves.png"]
    import json
    figures = json.loads((path / "summary.json").read_text())["figures"]
    (note,) = figures["omitted"]
    assert note.startswith("the confusion matrix: 60 classes, more than the 50")
    assert "not drawn: the confusion matrix: 60 classes" in " ".join(result.stdout.split())
    again = CliRunner().invoke(app, ["plot", str(path), "--out", str(tmp_path / "figs")])
    assert again.exit_code == 0 and "not drawn: the confusion matrix" in again.stderr
    assert [p.name for p in (tmp_path / "figs").iterdir()] == ["curves.png"]
    # eval's table, likewise bounded: 50 class rows (the most supported) and a count
    shown = CliRunner().invoke(app, ["eval", str(path)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0 and "(10 more)" in shown.stdout
    rows = [line for line in shown.stdout.splitlines() if "│" in line and "%" in line]
    assert len(rows) == 50 + 2  # the classes, then the macro and weighted averages
    full = json.loads(CliRunner().invoke(app, ["eval", str(path), "--json"]).stdout)
    assert len(full["classes"]["per_class"]) == 60


@pytest.mark.parametrize("counts", [
    [[950, 3, 0], [1, 980, 12], [0, 7, 1010]],  # a full diagonal, small errors
    [[900, 850], [820, 1000]],  # every count large: the scale starts far above 0
    [[0, 0], [0, 0]],  # nothing at all: one flat colour
])
def test_confusion_text_contrasts_with_its_cell(counts):
    from matplotlib.colors import to_rgba

    from mlptrain.reports import figures
    from mlptrain.reports.style import contrast_ratio

    counts = np.array(counts)
    fig = figures.draw_confusion(counts, "t")
    image = _image(fig)
    for text, count in zip(fig.axes[0].texts, counts.ravel()):
        assert int(text.get_text()) == count
        cell = image.cmap(image.norm(np.log1p(count)))  # what the cell is drawn in
        # black or white on any colour reaches at least 4.58:1 (WCAG AA for text is 4.5)
        assert contrast_ratio(to_rgba(text.get_color()), cell) >= 4.5, (count, text.get_color())


def test_contrast_ratio_is_wcag():
    from mlptrain.reports.style import contrast_ratio, text_colour_on

    assert contrast_ratio((0, 0, 0), (1, 1, 1)) == pytest.approx(21.0)
    assert contrast_ratio((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)) == pytest.approx(1.0)
    assert text_colour_on((0.03, 0.19, 0.42, 1.0)) == "white"  # Blues' darkest
    assert text_colour_on((0.97, 0.98, 1.0, 1.0)) == "black"  # Blues' lightest


def test_one_epoch_of_curves_shows_its_points_on_sensible_axes():
    from mlptrain.reports import figures

    one = [{"epoch": 1, "train_loss": 0.31, "train_accuracy": 0.91, "val_loss": 0.18,
            "val_accuracy": 0.947}]
    c = arrays.curves(one, {"final": {"test_loss": 0.17, "test_accuracy": 0.95}})
    fig = figures.draw_curves(c, "one epoch")
    ax_loss, ax_acc = fig.axes[:2]
    for ax in (ax_loss, ax_acc):
        lines = {line.get_label(): line for line in ax.get_lines()}
        for split in ("train", "val"):  # a single point must be drawn as a marker
            assert lines[split].get_marker() not in (None, "", "None", " ")
            assert lines[split].get_markersize() > 0
        left, right = ax.get_xlim()
        assert left <= 0.5 and right >= 1.5 and right - left <= 2  # not 0.945-1.050
        visible = [t for t in ax.get_xticks() if left <= t <= right]
        assert visible == [1]  # whole epochs only
    lo, hi = ax_acc.get_ylim()
    assert 0 <= lo <= 0.91 and 0.95 <= hi <= 1.01 and hi - lo >= 0.05
    lo, hi = ax_loss.get_ylim()
    assert lo <= 0.17 and hi >= 0.31 and hi / lo >= 4  # room around the points on the log axis


def test_many_epochs_are_drawn_as_lines():
    from mlptrain.reports import figures

    many = [{"epoch": e, "train_loss": 1 / e, "train_accuracy": 1 - 1 / (e + 1)}
            for e in range(1, 101)]
    fig = figures.draw_curves(arrays.curves(many, {}), "long")
    (train,) = [line for line in fig.axes[0].get_lines() if line.get_label() == "train"]
    assert train.get_marker() in (None, "", "None") and list(train.get_xdata()) == list(
        range(1, 101))
    assert fig.axes[0].get_xlim() == (0.5, 100.5)


# -- a fit draws its own figures (the library, not the CLI) ---------------------------------------


def test_the_library_fit_draws_the_figures_when_the_config_says_so(tmp_path):
    store = RunStore(tmp_path / "runs")
    on = fit_experiment(load_config(CONFIGS / "xor.toml", ["train.epochs=3"]), store)
    names = sorted(p.name for p in on.figures.files)
    assert names == ["confusion_matrix.png", "curves.png", "decision_boundary.png"]
    assert all((on.path / name).is_file() for name in names)
    assert Run(on.path).read_summary()["figures"]["files"] == [p.name for p in on.figures.files]
    off = fit_experiment(load_config(CONFIGS / "xor.toml", ["train.epochs=3",
                                                            "report.plots=false"]), store)
    assert off.figures is None and list(off.path.glob("*.png")) == []
    # complete without them, and its summary says so (`mlptrain plot RUN` draws them)
    figures = Run(off.path).read_summary()["figures"]
    assert figures["files"] == [] and "mlptrain plot RUN" in figures["not_drawn"]


def test_sweep_trials_get_their_figures(tmp_path):
    from mlptrain.sweep.trial import TrialTask, run_trial

    config = load_config(CONFIGS / "xor.toml", ["train.epochs=3", "report.format=svg"])
    result = run_trial(TrialTask(0, "t0", config, str(tmp_path / "runs")))
    assert result.status == "completed", result.error
    (path,) = (tmp_path / "runs").iterdir()
    assert sorted(p.name for p in path.glob("*.svg")) == [
        "confusion_matrix.svg", "curves.svg", "decision_boundary.svg"]


def test_a_drawing_error_is_recorded_and_the_run_still_completes(tmp_path, monkeypatch):
    from mlptrain.errors import RunStoreError

    def broken(*args, **kwargs):
        raise RunStoreError("cannot write the figure x.png: disk full.")

    monkeypatch.setattr(run_plots, "plot_run", broken)
    finished = fit_experiment(load_config(CONFIGS / "xor.toml", ["train.epochs=2"]),
                              RunStore(tmp_path))
    assert finished.summary["status"] == "completed"
    assert "disk full" in finished.figures.error
    assert "disk full" in Run(finished.path).read_summary()["figures"]["error"]
