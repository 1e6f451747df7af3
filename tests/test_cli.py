"""The command line: exit codes, messages on stderr, results on stdout, no tracebacks."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from mlptrain.cli import app

from conftest import CONFIGS, ROOT, serve_directory

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def only_run(runs_dir):
    (path,) = runs_dir.iterdir()
    return path


def test_fit_xor_end_to_end_then_eval_agrees(runs_dir):
    result = run("fit", CONFIGS / "xor.toml")
    assert result.exit_code == 0, result.output
    path = only_run(runs_dir)
    assert "test accuracy 100.00%" in result.stdout
    assert str(path) in result.stdout.replace("\n", "")
    # not a terminal: one plain line per epoch
    assert result.stdout.count("epoch ") >= 200
    summary = json.loads((path / "summary.json").read_text())
    evaluated = run("eval", path.name, "--json")
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.stdout)
    assert set(report) == {"run_id", "split", "loss", "accuracy", "samples"}
    assert report["accuracy"] == summary["final"]["test_accuracy"] == 1.0
    assert report["run_id"] == path.name and report["split"] == "test"


def test_eval_defaults_to_latest_and_prints_a_table(runs_dir):
    assert run("fit", CONFIGS / "xor.toml", "--set", "train.epochs=2").exit_code == 0
    result = run("eval", "--split", "val")
    assert result.exit_code == 0, result.output
    assert only_run(runs_dir).name in result.stdout and "val" in result.stdout


def test_set_overrides_reach_the_saved_config(runs_dir):
    result = run("fit", CONFIGS / "xor.toml", "--set", "train.epochs=3",
                 "-s", "model.hidden=[6, 5]", "--set", "model.activation=relu")
    assert result.exit_code == 0, result.output
    saved = (only_run(runs_dir) / "config.toml").read_text()
    assert "epochs = 3" in saved and "activation = \"relu\"" in saved
    assert "# --set model.hidden=[6, 5]" in saved
    summary = json.loads((only_run(runs_dir) / "summary.json").read_text())
    assert summary["model"]["sizes"] == [2, 6, 5, 1]


def test_runs_dir_option_wins_over_the_environment(runs_dir, tmp_path):
    other = tmp_path / "elsewhere"
    result = run("fit", CONFIGS / "xor.toml", "--set", "train.epochs=1", "--runs-dir", other)
    assert result.exit_code == 0, result.output
    assert len(list(other.iterdir())) == 1 and not runs_dir.exists()


@pytest.mark.parametrize("args, message", [
    (["--set", "model.activaton=tanh"], "Did you mean `activation`?"),
    (["--set", "train.epochs=0"], "--set train.epochs = 0: expected a value >= 1"),
    (["--set", "model.activation=rleu"], "expected one of relu, tanh, sigmoid, leaky_relu"),
    (["--set", "epochs"], "section.key=value"),
    (["--set", "train.device=tpu"], "expected one of cpu"),
])
def test_bad_settings_exit_1_with_a_message_and_no_traceback(runs_dir, args, message):
    result = run("fit", CONFIGS / "xor.toml", *args)
    assert result.exit_code == 1
    assert message in result.stderr.replace("\n", " ")
    assert "Traceback" not in result.output
    assert not runs_dir.exists()  # nothing was started, so nothing was written


def test_a_bad_key_in_a_file_names_file_line_and_key(runs_dir, tmp_path):
    config = tmp_path / "typo.toml"
    config.write_text('[data]\ndataset = "xor"\n\n[model]\nhiden = 4\n')
    result = run("fit", config)
    assert result.exit_code == 1
    text = result.stderr.replace("\n", " ")
    assert f"{config}, line 5: [model] hiden" in text and "Did you mean `hidden`?" in text


def test_missing_config_file_is_a_clear_error(runs_dir, tmp_path):
    result = run("fit", tmp_path / "nope.toml")
    assert result.exit_code == 1 and "does not exist" in result.stderr


def test_eval_of_an_unknown_run_is_a_clear_error(runs_dir):
    result = run("eval", "20990101")
    assert result.exit_code == 1 and "no run matches" in result.stderr.replace("\n", " ")
    assert "Traceback" not in result.output


def test_eval_of_an_unknown_split_is_a_clear_error(runs_dir):
    assert run("fit", CONFIGS / "xor.toml", "--set", "train.epochs=1").exit_code == 0
    result = run("eval", "latest", "--split", "dev")
    assert result.exit_code == 1 and "split 'dev'" in result.stderr


def test_usage_errors_exit_2(runs_dir):
    assert run("fit").exit_code == 2
    assert run("frobnicate").exit_code == 2


@pytest.mark.parametrize("command", [[], ["fit"], ["eval"]])
def test_help_describes_every_command(command):
    result = run(*command, "--help")
    assert result.exit_code == 0
    assert "Usage" in result.stdout


def test_a_diverging_run_fails_cleanly(runs_dir, tmp_path):
    np.savez(tmp_path / "huge.npz", X=np.full((100, 2), 1e30) * np.arange(1, 3), y=np.arange(100) % 2)
    config = tmp_path / "huge.toml"
    config.write_text(f'[data]\ndataset = "npz"\npath = "{tmp_path / "huge.npz"}"\n')
    result = run("fit", config)
    assert result.exit_code == 1, result.output
    assert "learning rate" in result.stderr and "Traceback" not in result.output
    summary = json.loads((only_run(runs_dir) / "summary.json").read_text())
    assert summary["status"] == "failed"


def test_python_dash_m_runs_the_tool_in_a_real_subprocess(tmp_path):
    env = {**os.environ, "MLPTRAIN_RUNS_DIR": str(tmp_path / "runs")}
    done = subprocess.run(
        [sys.executable, "-m", "mlptrain", "fit", str(CONFIGS / "xor.toml")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "test accuracy 100.00%" in done.stdout
    version = subprocess.run([sys.executable, "-m", "mlptrain", "--version"],
                             capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert version.returncode == 0 and version.stdout.startswith("mlptrain ")


def test_ctrl_c_exits_130_and_marks_the_run_interrupted(tmp_path):
    env = {**os.environ, "MLPTRAIN_RUNS_DIR": str(tmp_path / "runs")}
    process = subprocess.Popen(
        [sys.executable, "-m", "mlptrain", "fit", str(CONFIGS / "xor.toml"),
         "--set", "train.epochs=1000000"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stdout:  # wait until training is under way
        if line.startswith("epoch 3/"):
            break
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "interrupted" in stderr and "Traceback" not in stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["epochs_completed"] >= 3
    assert int(np.load(run_dir / "checkpoint.npz")["epoch"]) >= 3


@pytest.fixture
def local_mirror():
    with serve_directory(ROOT / "data" / "mnist") as url:
        yield url


def test_fit_downloads_missing_mnist_files_with_progress(runs_dir, tmp_path, local_mirror):
    data_dir = tmp_path / "mnist"
    result = run("fit", CONFIGS / "mnist.toml", "--set", f"data.path='{data_dir}'",
                 "--set", f"data.mirrors=['{local_mirror}']", "--set", "data.limit=500",
                 "--set", "model.hidden=8", "--set", "train.epochs=1")
    assert result.exit_code == 0, result.output
    for name in ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        assert f"downloading {name}" in result.stdout
        assert (data_dir / f"{name}.gz").is_file()
    summary = json.loads((only_run(runs_dir) / "summary.json").read_text())
    assert summary["dataset"]["source"] == str(data_dir)


def test_a_failed_download_is_a_clear_error(runs_dir, tmp_path):
    with socket.socket() as closed:  # bound but not listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/"
        result = run("fit", CONFIGS / "mnist.toml", "--set", f"data.path='{tmp_path}'",
                     "--set", f"data.mirrors=['{url}']")
    assert result.exit_code == 1
    assert url in result.stderr.replace("\n", "") and "Traceback" not in result.output
    assert not runs_dir.exists()
