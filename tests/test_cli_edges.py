"""What a new user hits first: naming runs, the commands other tools have, options written as
other tools write them, help text, completion, runs show, eval's report, config init."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
from conftest import CONFIGS, ROOT
from typer.main import get_command
from typer.testing import CliRunner

from mlptrain.cli import app
from mlptrain.config import Config, load_config
from mlptrain.experiment import fit_experiment
from mlptrain.experiment.evaluate import classification_report
from mlptrain.runs import Run, RunStore
from mlptrain.loop import StopFlag

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line(text: str) -> str:
    """Output with rich's wrapping and panel borders undone, for substring checks."""
    return " ".join(text.replace("│", " ").split())


@pytest.fixture
def runs(runs_dir):
    """Two completed XOR runs named `xor` (the second newer), then an interrupted one, `cut`."""
    store = RunStore(runs_dir)
    a = fit_experiment(load_config(CONFIGS / "xor.toml", ["train.epochs=2"]), store)
    b = fit_experiment(load_config(CONFIGS / "xor.toml", ["train.epochs=3"]), store)
    stop = StopFlag()
    stop.set()  # stops after the first batch
    c = fit_experiment(load_config(CONFIGS / "xor.toml", ["name=cut"]), store, stop=stop)
    return a, b, c


# -- naming runs --------------------------------------------------------------------------------


def _fake_runs(root, *ids):
    for run_id in ids:
        (root / run_id).mkdir(parents=True)
        (root / run_id / "config.toml").write_text("")
    return RunStore(root)


def test_a_run_is_found_by_the_hash_that_ends_its_id(tmp_path):
    store = _fake_runs(tmp_path, "20260101-000000-mnist-77d460", "20260101-000001-mnist-a1b2c3")
    assert store.find("77d460").run_id == "20260101-000000-mnist-77d460"
    assert store.find("77d4").run_id == "20260101-000000-mnist-77d460"  # its start will do
    assert store.find("77d460").found_as is None  # nothing to explain


def test_a_name_finds_its_newest_run_and_says_so(tmp_path):
    store = _fake_runs(tmp_path, "20260101-000000-mnist-77d460", "20260102-000000-mnist-a1b2c3",
                       "20260103-000000-xor-ffffff")
    found = store.find("mnist")
    assert found.run_id == "20260102-000000-mnist-a1b2c3"
    assert found.found_as == ("'mnist' is a run name: using the newest of its 2 runs, "
                              "20260102-000000-mnist-a1b2c3")


def test_a_typo_gets_a_did_you_mean(tmp_path):
    store = _fake_runs(tmp_path, "20260101-000000-mnist-77d460", "20260103-000000-xor-ffffff")
    with pytest.raises(Exception) as name_typo:
        store.find("mnsit")
    assert "Did you mean `mnist` (a run name)?" in str(name_typo.value)
    with pytest.raises(Exception) as hash_typo:
        store.find("77d461")
    assert "Did you mean `77d460`" in str(hash_typo.value)


def test_the_cli_says_which_run_a_name_picked(runs):
    a, b, _ = runs
    result = run("eval", "xor", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["run_id"] == b.run_id  # the newer `xor`
    assert f"'xor' is a run name: using the newest of its 2 runs, {b.run_id}" in \
        one_line(result.stderr)
    hashed = run("eval", a.run_id[-6:], "--json")
    assert json.loads(hashed.stdout)["run_id"] == a.run_id


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_eval_or_predict_after_ctrl_c_says_how_to_resume(runs, tmp_path, command):
    _, _, cut = runs
    sample = tmp_path / "x.npy"
    np.save(sample, np.zeros(2))
    args = ["eval"] if command == "eval" else ["predict", "latest", sample]
    result = run(*args)
    assert result.exit_code == 1
    assert (f"run {cut.run_id} was interrupted before its first step: resume it with "
            f"`mlptrain fit --resume {cut.run_id}`") in one_line(result.stderr)
    assert "may have failed" not in result.stderr


def test_an_interrupted_run_says_where_it_stopped(tmp_path):
    from mlptrain.errors import RunStoreError
    from mlptrain.runs.query import require_weights

    store = _fake_runs(tmp_path, "20260101-000000-mnist-77d460")
    run_ = store.find("77d460")
    for position, where in (({"epoch": 3, "step": 10}, "at epoch 3, step 10"),
                            ({"epoch": 2, "step": 0}, "after epoch 2")):
        (run_.path / "summary.json").write_text(json.dumps(
            {"status": "interrupted", "epochs_completed": 2, "position": position}))
        with pytest.raises(RunStoreError, match=f"was interrupted {where}: resume it with "
                                                "`mlptrain fit --resume 20260101-000000"):
            require_weights(run_)


# -- commands and options as other tools spell them ---------------------------------------------


def test_train_is_fit_under_the_name_other_tools_use(runs_dir):
    result = run("train", CONFIGS / "xor.toml", "--set", "train.epochs=1", "-q")
    assert result.exit_code == 0, result.output
    assert "completed" in result.stdout and len(RunStore(runs_dir).runs()) == 1
    assert "`mlptrain train` is the same command" in one_line(run("fit", "--help").stdout)


def test_run_points_at_fit_and_at_runs():
    result = run("run", "configs/xor.toml")
    assert result.exit_code == 2
    said = one_line(result.stderr)
    assert "`mlptrain fit CONFIG`" in said and "`mlptrain runs`" in said


def test_runs_ls_lists_runs(runs):
    listed = run("runs", "ls", "--json")
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout) == json.loads(run("runs", "--json").stdout)


def test_set_with_a_space_instead_of_equals_says_where_the_equals_goes(runs_dir):
    result = run("fit", CONFIGS / "xor.toml", "--set", "train.epochs", "3")
    assert result.exit_code == 2
    assert "--set train.epochs=3" in one_line(result.stderr)


@pytest.mark.parametrize("args, hint", [
    (["--epochs", "3"], "--set train.epochs=3"),
    (["--batch-size=64"], "--set train.batch_size=64"),
    (["--lr", "0.5"], "--set optimizer.lr=0.5"),
])
def test_an_option_that_is_a_config_key_points_at_set(runs_dir, args, hint):
    result = run("fit", CONFIGS / "xor.toml", *args)
    assert result.exit_code == 2 and hint in one_line(result.stderr)


# -- help and messages --------------------------------------------------------------------------


def _commands(command, path=()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


TYPE_TAG = re.compile(r"<[a-z_|\[\]]+>")  # <bool>, <str>, <list[str]>, <int range>'s kin


def test_help_has_no_type_tags_and_names_arguments_in_capitals():
    for path, _ in _commands(get_command(app)):
        result = run(*path, "--help")
        assert result.exit_code == 0, (path, result.output)
        assert not TYPE_TAG.search(result.stdout), (path, TYPE_TAG.search(result.stdout))
        usage = next(line for line in result.stdout.splitlines() if "Usage:" in line)
        arguments = usage.split("[OPTIONS]", 1)[1].split()
        for word in arguments:  # RUN, [CONFIG], COMMAND [ARGS]...
            assert word.strip("[].") == word.strip("[].").upper(), (path, usage)


@pytest.mark.parametrize("args, noise", [
    (["eval", "--split", "holdout"], "Value error"),
    (["runs", "--limit", "-1"], "Input should be"),
])
def test_bad_values_read_plainly(args, noise):
    result = run(*args)
    assert result.exit_code == 2
    assert noise not in result.stderr and "expected" in result.stderr or "not one of" in \
        result.stderr


def test_shell_completion_is_on():
    assert "--install-completion" in run("--help").stdout
    # typer detects the shell from the parent process: run it from bash (`; true` keeps bash
    # from exec-ing the command, which would make pytest the parent), as a user's shell would
    command = f"{shlex.quote(sys.executable)} -m mlptrain --show-completion; true"
    shown = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True,
                           timeout=60)
    assert shown.returncode == 0 and "complete" in shown.stdout


# -- runs show ----------------------------------------------------------------------------------


def test_runs_show_puts_metrics_first_and_only_the_changed_keys(runs):
    _, b, _ = runs
    result = run("runs", "show", b.run_id)
    assert result.exit_code == 0, result.output
    text = result.stdout
    final = b.summary["final"]
    assert f"{100 * final['test_accuracy']:.2f}%" in text  # in %, as everywhere
    assert text.index("test ") < text.index("config:")  # metrics before the config
    config = text[text.index("config:"):]
    assert 'data.dataset = "xor"' in config and "train.epochs = 3" in config
    assert "mirrors" not in text and "augment" not in text  # MNIST's keys, in an XOR run
    assert "optimizer.beta2" not in config  # a default
    as_json = json.loads(run("runs", "show", b.run_id, "--json").stdout)
    assert as_json["config"]["train"]["epochs"] == 3  # an object, not a TOML string


# -- eval: the per-class report and other data ---------------------------------------------------


def test_classification_report_matches_hand_counts():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2])
    report = classification_report(y_true, y_pred, 4)
    rows = report["per_class"]
    # class 0: 2 predicted, both right; 3 true, 2 found
    assert rows[0] == {"class": 0, "precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3}
    # class 1: predicted twice (one right), 2 true (one found)
    assert rows[1]["precision"] == 0.5 and rows[1]["recall"] == 0.5 and rows[1]["f1"] == 0.5
    # class 3: never true, never predicted: every ratio 0, as scikit-learn reports it
    assert rows[3] == {"class": 3, "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert report["macro_avg"]["recall"] == pytest.approx((2 / 3 + 0.5 + 1.0 + 0.0) / 4)
    assert report["weighted_avg"]["recall"] == pytest.approx(4 / 6)  # = accuracy


def test_eval_prints_the_report_and_scores_a_file(runs, tmp_path):
    _, b, _ = runs
    shown = run("eval", b.run_id)
    assert shown.exit_code == 0, shown.output
    for word in ("precision", "recall", "F1", "support", "macro avg", "weighted avg"):
        assert word in shown.stdout
    report = json.loads(run("eval", b.run_id, "--json").stdout)
    assert sum(r["support"] for r in report["classes"]["per_class"]) == report["samples"]
    # the run's own test set, written to a file, scores as the run's test split does
    from mlptrain.data import xor_test_set
    cfg = load_config(b.path / "config.toml")
    X, y = xor_test_set(cfg.data.test_samples, cfg.data.noise)
    np.savez(tmp_path / "mine.npz", X=X, y=y)
    other = json.loads(run("eval", b.run_id, "--data", tmp_path / "mine.npz", "--json").stdout)
    assert other["accuracy"] == report["accuracy"] and other["data"].endswith("mine.npz")
    np.savez(tmp_path / "wide.npz", X=np.zeros((3, 5)), y=np.zeros(3))
    wrong = run("eval", b.run_id, "--data", tmp_path / "wide.npz")
    assert wrong.exit_code == 1 and "5 features" in one_line(wrong.stderr)
    both = run("eval", b.run_id, "--data", tmp_path / "mine.npz", "--split", "val")
    assert both.exit_code == 2


# -- config init ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["xor", "mnist", "npz", "csv"])
def test_config_init_writes_every_default_and_loads_back_equal(tmp_path, dataset):
    path = tmp_path / "start.toml"
    result = run("config", "init", "--dataset", dataset, "--out", path)
    assert result.exit_code == 0, result.output
    loaded = load_config(path)
    expected = Config(name="run")
    expected.data.dataset, expected.name = dataset, "start"
    if dataset in ("npz", "csv"):  # the one key a default cannot fill: the file to train on
        expected.data.path = f"my-data.{dataset}"
    assert loaded == expected
    text = path.read_text()
    assert "lr = 0.1  # base learning rate" in text  # the comments of config.py
    for section in ("data", "model", "optimizer", "schedule", "train", "report"):
        assert f"[{section}]" in text
    assert run("config", "init", "--out", path).exit_code == 1  # never overwrites unasked


def test_config_init_writes_every_key():
    text = run("config", "init").stdout
    for section, values in Config().to_dict().items():
        for key in values if isinstance(values, dict) else ():
            assert re.search(rf"^(# )?{key} = ", text, re.M), (section, key)


def test_config_init_lists_each_key_s_choices_from_its_declaration():
    """A new activation or optimizer shows in `config init` without a comment to edit."""
    from mlptrain import nn
    from mlptrain.optim import OPTIMIZERS

    text = run("config", "init").stdout
    assert f"activation = \"relu\"  # between Linear layers; one of {' | '.join(nn.ACTIVATIONS)}" \
        in text
    assert f"; one of {' | '.join(OPTIMIZERS)}" in text and "gelu" in text and "rmsprop" in text
    assert "# xor | mnist | npz (a file with X and y) | csv (a table with a header row)\n" \
        in text  # a comment's own list stays


def test_config_init_comments_out_what_the_dataset_does_not_read(tmp_path):
    text = run("config", "init", "--dataset", "xor").stdout
    assert re.search(r"^# mirrors = ", text, re.M) and re.search(r"^noise = ", text, re.M)
    text = run("config", "init", "--dataset", "mnist").stdout
    assert re.search(r"^mirrors = ", text, re.M) and re.search(r"^# noise = ", text, re.M)


def test_a_run_dir_is_still_a_run_ref(runs):
    a, _, _ = runs
    assert RunStore(a.path.parent).find(str(a.path)).path == Run(a.path).path


# -- counts and their nouns ----------------------------------------------------------------------


def test_plural_agrees_with_its_count():
    from mlptrain.text import plural

    assert plural(1, "epoch") == "1 epoch" and plural(3, "epoch") == "3 epochs"
    assert plural(0, "run") == "0 runs" and plural(1_000, "sample") == "1,000 samples"
    assert plural(2, "process", "processes") == "2 processes"


def test_one_of_a_thing_reads_as_one(runs):
    checked = run("config", "check", CONFIGS / "xor.toml", "--set", "train.epochs=1")
    assert "1 epoch)" in checked.stdout
    a, b, _ = runs  # epochs 2 and 3: one key differs
    compared = run("runs", "compare", a.run_id, b.run_id)
    assert "1 config key differs" in compared.stdout
    fitted = run("fit", CONFIGS / "xor.toml", "--set", "train.epochs=1",
                 "--set", "report.plots=false")
    assert "for 1 epoch " in one_line(fitted.stdout) and "1 epochs" not in fitted.stdout
