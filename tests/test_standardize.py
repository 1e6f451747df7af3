"""[data] standardize (issue 29): a user's raw features standardized by the mean and standard
deviation of the training split alone, stored in the run, and applied alike by eval, eval
--data, predict, resume, a sweep's groups and the exported ONNX graph (which takes raw
features)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from typer.testing import CliRunner

from mlptrain.cli import app
from mlptrain.config import parse_config
from mlptrain.data import load_dataset
from mlptrain.data.standardize import Standardizer
from mlptrain.experiment import fit_experiment, resume_experiment
from mlptrain.experiment.evaluate import evaluate_run
from mlptrain.experiment.group_fit import fit_group
from mlptrain.experiment.setup import prepare_run
from mlptrain.loop import StopFlag
from mlptrain.runs import RunStore
from mlptrain.seeding import streams

from test_group import assert_each_member_matches_alone
from test_resume import metrics_without_time, stop_at

runner = CliRunner()
CONSTANT = 5  # the feature that holds one value in every sample


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def wine_like(path, n=300, seed=0, **extra):
    """Three classes of 13 features, like scikit-learn's wine set: separable once scaled, but
    each feature on its own scale, 1e3 to 1e5 (plus an offset of 3 scales), one constant."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    X = 2.0 * rng.normal(size=(3, 13))[y] + rng.normal(size=(n, 13))
    scales = np.logspace(3, 5, 13)
    X = X * scales + 3 * scales
    X[:, CONSTANT] = 7.0
    np.savez(path, X=X, y=y, **extra)
    return X, y


def npz_config(path, *overrides, **keys):
    lines = "".join(f"{k} = {v}\n" for k, v in keys.items())
    return parse_config(f'[data]\ndataset = "npz"\npath = "{path}"\nval_fraction = 0.2\n{lines}'
                        '[model]\nhidden = 16\n[train]\nepochs = 30\nbatch_size = 16\n'
                        '[report]\nplots = false\n', overrides=list(overrides))


def test_the_statistics_are_the_training_split_s_alone(tmp_path):
    # a test file far off the training data's scale: were it (or the val split) counted, the
    # mean would show it
    X, _ = wine_like(tmp_path / "w.npz", X_test=np.full((20, 13), 1e9), y_test=np.zeros(20))
    cfg = npz_config(tmp_path / "w.npz", "data.limit=150").data
    d = load_dataset(cfg, streams(0))
    raw = load_dataset(replace(cfg, standardize=False), streams(0))  # the same split, raw
    assert len(raw.y_train) == 150 and len(raw.y_val) == 60
    np.testing.assert_allclose(d.scaler.mean, raw.X_train.mean(axis=0), rtol=1e-12)
    want_std = raw.X_train.std(axis=0)
    want_std[CONSTANT] = 1.0  # constant: centred, never divided by 0
    np.testing.assert_allclose(d.scaler.std, want_std, rtol=1e-12)
    assert not np.allclose(d.scaler.mean, np.concatenate([raw.X_train, raw.X_val]).mean(0),
                           rtol=1e-9)
    np.testing.assert_allclose(d.X_train.mean(axis=0), 0, atol=1e-9)
    varied = np.arange(13) != CONSTANT
    np.testing.assert_allclose(d.X_train.std(axis=0)[varied], 1, rtol=1e-9)
    assert (d.X_train[:, CONSTANT] == 0).all() and (d.X_val[:, CONSTANT] == 0).all()
    for name in ("val", "test"):
        np.testing.assert_allclose(d.split(name)[0],
                                   (raw.split(name)[0] - d.scaler.mean) / d.scaler.std)
        np.testing.assert_array_equal(d.split(name)[1], raw.split(name)[1])


def test_a_saved_run_s_statistics_are_applied_not_refitted(tmp_path):
    wine_like(tmp_path / "w.npz")
    cfg = npz_config(tmp_path / "w.npz").data
    stored = Standardizer(np.full(13, 1e4), np.full(13, 2e4))
    d = load_dataset(cfg, streams(0), scaler=stored)
    raw = load_dataset(replace(cfg, standardize=False), streams(0))
    assert d.scaler is stored
    np.testing.assert_allclose(d.X_train, (raw.X_train - 1e4) / 2e4)


def forward(path, X) -> np.ndarray:
    """The run's probabilities for raw X, by hand: its stored statistics, then its relu
    network and softmax, in float64."""
    stats, w = np.load(path / "preprocess.npz"), np.load(path / "weights.npz")
    h = np.maximum((X - stats["mean"]) / stats["std"] @ w["layers.0.weight"].T
                   + w["layers.0.bias"], 0)
    z = h @ w["layers.1.weight"].T + w["layers.1.bias"]
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_raw_wine_like_features_train_and_every_reader_standardizes_alike(runs_dir, tmp_path):
    X, y = wine_like(tmp_path / "w.npz")
    config = tmp_path / "w.toml"
    config.write_text(npz_config(tmp_path / "w.npz").to_toml())
    dry = run("fit", config, "--dry-run")
    assert "features standardized by the train split's mean and std" in dry.stdout
    fitted = run("fit", config, "--json")
    assert fitted.exit_code == 0, fitted.output
    summary = json.loads(fitted.stdout)
    path = runs_dir / summary["run_id"]
    assert summary["final"]["test_accuracy"] > 0.85  # chance: 1/3
    assert summary["dataset"]["standardized"] is True and summary["warnings"] == []
    evaluated = json.loads(run("eval", path, "--json").stdout)
    assert evaluated["accuracy"] == pytest.approx(summary["final"]["test_accuracy"], abs=1e-12)

    # the whole raw file through eval --data and predict: standardized as training was
    by_hand = forward(path, X)
    scored = json.loads(run("eval", path, "--data", tmp_path / "w.npz", "--json").stdout)
    assert scored["accuracy"] == pytest.approx(np.mean(by_hand.argmax(axis=1) == y), abs=1e-12)
    assert any("standardized each feature" in n for n in scored["notes"])
    np.save(tmp_path / "raw.npy", X[:40])
    predicted = run("predict", path, tmp_path / "raw.npy", "--top", "3", "--json")
    assert predicted.exit_code == 0, predicted.output
    probabilities = np.zeros((40, 3))
    for i, sample in enumerate(json.loads(predicted.stdout)["predictions"]):
        for entry in sample:
            probabilities[i, entry["class"]] = entry["probability"]
    np.testing.assert_allclose(probabilities, by_hand[:40], atol=1e-5)  # a float32 network

    # the exported graph takes the raw features too
    ort = pytest.importorskip("onnxruntime")
    exported = run("export", path, "--format", "onnx", "--out", tmp_path / "m.onnx")
    assert exported.exit_code == 0, exported.output
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    (onnx_p,) = session.run(["probabilities"], {"x": X[:40].astype(np.float32)})
    np.testing.assert_allclose(onnx_p, probabilities, atol=1e-5)
    assert [n.op_type for n in __import__("onnx").load(tmp_path / "m.onnx").graph.node][:2] \
        == ["Sub", "Div"]
    st = pytest.importorskip("safetensors.numpy")
    assert run("export", path, "--format", "safetensors", "--out",
               tmp_path / "m.safetensors").exit_code == 0
    tensors, stats = st.load_file(str(tmp_path / "m.safetensors")), np.load(path / "preprocess.npz")
    assert tensors["preprocess.mean"].tobytes() == stats["mean"].tobytes()
    assert tensors["preprocess.std"].tobytes() == stats["std"].tobytes()


def test_config_init_offers_the_key_for_a_users_files_alone():
    for dataset in ("npz", "csv"):
        assert "\nstandardize = true  # npz, csv: each feature" in run(
            "config", "init", "--dataset", dataset).stdout
    assert "\n# standardize = true" in run("config", "init", "--dataset", "xor").stdout


def test_standardize_off_leaves_the_features_as_given(runs_dir, tmp_path):
    wine_like(tmp_path / "w.npz")
    done = fit_experiment(npz_config(tmp_path / "w.npz", "data.standardize=false",
                                     "train.epochs=2", "optimizer.lr=1e-6"), RunStore(runs_dir))
    assert not (done.path / "preprocess.npz").exists()
    assert "standardized" not in done.summary["dataset"]
    rebuilt = prepare_run(RunStore(runs_dir).find(done.run_id)).dataset
    assert rebuilt.scaler is None  # the rows of the file, as given
    assert np.isin(rebuilt.X_train, np.load(tmp_path / "w.npz")["X"]).all()


def test_a_run_from_before_the_key_is_scored_unscaled(runs_dir, tmp_path):
    """A run whose config.toml has no standardize key (written before it existed) reads it at
    today's default, on; its summary says it did not standardize, so nothing is."""
    wine_like(tmp_path / "w.npz")
    done = fit_experiment(npz_config(tmp_path / "w.npz", "data.standardize=false",
                                     "train.epochs=3", "optimizer.lr=1e-6"), RunStore(runs_dir))
    saved = done.path / "config.toml"
    saved.write_text(saved.read_text().replace("standardize = false\n", ""))
    assert "standardize =" not in saved.read_text()
    scored = evaluate_run(RunStore(runs_dir), done.run_id)
    assert scored["loss"] == pytest.approx(done.summary["final"]["test_loss"], rel=1e-12)


def test_a_resumed_run_reads_its_statistics_back(runs_dir, tmp_path, monkeypatch):
    wine_like(tmp_path / "w.npz")
    config = npz_config(tmp_path / "w.npz", "train.epochs=4")
    alone = fit_experiment(config, RunStore(runs_dir))
    stop = StopFlag()
    stopped = fit_experiment(config, RunStore(runs_dir), stop_at(stop, 2, 5), stop=stop)
    assert stopped.summary["status"] == "interrupted"

    def refit(*args):
        raise AssertionError("a resumed run refitted its statistics")

    monkeypatch.setattr(Standardizer, "fit", refit)
    resumed = resume_experiment(RunStore(runs_dir), stopped.run_id)
    assert (resumed.path / "weights.npz").read_bytes() == (alone.path / "weights.npz").read_bytes()
    assert metrics_without_time(resumed.path) == metrics_without_time(alone.path)
    assert resumed.summary["final"] == alone.summary["final"]


def test_each_member_of_a_group_standardizes_by_its_own_training_split(runs_dir, tmp_path):
    """Seeds draw different splits, so their statistics differ, and each member scores its
    test samples standardized by its own: it reaches what it reaches alone."""
    wine_like(tmp_path / "w.npz")
    group = [npz_config(tmp_path / "w.npz", *point) for point in
             (["train.seed=0"], ["train.seed=1", "model.hidden=8"],
              ["train.seed=0", "optimizer.lr=0.05"])]
    group = [replace(c, train=replace(c.train, dtype="float64", epochs=3)) for c in group]
    store = RunStore(runs_dir)
    results = fit_group(group, store)
    means = [np.load(store.find(r.run_id).path / "preprocess.npz")["mean"] for r in results]
    assert np.array_equal(means[0], means[2]) and not np.allclose(means[0], means[1])
    assert_each_member_matches_alone(store, group, results)


def test_members_of_other_seeds_form_a_committee_on_the_file_s_test_samples(runs_dir,
                                                                            tmp_path):
    """Each seed standardizes by its own split's statistics, so their test arrays differ in
    value; the samples are the same rows of the file, and the committee takes them."""
    from mlptrain.experiment.ensemble import committee

    X, y = wine_like(tmp_path / "w.npz")
    np.savez(tmp_path / "t.npz", X=X[:240], y=y[:240], X_test=X[240:], y_test=y[240:])
    store = RunStore(runs_dir)
    runs = [fit_experiment(npz_config(tmp_path / "t.npz", f"train.seed={seed}",
                                      "train.epochs=5"), store).run_id for seed in (0, 1)]
    means = [np.load(store.find(r).path / "preprocess.npz")["mean"] for r in runs]
    assert not np.allclose(means[0], means[1])
    test = committee(store, runs)
    assert len(test.labels) == 60
    for member, run_id in zip(test.members, runs):
        assert test.member_accuracies()[test.members.index(member)] == pytest.approx(
            evaluate_run(store, run_id)["accuracy"], abs=1e-12)
