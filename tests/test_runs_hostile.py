"""Run directories, sweeps and read-back under attack: damaged, missing, swapped or hostile files
and references. Every command that reads runs either reads them back or refuses them with one
clear error (exit 1) naming the file at fault, never a traceback or a hang, and deletes or
overwrites nothing by surprise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import CONFIGS, ROOT
from typer.testing import CliRunner

from mlptrain.cli import app
from mlptrain.config import load_config
from mlptrain.experiment import fit_experiment
from mlptrain.loop import StepsDone, StopFlag
from mlptrain.runs import RunStore, npz_bytes

runner = CliRunner()
FAST = ["train.epochs=2", "report.plots=false"]
FAST_SET = [x for o in FAST for x in ("--set", o)]  # the same, as command-line options


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_refused(result, *phrases: str) -> None:
    """Exit 1 with an explained error (no traceback) holding each phrase."""
    assert result.exit_code == 1, result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception,
                                                                     SystemExit), result.exception
    text = " ".join(result.stderr.split())
    for phrase in phrases:
        assert phrase in text, text


def fit(runs: Path, config: str = "xor.toml", *overrides: str):
    return fit_experiment(load_config(CONFIGS / config, [*FAST, *overrides]), RunStore(runs))


@pytest.fixture
def xor_run(runs_dir):
    return fit(runs_dir)


# -- references ------------------------------------------------------------------------------------


def test_an_empty_reference_names_no_run_and_removes_nothing(xor_run, runs_dir):
    """'' is a prefix of every id: with one run it picked (and `runs rm` deleted) that run."""
    for args in (("eval", ""), ("runs", "show", " "), ("runs", "rm", "", "--yes")):
        assert_refused(run(*args, "--runs-dir", runs_dir), "empty run reference")
    assert xor_run.path.is_dir()
    assert_refused(run("ensemble", "--sweep", "", "--runs-dir", runs_dir), "empty sweep reference")


def test_a_name_that_also_begins_another_run_s_hash_or_id_is_ambiguous(runs_dir):
    """`eval fed` picked the run whose hash begins fed over the run named fed, silently."""
    other = fit(runs_dir)
    prefix = other.run_id[-6:-3]
    named = fit(runs_dir, "xor.toml", f'name="{prefix}"')  # quoted: 123 would be a number
    assert_refused(run("eval", prefix, "--runs-dir", runs_dir), f"is the name of run "
                   f"{named.run_id} and also begins the hash that ends run {other.run_id}")
    for ref in (other.run_id, named.run_id, other.run_id[-6:]):
        assert run("eval", ref, "--runs-dir", runs_dir).exit_code == 0
    hash_named = fit(runs_dir, "xor.toml", f'name="{other.run_id[-6:]}"')  # its hash, a name
    assert RunStore(runs_dir).short_refs()[other.run_id] == other.run_id
    assert hash_named.run_id != other.run_id


def test_a_runs_directory_that_is_a_file_is_named_not_called_empty(tmp_path):
    root = tmp_path / "runs"
    root.write_text("not a folder")
    for args in (("runs",), ("eval",), ("runs", "show", "x")):
        assert_refused(run(*args, "--runs-dir", root),
                       f"the runs directory {root} cannot be listed")


@pytest.mark.parametrize("folder", ["[/x]", "[bold]b"])
def test_a_runs_folder_named_like_markup_is_printed_as_it_is(tmp_path, folder):
    """rich read the folder's name as markup: `[/x]` raised MarkupError in fit's closing line,
    `runs show` and `export`; `[bold]b` was shown as `b`."""
    runs = tmp_path / folder
    for args in (("fit", CONFIGS / "xor.toml", "--set", "train.epochs=2", "--set",
                  "report.plots=false"), ("runs", "show", "latest"),
                 ("export", "latest", "--format", "safetensors"), ("runs", "rm", "latest")):
        result = run(*args, "--runs-dir", runs)
        assert not isinstance(result.exception, Exception) or isinstance(
            result.exception, SystemExit), result.exception
        assert str(runs) in result.output.replace("\n", "")


def test_an_id_whose_folder_lost_its_config_says_so(xor_run, runs_dir):
    (xor_run.path / "config.toml").unlink()
    assert_refused(run("eval", xor_run.run_id, "--runs-dir", runs_dir),
                   f"run {xor_run.run_id} has no config.toml")


@pytest.mark.parametrize("damage", ["missing", "folder", "link loop"])
def test_a_run_that_lost_its_summary_is_named_read_and_removable(xor_run, runs_dir, damage):
    """It was `... is not a run directory. Give a run's directory, id or name` for its own
    id, and `runs rm` refused the run its own error said to delete."""
    summary = xor_run.path / "summary.json"
    summary.unlink()
    if damage == "folder":
        summary.mkdir()
    elif damage == "link loop":
        summary.symlink_to("summary.json")
    for args in (("eval", xor_run.run_id), ("plot", xor_run.run_id), ("runs", "show", "latest")):
        assert_refused(run(*args, "--runs-dir", runs_dir), "summary.json")
    assert "not a run directory" not in run("eval", xor_run.run_id, "--runs-dir", runs_dir).stderr
    done = run("runs", "rm", xor_run.run_id, "--yes", "--runs-dir", runs_dir)
    assert done.exit_code == 0, done.output
    assert not xor_run.path.exists()


def test_plot_and_export_never_write_into_a_damaged_run(runs_dir, tmp_path):
    """A run whose summary.json is gone is still a run: its figures and files are its own."""
    a, b = fit(runs_dir), fit(runs_dir)
    (b.path / "summary.json").unlink()
    before = {p.name: p.read_bytes() for p in b.path.iterdir()}
    assert_refused(run("plot", a.run_id, "--out", b.path, "--runs-dir", runs_dir), "--out")
    assert_refused(run("export", a.run_id, "--format", "safetensors", "--out",
                       b.path / "weights.npz", "--force", "--runs-dir", runs_dir), "own files")
    assert {p.name: p.read_bytes() for p in b.path.iterdir()} == before


@pytest.mark.parametrize("name", ["summary.json", "config.toml", "metrics.jsonl"])
def test_a_pipe_in_a_run_file_s_place_is_refused_without_waiting(xor_run, runs_dir, name):
    """A reader opened the pipe and waited for a writer forever (`runs ls` too)."""
    path = xor_run.path / name
    path.unlink()
    os.mkfifo(path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    for args in (("runs", "show", xor_run.run_id), ("runs", "--json")):
        done = subprocess.run([sys.executable, "-m", "mlptrain", *args, "--runs-dir",
                               str(runs_dir)], env=env, capture_output=True, text=True,
                              timeout=60)
        assert "Traceback" not in done.stderr
        if args[0:2] == ("runs", "show"):
            assert done.returncode == 1 and "not a regular file" in done.stderr, done.stderr
        else:
            assert done.returncode == 0, done.stderr


# -- files of the wrong content --------------------------------------------------------------------


@pytest.mark.parametrize("content", ["", 'name = "xor"\n',
                                     '[data]\ndataset = "xor"\n[model]\nhidden = [64]\n'])
def test_a_config_toml_that_no_longer_matches_the_run_is_refused(xor_run, runs_dir, tmp_path,
                                                                 content):
    """An empty config.toml read as every default: eval blamed the weights' shapes (784-128-10),
    `export --format golden` raised a traceback and safetensors exported without a word."""
    (xor_run.path / "config.toml").write_text(content)
    out = tmp_path / "out"
    for args in (("eval", xor_run.run_id), ("plot", xor_run.run_id), ("runs", "show", "latest"),
                 ("export", xor_run.run_id, "--format", "golden", "--out", out / "g.npz"),
                 ("export", xor_run.run_id, "--format", "safetensors", "--out", out / "m.st"),
                 ("predict", xor_run.run_id, tmp_path / "x.npy")):
        assert_refused(run(*args, "--runs-dir", runs_dir), "config.toml does not match the "
                       "run's summary.json")
    assert not out.exists()


@pytest.mark.parametrize("dtype", [np.int64, np.float16, np.bool_])
def test_weights_of_a_dtype_no_run_writes_are_refused(xor_run, runs_dir, tmp_path, dtype):
    """They were cast without a word (ints truncated), and exported as they were."""
    with np.load(xor_run.path / "weights.npz") as z:
        weights = {k: z[k] for k in z.files}
    weights["layers.0.weight"] = weights["layers.0.weight"].astype(dtype)
    (xor_run.path / "weights.npz").write_bytes(npz_bytes(weights))
    for args in (("eval", xor_run.run_id),
                 ("export", xor_run.run_id, "--format", "safetensors", "--out", tmp_path / "m")):
        assert_refused(run(*args, "--runs-dir", runs_dir), "weights.npz",
                       f"is {np.dtype(dtype)}; expected float32 or float64")


@pytest.mark.parametrize("arrays", ["missing", "renamed", "wider"])
def test_every_export_checks_the_weights_against_the_run_s_network(xor_run, runs_dir, tmp_path,
                                                                   arrays):
    """Export read weights.npz unchecked: safetensors exported a missing or misshapen layer,
    onnx raised KeyError."""
    with np.load(xor_run.path / "weights.npz") as z:
        weights = {k: z[k] for k in z.files}
    if arrays == "missing":
        del weights["layers.1.bias"]
    elif arrays == "renamed":
        weights = {f"net.{k}": v for k, v in weights.items()}
    else:
        weights["layers.0.weight"] = np.zeros((5, 2))
    (xor_run.path / "weights.npz").write_bytes(npz_bytes(weights))
    for fmt in ("onnx", "safetensors", "golden"):
        assert_refused(run("export", xor_run.run_id, "--format", fmt, "--out",
                           tmp_path / f"m.{fmt}", "--runs-dir", runs_dir), "weights.npz")
        assert not (tmp_path / f"m.{fmt}").exists()


@pytest.mark.parametrize("change, phrase", [
    ({"model": {"sizes": [2, 4, 1], "activation": "tanh", "loss": "focal"}}, "the loss 'focal'"),
    ({"model": {"sizes": [2, 4, 1], "activation": "swish", "loss": "sigmoid_bce"}},
     "the activation 'swish'"),
    ({"dataset": {"name": "xor", "class_names": ["a"]}}, "names 1 classes"),
    ({"dataset": {"name": "xor", "class_names": "ab"}}, "'dataset' should be"),
    ({"dataset": {"name": "xor", "input_shape": [28, 28]}}, "holds 784 values"),
    ({"versions": 5}, "'versions' should be"),
    ({"reference": {"percentiles": 5}}, "'reference' should be"),
])
def test_summary_values_a_reader_relies_on_are_checked(xor_run, runs_dir, tmp_path, change,
                                                       phrase):
    """Each was a traceback in eval, predict, export or ensemble (KeyError, IndexError,
    TypeError, AttributeError)."""
    summary = json.loads((xor_run.path / "summary.json").read_text())
    (xor_run.path / "summary.json").write_text(json.dumps({**summary, **change}))
    twin = fit(runs_dir)
    np.save(tmp_path / "x.npy", np.zeros((2, 2)))
    for args in (("eval", xor_run.run_id), ("predict", xor_run.run_id, tmp_path / "x.npy"),
                 ("export", xor_run.run_id, "--format", "onnx", "--out", tmp_path / "m.onnx"),
                 ("ensemble", xor_run.run_id, twin.run_id)):
        assert_refused(run(*args, "--runs-dir", runs_dir), "summary.json", phrase)


@pytest.mark.parametrize("digits", [5000, 400])
def test_an_integer_too_long_for_python_or_a_float_is_damage_not_a_traceback(xor_run, runs_dir,
                                                                           digits):
    """Over 4,300 digits json.loads raises ValueError (not a JSONDecodeError); 400 digits
    parse, then overflowed float() in plot's curves."""
    huge = "1" + "0" * digits
    metrics = xor_run.path / "metrics.jsonl"
    text = metrics.read_text()
    metrics.write_text(text + f'{{"epoch": 3, "train_loss": {huge}}}\n')
    for args in (("runs", "show", xor_run.run_id), ("plot", xor_run.run_id)):
        assert_refused(run(*args, "--runs-dir", runs_dir), "metrics.jsonl")
    metrics.write_text(text)
    summary = xor_run.path / "summary.json"
    summary.write_text(summary.read_text().replace('"final": {', f'"final": {{"x": {huge}, '))
    assert_refused(run("eval", xor_run.run_id, "--runs-dir", runs_dir), "summary.json")
    listed = run("runs", "--json", "--runs-dir", runs_dir)
    assert listed.exit_code == 0 and json.loads(listed.stdout)[0]["status"] == "damaged"


def test_a_summary_from_a_newer_version_says_which_wrote_it(xor_run, runs_dir):
    summary = json.loads((xor_run.path / "summary.json").read_text())
    summary["versions"]["mlptrain"] = "9.0.0"
    summary["status"] = "interrupted"
    (xor_run.path / "summary.json").write_text(json.dumps(summary))
    config = xor_run.path / "config.toml"
    config.write_text(config.read_text().replace("[model]\n", "[model]\nfuture_key = 1\n"))
    assert_refused(run("fit", "--resume", xor_run.run_id, "--runs-dir", runs_dir),
                   "future_key", "mlptrain 9.0.0 wrote the run")


def test_a_torn_last_metrics_line_leaves_the_epochs_before_it(runs_dir):
    """A process killed mid-append leaves a torn line: `runs show` and `plot` refused the run
    whole ("not valid JSON")."""
    done = fit(runs_dir)
    metrics = done.path / "metrics.jsonl"
    text = metrics.read_text()
    metrics.write_text(text + text.splitlines()[0][:25])
    assert len(RunStore(runs_dir).find(done.run_id).read_metrics()) == 2
    for args in (("runs", "show", done.run_id), ("plot", done.run_id)):
        result = run(*args, "--runs-dir", runs_dir)
        assert result.exit_code == 0, result.output
    metrics.write_text(text.replace("\n", "", 1))  # a damaged line inside stays an error
    assert_refused(run("runs", "show", done.run_id, "--runs-dir", runs_dir), "not valid JSON")


def test_export_of_a_stale_run_says_its_process_is_gone_and_how_to_resume(xor_run, runs_dir):
    """It said `is running, not completed` of a run whose process was killed."""
    summary = json.loads((xor_run.path / "summary.json").read_text())
    summary.update(status="running", pid=2 ** 22 + 1, host=None)  # no such process
    (xor_run.path / "summary.json").write_text(json.dumps(summary))
    (xor_run.path / "weights.npz").unlink()
    assert_refused(run("export", xor_run.run_id, "--format", "onnx", "--runs-dir", runs_dir),
                   "its process is gone", "fit --resume")


def test_plot_draws_a_run_whose_summary_lacks_a_test_score(xor_run, runs_dir, tmp_path):
    """curves() raised KeyError for a final table without test_accuracy, TypeError for null."""
    summary = json.loads((xor_run.path / "summary.json").read_text())
    for final in ({"test_loss": 0.5}, {"test_loss": 0.5, "test_accuracy": None}):
        (xor_run.path / "summary.json").write_text(json.dumps({**summary, "final": final}))
        result = run("plot", xor_run.run_id, "--out", tmp_path / "figures", "--runs-dir",
                     runs_dir)
        assert result.exit_code == 0, result.output


# -- checkpoints -----------------------------------------------------------------------------------


def stopped_mid_epoch(runs: Path, *overrides: str):
    """A run stopped a few steps into its second epoch (of 64 samples each, by default)."""
    stop = StopFlag()

    def on_event(event):
        if isinstance(event, StepsDone) and event.epoch == 2 and event.step >= 3:
            stop.set()
    config = load_config(CONFIGS / "xor.toml", ["train.epochs=4", "report.plots=false",
                                                *overrides])
    return fit_experiment(config, RunStore(runs), on_event, stop=stop)


@pytest.mark.parametrize("donor, culprit", [
    (("data.samples=1600",), "not a shuffle of the run's 640"),
    (("train.batch_size=16",), "in steps of 64"),
    (("train.epochs=9",), "the run plans 4")])
def test_a_checkpoint_of_another_config_is_refused(runs_dir, donor, culprit):
    """Of the same network and optimizer, it resumed without a word: an order of 1,280 indices
    gathered the 640 samples' batches with indices clipped to the last sample."""
    stopped = stopped_mid_epoch(runs_dir)
    other = stopped_mid_epoch(runs_dir, "name=other", *donor)
    arrays = dict(np.load(other.path / "checkpoint.npz"))
    if donor == ("train.epochs=9",):  # ends an epoch the run never reaches
        history = json.loads(str(arrays["history"]))
        history += [dict(history[-1], epoch=n) for n in range(len(history) + 1, 6)]
        arrays.update(epoch=np.array(5), position=np.array(0),
                      history=np.array(json.dumps(history)))
    (stopped.path / "checkpoint.npz").write_bytes(npz_bytes(arrays))
    assert_refused(run("fit", "--resume", stopped.run_id, "--runs-dir", runs_dir),
                   "checkpoint.npz is not a checkpoint this version can resume from", culprit)
    own = stopped_mid_epoch(runs_dir, "name=own")  # a run's own checkpoint still resumes
    assert run("fit", "--resume", own.run_id, "--runs-dir", runs_dir, "-q").exit_code == 0


# -- sweeps ----------------------------------------------------------------------------------------


@pytest.fixture
def swept(runs_dir):
    """A two-seed XOR sweep's trials.json, and the command that runs it again."""
    command = ["sweep", CONFIGS / "xor.toml", "--grid", "train.seed=0,1", "--workers", "0",
               *FAST_SET, "--runs-dir", runs_dir]
    assert run(*command).exit_code == 0
    (trials,) = (runs_dir / "sweeps").glob("*/trials.json")
    return trials, command


@pytest.mark.parametrize("key, value", [("status", "<del>"), ("run_id", "<del>"),
                                        ("point", None), ("point", {}), ("final", "x"),
                                        ("seconds", "x"), ("run_id", "../elsewhere")])
def test_a_damaged_trial_record_is_named_not_a_traceback(swept, runs_dir, key, value):
    trials, command = swept
    data = json.loads(trials.read_text())
    if value == "<del>":
        del data["trials"][1][key]
    else:
        data["trials"][1][key] = value
    trials.write_text(json.dumps(data))
    readers = [command, [*command, "--dry-run"]]
    if value != {}:  # (a committee does not read the points)
        readers.append(["ensemble", "--sweep", "latest", "--runs-dir", runs_dir])
    for args in readers:
        assert_refused(run(*args), "trials.json")


@pytest.mark.parametrize("damage", ["lock pipe", "lock folder", "trials folder"])
def test_a_sweep_folder_s_odd_files_are_named_without_waiting(swept, runs_dir, damage):
    """A pipe at the lock's name made the sweep wait for a writer forever; a folder there was
    the last-resort OSError; a folder at trials.json made `ensemble --sweep` say there were
    no sweeps."""
    trials, command = swept
    lock = trials.parent / ".lock"
    if damage == "lock pipe":
        os.mkfifo(lock)
    elif damage == "lock folder":
        lock.mkdir()
    else:
        trials.unlink()
        trials.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    done = subprocess.run([sys.executable, "-m", "mlptrain", *map(str, command)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stderr
    if damage == "lock pipe":  # no process holds it: taken over, as a dead process's lock
        assert done.returncode == 0, done.stderr
    else:
        assert done.returncode == 1 and (".lock" in done.stderr or "trials.json" in
                                         done.stderr), done.stderr
    if damage == "trials folder":
        assert_refused(run("ensemble", "--sweep", "latest", "--runs-dir", runs_dir),
                       "trials.json cannot be read")


def test_no_export_or_config_replaces_a_sweep_s_own_files(swept, runs_dir, tmp_path):
    """`export --force --out` replaced trials.json (the sweep then forgot its trials' runs)
    and golden's .json beside it replaced the sweep's summary.json."""
    trials, _ = swept
    before = {p.name: p.read_bytes() for p in trials.parent.iterdir()}
    for args in (("export", "latest", "--format", "onnx", "--out", trials, "--runs-dir", runs_dir),
                 ("export", "latest", "--format", "golden", "--out",
                  trials.with_name("summary.npz"), "--runs-dir", runs_dir),
                 ("config", "init", "--out", trials.with_name("spec.json"))):
        assert_refused(run(*args, "--force"), "sweep", "own files")
    assert {p.name: p.read_bytes() for p in trials.parent.iterdir()} == before


def test_runs_rm_of_a_sweep_trial_is_trained_again_by_the_sweep(swept, runs_dir):
    trials, command = swept
    first = json.loads(trials.read_text())["trials"][0]["run_id"]
    removed = run("runs", "rm", first, "--yes", "--runs-dir", runs_dir)
    assert removed.exit_code == 0 and "a trial of sweep" in " ".join(removed.stderr.split())
    assert_refused(run("ensemble", "--sweep", "latest", "--runs-dir", runs_dir), "not completed")
    assert run(*command).exit_code == 0
    again = json.loads(trials.read_text())["trials"][0]
    assert again["status"] == "completed" and again["run_id"] != first
    assert run("ensemble", "--sweep", "latest", "--runs-dir", runs_dir).exit_code == 0


def test_regression_and_table_runs_read_back_everywhere(runs_dir, tmp_path):
    """What fit writes for a CSV regression and a CSV classifier, every reader reads back."""
    for config in ("diabetes.toml", "wine.toml"):
        a, b = fit(runs_dir, config), fit(runs_dir, config, "train.seed=1")
        table = Path(load_config(CONFIGS / config).data.path)
        table = table if table.is_absolute() else (CONFIGS / table).resolve()
        for args in (("eval", a.run_id), ("eval", a.run_id, "--data", table),
                     ("predict", a.run_id, table), ("plot", a.run_id),
                     ("runs", "show", a.run_id), ("runs", "compare", a.run_id, b.run_id),
                     ("ensemble", a.run_id, b.run_id),
                     ("export", a.run_id, "--format", "onnx", "--out", tmp_path / "m.onnx",
                      "--force"),
                     ("export", a.run_id, "--format", "golden", "--out", tmp_path / "g.npz",
                      "--force")):
            result = run(*args, "--runs-dir", runs_dir)
            assert result.exit_code == 0, (args, result.output)
