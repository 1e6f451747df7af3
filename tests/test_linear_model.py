"""model.hidden = []: a linear model (logistic or softmax regression), the baseline a study of
tabular data wants, through fit, eval, predict, export, gradcheck, plot and a sweep."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from mlptrain.cli import app

from conftest import CONFIGS
from test_standardize import wine_like

runner = CliRunner()
LINEAR = ["--set", "model.hidden=[]", "--set", "report.plots=false"]


def run(*args):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def test_a_linear_xor_model_fits_evaluates_predicts_and_exports(runs_dir, tmp_path):
    # dropout_hidden and max_norm have no hidden unit to act on: they change nothing
    result = run("fit", CONFIGS / "xor.toml", *LINEAR, "--set", "train.epochs=5",
                 "--set", "model.dropout_hidden=0.5", "--set", "model.max_norm=1")
    assert result.exit_code == 0, result.output
    assert "layers.0: Linear(2 -> 1) + sigmoid_bce  [3 parameters]  (no hidden layer: a " \
           "linear model)" in result.stdout
    (path,) = runs_dir.iterdir()
    summary = json.loads((path / "summary.json").read_text())
    assert summary["model"]["sizes"] == [2, 1] and summary["model"]["parameters"] == 3
    evaluated = json.loads(run("eval", path, "--json").stdout)
    assert evaluated["accuracy"] == pytest.approx(summary["final"]["test_accuracy"], abs=1e-12)
    assert "2-1 linear" in run("runs", "--runs-dir", runs_dir).stdout

    w = np.load(path / "weights.npz")
    X = np.array([[0.0, 0.0], [1.0, 0.0], [0.1, 0.9], [1.0, 1.0]])
    by_hand = 1 / (1 + np.exp(-(X @ w["layers.0.weight"].T + w["layers.0.bias"])[:, 0]))
    np.save(tmp_path / "x.npy", X)
    predicted = json.loads(run("predict", path, tmp_path / "x.npy", "--json").stdout)
    p1 = [next(e["probability"] for e in sample if e["class"] == 1)
          for sample in predicted["predictions"]]
    np.testing.assert_allclose(p1, by_hand, atol=1e-6)

    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    exported = run("export", path, "--format", "onnx", "--out", tmp_path / "m.onnx")
    assert exported.exit_code == 0, exported.output
    graph = onnx.load(tmp_path / "m.onnx").graph
    assert [n.op_type for n in graph.node] == ["Gemm", "Sigmoid"]  # no activation, no hidden
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(["probabilities"], {"x": X.astype(np.float32)})
    np.testing.assert_allclose(got[:, 0], p1, atol=1e-6)


def test_a_linear_model_s_gradients_pass_gradcheck():
    result = run("gradcheck", CONFIGS / "xor.toml", "--set", "model.hidden=[]", "--set",
                 "model.dropout_hidden=0.5", "--set", "model.max_norm=1", "--entries", "0")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("gradcheck of 2-1 linear + sigmoid_bce")
    assert "PASS: every gradient matches" in result.stdout
    # with no hidden layer the step holds no dropout or max-norm: a plain step
    dry = run("fit", CONFIGS / "xor.toml", "--set", "model.hidden=[]", "--set",
              "model.dropout_hidden=0.5", "--set", "model.max_norm=1", "--dry-run")
    assert dry.exit_code == 0 and "step: plain (no training aids)" in dry.stdout


def test_softmax_regression_on_standardized_features_beats_chance(runs_dir, tmp_path):
    wine_like(tmp_path / "w.npz")
    config = tmp_path / "w.toml"
    config.write_text(f'[data]\ndataset = "npz"\npath = "{tmp_path / "w.npz"}"\n'
                      '[model]\nhidden = []\n[train]\nepochs = 20\nbatch_size = 16\n')
    result = run("fit", config, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["model"]["sizes"] == [13, 3] and summary["final"]["test_accuracy"] > 0.85
    assert summary["figures"]["files"] == ["curves.png", "confusion_matrix.png"]
    assert "13-3 linear" in run("runs", "--runs-dir", runs_dir).stdout


def test_a_linear_mnist_model_draws_no_hidden_unit_figures(runs_dir):
    result = run("fit", CONFIGS / "mnist.toml", "--set", "model.hidden=[]", "--set",
                 "data.limit=1000", "--set", "train.epochs=1", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["figures"]["files"] == ["curves.png", "confusion_matrix.png",
                                           "misclassified.png"]
    again = run("plot", runs_dir / summary["run_id"], "--out", runs_dir.parent / "figs")
    assert "not drawn: weight images and activations per class: the model has no hidden " \
           "layer" in again.stderr


def test_a_sweep_may_hold_the_linear_baseline(tmp_path):
    result = run("sweep", CONFIGS / "xor.toml", "--grid", "model.hidden=[],[4]", "--set",
                 "train.epochs=2", "--set", "report.plots=false", "--workers", "0",
                 "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert "xor_hidden-none: completed" in result.stdout
    (summary,) = (tmp_path / "runs" / "sweeps").glob("*/summary.csv")
    rows = summary.read_text().splitlines()
    assert rows[1].startswith("trial,[],") and rows[2].startswith("trial,4,")  # each width
