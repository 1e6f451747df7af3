"""Regression (issue 29): a real-valued target trains with mse, huber or poisson; the target is
standardized by the training split's statistics (data.standardize_target), which the run keeps,
and every metric shown (RMSE, MAE, R^2) is in the target's own units."""

from __future__ import annotations

import json


import numpy as np
import pytest
from typer.testing import CliRunner

from mlptrain.cli import app
from mlptrain.config import load_config
from mlptrain.experiment import fit_experiment, resume_experiment
from mlptrain.experiment.evaluate import regression_scores
from mlptrain.experiment.gradcheck import gradcheck
from mlptrain.experiment.predict import probabilities
from mlptrain.experiment.setup import prepare, prepare_run, saved_target_scale
from mlptrain.loop import StopFlag
from mlptrain.runs import Run, RunStore

from conftest import CONFIGS
from test_resume import metrics_without_time, stop_at

runner = CliRunner()
RECORD = ["epoch", "lr", "train_loss", "train_rmse", "train_mae", "val_loss", "val_rmse",
          "val_mae", "train_r2", "val_r2", "seconds"]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line(text: str) -> str:
    return " ".join(text.split())


DIABETES = CONFIGS.parent / "data" / "tabular" / "diabetes.csv"


def load_diabetes():
    """The shipped diabetes table (data/tabular/diabetes.csv: scikit-learn's, unscaled): its
    feature names, X (442, 10) and the target (25-346)."""
    header, *lines = DIABETES.read_text().splitlines()
    table = np.array([[float(v) for v in line.split(",")] for line in lines])
    return header.split(",")[:-1], table[:, :-1], table[:, -1]


def diabetes_npz(path):
    """The diabetes table as an npz: 442 rows, 10 features, target 25-346."""
    _, X, y = load_diabetes()
    np.savez(path, X=X, y=y)
    return path


def write_config(path, data: str, *lines: str, epochs: int = 40):
    path.write_text(f'name = "reg"\n[data]\ndataset = "npz"\npath = "{data}"\n'
                    'task = "regression"\nsplit_seed = 0\n' + "".join(f"{x}\n" for x in lines)
                    + '[model]\nhidden = 16\n[optimizer]\nname = "adam"\nlr = 0.003\n'
                    f'[train]\nbatch_size = 16\nepochs = {epochs}\n[report]\nplots = false\n')
    return path


@pytest.fixture
def diabetes(tmp_path):
    return write_config(tmp_path / "diabetes.toml", diabetes_npz(tmp_path / "diabetes.npz"))


def only_run(runs_dir) -> Run:
    (path,) = [p for p in runs_dir.iterdir() if p.is_dir()]
    return Run(path)


def test_fit_trains_a_real_target_and_reports_rmse_mae_r2_in_its_units(diabetes, runs_dir):
    result = run("fit", diabetes)
    assert result.exit_code == 0, result.output
    assert "test RMSE" in result.stdout and "R^2" in result.stdout
    r = only_run(runs_dir)
    records = r.read_metrics()
    assert len(records) == 40 and all(list(rec) == RECORD for rec in records)
    summary = r.read_summary()
    assert summary["model"]["loss"] == "mse" and summary["dataset"]["task"] == "regression"
    final = summary["final"]
    assert sorted(final) == sorted(f"{s}_{m}" for s in ("train", "val", "test")
                                   for m in ("loss", "rmse", "mae", "r2"))
    assert 0.3 < final["test_r2"] < 0.65 and 40 < final["test_rmse"] < 70  # diabetes: ~0.45
    # the shown metrics are the target's own units: recomputed from the saved run's predictions
    p = prepare_run(r)
    X, y = p.dataset.split("test")
    predicted = probabilities(p.model, X)[:, 0]
    assert 25 < predicted.mean() < 346  # a blood-sugar score, not a standardized one
    want = regression_scores(y, predicted)
    for metric in ("rmse", "mae", "r2"):
        assert final[f"test_{metric}"] == pytest.approx(want[metric], rel=1e-6)  # float32
    r2 = 1 - np.sum((predicted - y) ** 2) / np.sum((y - y.mean()) ** 2)
    assert final["test_r2"] == pytest.approx(r2, rel=1e-9)
    # the per-epoch RMSE and MAE are the summed errors', in target units too
    last = records[-1]
    assert last["val_rmse"] == pytest.approx(final["val_rmse"], rel=1e-9)
    assert last["val_mae"] == pytest.approx(final["val_mae"], rel=1e-6)  # float32 residuals
    assert all(0 < rec[f"{s}_mae"] < rec[f"{s}_rmse"] for rec in records for s in ("train", "val"))
    assert last["train_rmse"] > 0 and summary["warnings"] == []
    # ... and so is its R^2: 1 - MSE / the split's variance (float32 targets: 1e-6)
    assert last["val_r2"] == pytest.approx(final["val_r2"], rel=1e-6)
    y_train = p.dataset.split("train")[1]
    for rec in records:
        assert rec["train_r2"] == pytest.approx(1 - rec["train_rmse"] ** 2 / y_train.var(),
                                                rel=1e-6)


def test_the_target_statistics_are_the_training_split_s_and_read_back(diabetes, runs_dir):
    assert run("fit", diabetes).exit_code == 0
    r = only_run(runs_dir)
    summary = r.read_summary()
    assert summary["dataset"]["target_standardized"] is True
    p = prepare(load_config(diabetes))
    y_train = p.dataset.split("train")[1]
    arrays = np.load(r.path / "preprocess.npz")
    assert set(arrays.files) == {"mean", "std", "target_mean", "target_std"}
    np.testing.assert_allclose(arrays["target_mean"], [y_train.mean()], rtol=1e-12)
    np.testing.assert_allclose(arrays["target_std"], [y_train.std()], rtol=1e-12)
    scale = saved_target_scale(r)
    assert (scale.mean, scale.std) == (float(arrays["target_mean"][0]),
                                       float(arrays["target_std"][0]))
    assert prepare_run(r).step.target == (scale.mean, scale.std)  # what eval and plot train with
    # the loss trains on the standardized target: its mean 0, its spread 1
    t = p.model.loss.targets(np, y_train, np.float64)
    assert abs(t.mean()) < 1e-12 and t.std() == pytest.approx(1.0, rel=1e-12)
    assert any("standardize_target" in note for note in summary["dataset"]["notes"])


def test_standardize_target_false_trains_on_the_values_as_given(diabetes, runs_dir):
    assert run("fit", diabetes, "--set", "data.standardize_target=false",
               "--set", "optimizer.lr=0.01").exit_code == 0
    r = only_run(runs_dir)
    assert "target_standardized" not in r.read_summary()["dataset"]
    assert saved_target_scale(r) is None
    assert set(np.load(r.path / "preprocess.npz").files) == {"mean", "std"}
    first = r.read_metrics()[0]  # the loss is the MSE itself: the RMSE squared
    assert first["train_loss"] == pytest.approx(first["train_rmse"] ** 2, rel=1e-9)


def test_a_stopped_regression_run_resumes_to_the_same_bytes(diabetes, runs_dir):
    config = load_config(diabetes, ["train.epochs=4"])
    alone = fit_experiment(config, RunStore(runs_dir))
    stop = StopFlag()
    stopped = fit_experiment(config, RunStore(runs_dir), stop_at(stop, 2, 5), stop=stop)
    assert stopped.summary["status"] == "interrupted"
    resumed = resume_experiment(RunStore(runs_dir), stopped.run_id)
    assert resumed.summary["status"] == "completed"
    assert (resumed.path / "weights.npz").read_bytes() == (alone.path / "weights.npz").read_bytes()
    assert (resumed.path / "preprocess.npz").read_bytes() == \
        (alone.path / "preprocess.npz").read_bytes()
    assert metrics_without_time(resumed.path) == metrics_without_time(alone.path)
    assert resumed.summary["final"] == alone.summary["final"]


def test_a_checkpoint_from_before_the_mae_tally_resumes_without_that_epoch_s_mae(diabetes,
                                                                                  runs_dir):
    """A regression checkpoint written inside an epoch before forward summed the absolute
    error (its running sums hold the squared error alone) resumes to the same weights; the
    MAE of the epoch it stopped in is unknown and left out of that record, not made up."""
    config = load_config(diabetes, ["train.epochs=3"])
    alone = fit_experiment(config, RunStore(runs_dir))
    stop = StopFlag()
    stopped = fit_experiment(config, RunStore(runs_dir), stop_at(stop, 2, 5), stop=stop)
    run = Run(stopped.path)
    arrays = run.read_checkpoint()
    assert arrays["running.correct"].shape == (2,)  # squared and absolute errors
    run.write_checkpoint({**arrays, "running.correct": arrays["running.correct"][0]})
    resumed = resume_experiment(RunStore(runs_dir), stopped.run_id)
    assert (resumed.path / "weights.npz").read_bytes() == (alone.path / "weights.npz").read_bytes()
    records, want = Run(resumed.path).read_metrics(), Run(alone.path).read_metrics()
    assert "train_mae" not in records[1] and records[1]["val_mae"] == want[1]["val_mae"]
    assert records[1]["train_rmse"] == want[1]["train_rmse"] and records[2] == \
        {**want[2], "seconds": records[2]["seconds"]}


def test_huber_takes_its_delta_and_poisson_keeps_counts(tmp_path, runs_dir):
    data = diabetes_npz(tmp_path / "d.npz")
    huber = prepare(load_config(write_config(tmp_path / "h.toml", data),
                                ["model.loss=huber", "model.huber_delta=2.5"]))
    assert huber.model.loss.name == "huber" and huber.model.loss.delta == 2.5
    config = write_config(tmp_path / "p.toml", data, epochs=5)
    result = run("fit", config, "--set", "model.loss=poisson")
    assert result.exit_code == 0, result.output
    r = only_run(runs_dir)
    assert "target_standardized" not in r.read_summary()["dataset"]  # counts stay counts
    assert "standardize_target is ignored" in one_line(result.stdout)
    predicted = probabilities(prepare_run(r).model, prepare_run(r).dataset.split("test")[0])
    assert (predicted > 0).all()  # e^z


def test_poisson_refuses_a_negative_target(tmp_path, runs_dir):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "neg.npz", X=rng.normal(size=(60, 3)), y=rng.normal(size=60))
    result = run("fit", write_config(tmp_path / "n.toml", tmp_path / "neg.npz"),
                 "--set", "model.loss=poisson")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "fits counts (0 or more)" in one_line(result.stderr)


@pytest.mark.parametrize(("config", "overrides", "message"), [
    ("xor", ["model.loss=mse"], "loss = 'mse' fits real values to regress, but the data's "
                                "target holds class labels"),
    ("diabetes", ["model.loss=softmax_cross_entropy"],
     "loss = 'softmax_cross_entropy' fits class labels, but the data's target holds real "
     "values to regress"),
])
def test_a_loss_of_the_other_task_is_refused(config, overrides, message, diabetes, runs_dir):
    path = CONFIGS / "xor.toml" if config == "xor" else diabetes
    result = run("fit", path, *(x for o in overrides for x in ("--set", o)))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert message in one_line(result.stderr)
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


@pytest.mark.parametrize("loss", ["mse", "huber", "poisson"])
def test_gradcheck_passes_for_every_regression_loss(tmp_path, loss):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 3))
    np.savez(tmp_path / "c.npz", X=X, y=rng.poisson(3.0, 40) + 0.5)  # counts, not whole
    config = load_config(write_config(tmp_path / "g.toml", tmp_path / "c.npz"),
                         [f"model.loss={loss}", "model.hidden=[6, 5]", "model.activation=tanh"])
    report = gradcheck(config, batch=16, entries=0)
    assert report.passed, [(c.name, c.max_rel_error) for c in report.checks]
    assert report.sizes[-1] == 1


def test_classification_configs_keep_their_records(runs_dir):
    result = run("fit", CONFIGS / "xor.toml", "--set", "train.epochs=2",
                 "--set", "report.plots=false")
    assert result.exit_code == 0
    record = only_run(runs_dir).read_metrics()[0]
    assert list(record) == ["epoch", "lr", "train_loss", "train_accuracy", "val_loss",
                            "val_accuracy", "seconds"]
    assert "test accuracy" in result.stdout


def test_a_regression_run_is_warned_below_the_mean_and_never_against_classes():
    from mlptrain.experiment.diagnose import below_mean, training_warnings

    assert below_mean({"test_r2": -0.2})[0].startswith("below the mean: the test R^2 -0.200")
    assert below_mean({"test_r2": 0.4}) == [] and below_mean({"test_r2": None}) == []
    assert below_mean({"test_r2": None, "val_r2": -1.0})[0].startswith("below the mean: the val")
    # a loss on the target's scale is no guess among classes: only a rise counts
    history = [{"train_loss": 40.0}, {"train_loss": 30.0}]
    assert training_warnings(history, 1, "regression") == []
    assert training_warnings(history, 1)[0].startswith("diverged")  # as classes it would be


# -- eval, predict and plot of a regression run --------------------------------------------------


@pytest.fixture
def diabetes_run(diabetes, runs_dir) -> Run:
    assert run("fit", diabetes, "--set", "train.epochs=20").exit_code == 0
    return only_run(runs_dir)


def test_eval_prints_loss_rmse_mae_r2_of_a_split_as_the_fit_recorded(diabetes_run):
    final = diabetes_run.read_summary()["final"]
    result = run("eval", diabetes_run.path)
    assert result.exit_code == 0, result.output
    text = one_line(result.stdout)
    assert "on its test split (88 samples)" in text and "RMSE" in text and "R^2" in text
    assert f"{final['test_r2']:.3f}" in text and "accuracy" not in text
    for split in ("train", "val", "test"):
        shown = json.loads(run("eval", diabetes_run.path, "--split", split, "--json").stdout)
        assert set(shown) == {"run_id", "split", "data", "loss", "rmse", "mae", "r2",
                              "samples", "notes"}
        for metric in ("loss", "rmse", "mae", "r2"):
            assert shown[metric] == pytest.approx(final[f"{split}_{metric}"], rel=1e-9)


def test_predict_gives_one_value_per_row_in_target_units_and_eval_data_agrees(
        diabetes_run, tmp_path):
    _, X, y = load_diabetes()
    np.savez(tmp_path / "rows.npz", X=X)  # raw features: the run standardizes them
    result = run("predict", diabetes_run.path, tmp_path / "rows.npz", "--json")
    assert result.exit_code == 0, result.output
    values = np.array([p["value"] for p in json.loads(result.stdout)["predictions"]])
    assert values.shape == (442,) and 25 < values.mean() < 346
    text = run("predict", diabetes_run.path, tmp_path / "rows.npz").stdout.splitlines()
    assert len(text) == 442 and text[0] == f"0: {values[0]:.6g}"
    # eval --data scores the same predictions against the file's targets (whole numbers,
    # read as the run's values, not as 214 classes)
    np.savez(tmp_path / "all.npz", X=X, y=y)
    scored = json.loads(run("eval", diabetes_run.path, "--data", tmp_path / "all.npz",
                            "--json").stdout)
    want = regression_scores(y, values)
    assert scored["samples"] == 442
    assert scored["rmse"] == pytest.approx(want["rmse"], rel=1e-6)  # the loop's float32 sums
    assert scored["mae"] == pytest.approx(want["mae"], rel=1e-9)
    assert scored["r2"] == pytest.approx(want["r2"], rel=1e-9) and 0.3 < scored["r2"] < 0.8


def diabetes_csv(path, rows: int | None = None, target: bool = True):
    """The diabetes table as a CSV with a header (its target last, as 'progression')."""
    names, X, y = load_diabetes()
    columns = [*names, *(["progression"] if target else [])]
    table = np.column_stack([X, y] if target else [X])[:rows]
    path.write_text(",".join(columns) + "\n" + "".join(
        ",".join(repr(float(v)) for v in row) + "\n" for row in table))
    return path


def test_a_csv_regression_run_evaluates_and_predicts_a_table(tmp_path, runs_dir):
    diabetes_csv(tmp_path / "diabetes.csv")
    config = tmp_path / "c.toml"
    config.write_text('[data]\ndataset = "csv"\npath = "diabetes.csv"\ntask = "regression"\n'
                      '[model]\nhidden = 16\n[optimizer]\nname = "adam"\nlr = 0.003\n'
                      '[train]\nepochs = 10\nbatch_size = 16\n[report]\nplots = false\n')
    assert run("fit", config).exit_code == 0
    r = only_run(runs_dir)
    rows = diabetes_csv(tmp_path / "rows.csv", 5, target=False)
    predicted = json.loads(run("predict", r.path, rows, "--json").stdout)
    values = np.array([p["value"] for p in predicted["predictions"]])
    assert values.shape == (5,)
    labelled = diabetes_csv(tmp_path / "labelled.csv", 5)
    scored = json.loads(run("eval", r.path, "--data", labelled, "--json").stdout)
    y = load_diabetes()[2][:5]
    assert scored["mae"] == pytest.approx(np.abs(values - y).mean(), rel=1e-9)


def test_plot_draws_predicted_against_true_and_no_class_figures(diabetes_run, tmp_path):
    result = run("plot", diabetes_run.path, "--out", tmp_path / "figs")
    assert result.exit_code == 0, result.output
    drawn = {p.name for p in (tmp_path / "figs").iterdir()}
    assert drawn == {"curves.png", "predictions.png"}
    from mlptrain.reports.arrays import curves

    c = curves(diabetes_run.read_metrics(), diabetes_run.read_summary())
    assert set(c.r2) == {"train", "val"} and c.test["r2"] is not None  # the third panel's


# -- export, ensemble, sweep -----------------------------------------------------------------------


def test_onnx_export_predicts_what_mlptrain_predicts_in_target_units(diabetes_run, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    result = run("export", diabetes_run.path, "--format", "onnx", "--out",
                 tmp_path / "m.onnx", "--json")
    assert result.exit_code == 0, result.output
    check = json.loads(result.stdout)
    assert check["passed"] and check["samples"] == 88 and "classes_agree" not in check
    _, X, _ = load_diabetes()
    np.savez(tmp_path / "rows.npz", X=X)
    want = [p["value"] for p in json.loads(
        run("predict", diabetes_run.path, tmp_path / "rows.npz", "--json").stdout)["predictions"]]
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(["prediction"], {"x": X.astype(np.float32)})  # raw features
    assert got.shape == (442, 1)
    np.testing.assert_allclose(got[:, 0], want, rtol=1e-5, atol=1e-3)
    nodes = [n.op_type for n in __import__("onnx").load(str(tmp_path / "m.onnx")).graph.node]
    assert nodes[:2] == ["Sub", "Div"] and nodes[-3:] == ["Identity", "Mul", "Add"]


def test_onnx_export_of_poisson_ends_in_exp(tmp_path, runs_dir):
    pytest.importorskip("onnxruntime")
    config = write_config(tmp_path / "p.toml", diabetes_npz(tmp_path / "d.npz"), epochs=5)
    assert run("fit", config, "--set", "model.loss=poisson").exit_code == 0
    result = run("export", only_run(runs_dir).path, "--format", "onnx", "--out",
                 tmp_path / "p.onnx")
    assert result.exit_code == 0, result.output
    assert "predicted classes" not in result.stdout
    nodes = [n.op_type for n in __import__("onnx").load(str(tmp_path / "p.onnx")).graph.node]
    assert nodes[-1] == "Exp"  # counts stay counts: no target statistics to undo


def test_a_committee_of_regression_runs_averages_their_predictions(diabetes, runs_dir):
    for seed in (0, 1):
        assert run("fit", diabetes, "--set", f"train.seed={seed}",
                   "--set", "train.epochs=5").exit_code == 0
    ids = sorted(p.name for p in runs_dir.iterdir() if p.is_dir())
    result = run("ensemble", *ids, "--json")
    assert result.exit_code == 0, result.output
    c = json.loads(result.stdout)
    assert c["task"] == "regression" and c["size"] == 2 and c["samples"] == 88
    predictions, y = [], None
    for member, run_id in zip(c["members"], ids):
        r = Run(runs_dir / run_id)
        p = prepare_run(r)
        X, y = p.dataset.split("test")
        predictions.append(probabilities(p.model, X)[:, 0])
        assert member["r2"] == pytest.approx(r.read_summary()["final"]["test_r2"], rel=1e-9)
    want = regression_scores(y, np.mean(predictions, axis=0))
    for metric in ("rmse", "mae", "r2"):
        assert c[metric] == pytest.approx(want[metric], rel=1e-9)
    text = run("ensemble", *ids)
    assert text.exit_code == 0 and "committee (mean prediction)" in text.stdout
    # a classifier among them: nothing to average
    assert run("fit", CONFIGS / "xor.toml", "--set", "train.epochs=1",
               "--set", "report.plots=false").exit_code == 0
    xor = next(p.name for p in runs_dir.iterdir() if p.is_dir() and p.name not in ids)
    mixed = run("ensemble", ids[0], xor)
    assert mixed.exit_code == 1 and "must predict the same kind of target" in \
        one_line(mixed.stderr)


def test_a_sweep_of_a_regression_config_runs_its_trials(diabetes, runs_dir):
    result = run("sweep", diabetes, "--grid", "model.hidden=4,8", "--set", "train.epochs=3",
                 "--workers", "1")
    assert result.exit_code == 0, result.output
    (sweep,) = (runs_dir / "sweeps").iterdir()
    summary = json.loads((sweep / "summary.json").read_text())
    assert [t["status"] for t in summary["trials"]] == ["completed"] * 2
    # its tables hold the regression's metrics, not a classifier's empty accuracy
    assert "test R^2" in result.stdout and "test R^2 0." in result.stdout
    assert all(-1 < t["test_r2"] < 1 and t["test_rmse"] > 0 for t in summary["trials"])
    assert "test_accuracy" not in summary["groups"][0]["mean"]
    header = (sweep / "summary.csv").read_text().splitlines()[0].split(",")
    assert header[-9:] == ["test_r2", "test_rmse", "test_mae", "test_loss", "val_rmse",
                           "val_loss", "train_rmse", "train_loss", "seconds"]
    # the capacity figure draws the headline metric, R^2, against the width
    from mlptrain.reports.capacity import capacity_series

    (series,) = capacity_series(summary, "test_r2")
    assert list(series.widths) == [4, 8] and series.score == "test_r2"
    np.testing.assert_array_equal(series.mean, [g["mean"]["test_r2"] for g in summary["groups"]])
    assert (sweep / "capacity.png").exists()


def test_the_shipped_diabetes_config_regresses_its_table(runs_dir):
    import hashlib

    table = CONFIGS.parent / "data" / "tabular" / "diabetes.csv"
    assert hashlib.sha256(table.read_bytes()).hexdigest() == \
        "861964c468642a32978c7053ff452a64b79977dba1d00c3d4349dbf4ef9d2090"  # data/tabular/README
    result = run("fit", CONFIGS / "diabetes.toml", "--set", "report.plots=false")
    assert result.exit_code == 0, result.output
    summary = only_run(runs_dir).read_summary()
    assert summary["model"]["loss"] == "mse" and summary["dataset"]["samples"]["test"] == 88
    assert 0.4 < summary["final"]["test_r2"] < 0.6  # 0.506 at seed 0


def test_runs_lists_and_compares_a_regression_run_by_its_test_r2(diabetes_run):
    r2 = diabetes_run.read_summary()["final"]["test_r2"]
    listed = run("runs", "--runs-dir", diabetes_run.path.parent)
    assert listed.exit_code == 0 and f"R^2 {r2:.3f}" in listed.stdout
    shown = run("runs", "show", diabetes_run.path)
    assert shown.exit_code == 0 and "train_rmse" in shown.stdout and "R^2" in shown.stdout
