"""Trust, round three: what enters the tool from outside, end to end through the commands.

Starting weights, data files, inputs to score and config values either do what they say or
are refused with a message naming the file, array or key (exit 1, no traceback); every path
into a run's network sees samples as the run's own splits were; --json is strict JSON."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from conftest import CONFIGS, ROOT
from typer.testing import CliRunner

from mlptrain.cli import app
from mlptrain.cli.common import json_text
from mlptrain.config import SECTIONS, load_config
from mlptrain.errors import ConfigError, DataError
from mlptrain.experiment import evaluate_run, fit_experiment
from mlptrain.experiment.setup import load_data_as_given, prepare_run
from mlptrain.reports.arrays import run_model
from mlptrain.runs import RunStore

runner = CliRunner()
XOR = CONFIGS / "xor.toml"


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def mlptrain(*args, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "mlptrain", *map(str, args)], env=env,
                          capture_output=True, timeout=timeout, **kwargs)


def clear_error(result, *phrases: str) -> str:
    """The one-paragraph error of a command that failed as the tool explains failures."""
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    text = " ".join(result.stderr.split())
    assert "Traceback" not in text
    for phrase in phrases:
        assert phrase in text, text
    return text


def xor_fit(runs: Path, *overrides: str):
    return fit_experiment(load_config(XOR, ["train.epochs=2", "report.plots=false",
                                            *overrides]), RunStore(runs))


# -- starting weights ------------------------------------------------------------------------------


def test_nan_in_starting_weights_names_the_file_and_the_array_not_the_learning_rate(runs_dir,
                                                                                      tmp_path):
    weights = dict(np.load(xor_fit(runs_dir).path / "weights.npz"))
    weights["layers.1.weight"][0, 2] = np.nan
    start = tmp_path / "start.npz"
    np.savez(start, **weights)
    with pytest.raises(DataError) as caught:
        xor_fit(runs_dir, f"model.weights='{start}'")
    message = str(caught.value)
    assert f"[model] weights = '{start}': array 'layers.1.weight' holds 1 NaN" in message
    assert "index (0, 2)" in message and "lr" not in message


def test_string_weights_of_the_right_names_and_shapes_are_refused(runs_dir, tmp_path):
    weights = dict(np.load(xor_fit(runs_dir).path / "weights.npz"))
    start = tmp_path / "start.npz"
    np.savez(start, **{k: v.astype(str) for k, v in weights.items()})  # "0.123" converts
    with pytest.raises(DataError, match="array 'layers.0.weight' is text"):
        xor_fit(runs_dir, f"model.weights='{start}'")


# -- data that is not a file -----------------------------------------------------------------------


def test_a_fifo_as_the_data_path_is_refused_at_once(tmp_path):
    fifo = tmp_path / "data.npz"
    os.mkfifo(fifo)  # no writer ever comes: a reader that opens it waits for ever
    done = mlptrain("fit", XOR, "--runs-dir", tmp_path / "runs", "--set", "data.dataset=npz",
                    "--set", f"data.path='{fifo}'", timeout=60, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"{fifo} is not a regular file" in " ".join(done.stderr.split())
    assert not (tmp_path / "runs").exists()


def test_data_from_stdin_is_refused_rather_than_read_once_and_hung_on_at_resume(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.random.default_rng(0).random((40, 2)),
             y=np.arange(40) % 2)
    done = mlptrain("fit", XOR, "--runs-dir", tmp_path / "runs", "--set", "data.dataset=npz",
                    "--set", "data.path='/dev/stdin'", timeout=60,
                    input=(tmp_path / "d.npz").read_bytes())
    stderr = done.stderr.decode()
    assert done.returncode == 1 and "Traceback" not in stderr, stderr
    assert "/dev/stdin is not a regular file" in " ".join(stderr.split())


# -- inputs to score -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def relu_run(tmp_path_factory):
    """An XOR network in float64 whose weights make huge but finite inputs overflow inside it:
    every hidden unit sums both inputs (1e308 + 1e308 = inf), and the output subtracts them."""
    runs = tmp_path_factory.mktemp("runs")
    finished = xor_fit(runs, "model.activation=relu", "train.dtype=float64")
    run = RunStore(runs).find(finished.run_id)
    run.write_weights({"layers.0.weight": np.ones((4, 2)), "layers.0.bias": np.zeros(4),
                       "layers.1.weight": np.array([[1.0, -1.0, 1.0, -1.0]]),
                       "layers.1.bias": np.zeros(1)})
    return runs, finished.run_id


@pytest.mark.parametrize("name, write, phrase", [
    ("zip.npy", lambda p: np.savez(open(p, "wb"), X=np.ones(2)),
     "is a zip archive (an .npz), not a single .npy array"),
    ("complex.npy", lambda p: np.save(p, np.array([1 + 2j, 0])), "is complex (complex128"),
    ("object.npz", lambda p: np.savez(p, X=np.array([1.0, None], dtype=object)),
     "array 'X' is an object array"),
    ("lies.npy", lambda p: Path(p).write_bytes(b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', "
                                               b"'fortran_order': False, 'shape': "
                                               b"(1000000000000,), }" + b" " * 53 + b"\n"),
     "claims shape (1000000000000,) of float64"),
])
def test_inputs_of_the_wrong_kind_are_refused_by_predict(relu_run, tmp_path, name, write,
                                                         phrase):
    runs, run_id = relu_run
    write(tmp_path / name)
    clear_error(run("predict", run_id, tmp_path / name, "--runs-dir", runs, "--json"), phrase)


def test_finite_inputs_that_overflow_the_network_are_refused_never_printed_as_nan(relu_run,
                                                                                  tmp_path):
    runs, run_id = relu_run
    np.save(tmp_path / "huge.npy", np.array([[0.5, 0.5], [1e308, 1e308]]))
    result = run("predict", run_id, tmp_path / "huge.npy", "--runs-dir", runs, "--json")
    clear_error(result, "huge.npy: sample 1 drives the network's outputs out of range",
                "its largest |value| is 1e+308")
    assert "NaN" not in result.stdout
    np.savez(tmp_path / "huge.npz", X=np.array([[1e308, 1e308]]), y=np.array([1]))
    evaluated = run("eval", run_id, "--data", tmp_path / "huge.npz", "--runs-dir", runs, "--json")
    clear_error(evaluated, "huge.npz (array X): sample 0 drives the network's outputs")
    assert "NaN" not in evaluated.stdout


def test_inputs_beyond_the_network_dtype_are_refused(runs_dir, tmp_path):
    finished = xor_fit(runs_dir)  # float32: 1e300 would become inf
    np.save(tmp_path / "big.npy", np.array([0.0, 1e300]))
    clear_error(run("predict", finished.run_id, tmp_path / "big.npy", "--json"),
                "sample 0 holds 1e+300 (feature 1), beyond what the run's float32 network can "
                "hold")


# -- every path into the network sees what the run's splits saw ------------------------------------


@pytest.fixture(scope="module")
def narrow_run(tmp_path_factory):
    """A small MNIST run trained on digits normalised to 14 pixels wide, and its test digits
    as a user would save them: the raw 0-255 pixels, as given."""
    runs = tmp_path_factory.mktemp("runs")
    config = load_config(CONFIGS / "mnist.toml", [
        "data.normalize_width=14", "data.limit=3000", "train.epochs=1", "model.hidden=32",
        "report.plots=false"])
    finished = fit_experiment(config, RunStore(runs))
    X, y = load_data_as_given(config).split("test")
    digits = runs / "digits.npz"
    np.savez(digits, X=np.rint(X * 255).astype(np.uint8), y=y)
    return runs, finished, digits


def test_eval_data_scores_the_runs_own_digits_as_eval_recorded_them(narrow_run):
    runs, finished, digits = narrow_run
    recorded = finished.summary["final"]["test_accuracy"]
    result = evaluate_run(RunStore(runs), finished.run_id, data=digits)
    assert result["samples"] == 10_000 and result["accuracy"] == recorded
    assert any("14 pixels wide" in note for note in result["notes"])
    assert evaluate_run(RunStore(runs), finished.run_id)["accuracy"] == recorded


def test_predict_classifies_the_runs_own_digits_as_its_test_split(narrow_run, tmp_path):
    runs, finished, digits = narrow_run
    batch = tmp_path / "first.npy"
    np.save(batch, np.load(digits)["X"][:40].reshape(40, 28, 28))
    result = run("predict", finished.run_id, batch, "--runs-dir", runs, "--json")
    assert result.exit_code == 0, result.output
    classes = [sample[0]["class"] for sample in json.loads(result.stdout)["predictions"]]
    p = prepare_run(RunStore(runs).find(finished.run_id))
    X, _ = p.dataset.split("test")
    assert classes == run_model(p.model, X[:40], 40, hidden=False).predictions.tolist()


# -- config values that would overflow later -------------------------------------------------------


FLOAT_KEYS = [(section, f.name) for section, cls in SECTIONS.items() for f in fields(cls)
              if "float" in str(f.type)]


def test_every_number_in_the_config_has_a_finite_range():
    for section, key in FLOAT_KEYS:
        meta = {f.name: f.metadata for f in fields(SECTIONS[section])}[key]
        assert meta["low"] is not None and meta["high"] is not None, f"{section}.{key}"
        assert math.isfinite(meta["low"]) and math.isfinite(meta["high"]), f"{section}.{key}"
    for config in CONFIGS.glob("*.toml"):  # the shipped configs stay inside
        load_config(config)


@pytest.mark.parametrize("section, key", FLOAT_KEYS)
def test_a_value_that_would_overflow_later_is_refused_at_load_naming_the_key(section, key):
    table = "dict" in str(next(f.type for f in fields(SECTIONS[section]) if f.name == key))
    value, named = ("{a = 1e308}", f"{key}.a") if table else ("1e308", key)  # a table's entry
    with pytest.raises(ConfigError, match=rf"--set {section}\.{named} = 1e\+308: expected a "
                                          "value"):
        load_config(XOR, [f"{section}.{key}={value}"])


def test_xor_noise_of_1e308_is_a_config_error_on_the_command_line(tmp_path):
    result = run("fit", XOR, "--set", "data.noise=1e308", "--runs-dir", tmp_path)
    text = clear_error(result, "--set data.noise = 1e+308: expected a value >= 0.0 and <= 100.0")
    assert re.search(r"data\.noise", text) and not tmp_path.joinpath("runs").exists()


# -- --json ----------------------------------------------------------------------------------------


def test_json_output_is_strict_json():
    text = json_text({"loss": math.nan, "values": [1.5, math.inf, -math.inf], "n": 3})
    assert json.loads(text, parse_constant=lambda c: pytest.fail(c)) == \
        {"loss": None, "values": [1.5, None, None], "n": 3}
    for source in (ROOT / "mlptrain" / "cli").glob("*.py"):  # one way to write JSON out
        if source.name != "common.py":
            assert "json.dumps(" not in source.read_text(), source
