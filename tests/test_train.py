"""The training loop and the fit/eval library calls, end to end on small data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mlptrain.config import load_config, parse_config
from mlptrain.errors import ConfigError, DataError, ModelError, TrainingError
from mlptrain.experiment import evaluate_run, fit_experiment
from mlptrain.runs import RunStore
from mlptrain.loop import EarlyStopped, EpochEnded, EpochStarted, StepsDone

from conftest import CONFIGS

GOLDEN = Path(__file__).resolve().parent / "golden" / "xor_trajectory.json"


def fit(text_or_path, runs_dir, overrides=(), events=None, plots=False):
    overrides = [*overrides] + ([] if plots else ["report.plots=false"])  # test_plots.py's
    if isinstance(text_or_path, Path):
        config = load_config(text_or_path, overrides)
    else:
        config = parse_config(text_or_path, overrides=overrides)
    return fit_experiment(config, RunStore(runs_dir), [].append if events is None else events.append)


def test_xor_config_reaches_full_test_accuracy(runs_dir):
    run = fit(CONFIGS / "xor.toml", runs_dir)
    assert run.summary["status"] == "completed"
    assert run.summary["final"]["test_accuracy"] == 1.0
    assert run.summary["dataset"]["samples"] == {"train": 640, "val": 160, "test": 1000}
    assert run.summary["path"] == "eager: cpu"  # which path trained it (backend.epoch_path)


def test_xor_loss_trajectory_matches_the_recording(runs_dir):
    golden = json.loads(GOLDEN.read_text())
    run = fit(CONFIGS / "xor.toml", runs_dir, golden["overrides"])
    got = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert len(got) == len(golden["epochs"])
    for mine, recorded in zip(got, golden["epochs"]):
        for key in ("train_loss", "val_loss"):
            assert mine[key] == pytest.approx(recorded[key], rel=1e-6), (mine["epoch"], key)
        assert mine["val_accuracy"] == recorded["val_accuracy"]


def test_same_seed_gives_bit_identical_weights_and_metrics(runs_dir):
    a = fit(CONFIGS / "xor.toml", runs_dir, ["train.epochs=20"])
    b = fit(CONFIGS / "xor.toml", runs_dir, ["train.epochs=20"])
    wa, wb = np.load(a.path / "weights.npz"), np.load(b.path / "weights.npz")
    for key in wa.files:
        assert np.array_equal(wa[key], wb[key]), key
    strip = lambda run: [{k: v for k, v in json.loads(line).items() if k != "seconds"}  # noqa
                         for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert strip(a) == strip(b)


def test_a_different_seed_gives_different_weights(runs_dir):
    a = fit(CONFIGS / "xor.toml", runs_dir, ["train.epochs=2"])
    b = fit(CONFIGS / "xor.toml", runs_dir, ["train.epochs=2", "train.seed=1"])
    assert not np.array_equal(np.load(a.path / "weights.npz")["layers.0.weight"],
                              np.load(b.path / "weights.npz")["layers.0.weight"])


def test_run_directory_holds_every_file_with_the_documented_content(runs_dir):
    run = fit(CONFIGS / "xor.toml", runs_dir, ["train.epochs=3", "optimizer.lr=0.1"], plots=True)
    names = sorted(p.name for p in run.path.iterdir())
    assert names == ["checkpoint.npz", "config.toml", "confusion_matrix.png", "curves.png",
                     "decision_boundary.png", "metrics.csv", "metrics.jsonl", "summary.json",
                     "weights.npz"]  # the library draws the figures ([report] plots = true)
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["run_id"] == run.run_id and summary["status"] == "completed"
    assert summary["epochs_completed"] == 3
    assert set(summary["final"]) == {f"{s}_{m}" for s in ("train", "val", "test")
                                     for m in ("loss", "accuracy")}
    assert set(summary["timing"]) == {"wall_seconds", "seconds_per_epoch", "samples_per_second",
                                      "training_seconds", "sittings", "run_wall_seconds",
                                      "run_training_seconds"}
    epoch_seconds = [json.loads(line)["seconds"]
                     for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert summary["timing"]["training_seconds"] == sum(epoch_seconds)
    # one sitting: the whole run is this sitting
    assert summary["timing"]["sittings"] == 1
    assert summary["timing"]["run_training_seconds"] == summary["timing"]["training_seconds"]
    assert summary["timing"]["run_wall_seconds"] == summary["timing"]["wall_seconds"]
    assert 0 < summary["timing"]["training_seconds"] <= summary["timing"]["wall_seconds"]
    assert summary["device"] == "cpu" and summary["dtype"] == "float32"
    assert {"mlptrain", "numpy", "python"} <= set(summary["versions"])
    assert summary["dataset"]["name"] == "xor"
    assert summary["overrides"] == ["train.epochs=3", "optimizer.lr=0.1"]
    # the saved config is the resolved one: it loads, and replays the same settings
    saved = load_config(run.path / "config.toml")
    assert saved.optimizer.lr == 0.1 and saved.train.epochs == 3
    assert "# --set optimizer.lr=0.1" in (run.path / "config.toml").read_text()
    weights = np.load(run.path / "weights.npz")
    assert {k: weights[k].shape for k in weights.files} == {
        "layers.0.weight": (4, 2), "layers.0.bias": (4,),
        "layers.1.weight": (1, 4), "layers.1.bias": (1,)}
    checkpoint = np.load(run.path / "checkpoint.npz")
    assert int(checkpoint["epoch"]) == 3 and int(checkpoint["step"]) == 30
    assert np.array_equal(checkpoint["model.layers.0.weight"], weights["layers.0.weight"])
    csv_lines = (run.path / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].startswith("epoch,lr,train_loss") and len(csv_lines) == 4


def test_eval_agrees_with_the_recorded_accuracy(runs_dir):
    run = fit(CONFIGS / "xor.toml", runs_dir, ["train.epochs=5"])
    store = RunStore(runs_dir)
    for split in ("train", "val", "test"):
        result = evaluate_run(store, run.run_id[:20], split)
        assert result["accuracy"] == run.summary["final"][f"{split}_accuracy"]
        assert result["loss"] == pytest.approx(run.summary["final"][f"{split}_loss"], rel=1e-12)
    assert result["samples"] == 1000


def test_events_follow_the_documented_order(runs_dir):
    events = []
    fit(CONFIGS / "xor.toml", runs_dir, ["train.epochs=2"], events)
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "RunStarted" and kinds[-1] == "RunFinished"
    assert kinds.count("EpochStarted") == 2 and kinds.count("EpochEnded") == 2
    steps = [e for e in events if isinstance(e, StepsDone)]
    assert steps and steps[-1].step == steps[-1].steps == 10
    assert kinds[1] == "ThreadsChosen"  # the CPU's BLAS threads, decided before the first step
    assert all(isinstance(e, (EpochStarted, StepsDone, EpochEnded)) for e in events[2:-1])


def test_early_stopping_stops_and_keeps_the_best_epoch(runs_dir):
    events = []
    # past the first few epochs the validation loss gains less than min_delta per epoch
    run = fit(CONFIGS / "xor.toml", runs_dir,
              ["train.epochs=200", "train.patience=3", "train.min_delta=0.01",
               "optimizer.lr=3.0"], events)
    stopped = [e for e in events if isinstance(e, EarlyStopped)]
    assert stopped and run.summary["stopped_early"]
    best = run.summary["best_epoch"]
    assert stopped[0].epoch - best == 3 and run.summary["epochs_completed"] < 200
    history = [e.metrics for e in events if isinstance(e, EpochEnded)]
    kept = history[best - 1]["val_loss"]
    # no later epoch beat the kept one by more than min_delta, and the model ends with its weights
    assert all(h["val_loss"] >= kept - 0.01 for h in history[best:])
    assert run.summary["final"]["val_loss"] == pytest.approx(kept, rel=1e-9)


def test_early_stopping_without_a_validation_split_is_a_config_error(runs_dir):
    with pytest.raises(ConfigError, match="val_fraction"):
        fit(CONFIGS / "xor.toml", runs_dir, ["train.patience=2", "data.val_fraction=0"])


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid:RuntimeWarning")
def test_a_diverging_loss_fails_the_run_with_advice(runs_dir, tmp_path):
    # inputs of 1e30 overflow float32 after one step: the logits become inf, the loss NaN
    X = np.random.default_rng(0).normal(size=(200, 3)) * 1e30
    np.savez(tmp_path / "huge.npz", X=X, y=np.arange(200) % 3)
    with pytest.raises(TrainingError, match="learning rate") as info:
        fit(f'[data]\ndataset = "npz"\npath = "{tmp_path / "huge.npz"}"\n'
            'standardize = false\n', runs_dir)  # standardized, these features would train
    assert "optimizer.lr" in str(info.value) and "float64" in str(info.value)
    (run_dir,) = runs_dir.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "learning rate" in summary["error"]


def test_training_can_start_from_a_weights_file(runs_dir):
    first = fit(CONFIGS / "xor.toml", runs_dir)
    events = []
    second = fit(CONFIGS / "xor.toml", runs_dir,
                 [f"model.weights='{first.path / 'weights.npz'}'", "train.epochs=1"], events)
    # the trained weights start at ~100%, where a fresh init starts near chance
    first_epoch = next(e.metrics for e in events if isinstance(e, EpochEnded))
    assert first_epoch["train_accuracy"] > 0.99
    assert second.summary["final"]["test_accuracy"] == 1.0


def test_a_weights_file_of_another_shape_names_the_layer(runs_dir):
    first = fit(CONFIGS / "xor.toml", runs_dir, ["train.epochs=1"])
    with pytest.raises(ModelError, match=r"layers\.0.*\(4, 2\)"):
        fit(CONFIGS / "xor.toml", runs_dir,
            [f"model.weights='{first.path / 'weights.npz'}'", "model.hidden=8"])
    with pytest.raises(DataError, match="does not exist"):
        fit(CONFIGS / "xor.toml", runs_dir, ["model.weights='nope.npz'"])


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("schedule", ["constant", "step", "cosine"])
def test_every_optimizer_and_schedule_learns_xor(runs_dir, optimizer, schedule):
    lr = {"sgd": 0.5, "adam": 0.05, "adamw": 0.05}[optimizer]
    run = fit(CONFIGS / "xor.toml", runs_dir, [
        f"optimizer.name={optimizer}", f"optimizer.lr={lr}", f"schedule.name={schedule}",
        "schedule.warmup_epochs=2", "schedule.step_epochs=40", "schedule.gamma=0.5",
        "optimizer.weight_decay=1e-4", "train.epochs=120"])
    assert run.summary["final"]["test_accuracy"] >= 0.99


def test_float64_training_matches_float32_closely(runs_dir):
    a = fit(CONFIGS / "xor.toml", runs_dir, ["train.epochs=10"])
    b = fit(CONFIGS / "xor.toml", runs_dir, ["train.epochs=10", "train.dtype=float64"])
    assert b.summary["dtype"] == "float64"
    assert np.load(b.path / "weights.npz")["layers.0.weight"].dtype == np.float64
    assert a.summary["final"]["test_loss"] == pytest.approx(b.summary["final"]["test_loss"],
                                                            rel=1e-4)


def test_npz_dataset_trains_with_its_own_test_split(runs_dir, tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 5))
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + 2 * (X[:, 2] > 0)  # 4 classes
    path = tmp_path / "mine.npz"
    np.savez(path, X=X, y=y)
    run = fit(f"""
        [data]
        dataset = "npz"
        path = "{path}"
        test_fraction = 0.25
        [model]
        hidden = [16, 16]
        [optimizer]
        name = "adam"
        lr = 0.01
        [train]
        epochs = 40
        batch_size = 32
    """, runs_dir)
    samples = run.summary["dataset"]["samples"]
    assert samples == {"train": 405, "val": 45, "test": 150}
    assert run.summary["model"]["sizes"] == [5, 16, 16, 4]
    assert run.summary["final"]["test_accuracy"] > 0.85
    assert run.summary["dataset"]["checksums"]["mine.npz"]


def test_npz_dataset_needs_a_path(runs_dir):
    with pytest.raises(ConfigError, match="path"):
        fit('[data]\ndataset = "npz"\n', runs_dir)


def test_mnist_smoke_on_a_subset(runs_dir):
    run = fit(CONFIGS / "mnist.toml", runs_dir,
              ["data.limit=3000", "model.hidden=32", "train.epochs=2"])
    s = run.summary
    assert s["dataset"]["samples"] == {"train": 3000, "val": 6000, "test": 10000}
    assert s["model"]["sizes"] == [784, 32, 10]
    assert s["final"]["test_accuracy"] > 0.80
    assert s["dataset"]["checksums"]["train-images-idx3-ubyte"].startswith("ba891046")


def test_eval_does_not_need_the_file_a_run_started_from(runs_dir, tmp_path):
    first = fit(CONFIGS / "xor.toml", runs_dir, ["train.epochs=1"])
    start = tmp_path / "start.npz"
    start.write_bytes((first.path / "weights.npz").read_bytes())
    second = fit(CONFIGS / "xor.toml", runs_dir, [f"model.weights='{start}'", "train.epochs=1"])
    start.unlink()  # eval reads the run's own weights.npz, not its starting point
    result = evaluate_run(RunStore(runs_dir), second.run_id)
    assert result["accuracy"] == second.summary["final"]["test_accuracy"]


def test_a_damaged_weights_file_to_start_from_is_a_data_error(runs_dir, tmp_path):
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        fit(CONFIGS / "xor.toml", runs_dir, [f"model.weights='{damaged}'"])
