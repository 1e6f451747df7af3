"""Trials trained as one model of G members (model.py, experiment/group_fit.py, sweep/grouping.py):
each member reaches what it reaches alone, padding changes nothing, and the sweep keeps every
member an ordinary run. The same equality runs on the GPU where one is present."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import CONFIGS, ROOT

from mlptrain.config import load_config, parse_config
from mlptrain.experiment import fit_experiment
from mlptrain.experiment.group_fit import fit_group
from mlptrain.runs import RunStore
from mlptrain.sweep import InlineExecutor, load_sweep, run_sweep
from mlptrain.sweep.grouping import GroupingExecutor, group_blockers, plan_groups
from mlptrain.sweep.trial import TrialTask


def _have_gpu() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - no CuPy, no driver, no device
        return False


DEVICES = ["cpu", pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not _have_gpu(), reason="no CUDA GPU")])]

BASE = """
name = "group"
[data]
dataset = "mnist"
val_fraction = 0.1
limit = 1500
[model]
hidden = 32
activation = "{activation}"
init = "he_uniform"
label_smoothing = {smoothing}
[optimizer]
name = "sgd"
lr = 0.1
momentum = 0.9
nesterov = {nesterov}
[schedule]
name = "cosine"
warmup_epochs = 0.5
[train]
batch_size = 64
epochs = 2
dtype = "float64"
device = "{device}"
[report]
plots = false
"""
# widths, seeds (so splits, inits, shuffles), rates and decay all differ; seed 0 twice
POINTS = [["model.hidden=[16, 8]", "train.seed=0", "optimizer.lr=0.1"],
          ["model.hidden=[40, 24]", "train.seed=1", "optimizer.lr=0.05",
           "optimizer.weight_decay=1e-3"],
          ["model.hidden=[8, 30]", "train.seed=0", "optimizer.lr=0.2"]]




def optimizer_points(optimizer: str, points=POINTS) -> list:
    """POINTS trained by `optimizer`: each member its own rate, and its own weight decay (L2
    for adam and rmsprop, decoupled for adamw); sgd's POINTS as they are."""
    if optimizer == "sgd":
        return points
    return [p[:2] + [f'optimizer.name="{optimizer}"', "optimizer.nesterov=false",
                     f"optimizer.lr={lr}", f"optimizer.weight_decay={wd}"]
            for p, lr, wd in zip(points, (0.003, 0.001, 0.01), (0.0, 1e-3, 0.1))]


def configs(device="cpu", activation="relu", smoothing=0.0, nesterov="true", points=POINTS):
    text = BASE.format(activation=activation, smoothing=smoothing, nesterov=nesterov,
                       device=device)
    return [parse_config(text, overrides=o) for o in points]


def rel(a, b) -> float:
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-300))


def assert_each_member_matches_alone(store: RunStore, group: list, results: list,
                                     alone_configs: list | None = None) -> list:
    """Trains every config of `group` alone (or its twin in `alone_configs`, e.g. the same on
    the CPU) and compares it with its member; returns the members' summaries."""
    summaries = []
    for config, result in zip(alone_configs or group, results, strict=True):
        alone = fit_experiment(config, store)
        member = store.find(result.run_id)
        mine, want = member.read_weights(), dict(np.load(alone.path / "weights.npz"))
        assert sorted(mine) == sorted(want)
        for name in want:
            assert mine[name].shape == want[name].shape
            assert rel(mine[name], want[name]) < 1e-9, name
        for got, ref in zip(member.read_metrics(), alone.path.joinpath("metrics.jsonl")
                            .read_text().splitlines(), strict=True):
            ref = json.loads(ref)
            assert sorted(got) == sorted(ref)
            for key in set(ref) - {"epoch", "seconds"}:  # lr, each split's loss and metric
                assert got[key] == pytest.approx(ref[key], rel=1e-9, abs=1e-300), key
        summary = member.read_summary()
        for key, value in alone.summary["final"].items():
            assert summary["final"][key] == pytest.approx(value, rel=1e-9), key
        for key in ("stopped_early", "best_epoch", "epochs_completed"):
            assert summary[key] == alone.summary[key], key
        # what predict compares inputs with: the val set's top probabilities (a classifier's),
        # found grouped, and its training images' ranges, measured as a run alone's
        mine, want = summary["reference"], alone.summary["reference"]
        assert sorted(mine) == sorted(want)
        if "top_probability" in want:
            assert mine["top_probability"] == pytest.approx(want["top_probability"], rel=1e-9)
        assert {k: v for k, v in mine.items() if k != "top_probability"} == \
            {k: v for k, v in want.items() if k != "top_probability"}
        assert summary["status"] == "completed" and summary["group"]["members"] == len(group)
        # the CPU's BLAS threads, as a run alone's summary keeps them
        assert ("blas_threads" in summary) == (summary["device"] == "cpu")
        summaries.append(summary)
    return summaries


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("activation,smoothing,nesterov", [
    ("relu", 0.0, "true"), ("sigmoid", 0.1, "false"), ("tanh", 0.0, "true")])
def test_each_member_of_a_group_reaches_what_it_reaches_alone(runs_dir, device, activation,
                                                              smoothing, nesterov):
    store = RunStore(runs_dir)
    group = configs(device, activation, smoothing, nesterov)
    results = fit_group(group, store)
    assert [r.status for r in results] == ["completed"] * 3
    # a GPU group against the same trials alone on the CPU: the fused kernels against NumPy
    summaries = assert_each_member_matches_alone(store, group, results,
                                                 configs("cpu", activation, smoothing, nesterov))
    # on a GPU the epoch ran as one captured graph (a failed capture would fall back to eager)
    steps = "cuda graph" if device == "cuda" else "eager: cpu"
    assert [s["group"]["steps"] for s in summaries] == [steps] * 3


def test_a_groups_members_read_mnist_as_rows_of_the_pool_never_copied_out(runs_dir,
                                                                         monkeypatch):
    from mlptrain.data.dataset import Dataset

    asked, split = [], Dataset.split
    monkeypatch.setattr(Dataset, "split", lambda d, name: asked.append(name) or split(d, name))
    results = fit_group(configs(), RunStore(runs_dir))
    assert [r.status for r in results] == ["completed"] * 3
    assert not {"train", "val"} & set(asked)  # an MNIST sweep's 3 seeds' copies: 0.5 GB


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("optimizer", ["adam", "adamw", "rmsprop"])
def test_members_reach_alone_whatever_their_optimizer(runs_dir, device, optimizer):
    store = RunStore(runs_dir)
    group = configs(device, points=optimizer_points(optimizer))
    results = fit_group(group, store)
    assert [r.status for r in results] == ["completed"] * 3
    summaries = assert_each_member_matches_alone(
        store, group, results, configs("cpu", points=optimizer_points(optimizer)))
    # a captured step would not advance adam's count, nor keep rmsprop's temporaries: eager
    assert [s["group"]["steps"] for s in summaries] == \
        [f"eager: {optimizer} steps do not replay"] * 3


def test_the_replayed_steps_path_reaches_what_each_member_reaches_alone(runs_dir, monkeypatch):
    """The path a GPU takes, on the CPU: a 'capture' that replays the launch it was given, as
    a graph replays what was recorded. Each step must then read its rows and rates from the
    buffers select() fills, and the orders drawn ahead must be the ones drawn alone."""
    from mlptrain.backend.numpy_backend import NumpyBackend
    from mlptrain.experiment import RunStarted
    from mlptrain.loop import StepsDone
    from mlptrain.loop import StopFlag

    captured = []

    def capture(self, launch, prepare=None):
        if prepare is not None:
            prepare()
        captured.append(launch)
        return launch

    monkeypatch.setattr(NumpyBackend, "capture", capture)
    store = RunStore(runs_dir)
    points = [p + ["train.epochs=4"] for p in POINTS]
    group = configs(points=points)
    results = fit_group(group, store)
    assert len(captured) == 2  # the full batches' step and the shorter last one's
    # stopped after epoch 2, whose end drew epoch 3's orders ahead: the checkpoints must hold
    # the shuffle streams undrawn, or the resumed group's epoch 3 would differ
    stop, started = StopFlag(), []

    def on_event(event):
        if isinstance(event, RunStarted):
            started.append(event.run_id)
        elif isinstance(event, StepsDone) and event.epoch == 2:
            stop.set()

    with pytest.raises(KeyboardInterrupt):
        fit_group(group, store, on_event, stop)
    resumed = fit_group(group, store, resume=started)
    monkeypatch.undo()
    for finished in (results, resumed):
        summaries = assert_each_member_matches_alone(store, group, finished)
        assert [s["group"]["steps"] for s in summaries] == ["cuda graph"] * 3


def test_members_of_a_generated_dataset_each_train_on_their_own_data(runs_dir):
    """XOR's samples are drawn with each seed (no shared pool as MNIST's): each member's
    splits go to the device as a pool of their own, and it still reaches what it reaches
    alone."""
    text = """
[data]
dataset = "xor"
samples = 300
val_fraction = 0.2
[model]
hidden = 8
loss = "softmax_cross_entropy"
[train]
epochs = 3
batch_size = 32
dtype = "float64"
[report]
plots = false
"""
    store = RunStore(runs_dir)
    group = [parse_config(text, overrides=o) for o in
             (["train.seed=0"], ["train.seed=1", "model.hidden=5"], ["train.seed=0",
                                                                     "optimizer.lr=0.3"])]
    assert_each_member_matches_alone(store, group, fit_group(group, store))


REAL_TARGET = """
[data]
dataset = "npz"
path = "{path}"
task = "{task}"
val_fraction = 0.2
[model]
hidden = [12, 6]
activation = "tanh"
loss = "{loss}"
[optimizer]
name = "sgd"
lr = 0.02
momentum = 0.9
[train]
epochs = 3
batch_size = 16
dtype = "float64"
device = "{device}"
[report]
plots = false
"""


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("loss", ["mse", "huber", "poisson", "sigmoid_bce"])
def test_members_of_a_table_reach_alone_whatever_their_loss(runs_dir, tmp_path, device, loss):
    """A regression's members each standardize the target by their own seed's training
    split (its mean and deviation differ per seed), and score RMSE, MAE and R^2 in its
    units; a binary classifier's one logit groups as well."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(160, 4)) * [1, 5, 0.2, 2]
    y = X @ [0.4, -0.1, 2.0, 0.3] + rng.normal(scale=0.2, size=160)
    y = {"poisson": np.exp(y / 3).round(), "sigmoid_bce": y > 0}.get(loss, 10 * y + 50)
    np.savez(tmp_path / "t.npz", X=X, y=y)
    text = lambda device: REAL_TARGET.format(  # noqa: E731
        path=tmp_path / "t.npz", loss=loss, device=device,
        task="classification" if loss == "sigmoid_bce" else "regression")
    points = [["train.seed=0"], ["train.seed=1", "model.hidden=[20, 4]", "optimizer.lr=0.01"],
              ["train.seed=2", "optimizer.weight_decay=1e-3"]]
    group = [parse_config(text(device), overrides=o) for o in points]
    assert not group_blockers(group[0])
    store = RunStore(runs_dir)
    results = fit_group(group, store)
    summaries = assert_each_member_matches_alone(
        store, group, results, [parse_config(text("cpu"), overrides=o) for o in points])
    if loss != "sigmoid_bce":
        assert all({"test_rmse", "test_mae", "test_r2"} <= set(s["final"]) for s in summaries)
    scales = {tuple(np.load(store.find(r.run_id).path / "preprocess.npz").get(
        "target_mean", [0.0])) for r in results}
    assert len(scales) == (3 if loss in ("mse", "huber") else 1)


@pytest.mark.parametrize("device", DEVICES)
def test_members_stop_early_on_their_own_and_keep_their_best_epoch(runs_dir, device):
    # a constant, high rate: validation loss turns up after 2-3 epochs, at different epochs
    points = [p + ["train.patience=1", "train.epochs=6", "schedule.name=\"constant\"",
                   "optimizer.lr=0.3"] for p in POINTS]
    store = RunStore(runs_dir)
    group = configs(device, points=points)
    summaries = assert_each_member_matches_alone(store, group, fit_group(group, store),
                                                 configs("cpu", points=points))
    assert all(s["stopped_early"] and s["epochs_completed"] < 6 for s in summaries)


def test_the_padding_stays_zero_and_a_diverging_member_fails_alone(runs_dir):
    from mlptrain.experiment.setup import prepare
    from mlptrain.model import stack_members
    from mlptrain.optim import SGD

    # lr x weight decay = 1e7: |p| grows 1e7-fold a step, to inf (no dead ReLU can stop it)
    points = POINTS[:2] + [["model.hidden=[8, 30]", "train.seed=2", "optimizer.lr=1e6",
                            "optimizer.weight_decay=10"]]
    group = configs(points=points)
    results = fit_group(group, RunStore(runs_dir))
    assert [r.status for r in results] == ["completed", "completed", "failed"]
    assert "learning rate" in results[2].summary["error"]
    # the stacks: a model narrower than the group has zeros beyond its widths after training
    preps = [prepare(c) for c in configs()]
    g = stack_members([p.model for p in preps])
    assert g.sizes == [784, 40, 30, 10] and g.members == 3
    optimizer = SGD(g.ops, g.params, 0.9, True)
    ws, rng = g.workspace(64), np.random.default_rng(0)
    X, y = rng.random((100, 784)), rng.integers(0, 10, 100)
    for _ in range(3):
        rows = rng.integers(0, 100, (3, 64))
        ws.x[...], targets = X[rows], y[rows]
        g.loss_and_grad(ws, targets, 1 / 64)
        optimizer.step(g.params, g.grads, np.full(3, 0.1))
    Wt = [g.params[f"layers.{i}.weight"].swapaxes(-1, -2) for i in range(3)]  # (G, I, O)
    assert not Wt[0][0, :, 16:].any() and not Wt[1][0, 16:, :].any()  # model 0: 16, 8
    assert not Wt[1][0, :, 8:].any() and not Wt[2][0, 8:, :].any()
    assert not Wt[1][2, 8:, :].any() and not Wt[1][1, :, 24:].any()  # model 2: 8, 30
    assert Wt[1][1, :, :24].all() and Wt[0][1].all()  # model 1 (40, 24) fills its part


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("where", ["between epochs", "inside an epoch"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_stopped_group_leaves_checkpoints_that_fit_resume_finishes_alone(runs_dir, device,
                                                                          where, optimizer):
    """Ctrl-C (a stop request, or a KeyboardInterrupt out of the progress display) writes each
    member's checkpoint (its optimizer's state: SGD's velocity; Adam's moments and count);
    `fit --resume` then reaches the weights of an uninterrupted run."""
    from mlptrain.experiment import resume_experiment
    from mlptrain.experiment import RunStarted
    from mlptrain.loop import StepsDone
    from mlptrain.loop import StopFlag

    points = [p + ["train.epochs=3"] for p in optimizer_points(optimizer)]
    store, stop, started = RunStore(runs_dir), StopFlag(), []

    def on_event(event):
        if isinstance(event, RunStarted):
            started.append(event.run_id)
        elif isinstance(event, StepsDone) and event.epoch == 2:
            if where == "between epochs" and event.step == event.steps:
                stop.set()  # honoured before epoch 3
            elif where == "inside an epoch":  # at epoch 2's first report (its end on a GPU)
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit_group(configs(device, points=points), store, on_event, stop)
    runs = [store.find(run_id) for run_id in started]
    for run in runs:
        summary = run.read_summary()
        assert summary["status"] == "interrupted" and (run.path / "checkpoint.npz").exists()
        # a device's captured epoch had run to its end: the stop records it first
        ended = where == "between epochs" or (device == "cuda" and optimizer == "sgd")
        assert summary["epochs_completed"] == (2 if ended else 1)
    if where == "between epochs":  # checkpoints that end an epoch: on as a group again
        finished = fit_group(configs(device, points=points), store,
                             resume=[run.run_id for run in runs])
        assert [f.run_id for f in finished] == started
    else:  # inside an epoch: each member on alone, as `mlptrain fit --resume RUN`
        finished = [resume_experiment(store, run.run_id) for run in runs]
    summaries = assert_each_member_matches_alone(store, configs(device, points=points),
                                                 finished, configs("cpu", points=points))
    assert all(s["resumed"] == 1 for s in summaries)
    grouped = where == "between epochs"
    assert all((s["path"] == "grouped") == grouped for s in summaries)


def test_rerunning_a_stopped_grouped_sweep_continues_its_trials_from_their_checkpoints(
        tmp_path, monkeypatch):
    from mlptrain.sweep import grouping

    monkeypatch.setattr(grouping, "PROGRESS_SECONDS", 0.0)  # every report: one inside epoch 2
    grid = ["model.hidden=4,16", "train.seed=0,1"]
    options = [o for o in CAPACITY if o != "train.epochs=1"] + ["train.epochs=3"]
    raised = []

    def ctrl_c_in_epoch_2(event):
        if type(event).__name__ == "TrialProgress" and event.epoch == 2 and not raised:
            raised.append(event)
            raise KeyboardInterrupt

    def sweep():
        return load_sweep(CONFIGS / "mnist-capacity.toml", options, grid)

    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep(), tmp_path / "a", GroupingExecutor(InlineExecutor()), ctrl_c_in_epoch_2)
    store = RunStore(tmp_path / "a")
    stopped = {r.run_id: r.read_summary() for r in store.runs()}
    assert [s["status"] for s in stopped.values()] == ["interrupted"] * 4
    assert all(s["epochs_completed"] == 1 for s in stopped.values())
    from typer.testing import CliRunner

    from mlptrain.cli import app

    shown = CliRunner().invoke(app, [
        "sweep", str(CONFIGS / "mnist-capacity.toml"), "--dry-run", "--group", "on",
        "--runs-dir", str(tmp_path / "a"), *[a for o in options for a in ("--set", o)],
        *[a for g in grid for a in ("--grid", g)]])
    assert shown.exit_code == 0, shown.output
    assert "4 trials continue from their checkpoints: #0 (" in " ".join(shown.output.split())
    assert "alone: trials 0, 1, 2, 3 (a checkpoint inside an epoch)" in shown.output
    events = []
    resumed = run_sweep(sweep(), tmp_path / "a", GroupingExecutor(InlineExecutor()),
                        events.append)
    assert events[0].continued == [0, 1, 2, 3]  # what the display announces
    plain = run_sweep(sweep(), tmp_path / "b", InlineExecutor())  # never stopped, alone
    assert resumed.summary["counts"] == {"completed": 4}
    assert {r.run_id for r in store.runs()} == set(stopped)  # continued in the same runs
    for run in store.runs():
        summary = run.read_summary()
        assert summary["resumed"] == 1 and len(run.read_metrics()) == 3
    for a, b in zip(resumed.summary["trials"], plain.summary["trials"], strict=True):
        assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-9)
        assert a["test_accuracy"] == b["test_accuracy"]


def test_a_group_stopped_by_its_sweep_ends_the_epoch_and_resumes_as_a_group(tmp_path,
                                                                          monkeypatch):
    """should_stop (a sweep's Ctrl-C, on a worker) lets the epoch end, as a GPU's captured
    epoch does; the checkpoints then end an epoch, and the members go on as one group."""
    from mlptrain import loop
    from mlptrain.runs.checkpoint import epoch_end
    from mlptrain.sweep.grouping import run_group

    monkeypatch.setattr(loop, "REPORTS_PER_EPOCH", 1)  # one report, at the epoch's end
    options = [o for o in CAPACITY if o != "train.epochs=1"] + ["train.epochs=3"]
    trials = load_sweep(CONFIGS / "mnist-capacity.toml", options,
                        ["model.hidden=4,16", "train.seed=0,1"]).trials
    tasks = [TrialTask(t.index, t.name, t.config, str(tmp_path / "a")) for t in trials]
    events = []
    seen_epoch_1 = lambda: any(type(e).__name__ == "TrialProgress" for e in events)  # noqa: E731
    with pytest.raises(KeyboardInterrupt):
        run_group(tasks, events.append, should_stop=seen_epoch_1)  # asked again in epoch 2
    runs = {e.index: e.run_id for e in events if type(e).__name__ == "TrialStarted"}
    ends = [epoch_end(tmp_path / "a" / runs[t.index] / "checkpoint.npz") for t in tasks]
    assert ends == [2, 2, 2, 2]
    resumed = [TrialTask(t.index, t.name, t.config, t.runs_root, resume=runs[t.index],
                         resume_epoch=2) for t in tasks]
    groups, alone = plan_groups(resumed, lambda ts: len(ts))
    assert len(groups) == 1 and not alone
    events.clear()
    run_group(groups[0], events.append)
    done = [e for e in events if type(e).__name__ == "TrialFinished"]
    assert [(e.status, e.run_id) for e in done] == [("completed", runs[t.index]) for t in tasks]
    plain = run_sweep(load_sweep(CONFIGS / "mnist-capacity.toml", options,
                                 ["model.hidden=4,16", "train.seed=0,1"]),
                      tmp_path / "b", InlineExecutor())
    for e, b in zip(done, plain.summary["trials"], strict=True):
        assert e.final["test_loss"] == pytest.approx(b["test_loss"], rel=1e-9)


def test_plans_resume_members_together_only_from_the_same_epoch_end(tmp_path):
    base = configs()
    tasks = [TrialTask(0, "a", base[0], str(tmp_path), resume="r0", resume_epoch=2),
             TrialTask(1, "b", base[1], str(tmp_path), resume="r1", resume_epoch=2),
             TrialTask(2, "c", base[2], str(tmp_path), resume="r2", resume_epoch=1),
             TrialTask(3, "d", base[0], str(tmp_path), resume="r3", resume_epoch=None),
             TrialTask(4, "e", base[1], str(tmp_path)),
             TrialTask(5, "f", base[2], str(tmp_path), resume="r5", resume_epoch=0)]
    groups, alone = plan_groups(tasks, lambda ts: len(ts))
    assert [[t.index for t in g] for g in groups] == [[0, 1], [4, 5]]
    assert [t.index for t in alone] == [2, 3]  # a group of one; a checkpoint inside an epoch


def test_a_member_stopped_without_a_checkpoint_points_to_the_sweep(runs_dir):
    from mlptrain.errors import RunStoreError
    from mlptrain.experiment import resume_experiment
    from mlptrain.loop import StopFlag

    stop = StopFlag()
    stop.set()
    with pytest.raises(KeyboardInterrupt):
        fit_group(configs(), RunStore(runs_dir), stop=stop)
    runs = RunStore(runs_dir).runs()
    assert [r.read_summary()["status"] for r in runs] == ["interrupted"] * 3
    (runs[0].path / "checkpoint.npz").unlink()  # as when the stop came while steps ran
    with pytest.raises(RunStoreError, match="Run the same `mlptrain sweep` command again"):
        resume_experiment(RunStore(runs_dir), runs[0].run_id)


def test_plans_group_what_shares_a_step_and_run_the_rest_alone(tmp_path):
    base = configs()
    other_depth = configs(points=[["model.hidden=[16]"]])[0]
    dropout = configs(points=[["model.dropout_hidden=0.2"]])[0]
    adam = configs(points=[["optimizer.name=\"adam\"", "optimizer.nesterov=false"]])[0]
    assert group_blockers(dropout) == ["dropout"] and group_blockers(adam) == []
    tasks = [TrialTask(i, f"t{i}", c, str(tmp_path))
             for i, c in enumerate([*base, other_depth, dropout, adam, *base])]
    groups, alone = plan_groups(tasks, lambda ts: len(ts))
    assert [[t.index for t in g] for g in groups] == [[0, 1, 2, 6, 7, 8]]
    assert [t.index for t in alone] == [3, 4, 5]  # adam: another step, a group of one
    # a device that holds 4 such models at once: two groups (4 + 2)
    groups, alone = plan_groups(tasks, lambda ts: 4)
    assert [[t.index for t in g] for g in groups] == [[0, 1, 2, 6], [7, 8]]
    # ... and one that holds 5: the sixth would be a group of one, so it runs alone
    groups, alone = plan_groups(tasks, lambda ts: 5)
    assert [len(g) for g in groups] == [5] and [t.index for t in alone] == [3, 4, 5, 8]


def test_groups_are_decided_from_the_declared_step(tmp_path):
    """What members may not differ in is read from the Step each config declares: another
    activation, label smoothing or momentum is another group; seeds, widths, rates, weight
    decay, patience and plots are each member's own."""
    own = [["train.seed=1", "model.hidden=8", "optimizer.lr=0.05", "optimizer.weight_decay=1e-4",
            "train.patience=2", "report.plots=false"]]
    other = [["model.activation=\"tanh\""], ["model.label_smoothing=0.1"],
             ["optimizer.momentum=0.5"], ["train.batch_size=32"], ["model.loss=\"sigmoid_bce\""]]
    members = configs(points=[[], *own]) + configs(points=other)
    tasks = [TrialTask(i, f"t{i}", c, str(tmp_path)) for i, c in enumerate(members)]
    groups, alone = plan_groups(tasks, lambda ts: len(ts))
    assert [[t.index for t in g] for g in groups] == [[0, 1]]
    assert [t.index for t in alone] == [2, 3, 4, 5, 6]  # each its own step: alone
    assert group_blockers(members[-1]) == ["a config error (the trial, run alone, names it)"]


CAPACITY = ["train.epochs=1", "data.limit=1200", "report.plots=false", "train.dtype=float64"]


def test_a_grouped_sweep_writes_ordinary_runs_that_match_an_ungrouped_one(tmp_path):
    grid = ["model.hidden=4,16", "train.seed=0,1"]
    sweep = load_sweep(CONFIGS / "mnist-capacity.toml", CAPACITY, grid)
    events = []
    grouped = run_sweep(sweep, tmp_path / "a", GroupingExecutor(InlineExecutor()), events.append)
    plain = run_sweep(load_sweep(CONFIGS / "mnist-capacity.toml", CAPACITY, grid),
                      tmp_path / "b", InlineExecutor())
    assert grouped.summary["counts"] == {"completed": 4}
    for a, b in zip(grouped.summary["trials"], plain.summary["trials"], strict=True):
        assert a["test_accuracy"] == pytest.approx(b["test_accuracy"], abs=1e-12)
    store = RunStore(tmp_path / "a")
    for run in store.runs():
        assert (run.path / "sweep.json").is_file() and (run.path / "weights.npz").is_file()
        assert len(run.read_metrics()) == 1 and run.read_summary()["path"] == "grouped"
    assert {type(e).__name__ for e in events} >= {"TrialStarted", "TrialProgress",
                                                   "TrialFinished"}


def test_a_groups_figures_are_drawn_by_processes_as_each_run_is_written(runs_dir):
    from mlptrain.experiment import drawers

    assert drawers.available_cores() >= 2  # else no processes: the members draw in turn
    store = RunStore(runs_dir)
    group = configs(points=[p + ["report.plots=true"] for p in POINTS])
    results = fit_group(group, store)
    for result in results:
        run = store.find(result.run_id)
        figures = run.read_summary()["figures"]
        assert not figures.get("error") and figures["seconds"] > 0
        assert sorted(figures["files"]) == sorted(p.name for p in run.path.glob("*.png"))
        assert "misclassified.png" in figures["files"]


def _report_visible_device(queue) -> None:
    queue.put(os.environ.get("CUDA_VISIBLE_DEVICES"))


def test_one_worker_per_gpu_each_pinned_to_its_device():
    import multiprocessing

    from mlptrain.sweep.executors import LocalExecutor

    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = LocalExecutor(2).start(ctx, _report_visible_device, (queue,), 2, devices=["3", "5"])
    seen = sorted(queue.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=10)
    assert seen == ["3", "5"] and os.environ.get("CUDA_VISIBLE_DEVICES") != "3"


def test_trials_on_gpus_run_one_at_a_time_on_each_unless_workers_are_asked_for():
    from mlptrain.cli.sweep import _executor
    from mlptrain.sweep.executors import LocalExecutor

    assert isinstance(_executor("local", None, None, ["0"]), InlineExecutor)
    two = _executor("local", None, None, ["0", "1"])
    assert isinstance(two, LocalExecutor) and (two.workers, two.devices) == (2, ["0", "1"])
    assert two.describe().endswith("one per GPU (0, 1)")
    assert _executor("local", 3, None, ["0"]).workers == 3  # --workers as given
    assert isinstance(_executor("local", 0, None, ["0", "1"]), InlineExecutor)
    cpu = _executor("local", None, None, [])
    assert cpu.workers == LocalExecutor().workers and cpu.devices is None  # a worker per core


@pytest.mark.gpu
@pytest.mark.skipif(not _have_gpu(), reason="no CUDA GPU")
def test_a_gpu_sweep_trains_its_ungroupable_trials_one_at_a_time_per_gpu(tmp_path):
    import cupy

    sets = [a for o in ["train.epochs=1", "data.limit=1200", "report.plots=false",
                        "data.augment_shift=1", "train.device=cuda"] for a in ("--set", o)]
    done = subprocess.run([sys.executable, "-m", "mlptrain", "sweep",
                           str(CONFIGS / "mnist-capacity.toml"), *sets, "--grid",
                           "model.hidden=[8]", "--grid", "train.seed=0,1", "--runs-dir",
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    gpus = cupy.cuda.runtime.getDeviceCount()
    where = "in this process" if gpus == 1 else f"{gpus} worker processes"
    assert f"trials that cannot share a step: {where}" in text, text
    assert "2 completed" in text


def test_a_local_executor_of_gpus_pins_a_worker_to_each(tmp_path):
    # trials that cannot join a group (augmented), two fake devices: on a CPU the pinning is
    # only a variable, but the workers and the queue of trials are the real ones
    from mlptrain.sweep.executors import LocalExecutor

    sweep = load_sweep(CONFIGS / "mnist-capacity.toml", [*CAPACITY, "data.augment_shift=1"],
                       ["model.hidden=[8]", "train.seed=0,1,2"])
    events = []
    run_sweep(sweep, tmp_path, LocalExecutor(devices=["3", "5"]), events.append)
    finished = [e for e in events if type(e).__name__ == "TrialFinished"]
    assert [e.status for e in finished] == ["completed"] * 3
    assert {e.worker["gpus"] for e in finished} <= {"3", "5"}


def test_groups_spread_over_several_devices_and_report_as_trials(tmp_path):
    # two groups (depth 1 and depth 2), two fake devices: on a CPU the pinning is only a
    # variable, but the workers, the queue of groups and the events are the real ones
    grid = ["model.hidden=[8],[16],[8, 8],[16, 16]"]
    figures = [o for o in CAPACITY if not o.startswith("report.plots")]  # drawn in a worker
    sweep = load_sweep(CONFIGS / "mnist-capacity.toml", figures, grid, trial_figures=True)
    executor = GroupingExecutor(InlineExecutor(), devices=["0", "1"])
    assert "2 GPU workers" in executor.describe()
    events = []
    result = run_sweep(sweep, tmp_path, executor, events.append)
    assert result.summary["counts"] == {"completed": 12}  # x the config's 3 seeds
    finished = {e.index: e for e in events if type(e).__name__ == "TrialFinished"}
    device = [finished[i].worker["gpus"] for i in range(12)]
    assert set(device) <= {"0", "1"}
    assert len(set(device[:6])) == 1 and len(set(device[6:])) == 1  # a group stays on one
    assert all(e.worker["group"] == 6 for e in finished.values())
    assert all(json.loads(p.read_text())["figures"]["files"]
               for p in tmp_path.glob("*/summary.json"))


@pytest.mark.slow
def test_on_dask_each_group_is_one_task_of_one_worker(tmp_path):
    distributed = pytest.importorskip("distributed")
    from mlptrain.sweep import DaskExecutor

    grid = ["model.hidden=[8],[16],[8, 8]", "train.seed=0,1"]
    env = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": str(CONFIGS.parent)}
    with distributed.LocalCluster(processes=True, n_workers=2, threads_per_worker=1,
                                  dashboard_address=None, env=env) as cluster:
        executor = GroupingExecutor(DaskExecutor(cluster.scheduler_address))
        assert "each a task of the Dask scheduler" in executor.describe()
        events = []
        figures = [o for o in CAPACITY if not o.startswith("report.plots")]
        sweep = load_sweep(CONFIGS / "mnist-capacity.toml", figures, grid, trial_figures=True)
        result = run_sweep(sweep, tmp_path, executor, events.append)
    assert result.summary["counts"] == {"completed": 6}
    finished = {e.index: e for e in events if type(e).__name__ == "TrialFinished"}
    assert sorted(e.worker["group"] for e in finished.values()) == [2, 2, 4, 4, 4, 4]
    assert {e.worker["pid"] for e in finished.values()} - {os.getpid()}  # on the workers
    assert len({finished[i].worker["pid"] for i in range(4)}) == 1  # one group, one worker
    started = [e for e in events if type(e).__name__ == "TrialStarted"]
    assert sorted(e.index for e in started) == list(range(6))  # through the Dask Queue
    assert all(json.loads(p.read_text())["figures"]["files"]
               for p in tmp_path.glob("*/summary.json"))


@pytest.mark.slow
def test_ctrl_c_interrupts_a_group_and_the_same_command_finishes_it(tmp_path):
    env = dict(os.environ, MLPTRAIN_RUNS_DIR=str(tmp_path / "runs"), PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "mlptrain", "sweep", str(CONFIGS / "mnist-capacity.toml"),
               "--group", "on", "--grid", "model.hidden=8,32", "--grid", "train.seed=0,1",
               "--set", "train.epochs=30", "--set", "data.limit=3000",
               "--set", "report.plots=false"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    runs = tmp_path / "runs"
    deadline = time.time() + 60
    while time.time() < deadline and not any(runs.glob("*/metrics.jsonl")):
        time.sleep(0.1)  # the group is past its first epoch
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, output
    summaries = [json.loads(p.read_text()) for p in runs.glob("*/summary.json")]
    assert len(summaries) == 4 and {s["status"] for s in summaries} == {"interrupted"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    trials = json.loads(next(runs.glob("sweeps/*/trials.json")).read_text())
    records = trials["trials"] if isinstance(trials, dict) else trials
    assert all(r["status"] == "completed" and r["previous_runs"] for r in records)


def test_a_dry_run_shows_the_groups_and_a_bad_group_mode_is_refused():
    from typer.testing import CliRunner

    from mlptrain.cli import app

    runner = CliRunner()
    config = str(CONFIGS / "mnist-capacity.toml")
    shown = runner.invoke(app, ["sweep", config, "--dry-run", "--group", "on",
                                "--grid", "model.hidden=8,[8, 8]", "--grid", "train.seed=0,1"])
    assert shown.exit_code == 0, shown.output
    assert "grouped: 2 groups of 2, 2 trials" in shown.output
    assert "group 1: trials 0, 1" in shown.output and "group 2: trials 2, 3" in shown.output
    assert "grouped:" not in runner.invoke(app, ["sweep", config, "--dry-run"]).output  # CPU
    adam = runner.invoke(app, ["sweep", str(CONFIGS / "diabetes.toml"), "--dry-run", "--group",
                               "on", "--grid", "model.hidden=8,16,32"])  # adam groups too
    assert adam.exit_code == 0 and "group 1: trials 0, 1, 2" in adam.output, adam.output
    bad = runner.invoke(app, ["sweep", config, "--dry-run", "--group", "sometimes"])
    assert bad.exit_code != 0 and "auto, on, off" in bad.output


def test_a_group_refuses_members_whose_checkpoints_end_different_epochs(runs_dir):
    from mlptrain.errors import RunStoreError
    from mlptrain.experiment import RunStarted
    from mlptrain.loop import StepsDone
    from mlptrain.loop import StopFlag

    points = [p + ["train.epochs=3"] for p in POINTS][:2]
    store, started = RunStore(runs_dir), {1: [], 2: []}
    for upto in (1, 2):  # one group stopped after epoch 1, another after epoch 2
        stop = StopFlag()

        def on_event(event, upto=upto, stop=stop):
            if isinstance(event, RunStarted):
                started[upto].append(event.run_id)
            elif isinstance(event, StepsDone) and event.epoch == upto and \
                    event.step == event.steps:
                stop.set()

        with pytest.raises(KeyboardInterrupt):
            fit_group(configs(points=points), store, on_event, stop)
    mixed = [started[1][0], started[2][1]]  # member 0 after epoch 1, member 1 after epoch 2
    with pytest.raises(RunStoreError, match="end the same epoch"):
        fit_group(configs(points=points), store, resume=mixed)
    assert [store.find(i).read_summary()["status"] for i in mixed] == ["interrupted"] * 2


class _FreeDevice:
    """A GPU with a given amount of free memory, for device_limit."""

    device = "cuda"

    def __init__(self, free: int):
        self.free = free

    def free_bytes(self) -> int:
        return self.free


@pytest.mark.parametrize("config, pooled, sized", [
    ("mnist-capacity.toml", True, []),
    ("xor.toml", False, ["data.samples=1000000"]),  # data that weighs like MNIST's
])
def test_the_memory_limit_counts_each_uploaded_pool_once(monkeypatch, tmp_path, config, pooled,
                                                         sized):
    """A group uploads an MNIST pool once whatever its seeds (group_data.py), so three seeds
    fit as many models as one; another source's pool is each seed's own split."""
    from mlptrain import backend, memory
    from mlptrain.sweep import grouping

    def tasks(seeds):
        return [TrialTask(i, f"t{i}", load_config(CONFIGS / config, [
            "model.hidden=[16]", f"train.seed={s}", "train.device=cuda", *sized]), str(tmp_path))
            for i, s in enumerate(seeds)]

    one = tasks([0])[0].config
    need = memory.estimate(one, *memory.data_shape(one.data))
    per_model = need.parameters + need.activations
    free = int((4 * need.data_device + 10 * per_model) / grouping.MEMORY_SHARE)
    monkeypatch.setattr(backend, "get_backend", lambda device: _FreeDevice(free))
    alone, three_seeds = grouping.device_limit(tasks([0])), grouping.device_limit(tasks([0, 1, 2]))
    assert alone >= 10 + 3 * need.data_device // per_model - 1
    assert (three_seeds == alone) is pooled
