"""The tables at 80 columns (the issue's tmux, 80x30): `runs`, `runs compare`, `eval`,
`ensemble`, a sweep's tables and fit's plain lines. No line may be wider than the terminal, no
number cut, and a narrow `runs` shows the hash that ends each id and leaves out whole columns."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONFIGS, ROOT
from rich.console import Console
from typer.testing import CliRunner

from mlptrain.cli import app
from mlptrain.cli.ensemble import members_table, per_class_table, verdict
from mlptrain.cli import epochs as epochs_module
from mlptrain.cli.sweep_render import summary_table, trials_table
from mlptrain.config import load_config
from mlptrain.experiment import fit_experiment
from mlptrain.runs import RunStore
from mlptrain.sweep import load_sweep

runner = CliRunner()
SWEEP_TRIAL = "xor_hidden-4_seed-1_weight_decay-0.001"  # a long name, as a sweep's trials have
PCT = re.compile(r"\d+\.\d\d%")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> RunStore:
    store = RunStore(tmp_path_factory.mktemp("runs"))
    for name in ("xor", SWEEP_TRIAL):
        fit_experiment(load_config(CONFIGS / "xor.toml", [
            "train.epochs=2", "report.plots=false", f"name={name}"]), store)
    return store


def _lines(text: str, width: int = 80, root: Path | None = None) -> list[str]:
    """The lines of `text`, checked: none wider than `width`, nothing cut. Paths are printed
    whole, for copying; those under `root` (a test's long temporary folder) count as if the
    root were `runs`."""
    lines = text.replace(str(root), "runs").splitlines() if root else text.splitlines()
    assert max(map(len, lines)) <= width, "\n".join(lines)
    assert "…" not in text, text  # nothing cut to an ellipsis
    return lines


def _cli(store: RunStore, *args: str, columns: int = 80):
    result = runner.invoke(app, [*args, "--runs-dir", str(store.root)],
                           env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    return result.stdout


def test_runs_at_80_columns_shows_hashes_and_leaves_out_whole_columns(two_runs):
    """The issue's `│ mni… │ mni… │ 784… │ com… │ 97.…`: the 30-character id took the width."""
    lines = _lines(_cli(two_runs, "runs"))
    assert lines[0].split() == ["hash", "┃", "name", "┃", "status", "┃", "test"]
    runs = sorted(two_runs.runs(), key=lambda r: r.run_id, reverse=True)
    for line, run in zip(lines[2:], runs):
        cells = [cell.strip() for cell in line.split("│")]
        summary = run.read_summary()
        assert cells == [run.run_id[-6:], summary["name"], "completed",
                         f"{100 * summary['final']['test_accuracy']:.2f}%"]
    # a hash is a reference every command takes
    assert two_runs.find(runs[0].run_id[-6:]).run_id == runs[0].run_id


def test_a_wide_terminal_keeps_ids_and_every_column(two_runs):
    header = _lines(_cli(two_runs, "runs", columns=200), 200)[0]
    assert header.split("┃")[0].strip() == "id"
    for column in ("name", "dataset", "model", "status", "best val", "test", "time"):
        assert column in header


def test_the_runs_command_in_a_real_process_at_80_columns(two_runs):
    env = {**os.environ, "COLUMNS": "80", "MLPTRAIN_RUNS_DIR": str(two_runs.root)}
    done = subprocess.run([sys.executable, "-m", "mlptrain", "runs"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert _lines(done.stdout)[0].split()[0] == "hash" and PCT.search(done.stdout)


def test_runs_show_at_80_columns(two_runs):
    text = _cli(two_runs, "runs", "show", "latest")
    _lines(text, root=two_runs.root)
    assert len(PCT.findall(text)) >= 3


def test_short_refs_name_each_run_alone(tmp_path):
    """The hash, where find() takes it for that run alone; else the whole id."""
    ids = ["20261201-000000-a-abc123", "20261201-000001-b-abc123",  # one hash, two runs
           "20261201-000002-c-def456",
           "20261201-000003-d-202612"]  # its hash starts every id
    for run_id in ids:
        (tmp_path / run_id).mkdir()
        (tmp_path / run_id / "config.toml").write_text("")
    store = RunStore(tmp_path)
    refs = store.short_refs()
    assert refs == {ids[0]: ids[0], ids[1]: ids[1], ids[2]: "def456", ids[3]: ids[3]}
    assert all(store.find(ref).run_id == run_id for run_id, ref in refs.items())


def test_compare_at_80_columns_keeps_the_keys_whole(two_runs):
    first, second = (r.run_id for r in two_runs.runs())
    lines = _lines(_cli(two_runs, "runs", "compare", first, second))
    assert lines[0].split() == ["┃", first[-6:], "┃", second[-6:]]
    keys = [line.split("│")[0].strip() for line in lines[2:] if "│" in line]
    assert {"data.augment_narrow_factor", "train.checkpoint_every", "* name"} <= set(keys)
    wide = _cli(two_runs, "runs", "compare", first, second, "--diff", columns=120)
    assert wide.splitlines()[0].split() == ["┃", first, "┃", second]


def test_eval_at_80_columns(two_runs):
    lines = _lines(_cli(two_runs, "eval", "latest"))
    assert ["class", "┃", "precision", "┃", "recall", "┃", "F1", "┃", "support"] in [
        line.split() for line in lines]
    rows = [line for line in lines if re.match(r" +(\d|macro avg|weighted avg) │", line)]
    assert len(rows) == 4 and all(len(PCT.findall(row)) == 3 for row in rows)


def _committee() -> tuple[dict, dict]:
    ids = [f"20261201-1{i}0000-mnist-deep_seed-{i}-{i}48dbe" for i in range(7)]
    result = {"size": 7, "split": "test", "samples": 10_000, "accuracy": 0.9965, "errors": 35,
              "seconds": 1420.0, "training_seconds": 1302.0, "disagreements": 34,
              "members": [{"run_id": run_id, "name": f"mnist-deep_seed-{i}",
                           "settings": {"train.seed": i}, "accuracy": 0.9963, "errors": 37,
                           "seconds": 200.1} for i, run_id in enumerate(ids)],
              "per_class": [{"class": c, "errors": 3, "samples": 1135 if c == 1 else 980}
                            for c in range(10)],
              "best_member": {"accuracy": 0.9964, "run_id": ids[0]},
              "mean_member_accuracy": 0.9961}
    return result, {run_id: run_id[-6:] for run_id in ids}


@pytest.mark.parametrize("width", [80, 120])
def test_the_committee_tables_fit(width):
    result, refs = _committee()
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(members_table(result, console, refs))
    console.print(per_class_table(result, console))
    console.print(verdict(result, refs))
    text = console.export_text()
    lines = _lines(text, width)
    member = next(line for line in lines if "mnist-deep_seed-3 seed=3" in line)
    assert member.split()[1] == ("348dbe" if width == 80 else result["members"][3]["run_id"])
    assert "99.63%" in member and "200.1s" in member
    assert "1,135" in text and "best member 99.64% (048dbe)" in text


def test_per_class_errors_turn_into_rows_when_the_classes_do_not_fit():
    result, _ = _committee()
    result["per_class"] = [{"class": c, "errors": 12, "samples": 1_234} for c in range(26)]
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(per_class_table(result, console))
    lines = _lines(console.export_text())
    rows = [line.split() for line in lines if re.match(r"│ +\d+ │", line)]
    assert [row[1] for row in rows] == [str(c) for c in range(26)] and rows[0][3] == "12"


def test_the_sweep_tables_fit_with_long_axes():
    spec = load_sweep(CONFIGS / "xor.toml", [], [
        "model.hidden=2,4", "train.seed=0,1", "optimizer.weight_decay=0.0,0.001",
        "optimizer.lr=0.1,0.05"])
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(trials_table(spec, console))
    trials = _lines(console.export_text())
    assert [cell.strip() for cell in trials[2].split("┃")[1:-1]] == [
        "#", "hidden", "seed", "weight_decay", "lr", "run name"]
    point = {"model.hidden": [4], "optimizer.weight_decay": 0.001, "optimizer.lr": 0.05}
    summary = {"sweep_id": spec.sweep_id, "groups": [
        {"point": point, "parameters": 203_530, "n": 2,
         "mean": {"test_accuracy": 0.9995, "seconds": 1234.5}, "std": {"test_accuracy": 0.0007}}]}
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(summary_table(summary, console))
    *_, header, _, row, _ = _lines(console.export_text())
    assert [cell.strip() for cell in header.split("┃")[1:-1]] == [
        "hidden", "weight_decay", "lr", "params", "n", "test acc", "std", "time/trial"]
    assert [cell.strip() for cell in row.split("│")[1:-1]] == [
        "4", "0.001", "0.05", "203,530", "2", "99.95%", "0.07%", "1234.5s"]


def test_a_plain_fit_at_80_columns_prints_whole_rows_of_a_bounded_log(tmp_path, monkeypatch):
    """One line per epoch for a log, up to PLAIN_LINES epochs; beyond, one in k, and always
    the first and the last; each row whole within 80 columns. (PLAIN_LINES is lowered to 20
    here, to keep the run short: 41 epochs print one in 5.)"""
    monkeypatch.setattr(epochs_module, "PLAIN_LINES", 20)
    done = runner.invoke(app, [
        "fit", str(CONFIGS / "xor.toml"), "--progress", "never", "--set", "train.epochs=41",
        "--set", "data.samples=100", "--set", "train.checkpoint_epochs=41",
        "--set", "report.plots=false", "--runs-dir", str(tmp_path / "runs")],
        env={"COLUMNS": "80"})
    assert done.exit_code == 0, done.output
    lines = _lines(done.stdout, root=tmp_path)
    assert "(showing one epoch in 5, and the first, last, best" in done.stdout
    rows = [line for line in lines if re.match(r"epoch \d+/41 ", line)]
    shown = [int(row.split()[1].split("/")[0]) for row in rows]
    assert shown[:10] == [1, *range(5, 41, 5), 41] and len(shown) <= 11  # (then the best)
    for row in rows:  # loss, accuracy (train, val), lr and seconds, whole
        assert re.fullmatch(r"epoch \d+/41 +(\d\.\d{4} +\d+\.\d\d% +){2}0\.05 +\d+\.\d\ds"
                            r"( best| loss up)*", row), row
