"""Sweeps: grid expansion and validation, --grid parsing, sampling, summary statistics, resume,
and the capacity figure's data. Trials here run in this process on tiny XOR configs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mlptrain.errors import ConfigError
from mlptrain.reports.capacity import capacity_series, draw_capacity
from mlptrain.runs import Run, RunStore
from mlptrain.sweep import InlineExecutor, load_sweep, parse_grid_option, run_sweep
from mlptrain.sweep.grid import Axis, grid_indices, point_at, trial_name
from mlptrain.sweep.summary import group_rows, mean_std, summary_csv

XOR_SWEEP = """\
name = "xs"

[data]
dataset = "xor"
samples = 200

[model]
hidden = 4
activation = "tanh"

[train]
epochs = 3
batch_size = 32

[sweep]
"model.hidden" = [2, 4, 8]
"train.seed" = [0, 1]
"""


@pytest.fixture
def sweep_file(tmp_path):
    def write(text: str = XOR_SWEEP):
        path = tmp_path / "sweep.toml"
        path.write_text(text)
        return path
    return write


# -- grid ----------------------------------------------------------------------------------------


def test_the_grid_is_the_product_of_the_axes_with_the_last_varying_fastest(sweep_file):
    spec = load_sweep(sweep_file())
    assert spec.grid_size == 6 and len(spec.trials) == 6
    assert [t.point for t in spec.trials[:3]] == [
        {"model.hidden": 2, "train.seed": 0}, {"model.hidden": 2, "train.seed": 1},
        {"model.hidden": 4, "train.seed": 0}]
    last = spec.trials[-1]
    assert last.name == "xs_hidden-8_seed-1" and last.index == 5
    assert last.config.model.hidden == [8] and last.config.train.seed == 1
    assert last.config.model.activation == "tanh"  # the rest of the file still applies
    # saved as # --set; the last: a sweep's trials draw no figures by default
    assert last.config.overrides == ["model.hidden=8", "train.seed=1", "report.plots=false"]
    assert not last.config.report.plots


def test_nested_sweep_tables_name_the_same_axes(sweep_file):
    text = XOR_SWEEP.replace('"model.hidden" = [2, 4, 8]\n"train.seed" = [0, 1]\n',
                             "[sweep.model]\nhidden = [2, 4, 8]\n[sweep.train]\nseed = [0, 1]\n")
    assert [t.point for t in load_sweep(sweep_file(text)).trials] == \
           [t.point for t in load_sweep(sweep_file()).trials]


def test_grid_option_adds_and_replaces_axes(sweep_file):
    spec = load_sweep(sweep_file(), grid=["train.seed=5", "model.activation=relu,tanh"])
    assert [(a.key, a.values) for a in spec.axes] == [
        ("model.hidden", [2, 4, 8]), ("train.seed", [5]), ("model.activation", ["relu", "tanh"])]
    assert spec.trials[1].config.model.activation == "tanh"


def test_set_applies_to_every_trial_and_the_axis_wins(sweep_file):
    spec = load_sweep(sweep_file(), overrides=["train.epochs=1", "model.hidden=64"])
    assert {t.config.train.epochs for t in spec.trials} == {1}
    assert [t.config.model.hidden for t in spec.trials[::2]] == [[2], [4], [8]]


@pytest.mark.parametrize("text, expected", [
    ("train.seed=0,1,2", [0, 1, 2]),
    ("optimizer.lr = 0.1, 1e-3", [0.1, 0.001]),
    ("model.activation=relu,tanh", ["relu", "tanh"]),
    ("model.hidden=[256,128],[64]", [[256, 128], [64]]),
    ("optimizer.nesterov=true,false", [True, False]),
    # a bare word beside a table: only the commas between values separate them
    ("data.class_weight={a = 1, b = 2},balanced", [{"a": 1, "b": 2}, "balanced"]),
    ("model.activation=relu,'tanh, quoted'", ["relu", "tanh, quoted"]),
])
def test_grid_values_are_read_as_toml_or_bare_words(text, expected):
    assert parse_grid_option(text)[1] == expected


@pytest.mark.parametrize("grid, message", [
    ("train.seed", "is not of the form section.key=v1,v2"),
    ("train.seed=", "gives no values"),
    ("train.epochs=2,0", "--grid train.epochs = 0: expected a value >= 1."),
    ("model.activation=relu,rleu", "--grid model.activation = 'rleu': expected one of relu"),
    ("model.activaton=relu", "[model] has no key 'activaton'"),
    ("trian.seed=1", "Did you mean `train`?"),
    ("train.seed=1,1", "the value 1 appears twice"),
])
def test_bad_grid_options_name_the_option_and_value(sweep_file, grid, message):
    with pytest.raises(ConfigError) as info:
        load_sweep(sweep_file(), grid=[grid])
    assert message in str(info.value)


@pytest.mark.parametrize("axis, message", [
    ('"model.hidden" = [2, 0]', 'line 16: [sweep] "model.hidden" = 0: expected a value >= 1.'),
    ('"model.hidden" = 4', 'line 16: [sweep] "model.hidden" = 4: expected a non-empty list'),
    ('"model.hidden" = []', "expected a non-empty list"),
    ('"model.hiden" = [2]', "Did you mean `hidden`?"),
    ('"optimizer.lr" = [0.1, "fast"]', "[sweep] \"optimizer.lr\" = 'fast': expected a number"),
    ('"hidden" = [2]', "an axis must name a config key as section.key"),
])
def test_bad_axes_in_the_file_name_file_line_axis_and_value(sweep_file, axis, message):
    path = sweep_file(XOR_SWEEP.replace('"model.hidden" = [2, 4, 8]', axis))
    with pytest.raises(ConfigError) as info:
        load_sweep(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_a_config_without_axes_is_not_a_sweep(sweep_file):
    with pytest.raises(ConfigError, match="no \\[sweep\\] axes"):
        load_sweep(sweep_file(XOR_SWEEP.split("[sweep]")[0]))


def test_fit_reads_a_sweep_config_as_its_base_point(sweep_file):
    from mlptrain.config import load_config

    config = load_config(sweep_file())
    assert config.model.hidden == [4] and config.train.seed == 0
    assert "[sweep]" not in config.to_toml()


def test_trial_names_fit_the_run_name_rules():
    assert trial_name("wine", {"data.class_weight": {"class_0": 1, "class_1": 2.5}}) == \
        "wine_class_weight-class_0-1.class_1-2.5"
    assert trial_name("m", {"model.hidden": [256, 128], "optimizer.lr": 0.001}) == \
           "m_hidden-256x128_lr-0.001"
    assert trial_name("m", {"optimizer.name": "adam", "schedule.name": "cosine"}) == \
           "m_optimizer.name-adam_schedule.name-cosine"


# -- sampling and identity -----------------------------------------------------------------------


def sample_points(axes, samples=0, seed=0):
    return [(i, point_at(axes, i)) for i in grid_indices(12, samples, seed)]


def test_sampling_draws_distinct_grid_points_reproducibly():
    axes = [Axis("model.hidden", [2, 4, 8, 16]), Axis("train.seed", [0, 1, 2])]
    full = sample_points(axes)
    drawn = sample_points(axes, samples=5, seed=3)
    assert drawn == sample_points(axes, samples=5, seed=3)
    assert len({i for i, _ in drawn}) == 5 and [i for i, _ in drawn] == sorted(i for i, _ in drawn)
    assert all(full[i] == (i, point) for i, point in drawn)
    assert drawn != sample_points(axes, samples=5, seed=4)


def test_samples_beyond_the_grid_are_refused(sweep_file):
    with pytest.raises(ConfigError, match="more than the 6 points"):
        load_sweep(sweep_file(), samples=7)
    assert len(load_sweep(sweep_file(), samples=4).trials) == 4


def test_the_sweep_id_follows_what_runs_not_how_it_is_written(sweep_file):
    spec = load_sweep(sweep_file())
    assert load_sweep(sweep_file("# a comment\n" + XOR_SWEEP)).sweep_id == spec.sweep_id
    assert load_sweep(sweep_file(), overrides=["train.epochs=4"]).sweep_id != spec.sweep_id
    assert load_sweep(sweep_file(), samples=2).sweep_id != spec.sweep_id
    assert spec.sweep_id.startswith("xs-")


# -- summary statistics --------------------------------------------------------------------------


def test_mean_and_sample_std_by_hand():
    # mean (0.9 + 0.8 + 0.7) / 3 = 0.8; squares 0.01 + 0 + 0.01 = 0.02; / (3 - 1) -> sqrt 0.1
    mean, std = mean_std([0.9, 0.8, 0.7])
    assert mean == pytest.approx(0.8) and std == pytest.approx(0.1)
    assert mean_std([0.5]) == (0.5, None) and mean_std([]) == (None, None)


def _row(hidden, seed, acc, status="completed", params=10):
    return {"model.hidden": hidden, "train.seed": seed, "status": status, "parameters": params,
            "test_accuracy": acc if status == "completed" else None, "test_loss": 1 - acc,
            "val_accuracy": acc, "val_loss": 0.5, "train_accuracy": acc, "train_loss": 0.2,
            "seconds": 2.0, "index": 0, "name": "n", "run_id": "r", "epochs": 1}


def test_groups_average_over_seeds_and_leave_out_unfinished_trials():
    rows = [_row(2, 0, 0.5), _row(2, 1, 0.7), _row(2, 2, 0.0, status="failed"),
            _row(4, 0, 0.9, params=20)]
    groups = group_rows(["model.hidden", "train.seed"], rows)
    assert [g["point"] for g in groups] == [{"model.hidden": 2}, {"model.hidden": 4}]
    two, four = groups
    assert two["n"] == 2 and two["mean"]["test_accuracy"] == pytest.approx(0.6)
    # deviations +-0.1: (0.01 + 0.01) / (2 - 1) = 0.02 -> std sqrt(0.02)
    assert two["std"]["test_accuracy"] == pytest.approx(math.sqrt(0.02))
    assert four["n"] == 1 and four["std"]["test_accuracy"] is None and four["parameters"] == 20
    table = summary_csv(["model.hidden", "train.seed"], rows, groups).splitlines()
    assert table[0].startswith("row,model.hidden,train.seed,n,")
    assert [line.split(",")[0] for line in table[1:]] == ["trial"] * 4 + ["mean", "std"] * 2


# -- running, resuming ---------------------------------------------------------------------------


def _quiet_sweep(spec, root, events=None):
    return run_sweep(spec, root, InlineExecutor(),
                     (events.append if events is not None else lambda e: None))


def test_a_sweep_writes_runs_trials_and_summary(sweep_file, tmp_path):
    spec = load_sweep(sweep_file())
    result = _quiet_sweep(spec, tmp_path / "runs")
    assert result.path == (tmp_path / "runs" / "sweeps" / spec.sweep_id).resolve()
    trials = json.loads((result.path / "trials.json").read_text())["trials"]
    assert [t["status"] for t in trials] == ["completed"] * 6
    store = RunStore(tmp_path / "runs")
    assert sorted(r.run_id for r in store.runs()) == sorted(t["run_id"] for t in trials)
    for t in trials:  # every trial is an ordinary run with its grid point in its name
        run = store.find(t["run_id"])
        assert t["name"] in run.run_id
        assert run.read_summary()["final"]["test_accuracy"] == t["final"]["test_accuracy"]
        mark = json.loads((run.path / "sweep.json").read_text())
        assert mark["sweep_id"] == spec.sweep_id and mark["point"] == t["point"]
    summary = json.loads((result.path / "summary.json").read_text())
    assert summary == json.loads(json.dumps(result.summary))
    assert [g["n"] for g in summary["groups"]] == [2, 2, 2]
    accs = [t["final"]["test_accuracy"] for t in trials[:2]]
    assert summary["groups"][0]["mean"]["test_accuracy"] == pytest.approx(np.mean(accs))
    assert summary["groups"][0]["std"]["test_accuracy"] == pytest.approx(np.std(accs, ddof=1))
    assert (result.path / "summary.csv").exists() and (result.path / "capacity.png").exists()
    assert not (result.path / ".lock").exists()


def test_resume_skips_completed_trials_and_reruns_the_rest(sweep_file, tmp_path):
    spec, root = load_sweep(sweep_file()), tmp_path / "runs"
    first = _quiet_sweep(spec, root)
    trials_path = first.path / "trials.json"
    data = json.loads(trials_path.read_text())
    data["trials"][1]["status"] = "interrupted"  # as a Ctrl-C leaves it
    data["trials"][4]["status"] = "failed"
    trials_path.write_text(json.dumps(data))
    for index, status in ((1, "interrupted"), (4, "failed")):  # the runs say so too
        run = Run(root / data["trials"][index]["run_id"])
        run.write_summary({**run.read_summary(), "status": status})
    (root / data["trials"][1]["run_id"] / "checkpoint.npz").unlink()  # nothing to go on from
    gone = data["trials"][5]["run_id"]
    for path in (root / gone).iterdir():  # a completed trial whose run was deleted
        path.unlink()
    (root / gone).rmdir()
    events = []
    _quiet_sweep(load_sweep(sweep_file()), root, events)
    assert events[0].to_run == [1, 4, 5]
    finished = [e.index for e in events if type(e).__name__ == "TrialFinished"]
    assert finished == [1, 4, 5]
    after = json.loads(trials_path.read_text())["trials"]
    assert all(t["status"] == "completed" for t in after)
    assert after[1]["previous_runs"] == [data["trials"][1]["run_id"]]
    assert after[0]["run_id"] == data["trials"][0]["run_id"]  # untouched
    events.clear()
    _quiet_sweep(load_sweep(sweep_file()), root, events)
    assert events[0].to_run == []
    assert len(RunStore(root).runs()) == 6 + 2  # the reruns are new runs beside the old


def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(sweep_file, tmp_path):
    # a weights file that does not exist: the point fails only when its trial starts the fit
    # (rules across keys, such as nesterov without momentum, refuse the whole grid up front)
    spec = load_sweep(sweep_file(), grid=['model.weights="",missing-weights.npz',
                                          "train.seed=0"])
    result = _quiet_sweep(spec, tmp_path / "runs")
    rows = result.summary["trials"]
    assert [r["status"] for r in rows] == ["completed", "failed"] * 3
    assert result.summary["counts"] == {"completed": 3, "failed": 3}
    trials = json.loads((result.path / "trials.json").read_text())["trials"]
    assert "missing-weights.npz" in trials[1]["error"] and "does not exist" in trials[1]["error"]


def test_a_running_sweep_holds_a_lock(sweep_file, tmp_path):
    from mlptrain.sweep import SweepError
    from mlptrain.sweep.store import SweepDir

    spec = load_sweep(sweep_file())
    holder = SweepDir((tmp_path / "runs").resolve(), spec)
    holder.open()
    with pytest.raises(SweepError, match="already running in process"):
        _quiet_sweep(spec, tmp_path / "runs")
    holder.close()
    (holder.path / ".lock").write_text("999999999")  # a dead process's lock is taken over
    assert _quiet_sweep(spec, tmp_path / "runs").summary["counts"] == {"completed": 6}


def test_the_inline_executor_stops_the_sweep_on_ctrl_c(sweep_file, tmp_path):
    spec, calls = load_sweep(sweep_file()), []

    def interrupt_second_trial(event):
        calls.append(event)
        if type(event).__name__ == "TrialProgress" and event.index == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, tmp_path / "runs", InlineExecutor(), interrupt_second_trial)
    path = tmp_path / "runs" / "sweeps" / spec.sweep_id
    trials = json.loads((path / "trials.json").read_text())["trials"]
    assert [t["status"] for t in trials] == ["completed", "interrupted"] + ["pending"] * 4
    assert Run(tmp_path / "runs" / trials[1]["run_id"]).read_summary()["status"] == "interrupted"
    assert json.loads((path / "summary.json").read_text())["counts"]["pending"] == 4
    assert type(calls[-1]).__name__ == "SweepInterrupted"


def _interrupt_trial_1_in_its_third_epoch(spec, root):
    """Runs the sweep until trial 1 reports its third epoch, then stops it as a second Ctrl-C
    does (at once: the checkpoint of epoch 2's end stands, each epoch checkpointing here);
    returns the sweep's trials.json."""
    def interrupt_in_third_epoch(event):
        if type(event).__name__ == "TrialProgress" and (event.index, event.epoch) == (1, 3):
            raise KeyboardInterrupt

    for trial in spec.trials:  # (by default a millisecond epoch would not checkpoint yet)
        trial.config.train.checkpoint_epochs = 1
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, root, InlineExecutor(), interrupt_in_third_epoch)
    return root / "sweeps" / spec.sweep_id / "trials.json"


def test_a_trial_resumed_in_a_later_sitting_is_timed_over_both(sweep_file, tmp_path):
    spec, root = load_sweep(sweep_file()), tmp_path / "runs"
    trials_path = _interrupt_trial_1_in_its_third_epoch(spec, root)
    stopped = json.loads(trials_path.read_text())["trials"][1]
    assert stopped["status"] == "interrupted" and stopped["seconds"] > 0
    events = []
    _quiet_sweep(load_sweep(sweep_file()), root, events)
    (last,) = [e for e in events if type(e).__name__ == "TrialFinished" and e.index == 1]
    resumed = json.loads(trials_path.read_text())["trials"][1]
    assert resumed["status"] == "completed" and resumed["run_id"] == stopped["run_id"]
    assert resumed["seconds"] == stopped["seconds"] + last.seconds
    timing = Run(root / resumed["run_id"]).read_summary()["timing"]
    assert timing["sittings"] == 2 and timing["run_wall_seconds"] > timing["wall_seconds"]
    fresh = [e for e in events if type(e).__name__ == "TrialFinished" and e.index == 2]
    records = json.loads(trials_path.read_text())["trials"]
    assert records[2]["seconds"] == fresh[0].seconds
    from rich.console import Console

    from mlptrain.cli.sweep_render import SweepRenderer

    console = Console(record=True, width=200)
    with SweepRenderer(console) as renderer:
        for event in events:
            renderer(event)
    whole = sum(r["seconds"] for r in records)
    assert f"in this sitting; its trials took {whole:.1f}s in all" in console.export_text()


def test_a_trial_s_run_is_continued_once_stale_and_never_under_its_live_process(sweep_file,
                                                                                tmp_path):
    """A trial's run left `running` continues from its checkpoint once its process is gone
    (it was started afresh); while that process lives, the run store refuses to reopen it."""
    import platform
    import subprocess
    import sys

    spec, root = load_sweep(sweep_file()), tmp_path / "runs"
    trials_path = _interrupt_trial_1_in_its_third_epoch(spec, root)
    run = Run(root / json.loads(trials_path.read_text())["trials"][1]["run_id"])
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        claimed = {**run.read_summary(), "status": "running", "pid": owner.pid,
                   "host": platform.node()}
        run.write_summary(claimed)
        _quiet_sweep(load_sweep(sweep_file()), root)
        record = json.loads(trials_path.read_text())["trials"][1]
        assert record["status"] == "failed" and record["run_id"] == run.run_id
        assert f"being trained by process {owner.pid}" in record["error"]
        assert run.read_summary() == claimed  # not written by the refused resume
    finally:
        owner.kill()
        owner.wait()
    events = []
    _quiet_sweep(load_sweep(sweep_file()), root, events)
    assert events[0].to_run == [1] and events[0].continued == [1]
    record = json.loads(trials_path.read_text())["trials"][1]
    assert record["status"] == "completed" and record["run_id"] == run.run_id
    assert run.read_summary()["resumed"] == 1 and len(RunStore(root).runs()) == 6


# -- the capacity figure -------------------------------------------------------------------------


def test_capacity_series_are_the_group_means_in_width_order(tmp_path):
    rows = [_row(8, 0, 0.9, params=80), _row(8, 1, 0.8, params=80), _row(2, 0, 0.3),
            _row(2, 1, 0.5)]
    summary = {"groups": group_rows(["model.hidden", "train.seed"], rows), "trials": rows}
    (series,) = capacity_series(summary)
    assert series.widths.tolist() == [2, 8]
    assert series.mean == pytest.approx([0.4, 0.85])
    assert series.std == pytest.approx([math.sqrt(0.02), math.sqrt(0.005)])
    assert series.parameters == [10, 80] and len(series.trials) == 4
    files = draw_capacity([series], tmp_path / "capacity", ("png", "svg"), title="t")
    assert [f.name for f in files] == ["capacity.png", "capacity.svg"]
    assert files[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in files[1].read_text()[:500]


def test_the_capacity_figure_drawn_in_a_process_of_its_own_is_the_same_picture(tmp_path,
                                                                              monkeypatch):
    """A sweep draws it in a process that imports matplotlib while the trials train (where this
    one has not imported it); its errors are raised here, and if it dies, it is drawn here."""
    import sys

    from mlptrain.experiment.drawers import FigureProcess
    from mlptrain.sweep.runner import CAPACITY_CODE

    rows = [_row(8, 0, 0.9, params=80), _row(8, 1, 0.8, params=80), _row(2, 0, 0.3)]
    summary = {"groups": group_rows(["model.hidden", "train.seed"], rows), "trials": rows}
    here = FigureProcess(CAPACITY_CODE)  # this file imported the figure code: drawn here
    monkeypatch.delitem(sys.modules, CAPACITY_CODE)
    apart = FigureProcess(CAPACITY_CODE)
    assert here.pool is None and apart.pool is not None
    try:
        drawn = [f.draw("draw_sweep", summary, "test_accuracy", tmp_path / name, ("png",), "t")
                 for f, name in ((apart, "a"), (here, "b"))]
        assert [[p.name for p in files] for files in drawn] == [["a.png"], ["b.png"]]
        assert drawn[0][0].read_bytes() == drawn[1][0].read_bytes()
        with pytest.raises(ValueError, match="'jpg'"):
            apart.draw("draw_sweep", summary, "test_accuracy", tmp_path / "c", ("jpg",))
        for process in apart.pool._processes.values():
            process.kill()
        assert apart.draw("draw_sweep", summary, "test_accuracy", tmp_path / "d", ("png",))
    finally:
        apart.close()


def test_the_capacity_figure_follows_no_link_planted_in_the_sweep_folder(sweep_file, tmp_path):
    """It was written through the fixed name .capacity.png.tmp: a link planted there (or at
    capacity.svg) sent the figure into a file outside the runs folder."""
    spec, root = load_sweep(sweep_file()), tmp_path / "runs"
    folder = root / "sweeps" / spec.sweep_id
    folder.mkdir(parents=True)
    outside = {name: tmp_path / f"outside-{name}" for name in (".capacity.png.tmp", "capacity.svg")}
    for name, target in outside.items():
        target.write_bytes(b"theirs")
        (folder / name).symlink_to(target)
    result = run_sweep(spec, root, InlineExecutor(), figure_formats=("png", "svg"))
    assert all(target.read_bytes() == b"theirs" for target in outside.values())
    png, svg = result.path / "capacity.png", result.path / "capacity.svg"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not svg.is_symlink()
    assert "<svg" in svg.read_text()[:500]


def test_a_stopped_trial_leaves_its_run_interrupted_never_running(sweep_file, tmp_path,
                                                                   monkeypatch):
    from mlptrain.sweep import trial as trial_module
    from mlptrain.sweep.trial import TrialTask, run_trial

    monkeypatch.setattr(trial_module, "STOP_CHECK_SECONDS", 0.0)  # check at every event
    answers = iter([False] + [True] * 10_000)  # not stopped when it starts, then stopped
    first = load_sweep(sweep_file()).trials[0]
    result = run_trial(TrialTask(0, first.name, first.config, str(tmp_path)),
                       should_stop=lambda: next(answers))
    assert result.status == "interrupted" and result.run_id
    # stopping at RunStarted would leave "running": the loop's events are where a trial stops
    assert Run(tmp_path / result.run_id).read_summary()["status"] == "interrupted"


def test_trials_json_coalesces_a_burst_of_events_and_close_writes_the_rest(tmp_path):
    from mlptrain.sweep.store import SweepDir

    config = tmp_path / "a.toml"
    config.write_text('name = "a"\n[data]\ndataset = "xor"\n[sweep]\n"train.seed" = [0, 1, 2]\n')
    sweep = SweepDir(tmp_path / "runs", load_sweep(config))
    sweep.open()  # writes trials.json: all pending
    path = sweep.path / "trials.json"
    for index in range(3):  # a group's members starting together
        sweep.records[index]["status"] = "running"
        sweep.write_trials(soon=True)
    statuses = [t["status"] for t in json.loads(path.read_text())["trials"]]
    assert statuses == ["pending"] * 3 and sweep.unwritten  # held back: written < 1 s ago
    sweep.write_trials()  # an explicit write is never held back
    assert [t["status"] for t in json.loads(path.read_text())["trials"]] == ["running"] * 3
    sweep.records[0]["status"] = "completed"
    sweep.write_trials(soon=True)
    sweep.close()
    assert json.loads(path.read_text())["trials"][0]["status"] == "completed"
    assert not sweep.unwritten
