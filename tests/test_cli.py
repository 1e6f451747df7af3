"""The command line: exit codes, messages on stderr, results on stdout, no tracebacks."""

from __future__ import annotations

import json
import re
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
    assert set(report) == {"run_id", "split", "data", "loss", "accuracy", "samples", "notes",
                           "classes"}
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


def test_eval_of_an_unknown_split_is_a_usage_error(runs_dir):
    assert run("fit", CONFIGS / "xor.toml", "--set", "train.epochs=1").exit_code == 0
    result = run("eval", "latest", "--split", "dev")
    assert result.exit_code == 2 and "'dev'" in result.stderr and "test" in result.stderr
    assert "Traceback" not in result.output


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
    # unstandardized: standardizing would make these features fine
    config.write_text(f'[data]\ndataset = "npz"\npath = "{tmp_path / "huge.npz"}"\n'
                      'standardize = false\n')
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
    for line in process.stdout:  # wait until training is under way (a log of a million
        if line.startswith("epoch 1/"):  # epochs prints epoch 1, then one in 10,000)
            break
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "interrupted" in stderr and "Traceback" not in stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["epochs_completed"] >= 1
    assert int(np.load(run_dir / "checkpoint.npz")["epoch"]) >= 1


@pytest.mark.parametrize("command", ["sweep", "runs"])  # caught by a command; by main
def test_an_interrupt_that_left_an_exec_of_source_text_still_exits_130(tmp_path, command):
    """A sweep's SIGTERM that landed while scipy imported through its exec shim ended
    `python -m mlptrain` by SIGINT (-2), not 130: CPython marks an interrupt escaping an exec
    of source text as unhandled, caught or not, and `-m` ends by that mark. Here the interrupt
    leaves such an exec for certain, in a module run by -m as mlptrain's __main__ is."""
    target = {"sweep": "mlptrain.sweep.run_sweep", "runs": "mlptrain.cli.runs.list_runs"}[command]
    module, name = target.rsplit(".", 1)
    (tmp_path / "interrupting.py").write_text(
        f"import runpy, {module} as m\n"
        f"m.{name} = lambda *a, **k: exec('raise KeyboardInterrupt')\n"
        "runpy.run_module('mlptrain', run_name='__main__', alter_sys=True)\n")
    args = ([str(CONFIGS / "xor.toml"), "--grid", "train.seed=0,1", "--workers", "0"]
            if command == "sweep" else [])
    done = subprocess.run([sys.executable, "-m", "interrupting", command, *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MLPTRAIN_RUNS_DIR": str(tmp_path / "runs"),
                               "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])})
    assert done.returncode == 130, done.stderr
    assert "interrupted" in done.stderr and "Traceback" not in done.stderr


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


# -- config check, dry run, print-config ----------------------------------------------------------


def test_config_check_accepts_a_good_config_and_trains_nothing(runs_dir):
    result = run("config", "check", CONFIGS / "mnist.toml")
    assert result.exit_code == 0, result.output
    assert "valid config" in result.stdout and result.stderr == ""
    assert not runs_dir.exists()


@pytest.mark.parametrize("text, message", [
    ('[model]\nhiden = 4\n', "line 2: [model] hiden: unknown key in [model]"),
    ('[optimizer]\nlr = -1\n', "[optimizer] lr = -1.0: expected a value > 0.0"),
    ('[data]\nval_fraction = 1.0\n', "val_fraction = 1.0: expected a value >= 0.0 and < 1.0"),
    ('[train]\nepochs = "ten"\n', "[train] epochs = 'ten': expected an integer"),
    ('[model]\nactivation = "relu6"\n', "expected one of relu, tanh, sigmoid, leaky_relu"),
    ('[trian]\nepochs = 1\n', "Did you mean `train`?"),
    ('[train\n', "is not valid TOML"),
    ('[train]\ncheckpoint_every = -5\n', "checkpoint_every = -5: expected a value >= 0"),
])
def test_config_check_names_file_line_key_and_expectation(tmp_path, text, message):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    result = run("config", "check", config)
    assert result.exit_code == 1 and result.stdout == ""
    assert str(config) in result.stderr.replace("\n", "")
    assert message in result.stderr.replace("\n", " ") and "Traceback" not in result.output


def test_dry_run_prints_model_and_plan_and_writes_nothing(runs_dir):
    result = run("fit", CONFIGS / "mnist.toml", "--dry-run", "--set", "train.checkpoint_every=100")
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "Linear(784 -> 512) + relu" in text and "Linear(512 -> 10)" in text
    assert "407,050 parameters" in text
    assert "samples train 54,000, val 6,000, test 10,000" in text
    assert "15 epochs x 422 steps of batch 128 = 6,330 steps" in text
    assert "checkpoint every 100 steps" in text and "device cpu, dtype float32" in text
    assert "path: eager: cpu" in text  # backend.epoch_path: NumPy always steps eagerly
    assert "step: mid-epoch checkpoints" in text  # the declared step's aids
    assert not runs_dir.exists()


def test_dry_run_names_the_epoch_ends_that_checkpoint(runs_dir):
    auto = run("fit", CONFIGS / "xor.toml", "--dry-run")
    every = run("fit", CONFIGS / "xor.toml", "--dry-run", "--set", "train.checkpoint_epochs=1")
    sparse = run("fit", CONFIGS / "xor.toml", "--dry-run", "--set", "train.checkpoint_epochs=10")
    assert "checkpoint at epoch ends, at most one a second, and at the last" in auto.stdout
    assert "checkpoint at every epoch end" in every.stdout
    assert "checkpoint at the end of every 10 epochs and of the last" in sparse.stdout


def test_dry_run_reports_missing_data_as_an_error(runs_dir, tmp_path):
    result = run("fit", CONFIGS / "mnist.toml", "--dry-run", "--set", f"data.path='{tmp_path}'",
                 "--set", "data.download=false")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert str(tmp_path) in result.stderr.replace("\n", "")


def test_print_config_is_the_resolved_toml_and_reloads_to_the_same_config(tmp_path):
    result = run("fit", CONFIGS / "xor.toml", "--print-config", "--set", "train.epochs=7")
    assert result.exit_code == 0 and result.stderr == ""
    saved = tmp_path / "resolved.toml"
    saved.write_text(result.stdout)
    from mlptrain.config import load_config
    assert load_config(saved) == load_config(CONFIGS / "xor.toml", ["train.epochs=7"])
    assert "checkpoint_every = 0" in result.stdout  # every default is filled in


# -- exit codes, streams, output modes ------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["fit"], ["runs"], ["predict"], ["gradcheck"]])
def test_help_documents_the_exit_codes(command):
    result = run(*command, "--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert "0 success, 1 an error" in text and "2 a usage error, 130 interrupted" in text


@pytest.mark.parametrize("args", [
    ["fit"],  # neither a config nor --resume
    ["fit", CONFIGS / "xor.toml", "--resume", "latest"],
    ["fit", "--resume", "latest", "--set", "train.epochs=2"],
    ["fit", CONFIGS / "xor.toml", "--progress", "sometimes"],
    ["runs", "--status", "finished"],
    ["runs", "compare", "latest"],
    ["predict", "latest"],
])
def test_usage_errors_exit_2_without_a_traceback(runs_dir, args):
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.stdout == ""


def test_fit_json_puts_one_json_object_on_stdout_and_progress_on_stderr(runs_dir):
    result = run("fit", CONFIGS / "xor.toml", "--set", "train.epochs=3", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # nothing else on stdout
    assert summary["status"] == "completed" and summary["run_id"] == only_run(runs_dir).name
    assert "epoch 3/3" in result.stderr


def test_quiet_prints_only_the_result(runs_dir):
    result = run("fit", CONFIGS / "xor.toml", "--set", "train.epochs=3", "--quiet")
    assert result.exit_code == 0, result.output
    # 3 epochs leave XOR below chance: the warning saying so is the only other line
    line, *warnings = result.stdout.strip().splitlines()
    assert all(w.startswith("warning: below chance") for w in warnings)
    assert line.startswith(f"run {only_run(runs_dir).name}: completed, test accuracy")
    assert result.stderr == ""


def test_fit_resume_continues_an_interrupted_run_in_its_own_directory(runs_dir):
    from mlptrain.config import load_config
    from mlptrain.experiment import fit_experiment
    from mlptrain.runs import RunStore
    from mlptrain.loop import StepsDone, StopFlag

    overrides = ["train.epochs=4"]
    assert run("fit", CONFIGS / "xor.toml", "--set", "train.epochs=4").exit_code == 0
    (alone,) = runs_dir.iterdir()
    stop = StopFlag()
    stopped = fit_experiment(load_config(CONFIGS / "xor.toml", overrides), RunStore(runs_dir),
                             lambda e: isinstance(e, StepsDone) and e.epoch == 2 and e.step == 5
                             and stop.set(), stop=stop)
    result = run("fit", "--resume", stopped.run_id[:-2])  # a unique prefix is enough
    assert result.exit_code == 0, result.output
    assert "resuming after 1 epoch and 5 steps of epoch 2" in result.stdout
    assert len(list(runs_dir.iterdir())) == 2
    assert (stopped.path / "weights.npz").read_bytes() == (alone / "weights.npz").read_bytes()
    again = run("fit", "--resume", stopped.run_id)
    assert again.exit_code == 1 and "already completed" in again.stderr


def _in_a_terminal(args, env_extra):
    """Runs mlptrain with stdout on a pseudo-terminal; returns everything it wrote there."""
    import pty
    main, child = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "xterm-256color", "COLUMNS": "120",
           **env_extra}
    env.pop("NO_COLOR", None) if "NO_COLOR" not in env_extra else None
    process = subprocess.Popen([sys.executable, "-m", "mlptrain", *map(str, args)], cwd=ROOT,
                               env=env, stdout=child, stderr=subprocess.PIPE)
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    process.wait(timeout=120)
    os.close(main)
    assert process.returncode == 0, process.stderr.read()
    return b"".join(chunks).decode("utf-8", "replace")


HIDE_CURSOR = "\x1b[?25l"  # what rich's live display writes first
COLOR = re.compile(r"\x1b\[[0-9;]*(3[0-7]|9[0-7]|38;[25];)[0-9;]*m")


def test_progress_auto_is_live_on_a_terminal_and_never_gives_plain_lines(tmp_path):
    env = {"MLPTRAIN_RUNS_DIR": str(tmp_path / "runs")}
    fit = ["fit", CONFIGS / "xor.toml", "--set", "train.epochs=3"]
    live = _in_a_terminal(fit, env)
    assert HIDE_CURSOR in live
    plain = _in_a_terminal([*fit, "--progress", "never"], env)
    training = plain.split("epoch 3/3 ")[0]  # (after it, other output may animate)
    assert HIDE_CURSOR not in training and "epoch 1/3 " in training


def test_progress_always_is_live_even_in_a_pipe(tmp_path):
    env = {**os.environ, "MLPTRAIN_RUNS_DIR": str(tmp_path / "runs"), "TERM": "xterm-256color"}
    done = subprocess.run([sys.executable, "-m", "mlptrain", "fit", str(CONFIGS / "xor.toml"),
                           "--set", "train.epochs=3", "--progress", "always"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and HIDE_CURSOR in done.stdout


def test_no_color_turns_colors_off(tmp_path):
    env = {"MLPTRAIN_RUNS_DIR": str(tmp_path / "runs")}
    fit = ["fit", CONFIGS / "xor.toml", "--set", "train.epochs=3"]
    assert COLOR.search(_in_a_terminal(fit, env))  # the check can see colors
    assert not COLOR.search(_in_a_terminal(fit, {**env, "NO_COLOR": "1"}))


def test_fits_started_at_once_never_share_a_directory(tmp_path):
    env = {**os.environ, "MLPTRAIN_RUNS_DIR": str(tmp_path / "runs"), "PYTHONPATH": str(ROOT)}
    processes = [subprocess.Popen([sys.executable, "-m", "mlptrain", "fit",
                                   str(CONFIGS / "xor.toml"), "--set", "train.epochs=2", "-q"],
                                  cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
                 for _ in range(4)]
    outputs = [p.communicate(timeout=120)[0] for p in processes]
    assert [p.returncode for p in processes] == [0] * 4
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 4  # same name, same second: still four directories
    for path in runs:
        assert json.loads((path / "summary.json").read_text())["status"] == "completed"
        assert sum(path.name in out for out in outputs) == 1


def test_a_stopped_fit_leaves_sigint_deliverable_to_later_processes():
    # SIG_IGN would be inherited by every child started afterwards (they could never be
    # interrupted); a Python-level handler is reset in children
    import signal

    from mlptrain.cli.fit import _first_signal_stops
    from mlptrain.loop import StopFlag

    before = {n: signal.getsignal(n) for n in (signal.SIGINT, signal.SIGTERM)}
    stop = StopFlag()
    try:
        with _first_signal_stops(stop):
            stop.set()
        for number in before:
            assert signal.getsignal(number) is not signal.SIG_IGN
            assert callable(signal.getsignal(number))
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)
