"""`mlptrain plot`, the plots `fit` draws by itself, and the closing summary panel."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from rich.console import Console
from typer.testing import CliRunner

from mlptrain.cli import app
from mlptrain.cli.parts import BLOCKS, sparkline
from mlptrain.cli.summary import fit_panel
from mlptrain.config import load_config
from mlptrain.experiment import RunFinished, fit_experiment
from mlptrain.runs import Run, RunStore

from conftest import CONFIGS, ROOT

runner = CliRunner()
XOR_FILES = ["confusion_matrix", "curves", "decision_boundary"]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def only_run(runs_dir):
    (path,) = runs_dir.iterdir()
    return path


@pytest.fixture(scope="module")
def xor_run(tmp_path_factory) -> Run:
    store = RunStore(tmp_path_factory.mktemp("runs"))
    cfg = load_config(CONFIGS / "xor.toml", ["train.epochs=20", "report.plots=false"])
    return Run(fit_experiment(cfg, store).path)


# -- fit draws its plots and ends with the panel ----------------------------------------------------


def test_fit_writes_its_plots_into_the_run_and_lists_them_in_the_panel(runs_dir):
    result = run("fit", CONFIGS / "xor.toml", "--set", "train.epochs=30")
    assert result.exit_code == 0, result.output
    path = only_run(runs_dir)
    assert sorted(p.stem for p in path.glob("*.png")) == XOR_FILES
    out = result.stdout
    assert "run " + path.name in out and "completed" in out
    assert "curves.png" in out and "decision_boundary.png" in out
    assert "plots drawn afterwards in" in out
    losses = [json.loads(line)["train_loss"] for line in (path / "metrics.jsonl").open()]
    assert sparkline(losses, log=True) in out  # 30 epochs: one character each
    final = json.loads((path / "summary.json").read_text())["final"]
    assert f"{final['test_loss']:.4f}" in out and f"{final['train_loss']:.4f}" in out
    assert out.rstrip().endswith(path.name)  # the last line names the run directory


def test_report_plots_false_draws_nothing(runs_dir):
    result = run("fit", CONFIGS / "xor.toml", "--set", "train.epochs=3",
                 "--set", "report.plots=false")
    assert result.exit_code == 0, result.output
    assert list(only_run(runs_dir).glob("*.png")) == []
    assert "report] plots = false" in result.stdout


def test_report_format_svg(runs_dir):
    result = run("fit", CONFIGS / "xor.toml", "--set", "train.epochs=3",
                 "--set", "report.format=svg")
    assert result.exit_code == 0, result.output
    assert sorted(p.stem for p in only_run(runs_dir).glob("*.svg")) == XOR_FILES


def test_a_bad_report_format_names_the_key(runs_dir):
    result = run("fit", CONFIGS / "xor.toml", "--set", "report.format=jpg")
    assert result.exit_code == 1
    assert "report.format" in result.stderr and "png, svg" in result.stderr
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


# -- mlptrain plot ------------------------------------------------------------------------------


def test_plot_prints_the_files_it_wrote(xor_run, tmp_path):
    result = run("plot", xor_run.path, "--out", tmp_path / "figs")
    assert result.exit_code == 0, result.output
    listed = result.stdout.split()
    assert sorted(os.path.basename(p) for p in listed) == [f"{n}.png" for n in XOR_FILES]
    assert all(os.path.getsize(p) > 1000 for p in listed)
    assert "not images" in result.stderr  # what it left out, and why, on stderr


def test_plot_by_id_prefix_from_the_runs_dir_as_svg(xor_run):
    prefix = xor_run.run_id[:-3]
    result = run("plot", prefix, "--format", "svg", "--runs-dir", xor_run.path.parent)
    assert result.exit_code == 0, result.output
    for line in result.stdout.split():
        assert line.endswith(".svg") and os.path.dirname(line) == str(xor_run.path)


def test_plot_a_bad_run_id_is_an_error_not_a_traceback(xor_run):
    result = run("plot", "no-such-run", "--runs-dir", xor_run.path.parent)
    assert result.exit_code == 1
    assert "no run matches 'no-such-run'" in result.stderr
    assert "Traceback" not in result.output and result.stdout == ""


def test_plot_an_unknown_format_is_a_usage_error(xor_run):
    result = run("plot", xor_run.path, "--format", "jpg")
    assert result.exit_code == 2
    assert "--format" in result.stderr and "png, svg" in result.stderr


def test_plot_in_a_real_process_never_needs_a_display(xor_run, tmp_path):
    # a GUI backend asked for and no display: the figures still go to files through Agg
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "TkAgg"}
    env.pop("DISPLAY", None)
    code = ("import sys, matplotlib; from mlptrain.cli import main; sys.argv[1:] = "
            f"['plot', {str(xor_run.path)!r}, '--out', {str(tmp_path)!r}]\n"
            "try: main()\n"
            "except SystemExit as e: assert e.code in (0, None), e.code\n"
            "assert 'matplotlib.pyplot' not in sys.modules\n"
            "print('backend', matplotlib.get_backend())")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().lower().endswith("backend agg")
    assert sorted(p.stem for p in tmp_path.glob("*.png")) == XOR_FILES


# -- the panel ----------------------------------------------------------------------------------


def test_sparkline_maps_min_to_the_lowest_block_and_max_to_the_highest():
    assert sparkline([1, 2, 3, 4, 5, 6, 7, 8]) == BLOCKS
    assert sparkline([8, 1]) == "█▁"
    assert sparkline([3, 3, 3]) == BLOCKS[4] * 3
    assert sparkline([]) == "" and sparkline([float("nan")]) == ""


def test_sparkline_averages_long_histories_into_its_width():
    line = sparkline([0] * 50 + [1] * 50, width=10)
    assert line == "▁" * 5 + "█" * 5


def test_sparkline_log_scale_follows_decades():
    # 1, 0.1, 0.01: equal steps on a log scale, so the middle value sits mid-height
    assert sparkline([1, 0.1, 0.01], log=True) == "█" + BLOCKS[4] + "▁"
    assert sparkline([1, 0.1, 0.01]) == "█▂▁"  # linear: 0.1 sits near the bottom


def test_panel_shows_metrics_time_run_and_plots(xor_run):
    finished = RunFinished(xor_run.run_id, xor_run.path, xor_run.read_summary())
    console = Console(record=True, width=120)
    console.print(fit_panel(finished, xor_run.read_metrics(),
                            [xor_run.path / "curves.png"], plot_seconds=1.25))
    text = console.export_text()
    s = finished.summary
    for split in ("train", "val", "test"):
        assert f"{100 * s['final'][f'{split}_accuracy']:.2f}%" in text
    assert f"{s['timing']['wall_seconds']:.1f} s for 20 epochs" in text
    assert str(xor_run.path) in text and "curves.png" in text and "1.2 s" in text
    assert any(ch in text for ch in BLOCKS)


@pytest.mark.parametrize("training, shown", [(3.0, "of which training 3.0 s (0.15 s/epoch)"),
                                             (9.0, None)])
def test_panel_separates_training_from_wall_time_when_they_differ(xor_run, training, shown):
    summary = {**xor_run.read_summary()}
    summary["timing"] = {"wall_seconds": 10.0, "seconds_per_epoch": 0.5,
                         "samples_per_second": 1.0, "training_seconds": training}
    console = Console(record=True, width=120)
    console.print(fit_panel(RunFinished(xor_run.run_id, xor_run.path, summary),
                            xor_run.read_metrics(), []))
    text = console.export_text()
    assert "10.0 s for 20 epochs" in text
    assert (shown in text) if shown else ("of which training" not in text)


def test_panel_of_a_run_resumed_across_sittings_times_the_last_one_and_the_whole(xor_run):
    summary = {**xor_run.read_summary()}
    summary["timing"] = {"wall_seconds": 6.0, "seconds_per_epoch": 0.5,
                         "samples_per_second": 1.0, "training_seconds": 5.5, "sittings": 3,
                         "run_wall_seconds": 10.25, "run_training_seconds": 9.5}
    console = Console(record=True, width=120)
    console.print(fit_panel(RunFinished(xor_run.run_id, xor_run.path, summary),
                            xor_run.read_metrics(), []))
    text = console.export_text()
    assert "6.0 s for the last 12 of 20 epochs" in text
    assert "the whole run, over 3 sittings: 9.5 s of training, 10.2 s wall" in text
    one = {**summary, "timing": {**summary["timing"], "sittings": 1}}
    console = Console(record=True, width=120)
    console.print(fit_panel(RunFinished(xor_run.run_id, xor_run.path, one),
                            xor_run.read_metrics(), []))
    assert "sittings" not in console.export_text()
