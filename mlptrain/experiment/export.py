"""A trained run's network in formats other tools read, each checked before it is handed out.

- onnx: the forward pass as an ONNX graph (a standardized run's Sub and Div first, so the
  graph takes raw features; Gemm + activation per layer, then the loss's probabilities),
  float32, written with the `onnx` package and then run by onnxruntime over the run's whole
  (raw) test set against mlptrain's own forward pass. A file that disagrees (largest
  |p_onnx - p_mlptrain| above ONNX_TOLERANCE, or any predicted class different) is never left
  behind.
- safetensors: weights.npz's arrays under the same names (and a standardized run's
  preprocess.mean and preprocess.std), with the run's metadata; read back and compared byte
  for byte.
- golden: reference arrays for a port: one fixed batch of the run's data, every layer's
  pre-activation and activation, the logits, the loss and every gradient, computed in float64
  by this project's own forward and backward passes; a JSON file beside it names and shapes
  them.

The libraries are the optional extra `mlptrain[export]`, imported only here and only when used.
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import mlptrain
from mlptrain import nn
from mlptrain.config import Config
from mlptrain.data import load_dataset
from mlptrain.data.standardize import Standardizer, TargetScale
from mlptrain.errors import ConfigError, ExportError
from mlptrain.experiment.predict import checked_weights, load_network
from mlptrain.experiment.setup import (as_saved, run_config, saved_loss, saved_scaler,
                                       saved_target_scale)
from mlptrain.model import MLP
from mlptrain.nn import GELU
from mlptrain.runs import Run, RunStore, atomic_write_bytes, npz_bytes
from mlptrain.runs.query import require_weights
from mlptrain.runs.store import check_not_run_file
from mlptrain.seeding import streams

FORMATS = ("onnx", "safetensors", "golden")
DEFAULT_FILES = {"onnx": "model.onnx", "safetensors": "model.safetensors", "golden": "golden.npz"}
EXTRA_HINT = "pip install 'mlptrain[export]'"

ONNX_TOLERANCE = 1e-5  # largest |p_onnx - p_mlptrain| accepted; float32 round-off is ~1e-7
DEFAULT_OPSET = 17  # old enough for most runtimes (onnxruntime >= 1.11, onnxruntime-web)
MIN_OPSET = 13  # Softmax over one axis (not the flattened tail) from opset 13 on
GOLDEN_BATCH = 8  # samples in a golden file: small enough to print, big enough to catch a bug


def _gelu_nodes(onnx, z: str, y: str, name: str) -> list:
    """nn.GELU's tanh form from basic operators, y = 0.5 z (1 + tanh(C z (1 + A z^2))): ONNX's
    own Gelu arrived in opset 20, newer than most runtimes."""

    def const(key: str, value: float) -> str:
        out = f"{name}.{key}"
        nodes.append(onnx.helper.make_node("Constant", [], [out], name=out, value=onnx.helper
                                           .make_tensor(out, onnx.TensorProto.FLOAT, [], [value])))
        return out

    def op(kind: str, *inputs: str, out: str | None = None) -> str:
        out = out or f"{name}.{len(nodes)}"
        nodes.append(onnx.helper.make_node(kind, list(inputs), [out], name=out))
        return out

    nodes: list = []
    one, a, c, half = [const(k, v) for k, v in (("one", 1.0), ("A", GELU.A), ("C", GELU.C),
                                                ("half", 0.5))]
    u = op("Mul", op("Mul", op("Add", op("Mul", op("Mul", z, z), a), one), z), c)
    op("Mul", op("Mul", op("Add", op("Tanh", u), one), z), half, out=y)  # 0.5 (1 + tanh u) z
    return nodes


# ONNX operator per activation (or the function that builds its nodes), keyed by the config
# names of nn.ACTIVATIONS
ONNX_ACTIVATIONS = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid",
                    "leaky_relu": "LeakyRelu", "gelu": _gelu_nodes}
# ONNX operator that turns logits into the `probabilities` output, keyed by nn.LOSSES names
ONNX_PROBABILITIES = {
    "softmax_cross_entropy": ("Softmax", {"axis": -1},
                              "(batch, classes): softmax of the logits over the classes"),
    "sigmoid_bce": ("Sigmoid", {}, "(batch, 1): sigmoid of the logit, P(class 1)"),
    # a regression's output is its prediction, in the target's units (target_nodes)
    "mse": ("Identity", {}, "(batch, 1): the predicted value, in the target's units"),
    "huber": ("Identity", {}, "(batch, 1): the predicted value, in the target's units"),
    "poisson": ("Exp", {}, "(batch, 1): the predicted mean count, e^logit"),
}


def output_name(loss: str) -> str:
    """The graph's output past the logits: a classifier's probabilities, a regression's
    prediction."""
    return "prediction" if nn.LOSSES[loss].task == "regression" else "probabilities"


@dataclass
class Exported:
    run_id: str
    format: str
    files: list[Path]
    check: dict[str, Any] = field(default_factory=dict)  # what was verified, and the figures


def export_run(store: RunStore, ref: str, fmt: str, out: Path | None = None,
               opset: int = DEFAULT_OPSET, batch: int = GOLDEN_BATCH,
               force: bool = False) -> Exported:
    """Writes a completed run's network as `fmt` to `out` (default: in the run directory);
    an existing file is replaced only with `force`, and a run's own files never are."""
    if fmt not in FORMATS:
        raise ConfigError(f"export format {fmt!r} is not one of {', '.join(FORMATS)}.")
    source = RunSource.open(store, ref)
    path = Path(out) if out is not None else source.run.path / DEFAULT_FILES[fmt]
    check_outputs([path, golden_json(path)] if fmt == "golden" else [path], force)
    if fmt == "onnx":
        return export_onnx(source, path, opset)
    if fmt == "safetensors":
        return export_safetensors(source, path)
    return export_golden(source, path, batch)


def check_outputs(files: list[Path], force: bool) -> None:
    """Refuses, before any work, to write two of an export's files under one name, to replace
    a run's own file (weights, summary, ...: whatever --out says), or to replace an existing
    file without `force` (as `config init` does)."""
    if len({f.parent.resolve() / f.name for f in files}) < len(files):
        raise ExportError(f"--out {files[0]}: the golden arrays and their description "
                          f"would both be written to {files[1]}; give a name ending in .npz "
                          "(the .json is written beside it).")
    for f in files:
        if f.is_dir():
            raise ExportError(f"--out {f} is a directory; give the file to write.")
        check_not_run_file(f)
        if os.path.lexists(f) and not force:
            raise ExportError(f"{f} exists; pass --force to overwrite it, or choose another "
                              "--out.")


# -- the run being exported -----------------------------------------------------------------------


@dataclass
class RunSource:
    """A completed run's weights, config and summary: everything an export reads."""

    run: Run
    config: Config
    config_text: str
    summary: dict[str, Any]
    weights: dict[str, np.ndarray]
    scaler: Standardizer | None = None  # the run's standardization of its inputs, if any
    target: TargetScale | None = None  # ... and of a regression's target

    @property
    def regression(self) -> bool:
        return nn.LOSSES[self.summary["model"]["loss"]].task == "regression"

    @classmethod
    def open(cls, store: RunStore, ref: str) -> RunSource:
        run = store.find(ref)
        require_weights(run)  # as eval says: why a run has none (stale, ...), how to resume
        summary = run.read_summary()
        if summary.get("status") != "completed":
            raise ExportError(f"run {run.run_id} is {summary.get('status', 'unknown')}, not "
                              "completed: only a finished run has final weights to export.")
        config = run_config(run)
        _, weights = checked_weights(run, config, summary["model"]["sizes"])
        return cls(run, config, run.read_config_text(), summary, weights,
                   saved_scaler(run, summary), saved_target_scale(run, summary))

    @property
    def sizes(self) -> list[int]:
        return self.summary["model"]["sizes"]

    def network(self, dtype) -> MLP:
        """The run's network on the CPU in `dtype`, without dropout (inference semantics)."""
        return load_network(self.config, self.sizes, self.weights,
                            str(self.run.path / "weights.npz"), dtype,
                            saved_loss(self.run, self.config, self.summary))

    def split(self, name: str, raw: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """One split of the run's own data, drawn as the run drew it (same seed), as its
        network saw it, or with `raw` as the file holds it (before any standardization)."""
        scaler = None if raw else self.scaler
        data = as_saved(self.config, scaler).data
        return load_dataset(data, streams(self.config.train.seed), scaler=scaler).split(name)

    def preprocess_arrays(self) -> dict[str, np.ndarray]:
        """The run's standardization as named arrays ({} without one): exports store them
        so that a user applies them to raw features, x' = (x - mean) / std."""
        statistics = [s.arrays() for s in (self.scaler, self.target) if s is not None]
        return {f"preprocess.{k}": v for arrays in statistics for k, v in arrays.items()}

    def metadata(self) -> dict[str, str]:
        """What a user of an exported file may want to know about where it came from."""
        final, dataset = self.summary.get("final") or {}, self.summary.get("dataset") or {}
        model = self.summary["model"]
        return {
            "mlptrain_version": mlptrain.__version__,  # the exporter's
            "trained_with": str((self.summary.get("versions") or {}).get("mlptrain")),
            "run_id": self.run.run_id,
            "sizes": json.dumps(self.sizes),
            "activation": model["activation"],
            "leaky_slope": repr(self.config.model.leaky_slope),
            "loss": model["loss"],
            **({f"test_{k}": repr(final.get(f"test_{k}")) for k in ("rmse", "r2")}
               if self.regression else {"test_accuracy": repr(final.get("test_accuracy"))}),
            "test_loss": repr(final.get("test_loss")),
            "dataset": str(dataset.get("name")),
            "dataset_source": str(dataset.get("source")),
            "input_shape": json.dumps(dataset.get("input_shape")),
            "normalize_width": repr(self.config.data.normalize_width),  # 0: inputs as given
            "dataset_checksums": json.dumps(dataset.get("checksums") or {}, sort_keys=True),
            "config_toml": self.config_text,
            # where the inputs are standardized: the arrays preprocess.mean and .std
            **({"standardized": "true"} if self.scaler is not None else {}),
            # where the graph returns the target to its units: preprocess.target_mean and _std
            **({"target_standardized": "true"} if self.target is not None else {}),
        }


def output_probabilities(model: MLP, X: np.ndarray, batch_size: int) -> np.ndarray:
    """mlptrain's probabilities in the ONNX output's form: softmax (N, C), or sigmoid (N, 1)
    for a one-output classifier, or a regression's prediction (N, 1), in float64."""
    parts = []
    for start in range(0, len(X), batch_size):
        ws = model.workspace(min(batch_size, len(X) - start))
        ws.x[...] = X[start:start + ws.batch_size]
        logits = model.forward(ws)
        p = model.loss.probabilities(np, logits)  # (B, C); (B, 2) for one output's classes
        parts.append(np.asarray(_output_form(model, p), np.float64))
    return np.concatenate(parts)


def _output_form(model: MLP, p: np.ndarray) -> np.ndarray:
    """loss.probabilities (B, C) as the ONNX output has them: a one-logit classifier's
    P(class 1) alone (B, 1); anything else as it is (a regression's prediction is (B, 1))."""
    return p[:, 1:] if model.sizes[-1] == 1 and p.shape[1] == 2 else p


def predicted_classes(p: np.ndarray) -> np.ndarray:
    """The class each row of probabilities names; one column is P(class 1)."""
    return (p[:, 0] > 0.5).astype(np.int64) if p.shape[1] == 1 else p.argmax(axis=1)


def _require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ExportError(f"exporting needs the Python package {module!r}, which is not "
                          f"installed; install the export extra with: {EXTRA_HINT}") from None


def _write(path: Path, data: bytes, check=None) -> None:
    """`data` written atomically to `path`, its folder created; `check` reads the temporary
    and raises to keep a file that fails it from ever taking `path`."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data, check)
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}.") from None


# -- onnx -----------------------------------------------------------------------------------------


def onnx_model(source: RunSource, opset: int = DEFAULT_OPSET):
    """The run's forward pass as a checked onnx.ModelProto: input `x` (batch, features),
    outputs `logits` and `probabilities`, every weight float32 under its weights.npz name."""
    onnx = _require("onnx")
    _require("onnx.numpy_helper")
    helper, TensorProto = onnx.helper, onnx.TensorProto
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise ConfigError(f"--opset {opset} is outside what this export supports: "
                          f"{MIN_OPSET} to {newest} (the installed onnx {onnx.__version__}).")
    model_cfg, sizes = source.config.model, source.sizes
    activation, loss = source.summary["model"]["activation"], source.summary["model"]["loss"]
    last = len(sizes) - 2
    nodes, initializers, value = _standardize_nodes(onnx, source)
    for i in range(last + 1):
        weight, bias = f"layers.{i}.weight", f"layers.{i}.bias"
        for name in (weight, bias):  # raw float32 bytes, under the weights.npz name
            initializers.append(onnx.numpy_helper.from_array(
                np.ascontiguousarray(source.weights[name], np.float32), name))
        z = "logits" if i == last else f"layers.{i}.pre_activation"
        nodes.append(helper.make_node(
            "Gemm", [value, weight, bias], [z], name=f"layers.{i}.linear", transB=1,
            doc_string=f"{z} = input @ {weight}^T + {bias}; {weight} is (out, in) = "
                       f"({sizes[i + 1]}, {sizes[i]})"))
        if i < last:
            y = f"layers.{i}.activation"
            attrs = {"alpha": float(model_cfg.leaky_slope)} if activation == "leaky_relu" else {}
            make = ONNX_ACTIVATIONS[activation]
            nodes += make(onnx, z, y, f"layers.{i}.{activation}") if callable(make) else [
                helper.make_node(make, [z], [y], name=f"layers.{i}.{activation}",
                                 doc_string=f"{activation} of layer {i}", **attrs)]
            value = y
    op, attrs, meaning = ONNX_PROBABILITIES[loss]
    output = output_name(loss)
    linked = "prediction.standardized" if source.target is not None else output
    nodes.append(helper.make_node(op, ["logits"], [linked], name=output,
                                  doc_string=meaning, **attrs))
    if source.target is not None:
        target_nodes, target_arrays = _target_nodes(onnx, source, linked, output)
        nodes += target_nodes
        initializers += target_arrays
    graph = helper.make_graph(
        nodes, "mlptrain_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", sizes[0]],
                                       f"(batch, {sizes[0]}) float32 samples, scaled and "
                                       "preprocessed as in training (MNIST: pixels in [0, 1], "
                                       "row by row; metadata normalize_width > 0: each digit "
                                       "stretched to that width first); a user's own features "
                                       "as the file holds them (metadata standardized: the "
                                       "graph standardizes them itself)")],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", sizes[-1]],
                                       f"(batch, {sizes[-1]}) the output layer before "
                                       f"{op.lower()}"),
         helper.make_tensor_value_info(output, TensorProto.FLOAT,
                                       ["batch", sizes[-1]], meaning)],
        initializers,
        doc_string=f"{'-'.join(map(str, sizes))} MLP ({activation}, {loss}) trained by "
                   f"mlptrain, run {source.run.run_id}")
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(
        graph, opset_imports=opsets, producer_name="mlptrain",
        producer_version=mlptrain.__version__,
        ir_version=helper.find_min_ir_version_for(opsets),  # the oldest runtime that can
        doc_string="A multilayer perceptron exported by `mlptrain export`; metadata_props "
                   "hold its config, test accuracy and dataset checksums.")
    helper.set_model_props(model, source.metadata())
    onnx.checker.check_model(model, full_check=True)
    return model


def _standardize_nodes(onnx, source: RunSource) -> tuple[list, list, str]:
    """(nodes, initializers, the value the first Gemm reads): x standardized by the run's
    statistics, (x - preprocess.mean) / preprocess.std, so the graph takes raw features as the
    run's data file holds them; none where the run did not standardize (x itself)."""
    if source.scaler is None:
        return [], [], "x"
    initializers = [onnx.numpy_helper.from_array(np.asarray(a, np.float32), f"preprocess.{k}")
                    for k, a in source.scaler.arrays().items()]
    nodes = [onnx.helper.make_node("Sub", ["x", "preprocess.mean"], ["preprocess.centred"],
                                   name="preprocess.centre", doc_string="x - mean, the "
                                   "mean of each feature over the run's training split"),
             onnx.helper.make_node("Div", ["preprocess.centred", "preprocess.std"],
                                   ["preprocess.standardized"], name="preprocess.scale",
                                   doc_string="divided by each feature's standard deviation "
                                   "there (1 for a constant feature)")]
    return nodes, initializers, "preprocess.standardized"


def _target_nodes(onnx, source: RunSource, value: str, output: str) -> tuple[list, list]:
    """(nodes, initializers): a standardized target's prediction back in the target's units,
    value * preprocess.target_std + preprocess.target_mean."""
    arrays = source.target.arrays()
    initializers = [onnx.numpy_helper.from_array(np.asarray(a, np.float32), f"preprocess.{k}")
                    for k, a in arrays.items()]
    nodes = [onnx.helper.make_node("Mul", [value, "preprocess.target_std"],
                                   ["prediction.scaled"], name="target.scale",
                                   doc_string="times the target's standard deviation over "
                                   "the run's training split"),
             onnx.helper.make_node("Add", ["prediction.scaled", "preprocess.target_mean"],
                                   [output], name="target.centre",
                                   doc_string="plus the target's mean there")]
    return nodes, initializers


def verify_onnx(path: Path, source: RunSource) -> dict[str, Any]:
    """Runs the ONNX file with onnxruntime on the run's whole test set and compares its
    probabilities with mlptrain's forward pass in the run's own dtype."""
    ort = _require("onnxruntime")
    X, _ = source.split("test")
    raw = source.split("test", raw=True)[0] if source.scaler is not None else X
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (got,) = session.run([output_name(source.summary["model"]["loss"])],
                             {"x": np.asarray(raw, np.float32)})
    except Exception as exc:  # onnxruntime's errors share no base class worth naming
        raise ExportError(f"onnxruntime {ort.__version__} could not run the exported graph "
                          f"({exc}); try a lower --opset.") from None
    model = source.network(source.config.train.dtype)
    want = output_probabilities(model, X, source.config.train.eval_batch_size)
    worst = float(np.max(np.abs(got.astype(np.float64) - want))) if len(X) else 0.0
    found = {"runtime": f"onnxruntime {ort.__version__}", "samples": len(X),
             "max_abs_difference": worst}
    if source.regression:  # values in the target's units: float32 round-off scales with them
        tolerance = ONNX_TOLERANCE * max(1.0, float(np.max(np.abs(want), initial=0.0)))
        return {**found, "tolerance": tolerance, "passed": worst <= tolerance}
    agree = int(np.sum(predicted_classes(got) == predicted_classes(want)))
    return {**found, "classes_agree": agree, "tolerance": ONNX_TOLERANCE,
            "passed": worst <= ONNX_TOLERANCE and agree == len(X)}


def classes_agree(check: dict[str, Any], sep: str = ", ", end: str = "") -> str:
    """'{sep}predicted classes agree on N{end}' of a classifier's check; '' for a
    regression's, which has no classes."""
    if "classes_agree" not in check:
        return ""
    return f"{sep}predicted classes agree on {check['classes_agree']:,}{end}"


def export_onnx(source: RunSource, path: Path, opset: int = DEFAULT_OPSET) -> Exported:
    data = onnx_model(source, opset).SerializeToString()
    check: dict[str, Any] = {}

    def verified(tmp: Path) -> None:
        """Run under its temporary name: a refused file never takes `path`."""
        check.update(verify_onnx(tmp, source))
        if not check["passed"]:
            raise ExportError(
                f"the exported ONNX graph disagrees with mlptrain on run "
                f"{source.run.run_id}'s {check['samples']:,} test samples: largest "
                f"|p_onnx - p_mlptrain| = {check['max_abs_difference']:.3g} (allowed "
                f"{check['tolerance']:g}){classes_agree(check)}. No file was written to "
                f"{path}.")

    _write(path, data, verified)
    return Exported(source.run.run_id, "onnx", [path], {"opset": opset, **check})


# -- safetensors ----------------------------------------------------------------------------------


def export_safetensors(source: RunSource, path: Path) -> Exported:
    """weights.npz as safetensors (same names, dtypes and bytes), read back and compared
    before the file takes `path`."""
    _require("safetensors")
    st = _require("safetensors.numpy")
    metadata = {"format": "np", **source.metadata()}
    tensors = {**source.weights, **source.preprocess_arrays()}
    counts: dict[str, int] = {}

    def read_back(tmp: Path) -> None:
        back, back_meta = read_safetensors(tmp)
        mismatched = [name for name, w in tensors.items() if name not in back
                      or back[name].dtype != w.dtype or back[name].shape != w.shape
                      or back[name].tobytes() != w.tobytes()]
        if mismatched or set(back) != set(tensors) or back_meta != metadata:
            raise ExportError(f"{path} did not read back as written (tensors differing: "
                              f"{mismatched or 'none'}; metadata equal: "
                              f"{back_meta == metadata}); no file was written.")
        counts.update(tensors=len(back), bytes=sum(w.nbytes for w in back.values()))

    _write(path, st.save(tensors, metadata=metadata), read_back)
    return Exported(source.run.run_id, "safetensors", [path], {**counts, "identical": True})


def read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """A safetensors file's arrays and its metadata string map."""
    safetensors = _require("safetensors")
    with safetensors.safe_open(str(path), framework="np") as f:
        return {name: f.get_tensor(name) for name in f.keys()}, dict(f.metadata() or {})


# -- golden ---------------------------------------------------------------------------------------


def golden_batch(source: RunSource, batch: int = GOLDEN_BATCH) -> tuple[np.ndarray, np.ndarray]:
    """The first `batch` samples of the run's training split (as the run split its data)."""
    X, y = source.split("train")
    return X[:batch], y[:batch]


def golden_arrays(model: MLP, X: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Every array a port can be checked against, from this project's own passes over (X, y).

    Activations, logits, the loss and the gradients come straight from the model's forward and
    backward; a hidden layer's pre-activation z = input W^T + b, which the forward pass
    overwrites in place, is recomputed with the same primitives.
    """
    ops, B = model.ops, len(y)
    ws = model.workspace(B)
    ws.x[...] = X
    targets = model.loss.targets(np, y, model.dtype)
    loss_sum = model.loss_and_grad(ws, targets, 1.0 / B)[0]  # gradients of the batch mean
    labels = np.int64 if model.loss.task == "classification" else np.float64  # or values
    arrays: dict[str, np.ndarray] = {"x": np.array(X, model.dtype), "y": np.array(y, labels)}
    arrays.update(model.state_dict())
    for i, layer in enumerate(model.layers[:-1]):
        z = layer.forward(ops, ws.acts[i], out=np.empty_like(ws.acts[i + 1]))  # (B, O)
        arrays[f"layers.{i}.pre_activation"] = ops.add_bias(z, layer.bias)
        arrays[f"layers.{i}.activation"] = ws.acts[i + 1].copy()
    arrays["logits"] = ws.acts[-1].copy()
    arrays["probabilities"] = np.array(_output_form(model, model.loss.probabilities(
        np, ws.acts[-1])))
    arrays["loss"] = np.array(float(loss_sum) / B)
    arrays["grad.logits"] = ws.dlogits.copy()
    for i in range(len(model.layers) - 1):  # backward leaves dL/dz in deltas, in place
        arrays[f"grad.layers.{i}.pre_activation"] = ws.deltas[i + 1].copy()
    arrays.update({f"grad.{name}": np.array(g, order="C") for name, g in model.grads.items()})
    return arrays


def golden_description(source: RunSource, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """golden.json: how the arrays were made and what each one is."""
    model = source.summary["model"]
    meanings = {
        "x": "inputs, the first samples of the run's training split, as the network takes them",
        "y": "class labels (int64)" if not source.regression else "target values (float64)",
        "logits": "output layer: input @ weight^T + bias",
        "probabilities": ONNX_PROBABILITIES[model["loss"]][2],
        "loss": "mean loss over the batch (0-d)",
        "grad.logits": "d loss / d logits",
        "preprocess.mean": "each feature's mean over the training split: x = (the file's "
                           "features - preprocess.mean) / preprocess.std",
        "preprocess.std": "each feature's standard deviation there (1 for a constant one)",
        "preprocess.target_mean": "the target's mean over the training split: the network "
                                  "predicts (target - target_mean) / target_std",
        "preprocess.target_std": "the target's standard deviation there",
    }
    for name in arrays:
        if name.startswith(("layers.", "grad.layers.")) and name not in meanings:
            what = name.removeprefix("grad.")
            meanings[name] = (f"d loss / d {what}" if name.startswith("grad.") else
                              {"weight": "(out, in) weight", "bias": "(out,) bias",
                               "pre_activation": "input @ weight^T + bias",
                               "activation": f"{model['activation']}(pre_activation)"}
                              [what.rsplit(".", 1)[1]])
    return {
        "format": "mlptrain golden vectors", "version": 1, "run_id": source.run.run_id,
        "mlptrain_version": mlptrain.__version__, "sizes": source.sizes,
        "activation": model["activation"], "leaky_slope": source.config.model.leaky_slope,
        "loss": model["loss"], "label_smoothing": source.config.model.label_smoothing,
        "batch": len(arrays["y"]), "dtype": "float64",
        "notes": "One forward and backward pass in float64 with the run's final weights, "
                 "without dropout. Gradients are of the batch-mean loss (with the run's label "
                 "smoothing, if any). layers.{i} counts the Linear layers from 0; the last "
                 "one's output is the logits.",
        "arrays": [{"name": name, "shape": list(a.shape), "dtype": str(a.dtype),
                    "meaning": meanings[name]} for name, a in arrays.items()],
    }


def export_golden(source: RunSource, path: Path, batch: int = GOLDEN_BATCH) -> Exported:
    if batch < 1:
        raise ConfigError(f"--batch {batch}: a golden batch needs at least one sample.")
    X, y = golden_batch(source, batch)
    arrays = {**golden_arrays(source.network("float64"), X, y), **source.preprocess_arrays()}
    description = golden_description(source, arrays)
    json_path = golden_json(path)
    _write(path, npz_bytes(arrays))
    _write(json_path, _short_json(description).encode("utf-8"))
    return Exported(source.run.run_id, "golden", [path, json_path], {
        "batch": description["batch"], "arrays": len(arrays), "loss": float(arrays["loss"])})


def golden_json(path: Path) -> Path:
    """Where golden.json goes: beside the arrays, under their name with .json."""
    return path.with_suffix(".json")


def _short_json(description: dict[str, Any]) -> str:
    """Indented JSON with one line per key and per array: short enough to read at a glance."""
    head = [f" {json.dumps(k)}: {json.dumps(v)}" for k, v in description.items() if k != "arrays"]
    arrays = ",\n".join(f"  {json.dumps(a)}" for a in description["arrays"])
    return "{\n" + ",\n".join(head) + ',\n "arrays": [\n' + arrays + "\n ]\n}\n"
