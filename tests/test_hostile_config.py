"""Hostile configs, command lines and sweeps: each input gets a one-paragraph error naming the
culprit and a non-zero exit code, never a traceback, a silently ignored setting or a run
directory left half-written (the audit of configs, arguments and sweeps)."""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path

import pytest
from conftest import CONFIGS
from typer.testing import CliRunner

from mlptrain.cli import app
from mlptrain.config import load_config
from mlptrain.errors import ConfigError, TrainingError
from mlptrain.sweep import load_sweep

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line(text: str) -> str:
    """Output with rich's wrapping and panel borders undone, for substring checks."""
    return " ".join(text.replace("│", " ").split())


def _error(*args) -> str:
    """The one-paragraph error of a command that must fail with exit code 1."""
    result = run(*args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    return one_line(result.output)


# -- reading the config file ----------------------------------------------------------------------


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_an_endless_file_as_config_is_refused_not_read_into_memory():
    with pytest.raises(ConfigError, match="more than 16 MiB"):
        load_config("/dev/zero")


def test_a_directory_or_a_binary_file_as_config_says_what_it_is(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    binary = tmp_path / "weights.toml"
    binary.write_bytes(b"PK\x03\x04\xd0\x00")
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 4 is 0xd0\)"):
        load_config(binary)


def test_a_sweep_config_from_a_pipe_is_read_once(tmp_path):
    """`mlptrain sweep <(...)`: the base config and the [sweep] table come from one reading
    (a second read of a pipe found it empty: 'no [sweep] axes')."""
    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    text = (CONFIGS / "xor.toml").read_text() + '\n[sweep]\n"train.seed" = [0, 1]\n'

    def write():
        with open(fifo, "w") as f:
            f.write(text)

    writer = threading.Thread(target=write)
    writer.start()
    spec = load_sweep(fifo)
    writer.join()
    assert [a.key for a in spec.axes] == ["train.seed"] and len(spec.trials) == 2


# -- --set and --grid -----------------------------------------------------------------------------


def test_set_of_an_unknown_section_blames_the_set_not_the_file():
    with pytest.raises(ConfigError) as info:
        load_config(CONFIGS / "xor.toml", ["trian.epochs=3"])
    message = str(info.value)
    assert message.startswith("--set 'trian.epochs=3'") and "Did you mean `train`?" in message


@pytest.mark.parametrize("command", [("config", "check"), ("fit",), ("sweep",)])
def test_set_into_the_sweep_table_is_refused_and_points_at_grid(tmp_path, command):
    """fit ignores [sweep], and a sweep reads its axes from the file: `--set sweep.x=...` set
    nothing, silently."""
    config = tmp_path / "s.toml"
    config.write_text((CONFIGS / "xor.toml").read_text() + '\n[sweep]\n"train.seed" = [0, 1]\n')
    runs = () if command[0] == "config" else ("--runs-dir", tmp_path / "r")
    message = _error(*command, config, "--set", "sweep.train=1", *runs)
    assert "'sweep' is not a section" in message and "--grid" in message
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("given, key, expected", [
    ("name=5", "name", "5"), ("data.target=2019", "target", "2019"),
    ("data.path=2024-01-01", "path", "2024-01-01"), ("data.target=true", "target", "true"),
    ('data.target="x y"', "target", "x y")])
def test_set_of_a_text_key_takes_a_number_as_written(given, key, expected):
    """TOML reads 2019 as an integer: a key of text alone (a column, a file, the run's name)
    takes it as the text it was written as, instead of 'expected a string'."""
    config = load_config(CONFIGS / "xor.toml", [given])
    assert (config.name if key == "name" else getattr(config.data, key)) == expected


def test_grid_of_a_text_key_takes_numbers_as_written():
    spec = load_sweep(CONFIGS / "xor.toml", grid=["data.target=2019,1.50", "name=5,b"])
    assert spec.axes[0].values == ["2019", "1.50"] and spec.axes[1].values == ["5", "b"]


@pytest.mark.parametrize("item, phrase", [("model=1,2", "[model] is a section"),
                                          ("=2,4", "names no key")])
def test_grid_of_a_section_or_of_no_key_says_so(item, phrase):
    with pytest.raises(ConfigError, match=re.escape(phrase)):
        load_sweep(CONFIGS / "xor.toml", grid=[item])


def _sweep_config(tmp_path, table: str) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text((CONFIGS / "xor.toml").read_text() + "\n[sweep]\n" + table)
    return path


@pytest.mark.parametrize("where, expected", [
    ("file", 'sweep.toml, line 31: [sweep] "schedule.warmup_epochs" = 1.5'),
    ("grid", "--grid schedule.warmup_epochs = 1.5"),
    ("set", "--set schedule.warmup_epochs = 1.5")])
def test_a_trial_that_breaks_a_rule_names_the_trial_and_where_its_value_came_from(
        tmp_path, where, expected):
    """The error blamed `--set schedule.warmup_epochs` for a value the [sweep] table gave."""
    table = '"train.epochs" = [1, 2]\n' + \
        ('"schedule.warmup_epochs" = [1.5]\n' if where == "file" else "")
    grid = ["schedule.warmup_epochs=1.5"] if where == "grid" else []
    sets = ["schedule.warmup_epochs=1.5"] if where == "set" else []
    with pytest.raises(ConfigError) as info:
        load_sweep(_sweep_config(tmp_path, table), sets, grid)
    message = str(info.value)
    assert message.startswith("trial #0 (train.epochs=1") and expected in message
    assert "the warm-up must end before the last epoch" in message


def test_config_check_checks_the_sweep_table_as_sweep_would(tmp_path):
    """A typo in an axis passed `config check` and failed only when the sweep was run."""
    message = _error("config", "check", _sweep_config(tmp_path, '"model.hiden" = [2, 4]\n'))
    assert '[sweep] "model.hiden"' in message and "Did you mean `hidden`?" in message
    result = run("config", "check", CONFIGS / "mnist-capacity.toml")
    assert result.exit_code == 0
    assert "[sweep]: 24 trials: 8 (model.hidden) x 3 (train.seed)" in one_line(result.output)


# -- settings the data makes meaningless ------------------------------------------------------------


@pytest.mark.parametrize("command", ["fit", "dry-run"])
def test_early_stopping_with_a_validation_split_that_rounds_to_nothing_is_refused(
        tmp_path, command):
    """val_fraction = 0.01 of 20 samples holds out no row: patience was silently ignored."""
    args = ["--set", "data.samples=20", "--set", "data.val_fraction=0.01",
            "--set", "train.patience=2", "--runs-dir", tmp_path / "runs"]
    dry = ["--dry-run"] if command == "dry-run" else []
    message = _error("fit", CONFIGS / "xor.toml", *args, *dry)
    assert "[train] patience = 2: early stopping watches the validation loss" in message
    assert "val_fraction = 0.01" in message and not (tmp_path / "runs").exists()


# -- numbers the training arithmetic cannot hold ------------------------------------------------------


@pytest.mark.parametrize("setting, dtype", [
    ("optimizer.lr=1e-300", "float32"), ("optimizer.eps=1e-50", "float32"),
    ("model.leaky_slope=1e-40", "float32"), ("schedule.min_lr=1e-320", "float64"),
    ("optimizer.weight_decay=1e-45", "float32")])
def test_a_positive_number_the_dtype_rounds_to_zero_is_refused(setting, dtype):
    """lr = 1e-300 trained nothing in float32 (and was then blamed as 'too high'); eps = 1e-50
    became 0, and Adam's step 0/0."""
    key = setting.partition("=")[0]
    with pytest.raises(ConfigError) as info:
        load_config(CONFIGS / "xor.toml", [setting, f"train.dtype={dtype}"])
    message = str(info.value)
    assert message.startswith(f"--set {key} = ") and "smallest normal number" in message
    assert f"run's {dtype} arithmetic" in message


def test_the_smallest_normal_numbers_still_pass():
    load_config(CONFIGS / "xor.toml", ["optimizer.lr=1.2e-38", "optimizer.eps=1e-30"])
    load_config(CONFIGS / "xor.toml", ["optimizer.lr=1e-300", "train.dtype=float64"])


def test_a_diverging_run_trains_without_numpy_warnings(runs_dir):
    """The loop explains a divergence in its error; numpy's overflow warnings on the way went
    to the stderr of a sweep's worker processes, where no `fit` filter reaches."""
    import warnings

    from mlptrain.experiment import fit_experiment
    from mlptrain.runs import RunStore

    config = load_config(CONFIGS / "xor.toml", [
        "train.epochs=2", "optimizer.lr=1000000", "model.activation=relu",
        "model.hidden=[300,300]"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(TrainingError, match="the training loss became nan"):
            fit_experiment(config, RunStore(runs_dir))
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], caught


# -- paths and run references on the command line -------------------------------------------------


@pytest.fixture
def xor_run(tmp_path):
    from mlptrain.experiment import fit_experiment
    from mlptrain.runs import RunStore

    config = load_config(CONFIGS / "xor.toml", ["train.epochs=1", "report.plots=false"])
    return fit_experiment(config, RunStore(tmp_path / "runs")).path


def test_device_given_empty_is_an_error_not_ignored(tmp_path):
    message = _error("fit", CONFIGS / "xor.toml", "--device", "", "--runs-dir", tmp_path / "r")
    assert "train.device = ''" in message and not (tmp_path / "r").exists()


@pytest.mark.parametrize("option", [("fit", CONFIGS / "xor.toml", "--runs-dir"),
                                    ("config", "init", "--out")])
def test_an_empty_path_option_is_a_usage_error_not_the_working_directory(option):
    """`--runs-dir "$UNSET"` wrote the run into the working directory (Path("") is ".")."""
    result = run(*option, "")
    assert result.exit_code == 2 and "is empty" in one_line(result.output)


@pytest.mark.parametrize("below", ["", "sub"])
@pytest.mark.parametrize("command", ["fit", "sweep"])
def test_a_runs_dir_inside_a_run_is_refused(xor_run, below, command):
    """New runs were written inside the run given as --runs-dir, where `runs` never lists
    them and `runs rm` of that run deletes them along."""
    before = sorted(p.name for p in xor_run.iterdir())
    args = ["--grid", "train.seed=0,1"] if command == "sweep" else []
    message = _error(command, CONFIGS / "xor.toml", "--set", "train.epochs=1", *args,
                     "--runs-dir", xor_run / below)
    assert f"run {xor_run.name}'s directory" in message
    assert sorted(p.name for p in xor_run.iterdir()) == before


def test_a_runs_dir_that_is_a_file_says_so(tmp_path):
    (tmp_path / "runs").write_text("")
    message = _error("fit", CONFIGS / "xor.toml", "--runs-dir", tmp_path / "runs")
    assert "is a file, not a folder" in message


@pytest.mark.parametrize("command", [("config", "init", "--force", "--out"),
                                     ("export", "latest", "--format", "safetensors", "--force",
                                      "--out")])
def test_a_forced_write_never_replaces_a_pipe_or_device(tmp_path, xor_run, command):
    """`config init --out /dev/null --force`, run as root, replaced /dev/null with a file."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    message = _error(*command, fifo, *(("--runs-dir", xor_run.parent) if command[0] ==
                                       "export" else ()))
    assert "is a device, a pipe or a socket, not a file" in message
    assert fifo.is_fifo()


@pytest.mark.parametrize("setting, suggestion", [
    ("optimizer.name=SGD", "sgd"), ("data.dataset=XOR", "xor"),
    ("model.init=He_Normal", "he_normal")])
def test_a_choice_in_the_wrong_case_gets_a_did_you_mean(setting, suggestion):
    with pytest.raises(ConfigError, match=f"Did you mean `{suggestion}`"):
        load_config(CONFIGS / "xor.toml", [setting])


def test_a_shift_that_moves_the_images_out_of_their_frame_is_refused(tmp_path):
    """augment_shift = 10**6 padded each batch by it: a MemoryError traceback after the run
    directory was made, the run left `running`."""
    with pytest.raises(ConfigError, match=r"augment_shift = 1000000: expected a value >= 0 "
                                          r"and <= 100\."):
        load_config(CONFIGS / "mnist.toml", ["data.augment_shift=1000000"])
    message = _error("fit", CONFIGS / "mnist.toml", "--set", "data.augment_shift=28",
                     "--set", "data.limit=100", "--runs-dir", tmp_path / "runs")
    assert "augment_shift = 28 moves the 28x28 images of the mnist dataset out of their frame; " \
           "use at most 27 pixels" in message
    assert not (tmp_path / "runs").exists()


def test_a_test_fraction_that_holds_out_no_row_is_said(tmp_path):
    """0.001 of wine's 178 rows held out none: the run ended with "test accuracy -", unsaid."""
    result = run("fit", CONFIGS / "wine.toml", "--set", "data.test_fraction=0.001", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "[data] test_fraction = 0.001 of 178 rows held out no row, so the run has no test " \
           "score" in one_line(result.output)


def test_dry_run_prints_its_lines_as_written(tmp_path):
    """The plan was printed as rich markup: a class named [/x] raised MarkupError (a
    traceback), and a note's [data] vanished."""
    table = tmp_path / "t.csv"
    table.write_text("a,b,label\n" + "1,2,[/x]\n3,4,y\n" * 6)
    result = run("fit", CONFIGS / "xor.toml", "--set", "data.dataset=csv",
                 "--set", f"data.path={table}", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "2 classes ([/x], y)" in result.output


def test_paths_that_look_like_markup_are_printed_as_written(tmp_path):
    """A folder named `d[` makes `d[/x].toml` a path that rich read as a closing tag: config
    check, fit, sweep, export and runs show ended in a MarkupError traceback (fit's after the
    run was trained and saved)."""
    (tmp_path / "d[").mkdir()
    config = tmp_path / "d[" / "x].toml"
    config.write_text((CONFIGS / "xor.toml").read_text())
    runs = tmp_path / "r[" / "z]"
    commands = [("config", "check", config),
                ("fit", config, "--set", "train.epochs=1", "--set", "report.plots=false",
                 "--progress", "never", "--runs-dir", runs),
                ("fit", config, "--set", "train.epochs=1", "--quiet", "--runs-dir", runs),
                ("sweep", config, "--grid", "train.seed=0,1", "--set", "train.epochs=1",
                 "--workers", "0", "--runs-dir", runs),
                ("export", "latest", "--format", "safetensors", "--runs-dir", runs),
                ("runs", "show", "latest", "--runs-dir", runs)]
    for command in commands:
        result = run(*command)
        assert result.exit_code == 0, (command, result.output)
        assert str(runs if command[0] != "config" else config) in one_line(result.output)


# -- settings nothing reads -------------------------------------------------------------------------


@pytest.mark.parametrize("sets, note", [
    (["optimizer.name=adam", "optimizer.momentum=0.9"],
     "[optimizer] momentum = 0.9 does nothing: only optimizer.name = sgd reads it, and it is "
     "'adam' here"),
    (["data.samples=100", "data.dataset=mnist", "model.loss=auto", "data.limit=100"],
     "[data] samples = 100 does nothing: the mnist dataset does not read it"),
    (["schedule.gamma=0.5"],
     "[schedule] gamma = 0.5 does nothing: only schedule.name = step reads it, and it is "
     "'constant' here"),
    (["train.precision=tf32"],
     "[train] precision = 'tf32' does nothing: only train.device = cuda or auto reads it, and "
     "it is 'cpu' here")])
def test_a_key_nothing_reads_is_named_by_config_check_dry_run_and_the_run(
        tmp_path, sets, note):
    """momentum = 0.9 under adam, or samples under mnist, trained as if never written. Not an
    error (a sweep may vary optimizer.name over a base with momentum), but said."""
    from mlptrain.config import ignored_keys

    assert ignored_keys(load_config(CONFIGS / "xor.toml", sets)) == [note]
    args = [a for s in sets for a in ("--set", s)]
    for command in (("config", "check"), ("fit", "--dry-run")):
        result = run(*command, CONFIGS / "xor.toml", *args)
        assert result.exit_code == 0 and f"note: {note}" in one_line(result.output)


def test_the_shipped_configs_set_nothing_that_is_ignored():
    from mlptrain.config import ignored_keys

    for path in sorted(CONFIGS.glob("*.toml")):
        assert ignored_keys(load_config(path)) == [], path


def test_a_run_records_the_keys_it_ignored(runs_dir):
    from mlptrain.experiment import fit_experiment
    from mlptrain.runs import RunStore

    config = load_config(CONFIGS / "xor.toml", ["train.epochs=1", "report.plots=false",
                                                "model.leaky_slope=0.2"])
    summary = fit_experiment(config, RunStore(runs_dir)).summary
    assert summary["ignored_keys"] == [
        "[model] leaky_slope = 0.2 does nothing: only model.activation = leaky_relu reads it, "
        "and it is 'tanh' here"]


def test_a_config_saved_with_a_byte_order_mark_reads_as_without(tmp_path):
    """Notepad's UTF-8 BOM made a valid config 'not valid TOML: Invalid statement (at line 1,
    column 1)', an error the file shows no sign of."""
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + (CONFIGS / "xor.toml").read_bytes())
    assert load_config(path) == load_config(CONFIGS / "xor.toml")
    path.write_bytes(b"\xef\xbb\xbf[train]\nepochs = 0\n")
    with pytest.raises(ConfigError, match=r"bom.toml, line 2: \[train\] epochs = 0"):
        load_config(path)


def test_no_run_is_named_latest(tmp_path):
    """`latest` names the newest run in every command, so a run of that name could never be
    found by it."""
    with pytest.raises(ConfigError, match="every command reads `latest` as the newest run"):
        load_config(CONFIGS / "xor.toml", ["name=latest"])
    with pytest.raises(ConfigError, match="--grid name = 'latest'"):
        load_sweep(CONFIGS / "xor.toml", grid=["name=a,latest"])
    path = tmp_path / "latest.toml"
    path.write_text("[data]\ndataset = 'xor'\n")
    assert load_config(path).name == "latest-run"


def test_dry_run_checks_the_starting_weights_as_fit_does(tmp_path, xor_run):
    """fit --dry-run passed a model.weights that did not exist or did not fit the network."""
    weights = xor_run / "weights.npz"
    message = _error("fit", CONFIGS / "xor.toml", "--set", f"model.weights={weights}",
                     "--set", "model.hidden=8", "--dry-run")
    assert "array 'layers.0.weight' has shape (4, 2), expected (8, 2)" in message
    message = _error("fit", CONFIGS / "xor.toml", "--set", "model.weights=nothing.npz",
                     "--dry-run")
    assert "[model] weights = 'nothing.npz' does not exist" in message


def test_a_tilde_is_the_home_folder_in_every_path_a_user_gives(tmp_path, monkeypatch, xor_run):
    """data.path expanded `~`; model.weights and --runs-dir (quoted, or from
    MLPTRAIN_RUNS_DIR=~/runs) made a folder named `~` in the working directory."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "w.npz").write_bytes((xor_run / "weights.npz").read_bytes())
    result = run("fit", CONFIGS / "xor.toml", "--set", "train.epochs=1", "--set",
                 "model.weights=~/w.npz", "--set", "report.plots=false", "--quiet",
                 "--runs-dir", "~/runs")
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "home" / "runs").iterdir())) == 1
    assert not (tmp_path / "~").exists()


def test_a_group_member_its_data_refuses_fails_alone_and_leaves_no_run(tmp_path):
    """Grouped, the member with patience = 2 (no validation row) was refused after the run of
    the member before it was made: that run stayed `running`, and both trials failed with its
    error on every retry."""
    runs = tmp_path / "runs"
    result = run("sweep", CONFIGS / "xor.toml", "--set", "train.epochs=2", "--set",
                 "data.samples=20", "--set", "data.val_fraction=0.01",
                 "--grid", "train.patience=0,2", "--group", "on", "--workers", "0",
                 "--runs-dir", runs)
    assert result.exit_code == 1 and "1 completed, 1 failed" in one_line(result.output)
    (trials,) = runs.glob("sweeps/*/trials.json")
    records = json.loads(trials.read_text())["trials"]
    assert [r["status"] for r in records] == ["completed", "failed"]
    assert "[train] patience = 2" in records[1]["error"] and records[1]["run_id"] is None
    (made,) = [p for p in runs.iterdir() if p.name != "sweeps"]
    assert json.loads((made / "summary.json").read_text())["status"] == "completed"
