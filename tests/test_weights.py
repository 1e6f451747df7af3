"""Class and sample weights (issue 29): the weighted loss sum_i w_i l_i / sum_i w_i, its
gradient by central differences, the step against its formula (weights c == none, an integer
weight k == its row k times), the data keys that give weights, and a weighted run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mlptrain import nn
from mlptrain.backend import get_backend
from mlptrain.backend.cuda.dispatch import graph_blockers
from mlptrain.cli import app
from mlptrain.config import DataConfig, load_config, parse_config
from mlptrain.data import load_dataset, weighted
from mlptrain.errors import ConfigError, DataError
from mlptrain.loop import Split, evaluate
from mlptrain.model import MLP
from mlptrain.seeding import streams
from mlptrain.step import member_blockers
from mlptrain.sweep.grouping import group_blockers

from conftest import CONFIGS
from test_gradients import TOL, numeric_grad, rel_error
from test_resume import assert_stopped_and_resumed_as_alone

ops = get_backend("cpu")
runner = CliRunner()

# every loss, the softmax with and without label smoothing: (name, smoothing)
LOSSES = [(name, 0.0) for name in sorted(nn.LOSSES)] + [("softmax_cross_entropy", 0.2)]
WEIGHTS = np.array([0.5, 2.0, 0.0, 1.0, 3.0, 0.25])  # one 0: a row that does not count


def make_batch(name: str, smoothing: float, rng, batch: int = len(WEIGHTS)):
    """(loss, logits (B, C), targets) in float64: class labels, counts (poisson) or values."""
    loss = nn.LOSSES[name](smoothing) if smoothing else nn.LOSSES[name]()
    logits = rng.normal(scale=1.5, size=(batch, loss.outputs(4)))
    if loss.task == "regression":
        values = rng.poisson(2.0, batch).astype(float) if name == "poisson" else \
            logits[:, 0] + rng.choice([-3.0, -0.4, 0.3, 2.5], size=batch)
    else:
        values = rng.integers(0, 4 if logits.shape[1] > 1 else 2, size=batch)
    return loss, logits, loss.targets(np, values, np.float64)


def weighted_step(loss, logits, targets, weights=None):
    """(summed loss, dL/dz) of the backend's step on this batch, scaled by 1/B as the loop's."""
    cache = loss.new_cache(np, logits.shape[0], logits.shape[1], np.float64)
    out = np.empty_like(logits)
    total = ops.loss_and_grad(loss, logits, targets, cache, 1.0 / len(logits), out,
                              weights=weights)[0]
    return float(total), out


def weighted_mean(loss, logits, targets, weights) -> float:
    """sum_i w_i l_i / sum_i w_i, from each row's loss alone (the definition)."""
    rows = [weighted_step(loss, logits[i:i + 1], targets[i:i + 1])[0] for i in range(len(logits))]
    return float(np.dot(weights, rows) / weights.sum())


@pytest.mark.parametrize("name, smoothing", LOSSES)
def test_a_weighted_loss_is_the_weighted_mean_of_its_rows(name, smoothing):
    loss, logits, targets = make_batch(name, smoothing, np.random.default_rng(1))
    total, _ = weighted_step(loss, logits, targets, WEIGHTS)
    # the summed loss is B times the weighted mean: an epoch's mean is its steps' mean
    assert total / len(logits) == pytest.approx(weighted_mean(loss, logits, targets, WEIGHTS),
                                                rel=1e-12)


@pytest.mark.parametrize("name, smoothing", LOSSES)
def test_a_weighted_loss_gradient_matches_finite_differences(name, smoothing):
    loss, logits, targets = make_batch(name, smoothing, np.random.default_rng(2))
    _, grad = weighted_step(loss, logits, targets, WEIGHTS)
    numeric = numeric_grad(lambda: weighted_mean(loss, logits, targets, WEIGHTS), logits)
    assert rel_error(grad, numeric) < TOL
    assert not grad[2].any()  # the row of weight 0 pulls on nothing


@pytest.mark.parametrize("name, smoothing", LOSSES)
def test_weights_all_equal_train_as_no_weights(name, smoothing):
    loss, logits, targets = make_batch(name, smoothing, np.random.default_rng(3))
    plain_total, plain = weighted_step(loss, logits, targets)
    total, grad = weighted_step(loss, logits, targets, np.full(len(logits), 2.0))
    assert np.array_equal(grad, plain)  # w / mean(w) is exactly 1: the same bytes
    assert total == pytest.approx(plain_total, rel=1e-14)


def small_mlp(loss) -> MLP:
    model = MLP(ops, [3, 5, loss.outputs(4)], nn.Tanh(), loss, np.float64)
    model.initialize("xavier_uniform", np.random.default_rng(4))
    return model


@pytest.mark.parametrize("name, smoothing", LOSSES)
def test_an_integer_weight_k_is_its_row_repeated_k_times(name, smoothing):
    """A whole network's step: the loss and every gradient to 1e-12 in float64."""
    rng = np.random.default_rng(5)
    loss, _, targets = make_batch(name, smoothing, rng)
    X, k = rng.normal(size=(len(targets), 3)), np.array([1, 3, 0, 2, 1, 4])
    model = small_mlp(loss)

    def step(x, t, weights=None):
        ws = model.workspace(len(x))
        ws.x[...] = x
        total = model.loss_and_grad(ws, t, 1.0 / len(x), weights=weights)[0]
        return float(total) / len(x), model.grads.flat.copy()

    weighed = step(X, targets, k.astype(float))
    repeated = step(np.repeat(X, k, axis=0), np.repeat(targets, k, axis=0))
    assert weighed[0] == pytest.approx(repeated[0], rel=1e-12)
    np.testing.assert_allclose(weighed[1], repeated[1], rtol=1e-12, atol=1e-15)


def test_evaluation_weighs_a_split_as_training_does():
    loss, logits, targets = make_batch("softmax_cross_entropy", 0.0, np.random.default_rng(6))
    model = small_mlp(loss)
    X = np.random.default_rng(7).normal(size=(len(targets), 3))
    split = Split(X, targets, weights=WEIGHTS)
    mean, accuracy = evaluate(model, split, batch_size=4)  # two batches: 4 rows, then 2
    plain_mean, plain_accuracy = evaluate(model, Split(X, targets), batch_size=6)
    accuracy, plain_accuracy = accuracy["accuracy"], plain_accuracy["accuracy"]
    logits = model.forward(model.workspace(6), X).copy()
    assert mean == pytest.approx(weighted_mean(loss, logits, targets, WEIGHTS), rel=1e-12)
    assert accuracy == plain_accuracy and mean != pytest.approx(plain_mean)  # unweighted metric


# -- the step: which paths take it ----------------------------------------------------------


def xor_step(**data):
    from mlptrain.experiment.setup import prepare

    softmax = "model.loss=softmax_cross_entropy"  # a loss a group's step computes
    return prepare(load_config(CONFIGS / "xor.toml",
                               [softmax, *(f"data.{k}={v}" for k, v in data.items())])).step


def test_a_weighted_step_is_refused_by_the_epoch_graph_and_by_groups_saying_why():
    plain, weighted_one = xor_step(), xor_step(class_weight="balanced")
    assert not plain.weighted and weighted_one.weighted
    assert "sample weights: no kernel" in graph_blockers(weighted_one)
    assert "sample weights: no kernel" not in graph_blockers(plain)
    assert "sample weights" in member_blockers(weighted_one) and not member_blockers(plain)
    config = load_config(CONFIGS / "xor.toml", ["model.loss=softmax_cross_entropy",
                                                'data.class_weight={"1" = 2.0}'])
    assert "sample weights" in group_blockers(config)


# -- where weights come from ------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def table(n: int = 40, weights=None, seed: int = 0) -> str:
    """A CSV of two features, a weight column w and a label cat/dog (cats are rarer)."""
    rng = np.random.default_rng(seed)
    weights = rng.uniform(0.5, 2.0, n).round(2) if weights is None else weights
    rows = [f"{rng.normal():.3f},{rng.normal():.3f},{w},{'cat' if i % 4 == 0 else 'dog'}"
            for i, w in enumerate(weights)]
    return "x1,x2,w,kind\n" + "\n".join(rows) + "\n"


def load(path: Path, **keys):
    """load_dataset of a table; its inputs as given (the tests find rows by them)."""
    cfg = DataConfig(dataset="csv", path=str(path), standardize=False, **keys)
    return load_dataset(cfg, streams(0))


def test_balanced_class_weights_are_counted_on_the_training_split(tmp_path):
    d = load(write(tmp_path / "t.csv", table()), class_weight="balanced")
    counts = np.bincount(d.y_train, minlength=2)
    expected = len(d.y_train) / (2 * counts)  # scikit-learn's n_samples / (n_classes * count)
    assert d.weighting["class_weights"] == {"cat": expected[0], "dog": expected[1]}
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(d.weights(split), expected[d.split(split)[1]])
    assert (d.w_train * 1.0).sum() == pytest.approx(len(d.y_train))  # balanced: mean 1


def test_a_weight_column_is_no_feature_and_multiplies_the_class_weights(tmp_path):
    path = write(tmp_path / "t.csv", table())
    plain = load(path)
    d = load(path, sample_weight="w", class_weight={"cat": 2.0})
    assert d.n_features == 2 and plain.n_features == 3 and "w" not in d.encoding["features"]
    column = np.array([float(line.split(",")[2]) for line in path.read_text().splitlines()[1:]])
    rows = np.concatenate([d.X_train, d.X_val, d.X_test])  # each row's weight, found by x1
    w = np.concatenate([d.w_train, d.w_val, d.w_test])
    y = np.concatenate([d.y_train, d.y_val, d.y_test])
    x1 = [float(line.split(",")[0]) for line in path.read_text().splitlines()[1:]]
    for x, weight, label in zip(rows[:, 0], w, y):
        row = int(np.argmin(np.abs(np.array(x1) - x)))
        assert weight == column[row] * (2.0 if label == 0 else 1.0)
    assert d.weighting == {"sample_weight": "column 'w'", "class_weight": {"cat": 2.0},
                           "class_weights": {"cat": 2.0, "dog": 1.0}}
    assert plain.w_train is None and plain.weighting == {}  # no weights: none at all


@pytest.mark.parametrize("cell, said", [("-1", "is -1"), ("", "is missing"), ("inf", "missing"),
                                        ("abc", "is missing or not a finite number")])
def test_a_bad_sample_weight_names_its_line_and_column(tmp_path, cell, said):
    weights = ["1.0"] * 12
    weights[5] = cell
    with pytest.raises(DataError, match=rf"line 7, column 'w'.*{said}"):
        load(write(tmp_path / "t.csv", table(12, weights)), sample_weight="w")


def test_all_zero_sample_weights_are_refused(tmp_path):
    with pytest.raises(DataError, match="every sample weight is 0"):
        load(write(tmp_path / "t.csv", table(12, [0] * 12)), sample_weight="w")


def test_an_npz_array_w_weighs_its_rows_and_the_notes_say_so(tmp_path):
    rng = np.random.default_rng(8)
    X, y, w = rng.normal(size=(30, 2)), np.arange(30) % 2, rng.uniform(0.1, 3, 30)
    np.savez(tmp_path / "d.npz", X=X, y=y, w=w)
    cfg = DataConfig(dataset="npz", path=str(tmp_path / "d.npz"), standardize=False)
    d = load_dataset(cfg, streams(0))
    assert weighted(cfg) and "sample weights: the file's array w" in d.notes
    for split in ("train", "val", "test"):
        Xs, ws = d.split(split)[0], d.weights(split)
        np.testing.assert_array_equal(ws, [w[np.argmin(np.abs(X[:, 0] - x))] for x in Xs[:, 0]])
    np.savez(tmp_path / "bad.npz", X=X, y=y, w=w[:-1])
    with pytest.raises(DataError, match="array 'w'.*30 sample weights"):
        load_dataset(DataConfig(dataset="npz", path=str(tmp_path / "bad.npz")), streams(0))
    np.savez(tmp_path / "plain.npz", X=X, y=y)
    assert not weighted(DataConfig(dataset="npz", path=str(tmp_path / "plain.npz")))


def test_an_npz_weighs_its_own_validation_and_test_rows_with_w_val_and_w_test(tmp_path):
    rng = np.random.default_rng(9)
    X, y, w = rng.normal(size=(30, 2)), np.arange(30) % 2, rng.uniform(0.1, 3, 30)
    X_val, y_val, w_val = rng.normal(size=(8, 2)), np.arange(8) % 2, rng.uniform(0.1, 3, 8)
    X_test, y_test = rng.normal(size=(6, 2)), np.arange(6) % 2
    np.savez(tmp_path / "d.npz", X=X, y=y, w=w, X_val=X_val, y_val=y_val, w_val=w_val,
             X_test=X_test, y_test=y_test)
    cfg = DataConfig(dataset="npz", path=str(tmp_path / "d.npz"), standardize=False)
    d = load_dataset(cfg, streams(0))
    np.testing.assert_array_equal(d.weights("train"), w)
    np.testing.assert_array_equal(d.weights("val"), w_val)
    np.testing.assert_array_equal(d.weights("test"), np.ones(6))  # no w_test: each weighs 1
    assert "the file's arrays w and w_val (the rows of its X_test weigh 1)" in " ".join(d.notes)
    np.savez(tmp_path / "bad.npz", X=X, y=y, X_val=X_val, y_val=y_val, w_val=w_val[:-1])
    with pytest.raises(DataError, match="array 'w_val'.*8 sample weights.*X_val"):
        load_dataset(DataConfig(dataset="npz", path=str(tmp_path / "bad.npz")), streams(0))
    np.savez(tmp_path / "lone.npz", X=X, y=y, w_test=w)
    with pytest.raises(DataError, match="'w_test'.*the file has no X_test"):
        load_dataset(DataConfig(dataset="npz", path=str(tmp_path / "lone.npz")), streams(0))


@pytest.mark.parametrize("line, message", [
    ('class_weight = "even"', 'expected "balanced"'),
    ("class_weight = {cat = -1.0}", r"class_weight.cat = -1.0: expected a value >= 0"),
    ('dataset = "npz"\npath = "d.npz"\nsample_weight = "w"', "array w beside X and y"),
])
def test_the_weight_keys_are_checked_at_the_config(line, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(f"[data]\n{line}\n")


def test_class_weights_of_a_regressed_target_are_refused(tmp_path):
    rows = "\n".join(f"{i},{i * 0.37 + 0.05}" for i in range(30))
    with pytest.raises(ConfigError, match="target is regressed"):
        load(write(tmp_path / "r.csv", "x,y\n" + rows + "\n"), class_weight="balanced")


def test_config_init_lists_the_weight_keys():
    result = runner.invoke(app, ["config", "init", "--dataset", "csv"])
    assert 'sample_weight = ""' in result.output and 'class_weight = ""' in result.output


# -- a weighted run, end to end ----------------------------------------------------------------


def pets_config(tmp_path: Path, class_weight: str = '"balanced"') -> Path:
    write(tmp_path / "pets.csv", table(60, seed=3))
    return write(tmp_path / "pets.toml",
                 f'[data]\ndataset = "csv"\npath = "pets.csv"\nsample_weight = "w"\n'
                 f"class_weight = {class_weight}\n[model]\nhidden = 6\n[train]\nepochs = 3\n"
                 "batch_size = 8\n[report]\nplots = false\n")


def test_a_class_the_data_lacks_is_refused_by_fit_naming_it_and_the_classes(tmp_path, runs_dir):
    result = runner.invoke(app, ["fit", str(pets_config(tmp_path, "{ cow = 2.0 }"))])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "'cow'" in result.output and "'cat', 'dog'" in result.output


def test_a_weighted_csv_run_fits_evaluates_and_records_its_weights(tmp_path, runs_dir):
    result = runner.invoke(app, ["fit", str(pets_config(tmp_path)), "--quiet"])
    assert result.exit_code == 0, result.output
    (path,) = runs_dir.iterdir()
    summary = json.loads((path / "summary.json").read_text())
    assert summary["dataset"]["weights"]["sample_weight"] == "column 'w'"
    assert summary["dataset"]["weights"]["class_weight"] == "balanced"
    assert summary["path"] == "eager: cpu" and "class_weight = \"balanced\"" in \
        (path / "config.toml").read_text()
    scored = runner.invoke(app, ["eval", "latest", "--json"])
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout)["loss"] == pytest.approx(summary["final"]["test_loss"],
                                                              rel=1e-9)
    outside = runner.invoke(app, ["eval", "latest", "--data", str(tmp_path / "pets.csv"),
                                  "--json"])
    assert outside.exit_code == 0, outside.output
    assert any("unweighted" in note for note in json.loads(outside.stdout)["notes"])


def test_a_stopped_weighted_run_resumes_to_the_same_bytes(tmp_path, runs_dir):
    assert_stopped_and_resumed_as_alone(load_config(pets_config(tmp_path)), runs_dir, 2, 2)
