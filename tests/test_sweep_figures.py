"""A sweep's trials draw no figures of their own by default (the sweep draws its capacity
figure); each is still a complete run, whose figures `mlptrain plot RUN` draws on demand, and
`--trial-figures` draws them during the sweep. Tiny XOR trials, in this process."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from mlptrain.cli import app
from mlptrain.runs import RunStore

runner = CliRunner()
XOR_FIGURES = {"confusion_matrix.png", "curves.png", "decision_boundary.png"}
SWEEP = """\
name = "xs"
[data]
dataset = "xor"
samples = 200
test_samples = 200
[model]
activation = "tanh"
[train]
epochs = 2
batch_size = 32
[sweep]
"model.hidden" = [2, 4]
"""


def sweep(tmp_path, *args):
    config = tmp_path / "xs.toml"
    config.write_text(SWEEP)
    return runner.invoke(app, ["sweep", str(config), "--workers", "0", *args])


def pngs(run) -> set[str]:
    return {p.name for p in run.path.glob("*.png")}


def test_a_sweeps_runs_have_no_figures_until_plot_draws_them(runs_dir, tmp_path):
    done = sweep(tmp_path)
    assert done.exit_code == 0, done.output
    runs = RunStore(runs_dir).runs()
    assert len(runs) == 2
    assert len(list(runs_dir.glob("sweeps/*/capacity.png"))) == 1  # the sweep's own, as before
    for run in runs:
        summary = run.read_summary()
        assert summary["status"] == "completed" and pngs(run) == set()
        assert summary["figures"]["files"] == [] and "mlptrain plot" in \
            summary["figures"]["not_drawn"]
        assert "plots = false" in (run.path / "config.toml").read_text()  # says what was done
    # the end of the sweep says how to draw a trial's figures
    last = next(r for r in runs if r.read_summary()["name"] == "xs_hidden-4")
    assert f"drawn on demand: mlptrain plot {last.run_id}" in " ".join(done.output.split())
    run = runs[0]
    # eval and runs show read a run without figures as any other
    for command in (["eval", run.run_id], ["runs", "show", run.run_id]):
        shown = runner.invoke(app, command)
        assert shown.exit_code == 0, shown.output
    drawn = runner.invoke(app, ["plot", run.run_id])
    assert drawn.exit_code == 0, drawn.output
    assert pngs(run) == XOR_FIGURES
    figures = run.read_summary()["figures"]
    assert set(figures["files"]) == XOR_FIGURES and "not_drawn" not in figures
    assert pngs(runs[1]) == set()  # only the run asked for


def test_plot_into_another_folder_leaves_the_runs_summary_as_it_was(runs_dir, tmp_path):
    assert sweep(tmp_path).exit_code == 0
    run = RunStore(runs_dir).runs()[0]
    drawn = runner.invoke(app, ["plot", run.run_id, "--out", str(tmp_path / "elsewhere")])
    assert drawn.exit_code == 0, drawn.output
    assert pngs(run) == set() and run.read_summary()["figures"]["files"] == []
    assert {p.name for p in (tmp_path / "elsewhere").iterdir()} == XOR_FIGURES


def test_trial_figures_draws_every_trials_figures_during_the_sweep(runs_dir, tmp_path):
    done = sweep(tmp_path, "--trial-figures")
    assert done.exit_code == 0, done.output
    for run in RunStore(runs_dir).runs():
        assert pngs(run) == XOR_FIGURES
        assert set(run.read_summary()["figures"]["files"]) == XOR_FIGURES
        assert "plots = true" in (run.path / "config.toml").read_text()
    assert "drawn on demand" not in " ".join(done.output.split())


def test_the_same_sweep_run_again_trains_nothing_with_or_without_trial_figures(runs_dir,
                                                                               tmp_path):
    assert sweep(tmp_path).exit_code == 0
    before = sorted(r.run_id for r in RunStore(runs_dir).runs())
    for args in ([], ["--trial-figures"]):  # drawing figures is no part of the trials' identity
        again = sweep(tmp_path, *args)
        assert again.exit_code == 0, again.output
        assert "2 completed earlier, skipped" in " ".join(again.output.split())
        assert sorted(r.run_id for r in RunStore(runs_dir).runs()) == before
    (sweep_dir,) = (runs_dir / "sweeps").iterdir()
    trials = json.loads((sweep_dir / "trials.json").read_text())["trials"]
    assert [t["run_id"] for t in trials] == before and all(not t["previous_runs"]
                                                          for t in trials)
