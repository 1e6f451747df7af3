"""Sweeps of any size: counted before anything is built, sampled without enumerating the grid,
refused (or, for --dry-run, shown page-wise) when too large; and a dry run that meets an
interrupted trial whose checkpoint is damaged says so instead of failing."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT
from typer.testing import CliRunner

import mlptrain.config
from mlptrain.cli import app
from mlptrain.errors import ConfigError
from mlptrain.runs import Run
from mlptrain.sweep import InlineExecutor, load_sweep, run_sweep
from mlptrain.sweep.grid import MAX_TRIALS, Axis, grid_indices, point_at

from test_sweep import XOR_SWEEP

runner = CliRunner()
BASE = XOR_SWEEP.split("[sweep]")[0]


def flat(text: str) -> str:
    return " ".join(text.split())


def grid_file(tmp_path, *axes: tuple[str, int]):
    """A sweep config whose axes have the given numbers of values (seeds, widths, ...)."""
    path = tmp_path / "grid.toml"
    lines = [f'"{key}" = {list(range(1, n + 1))}' for key, n in axes]
    path.write_text(BASE + "[sweep]\n" + "\n".join(lines) + "\n")
    return path


MILLION = (("train.seed", 100), ("model.hidden", 100), ("train.epochs", 100))
BILLION = (("train.seed", 1000), ("model.hidden", 1000), ("train.epochs", 1000))


@pytest.fixture
def parses(monkeypatch):
    """Counts how often a config's text is parsed into sections (once per load_config)."""
    count = [0]
    real = mlptrain.config._build

    def counted(raw, where):
        count[0] += 1
        assert count[0] <= 3, "a config parsed once per trial"
        return real(raw, where)

    monkeypatch.setattr(mlptrain.config, "_build", counted)
    return count


def test_a_million_point_dry_run_builds_the_trials_it_shows_and_counts_the_rest(tmp_path,
                                                                                parses):
    result = runner.invoke(app, ["sweep", str(grid_file(tmp_path, *MILLION)), "--dry-run",
                                 "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    text = flat(result.output)
    assert "1,000,000 trials of a 1,000,000-point grid (the first 50 shown)" in text
    assert "running it would be refused: the grid has 1,000,000 points: 100 (train.seed) x " \
           "100 (model.hidden) x 100 (train.epochs)" in text and "--samples N" in text
    assert parses[0] == 1 and not (tmp_path / "runs").exists()


def test_running_a_sweep_beyond_the_limit_is_refused_naming_the_count(tmp_path, parses):
    result = runner.invoke(app, ["sweep", str(grid_file(tmp_path, *MILLION)), "--runs-dir",
                                 str(tmp_path / "runs")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"a sweep runs at most {MAX_TRIALS:,} trials" in flat(result.output)
    with pytest.raises(ConfigError, match="1,000,000 points"):
        load_sweep(grid_file(tmp_path, *MILLION)).trials


def test_two_samples_of_a_billion_point_grid_in_little_memory(tmp_path):
    """In a process that may use 1.5 GB of address space: building the grid's points first
    would need hundreds of GB."""
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (3 << 29, 3 << 29)); "
            "from mlptrain.sweep import load_sweep; "
            "spec = load_sweep(sys.argv[1], samples=2, sample_seed=5); "
            "print(spec.grid_size, [t.point for t in spec.trials])")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1",
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code, str(grid_file(tmp_path, *BILLION))],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    size, points = done.stdout.split(" ", 1)
    assert int(size) == 10**9 and points.count("train.seed") == 2


def test_points_are_decoded_in_the_grid_order_of_the_product():
    axes = [Axis("a", [1, 2, 3]), Axis("b", ["x", "y"]), Axis("c", [[4], [5, 6], [7], [8]])]
    product = [dict(zip("abc", combo)) for combo in itertools.product(*(a.values for a in axes))]
    assert [point_at(axes, i) for i in range(24)] == product
    drawn = grid_indices(24, 5, seed=3)
    assert len(set(drawn)) == 5 and list(drawn) == sorted(drawn)
    assert grid_indices(24, 5, seed=3) == drawn and grid_indices(24) == range(24)


def test_a_sampled_sweep_runs_the_points_it_draws_with_configs_equal_to_a_parse(tmp_path):
    spec = load_sweep(grid_file(tmp_path, *MILLION), samples=3, sample_seed=1)
    assert spec.size == 3 and len(spec.trials) == 3
    for trial in spec.trials:
        assert trial.point == point_at(spec.axes, trial.index)
        sets = [f"{k}={json.dumps(v)}" for k, v in trial.point.items()]
        sets.append("report.plots=false")  # the sweep's own override: no figures per trial
        parsed = mlptrain.config.load_config(spec.source, sets)
        assert trial.config == parsed.__class__(**{**parsed.__dict__, "name": trial.name})
        assert trial.config.overrides == sets


def test_a_point_that_breaks_a_rule_across_keys_still_refuses_the_grid(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(BASE + '[sweep]\n"optimizer.nesterov" = [false, true]\n')
    # named as the [sweep] table gives it, in the trial that breaks the rule
    with pytest.raises(ConfigError, match=r'trial #1 \(optimizer.nesterov=true\): .*, line \d+: '
                                          r'\[sweep\] "optimizer.nesterov" = true: Nesterov'):
        load_sweep(path)


# -- a damaged checkpoint of an interrupted trial --------------------------------------------------


def test_a_dry_run_reports_a_damaged_checkpoint_and_the_sweep_starts_that_trial_afresh(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text(XOR_SWEEP)
    root = tmp_path / "runs"

    def interrupt_in_third_epoch(event):  # trial 1 has checkpointed two epochs by then
        if type(event).__name__ == "TrialProgress" and (event.index, event.epoch) == (1, 3):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(load_sweep(path), root, InlineExecutor(), interrupt_in_third_epoch)
    trials = json.loads(next(root.glob("sweeps/*/trials.json")).read_text())["trials"]
    stopped = trials[1]["run_id"]
    checkpoint = root / stopped / "checkpoint.npz"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])  # cut off mid-file
    shown = runner.invoke(app, ["sweep", str(path), "--dry-run", "--runs-dir", str(root)])
    assert shown.exit_code == 0 and shown.exception is None, shown.output
    text = flat(shown.output)
    assert f"trial #1: checkpoint of run {stopped} unreadable (" in text
    assert "will start afresh" in text and "continue" not in text
    result = run_sweep(load_sweep(path), root, InlineExecutor())
    assert result.summary["counts"] == {"completed": 6}
    record = json.loads((result.path / "trials.json").read_text())["trials"][1]
    assert record["run_id"] != stopped and stopped in record["previous_runs"]
    assert Run(root / record["run_id"]).read_summary()["status"] == "completed"
