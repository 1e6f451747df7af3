"""`mlptrain runs`: list, filter, show, compare, remove."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import CONFIGS, ROOT
from typer.testing import CliRunner

from mlptrain.cli import app
from mlptrain.cli.parts import BLOCKS, sparkline
from mlptrain.config import load_config
from mlptrain.experiment import fit_experiment
from mlptrain.runs import RunStore
from mlptrain.loop import StopFlag

runner = CliRunner()


def run(*args, **kwargs):
    return runner.invoke(app, [str(a) for a in args], **kwargs)


NO_PLOTS = "report.plots=false"  # figures are test_plots.py's


@pytest.fixture
def three_runs(runs_dir):
    """An XOR run, a second XOR run with other settings, and an interrupted one; oldest first."""
    store = RunStore(runs_dir)
    a = fit_experiment(load_config(CONFIGS / "xor.toml", ["train.epochs=3", NO_PLOTS]), store)
    b = fit_experiment(load_config(CONFIGS / "xor.toml", ["train.epochs=4", "name=xor-wide", NO_PLOTS,
                                                          "model.hidden=[8]"]), store)
    stop = StopFlag()
    stop.set()  # stops after the first batch
    c = fit_experiment(load_config(CONFIGS / "xor.toml", ["name=cut"]), store, stop=stop)
    assert c.summary["status"] == "interrupted"
    return a, b, c


def test_runs_lists_newest_first_with_the_documented_columns(three_runs, monkeypatch):
    a, b, c = three_runs
    monkeypatch.delenv("COLUMNS", raising=False)  # a pipe gets every column (test_narrow.py)
    result = run("runs")
    assert result.exit_code == 0, result.output
    header, *rows = [line for line in result.stdout.splitlines() if "━" not in line]
    for column in ("id", "name", "dataset", "model", "status", "best val", "test", "time"):
        assert column in header
    assert [r.split()[0] for r in rows] == [c.run_id, b.run_id, a.run_id]
    assert "2-8-1 tanh" in rows[1] and "interrupted" in rows[0] and "completed" in rows[2]


def test_runs_json_and_filters(three_runs):
    a, b, c = three_runs
    listed = json.loads(run("runs", "--json").stdout)
    assert [r["id"] for r in listed] == [c.run_id, b.run_id, a.run_id]
    assert listed[1]["test_accuracy"] == b.summary["final"]["test_accuracy"]
    assert listed[1]["best_val_accuracy"] == max(
        json.loads(line)["val_accuracy"] for line in (b.path / "metrics.jsonl").open())
    ids = lambda *args: [r["id"] for r in json.loads(run("runs", "--json", *args).stdout)]  # noqa
    assert ids("--status", "completed") == [b.run_id, a.run_id]
    assert ids("--status", "interrupted") == [c.run_id]
    assert ids("--name", "wide") == [b.run_id]
    assert ids("--name", "xor*") == [b.run_id, a.run_id]
    assert ids("--dataset", "mnist") == []
    assert ids("--limit", "1") == [c.run_id]


def test_runs_of_an_empty_store_says_so(runs_dir):
    result = run("runs")
    assert result.exit_code == 0 and "no runs in" in result.stderr and result.stdout == ""


def test_a_damaged_run_is_listed_not_fatal(three_runs):
    a, _, _ = three_runs
    (a.path / "summary.json").write_text("{not json")
    listed = {r["id"]: r for r in json.loads(run("runs", "--json").stdout)}
    assert listed[a.run_id]["status"] == "damaged" and "not valid JSON" in listed[a.run_id]["error"]


def test_runs_show_prints_config_final_metrics_and_sparklines(three_runs):
    _, b, _ = three_runs
    result = run("runs", "show", b.run_id)
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert f"run {b.run_id}: completed, 4 of 4 epochs" in text
    assert "hidden = [" in text and "epochs = 4" in text  # the resolved config
    assert "test" in text and "%" in text
    for key in ("train_loss", "val_loss", "val_accuracy"):
        line = next(line for line in text.splitlines() if line.strip().startswith(key))
        assert len([ch for ch in line if ch in "▁▂▃▄▅▆▇█"]) == 4  # one mark per epoch
    as_json = json.loads(run("runs", "show", b.run_id, "--json").stdout)
    assert as_json["summary"]["run_id"] == b.run_id and len(as_json["metrics"]) == 4


def test_sparkline_scales_and_buckets():
    assert sparkline([1, 2, 3, 4, 5, 6, 7, 8]) == "▁▂▃▄▅▆▇█"
    assert sparkline([3, 3, 3]) == BLOCKS[4] * 3  # flat: mid height (one sparkline for all)
    # 1000 values averaged into 10 buckets of 100: means 49.5 ... 949.5, i.e. 0, 7/9 ... 7 marks
    assert sparkline(list(range(1000)), width=10) == "▁▂▃▃▄▅▆▆▇█"
    assert sparkline([]) == ""


def test_runs_compare_highlights_config_differences(three_runs):
    a, b, _ = three_runs
    result = run("runs", "compare", a.run_id, b.run_id)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    marked = {line.split()[1] for line in lines if line.strip().startswith("*")}
    assert marked == {"name", "model.hidden", "train.epochs"}
    assert any(line.split()[0] == "data.dataset" for line in lines)  # equal keys shown too
    assert "3 config keys differ" in result.stdout
    diff_only = run("runs", "compare", a.run_id, b.run_id, "--diff").stdout
    assert "data.dataset" not in diff_only and "model.hidden" in diff_only
    as_json = json.loads(run("runs", "compare", a.run_id, b.run_id, "--json").stdout)
    differing = {row["key"]: row["values"] for row in as_json["config"] if row["differs"]}
    assert differing["model.hidden"] == [[4], [8]]


def test_runs_rm_asks_first(three_runs, runs_dir):
    a, b, _ = three_runs
    declined = run("runs", "rm", a.run_id, input="n\n")
    assert declined.exit_code == 1 and a.path.exists() and "nothing deleted" in declined.stderr
    no_answer = run("runs", "rm", a.run_id)  # stdin closed: nothing is deleted on a guess
    assert no_answer.exit_code == 1 and a.path.exists() and "--yes" in no_answer.stderr
    accepted = run("runs", "rm", a.run_id, input="y\n")
    assert accepted.exit_code == 0 and not a.path.exists()
    assert f"deleted {a.run_id}" in accepted.stdout
    forced = run("runs", "rm", b.run_id, "--yes")
    assert forced.exit_code == 0 and not b.path.exists()
    assert len(list(runs_dir.iterdir())) == 1  # no leftovers of the deleted ones
    missing = run("runs", "rm", "nope", "--yes")
    assert missing.exit_code == 1 and "no run matches 'nope'" in missing.stderr


def _xor_run(runs, name: str = "xor"):
    config = load_config(CONFIGS / "xor.toml", ["train.epochs=1", NO_PLOTS, f"name={name}"])
    return fit_experiment(config, RunStore(runs))


def _mlptrain_in(cwd, *args) -> subprocess.CompletedProcess:
    """The CLI in a real process in `cwd`, with the default runs directory (./runs)."""
    env = {k: v for k, v in os.environ.items() if k != "MLPTRAIN_RUNS_DIR"}
    return subprocess.run([sys.executable, "-m", "mlptrain", *map(str, args)], cwd=cwd,
                          env={**env, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"},
                          capture_output=True, text=True, timeout=120)


def test_runs_rm_of_a_name_deletes_the_run_never_a_project_folder_of_that_name(tmp_path):
    """`runs rm xor --yes` beside a project folder xor/ (with its config.toml) deleted that
    folder, outside the runs directory, and left the run."""
    run_ = _xor_run(tmp_path / "runs")
    project = tmp_path / "xor"
    project.mkdir()
    shutil.copy(CONFIGS / "xor.toml", project / "config.toml")
    done = _mlptrain_in(tmp_path, "runs", "rm", "xor", "--yes")
    assert done.returncode == 0, done.stderr
    assert f"deleted {run_.run_id}" in done.stdout and not run_.path.exists()
    assert (project / "config.toml").read_text() == (CONFIGS / "xor.toml").read_text()
    for ref, message in (("xor", "no run matches 'xor'"),
                         ("./xor", "is not a run directory")):
        done = _mlptrain_in(tmp_path, "runs", "rm", ref, "--yes")
        assert done.returncode == 1 and message in " ".join(done.stderr.split()), done.stderr
        assert (project / "config.toml").exists()


def test_runs_rm_deletes_only_runs_inside_the_runs_directory(runs_dir, tmp_path):
    kept, outside = _xor_run(runs_dir), _xor_run(tmp_path / "elsewhere", "mine")
    result = run("runs", "rm", kept.run_id, outside.path, "--yes")
    assert result.exit_code == 1
    assert "is not in the runs directory" in " ".join(result.stderr.split())
    assert kept.path.exists() and (outside.path / "weights.npz").exists()  # none deleted


def test_runs_rm_of_a_run_that_is_a_link_deletes_the_link_alone(runs_dir, tmp_path):
    """The link was renamed aside (hiding the run) and then refused by rmtree: a half state."""
    target = _xor_run(tmp_path / "disk2").path
    runs_dir.mkdir()
    link = runs_dir / target.name
    link.symlink_to(target)
    shown = run("runs", "rm", target.name, input="n\n")
    assert "a link: only the link is deleted" in " ".join(shown.stderr.split())
    result = run("runs", "rm", target.name, "--yes")
    assert result.exit_code == 0, result.output
    assert f"deleted the link {target.name} (its target {target} is left as it was)" \
        in " ".join(result.stdout.split())
    assert list(runs_dir.iterdir()) == []  # no link, nothing set aside
    assert (target / "weights.npz").exists() and (target / "summary.json").exists()
