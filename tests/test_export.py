"""`mlptrain export`: ONNX that onnxruntime runs to mlptrain's numbers, safetensors that read back
bit for bit, golden vectors whose gradients are gradcheck's, and a refusal when a graph is wrong."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import CONFIGS, ROOT
from typer.testing import CliRunner

from mlptrain import nn
from mlptrain.cli import app
from mlptrain.config import load_config
from mlptrain.experiment import fit_experiment
from mlptrain.experiment.export import (EXTRA_HINT, ONNX_ACTIVATIONS, ONNX_PROBABILITIES,
                                        ONNX_TOLERANCE, RunSource, export_run,
                                        output_probabilities)
from mlptrain.experiment.gradcheck import check_model
from mlptrain.experiment.predict import load_network
from mlptrain.runs import RunStore

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

runner = CliRunner()
LEAKY_SLOPE = 0.2  # not the default 0.01, so a graph that ignored the run's slope would show


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


# the losses of class labels, which XOR trains (a regression run's export: test_regression.py)
CLASSIFIERS = [name for name, loss in nn.LOSSES.items() if loss.task == "classification"]


def train(runs, config: str, *overrides: str):
    """A completed run of `config` with `overrides`, in the runs root `runs`."""
    cfg = load_config(CONFIGS / config, [*overrides, "report.plots=false"])
    return fit_experiment(cfg, RunStore(runs)).path


@pytest.fixture(scope="module")
def xor_runs(tmp_path_factory):
    """One small XOR run per (activation, loss): two hidden layers, so the graph has three
    Gemms, and a few epochs, which are enough for weights that are not the initial ones."""
    runs = tmp_path_factory.mktemp("runs")
    return {(a, loss): train(runs, "xor.toml", f"model.activation={a}", f"model.loss={loss}",
                             "model.hidden=[8, 4]", f"model.leaky_slope={LEAKY_SLOPE}",
                             "train.epochs=20")
            for a in nn.ACTIVATIONS for loss in CLASSIFIERS}


@pytest.fixture(scope="module")
def mnist_runs(tmp_path_factory):
    """One tiny MNIST run per activation (2,000 images, one epoch, 32 hidden units)."""
    runs = tmp_path_factory.mktemp("runs")
    return {a: train(runs, "mnist.toml", f"model.activation={a}", "data.limit=2000",
                     "model.hidden=32", "train.epochs=1", f"model.leaky_slope={LEAKY_SLOPE}")
            for a in nn.ACTIVATIONS}


def test_the_onnx_tables_cover_every_activation_and_loss():
    assert set(ONNX_ACTIVATIONS) == set(nn.ACTIVATIONS)
    assert set(ONNX_PROBABILITIES) == set(nn.LOSSES)


# -- onnx -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", CLASSIFIERS)
@pytest.mark.parametrize("activation", list(nn.ACTIVATIONS))
def test_onnx_agrees_with_mlptrain_on_xor(xor_runs, tmp_path, activation, loss):
    path = xor_runs[activation, loss]
    exported = export_run(RunStore(path.parent), str(path), "onnx", tmp_path / "m.onnx")
    c = exported.check
    assert c["passed"] and c["samples"] == 1000 and c["classes_agree"] == 1000
    assert c["max_abs_difference"] <= ONNX_TOLERANCE
    assert exported.files == [tmp_path / "m.onnx"]

    model = onnx.load(tmp_path / "m.onnx")
    ops = [n.op_type for n in model.graph.node]
    act, (prob_op, _, _) = ONNX_ACTIVATIONS[activation], ONNX_PROBABILITIES[loss]
    if callable(act):  # built from several operators (gelu)
        act = [n.op_type for n in act(onnx, "z", "y", "f")]
    act = [act] if isinstance(act, str) else act
    assert ops == ["Gemm", *act, "Gemm", *act, "Gemm", prob_op]
    if activation == "leaky_relu":
        alphas = [a.f for n in model.graph.node for a in n.attribute if a.name == "alpha"]
        assert alphas == pytest.approx([LEAKY_SLOPE] * 2)
    (x,) = model.graph.input
    assert x.name == "x" and x.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in x.type.tensor_type.shape.dim] == ["batch", 2]
    assert [o.name for o in model.graph.output] == ["logits", "probabilities"]
    assert all(o.doc_string for o in [*model.graph.input, *model.graph.output])
    weights = np.load(path / "weights.npz")
    assert {t.name: tuple(t.dims) for t in model.graph.initializer} == {
        k: weights[k].shape for k in weights.files}
    meta = {p.key: p.value for p in model.metadata_props}
    summary = json.loads((path / "summary.json").read_text())
    assert meta["config_toml"] == (path / "config.toml").read_text()
    assert float(meta["test_accuracy"]) == summary["final"]["test_accuracy"]
    assert meta["activation"] == activation and meta["loss"] == loss
    assert "mlptrain_version" in meta and "dataset_checksums" in meta


def test_onnx_batch_dimension_is_dynamic(xor_runs, tmp_path):
    path = xor_runs["tanh", "softmax_cross_entropy"]
    export_run(RunStore(path.parent), str(path), "onnx", tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    X = np.random.default_rng(0).uniform(-0.1, 1.1, (7, 2)).astype(np.float32)
    logits, probs = session.run(None, {"x": X})
    assert logits.shape == probs.shape == (7, 2)
    for i in range(7):  # one sample at a time gives the same rows
        _, one = session.run(None, {"x": X[i:i + 1]})
        np.testing.assert_allclose(one[0], probs[i], atol=1e-6)
    source = RunSource.open(RunStore(path.parent), str(path))
    want = output_probabilities(source.network("float64"), X.astype(np.float64), 4)
    np.testing.assert_allclose(probs, want, atol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-6)


@pytest.mark.parametrize("activation", list(nn.ACTIVATIONS))
def test_onnx_agrees_with_mlptrain_on_the_mnist_test_set(mnist_runs, activation):
    path = mnist_runs[activation]
    c = export_run(RunStore(path.parent), str(path), "onnx").check
    assert c["passed"] and c["samples"] == 10_000 and c["classes_agree"] == 10_000
    assert c["max_abs_difference"] <= ONNX_TOLERANCE
    assert (path / "model.onnx").is_file()  # the default: beside the run's weights


def test_a_wrong_graph_is_refused_and_no_file_is_left(xor_runs, tmp_path, monkeypatch):
    path = xor_runs["tanh", "sigmoid_bce"]
    out = tmp_path / "m.onnx"
    assert run("export", path, "--format", "onnx", "--out", out).exit_code == 0
    good = out.read_bytes()
    # the slip a hand-written exporter could make: a tanh network exported with sigmoids
    monkeypatch.setitem(ONNX_ACTIVATIONS, "tanh", "Sigmoid")
    result = run("export", path, "--format", "onnx", "--out", out, "--force")
    assert result.exit_code == 1
    message = " ".join(result.stderr.split())
    assert "disagrees with mlptrain" in message and "1,000 test samples" in message
    assert "Traceback" not in result.output
    assert out.read_bytes() == good  # the refused graph never replaced the good file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temporary left
    result = run("export", path, "--format", "onnx", "--out", tmp_path / "new.onnx")
    assert result.exit_code == 1 and not (tmp_path / "new.onnx").exists()


# -- safetensors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_safetensors_round_trip_bit_for_bit(tmp_path, dtype):
    path = train(tmp_path / "runs", "xor.toml", f"train.dtype={dtype}", "train.epochs=5")
    result = run("export", path, "--format", "safetensors", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["identical"] and report["tensors"] == 4
    written = path / "model.safetensors"
    assert report["files"] == [str(written)]
    back = safetensors_numpy.load_file(str(written))
    weights = np.load(path / "weights.npz")
    assert sorted(back) == sorted(weights.files)
    for name in weights.files:
        assert back[name].dtype == np.dtype(dtype) == weights[name].dtype
        assert back[name].tobytes() == weights[name].tobytes()
    from safetensors import safe_open
    with safe_open(str(written), framework="np") as f:
        meta = f.metadata()
    assert meta["config_toml"] == (path / "config.toml").read_text()
    assert json.loads(meta["sizes"]) == [2, 4, 1] and meta["normalize_width"] == "0"


# -- golden ---------------------------------------------------------------------------------------


def golden_of(path, tmp_path, batch=None):
    args = ["--batch", batch] if batch else []
    result = run("export", path, "--format", "golden", "--out", tmp_path / "g.npz", *args)
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "g.npz") as g:
        arrays = {k: g[k] for k in g.files}
    return arrays, json.loads((tmp_path / "g.json").read_text())


@pytest.mark.parametrize("loss", CLASSIFIERS)
@pytest.mark.parametrize("activation", list(nn.ACTIVATIONS))
def test_golden_gradients_are_gradchecks_analytic_gradients(xor_runs, tmp_path, activation,
                                                           loss):
    path = xor_runs[activation, loss]
    g, description = golden_of(path, tmp_path)
    assert [(a["name"], tuple(a["shape"])) for a in description["arrays"]] == [
        (k, v.shape) for k, v in g.items()]
    assert description["batch"] == 8 and g["x"].shape == (8, 2)
    assert description["activation"] == activation and description["loss"] == loss

    source = RunSource.open(RunStore(path.parent), str(path))
    model = load_network(source.config, source.sizes, source.weights, "weights", "float64")
    # gradcheck on the golden batch with the run's weights. Its numeric side is not asserted
    # here: on a trained network a few gradients are ~1e-6, where central differences lose
    # their relative accuracy (gradcheck proves the math on its own batches, test_gradcheck.py)
    report = check_model(model, g["x"], g["y"], entries=0)
    for name in model.params:
        np.testing.assert_array_equal(g[f"grad.{name}"], report.analytic[name])
        np.testing.assert_array_equal(g[name], source.weights[name].astype(np.float64))


@pytest.mark.parametrize("loss", CLASSIFIERS)
@pytest.mark.parametrize("activation", list(nn.ACTIVATIONS))
def test_golden_arrays_follow_the_math(xor_runs, tmp_path, activation, loss):
    """Each array from its neighbours, written out here in plain NumPy as a port would."""
    g, _ = golden_of(xor_runs[activation, loss], tmp_path)
    f = {"relu": lambda z: np.maximum(z, 0), "tanh": np.tanh,
         "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
         "leaky_relu": lambda z: np.where(z > 0, z, LEAKY_SLOPE * z),
         "gelu": lambda z: 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3)))
         }[activation]
    h = g["x"]
    for i in range(2):
        W, b = g[f"layers.{i}.weight"], g[f"layers.{i}.bias"]
        np.testing.assert_allclose(g[f"layers.{i}.pre_activation"], h @ W.T + b, atol=1e-14)
        np.testing.assert_allclose(g[f"layers.{i}.activation"],
                                   f(g[f"layers.{i}.pre_activation"]), atol=1e-14)
        h = g[f"layers.{i}.activation"]
    z = h @ g["layers.2.weight"].T + g["layers.2.bias"]
    np.testing.assert_allclose(g["logits"], z, atol=1e-14)
    B, y = len(g["y"]), g["y"]
    if loss == "sigmoid_bce":
        p = 1 / (1 + np.exp(-z))
        loss_value = -np.mean(y * np.log(p[:, 0]) + (1 - y) * np.log(1 - p[:, 0]))
        dz = (p - y[:, None]) / B
    else:
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        loss_value = -np.mean(np.log(p[np.arange(B), y]))
        dz = (p - np.eye(2)[y]) / B
    np.testing.assert_allclose(g["probabilities"], p, atol=1e-14)
    np.testing.assert_allclose(g["loss"], loss_value, rtol=1e-12)
    np.testing.assert_allclose(g["grad.logits"], dz, atol=1e-15)
    # backward, layer by layer: dL/dW_i = dz_i^T h_{i-1}, dL/dz_{i-1} = (dz_i W_i) * f'(z_{i-1})
    for i in (2, 1, 0):
        inputs = g["x"] if i == 0 else g[f"layers.{i - 1}.activation"]
        np.testing.assert_allclose(g[f"grad.layers.{i}.weight"], dz.T @ inputs, atol=1e-14)
        np.testing.assert_allclose(g[f"grad.layers.{i}.bias"], dz.sum(axis=0), atol=1e-14)
        if i:
            zi = g[f"layers.{i - 1}.pre_activation"]
            step = 1e-6  # f' by central differences: no derivative formula shared with nn.py
            fprime = (f(zi + step) - f(zi - step)) / (2 * step)
            dz = (dz @ g[f"layers.{i}.weight"]) * fprime
            np.testing.assert_allclose(g[f"grad.layers.{i - 1}.pre_activation"], dz,
                                       atol=1e-8)


def test_golden_on_mnist_with_a_chosen_batch(mnist_runs, tmp_path):
    path = mnist_runs["relu"]
    g, _ = golden_of(path, tmp_path, batch=5)
    assert g["x"].shape == (5, 784) and g["probabilities"].shape == (5, 10)
    assert g["grad.layers.0.weight"].shape == (32, 784)
    source = RunSource.open(RunStore(path.parent), str(path))
    X, y = source.split("train")
    np.testing.assert_array_equal(g["x"], X[:5])  # the first samples of the training split
    np.testing.assert_array_equal(g["y"], y[:5])
    model = load_network(source.config, source.sizes, source.weights, "weights", "float64")
    report = check_model(model, g["x"], g["y"], entries=10)
    assert report.passed
    for name in model.params:
        np.testing.assert_array_equal(g[f"grad.{name}"], report.analytic[name])


# -- the command ----------------------------------------------------------------------------------


@pytest.mark.parametrize("module,fmt", [("onnx", "onnx"), ("onnxruntime", "onnx"),
                                        ("safetensors", "safetensors")])
def test_a_missing_library_names_the_extra(xor_runs, tmp_path, monkeypatch, module, fmt):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail, as if absent
    result = run("export", xor_runs["tanh", "sigmoid_bce"], "--format", fmt, "--out",
                 tmp_path / "m")
    assert result.exit_code == 1
    message = " ".join(result.stderr.split())
    assert f"'{module}'" in message and EXTRA_HINT in message
    assert "Traceback" not in result.output and not (tmp_path / "m").exists()


def test_usage_and_run_errors(xor_runs, tmp_path, runs_dir):
    path = xor_runs["relu", "sigmoid_bce"]
    for args in (["--format", "tflite"], ["--format", "onnx", "--opset", "12"],
                 ["--format", "safetensors", "--opset", "17"],
                 ["--format", "onnx", "--batch", "4"]):
        result = run("export", path, *args)
        assert result.exit_code == 2, (args, result.output)
    result = run("export", "no-such-run", "--format", "onnx")
    assert result.exit_code == 1 and "no run matches" in result.stderr
    result = run("export", path, "--format", "onnx", "--opset", "999")
    assert result.exit_code == 1 and "--opset 999" in result.stderr
    result = run("export", path, "--format", "onnx", "--out", tmp_path)
    assert result.exit_code == 1 and "is a directory" in result.stderr


def test_an_unfinished_run_is_refused(xor_runs, tmp_path):
    import shutil
    path = tmp_path / xor_runs["relu", "sigmoid_bce"].name
    shutil.copytree(xor_runs["relu", "sigmoid_bce"], path)
    summary = json.loads((path / "summary.json").read_text())
    (path / "summary.json").write_text(json.dumps({**summary, "status": "interrupted"}))
    result = run("export", path, "--format", "safetensors")
    assert result.exit_code == 1 and "interrupted, not completed" in result.stderr
    assert not (path / "model.safetensors").exists()


def test_an_export_never_writes_onto_a_run_s_files(xor_runs, tmp_path):
    """--out RUN/weights.npz replaced the run's trained weights (exit 0); a golden export's
    .json beside --out RUN/summary landed on the run's summary. --force changes neither."""
    path = xor_runs["relu", "sigmoid_bce"]
    before = {name: (path / name).read_bytes() for name in ("weights.npz", "summary.json")}
    linked = tmp_path / "linked-run"  # a link to the run's folder leads to the same files
    linked.symlink_to(path)
    for fmt, out in (("safetensors", path / "weights.npz"), ("onnx", linked / "weights.npz"),
                     ("golden", path / "summary"), ("safetensors", path / "curves.png")):
        for force in ([], ["--force"]):
            result = run("export", path, "--format", fmt, "--out", out, *force)
            assert result.exit_code == 1, (fmt, out, result.output)
            message = " ".join(result.stderr.split())
            assert f"is one of run {path.name}'s own files" in message, message
    assert {name: (path / name).read_bytes() for name in before} == before
    assert not (path / "summary").exists() and not (path / "curves.png").exists()


def test_golden_never_writes_its_two_files_under_one_name(xor_runs, tmp_path):
    out = tmp_path / "g.json"
    result = run("export", xor_runs["relu", "sigmoid_bce"], "--format", "golden", "--out", out)
    assert result.exit_code == 1
    assert "would both be written to" in " ".join(result.stderr.split())
    assert not out.exists()


def test_an_existing_out_is_replaced_only_with_force(xor_runs, tmp_path):
    path = xor_runs["tanh", "softmax_cross_entropy"]
    (tmp_path / "g.json").write_text("my notes")  # where golden puts the .json of g.npz
    result = run("export", path, "--format", "golden", "--out", tmp_path / "g.npz")
    assert result.exit_code == 1 and "g.json exists; pass --force" in result.stderr
    assert not (tmp_path / "g.npz").exists()
    outside = tmp_path / "outside.onnx"
    outside.write_bytes(b"theirs")
    (tmp_path / "m.onnx").symlink_to(outside)
    for fmt, out in (("golden", tmp_path / "g.npz"), ("onnx", tmp_path / "m.onnx")):
        assert run("export", path, "--format", fmt, "--out", out).exit_code == 1
        assert run("export", path, "--format", fmt, "--out", out, "--force").exit_code == 0
    assert json.loads((tmp_path / "g.json").read_text())["run_id"] == path.name
    assert outside.read_bytes() == b"theirs" and not (tmp_path / "m.onnx").is_symlink()
    assert run("export", path, "--format", "golden").exit_code == 0  # the default, in the run
    again = run("export", path, "--format", "golden")
    assert again.exit_code == 1 and "pass --force" in again.stderr


def test_python_dash_m_export_in_a_real_subprocess(xor_runs, tmp_path):
    path = xor_runs["sigmoid", "softmax_cross_entropy"]
    done = subprocess.run([sys.executable, "-m", "mlptrain", "export", str(path), "--format",
                           "onnx", "--out", str(tmp_path / "m.onnx")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert re.search(r"max \|p_onnx - p_mlptrain\| = \d\.\d\de-\d\d", done.stdout)
    assert "predicted classes agree on 1,000 of 1,000" in done.stdout


def test_the_readme_onnxruntime_example_runs(mnist_runs, tmp_path):
    """The five lines in the README, run as written in a folder with model.onnx and
    digits.npy, print the classes `mlptrain predict` gives."""
    readme = (ROOT / "README.md").read_text()
    snippet = re.search(r"```python\n(import onnxruntime.*?)```", readme, re.S).group(1)
    assert len(snippet.strip().splitlines()) == 5
    path = mnist_runs["relu"]
    assert run("export", path, "--format", "onnx", "--out", tmp_path / "model.onnx"
               ).exit_code == 0
    source = RunSource.open(RunStore(path.parent), str(path))
    X, _ = source.split("test")
    np.save(tmp_path / "digits.npy", X[:20].reshape(20, 28, 28))
    done = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 0, done.stderr
    result = run("predict", path, tmp_path / "digits.npy", "--json")
    want = [s[0]["class"] for s in json.loads(result.stdout)["predictions"]]
    assert re.findall(r"\d", done.stdout) == [str(c) for c in want]  # "[7 2 1 0 4 ...]"


@pytest.mark.slow
def test_the_mnist_config_exports_to_onnx_that_agrees(tmp_path):
    """The README's MNIST run, as configured (15 epochs), on all 10,000 test images."""
    path = train(tmp_path / "runs", "mnist.toml")
    c = export_run(RunStore(path.parent), str(path), "onnx").check
    assert c["passed"] and c["classes_agree"] == c["samples"] == 10_000
    assert c["max_abs_difference"] <= ONNX_TOLERANCE
