"""Noisy XOR generator, user .npz datasets, and the seeded train/validation split."""

from __future__ import annotations

import json

import hashlib
from pathlib import Path

import numpy as np
import pytest

from mlptrain.data.npz import load_npz
from mlptrain.data.split import split_indices
from mlptrain.data.xor import XOR_TEST_SEED, make_xor, xor_test_set
from mlptrain.errors import DataError

# ---------------------------------------------------------------- XOR


def test_xor_shapes_and_dtypes():
    X, y = make_xor(50, 0.1, np.random.default_rng(0))
    assert X.shape == (50, 2)
    assert X.dtype == np.float64
    assert y.shape == (50,)
    assert y.dtype == np.int64


def test_xor_labels_without_noise():
    X, y = make_xor(200, 0.0, np.random.default_rng(1))
    assert set(np.unique(X)) <= {0.0, 1.0}
    np.testing.assert_array_equal(y, X[:, 0].astype(int) ^ X[:, 1].astype(int))
    assert set(np.unique(y)) == {0, 1}


def test_xor_noise_bounds():
    noise = 0.25
    X, y = make_xor(2000, noise, np.random.default_rng(2))
    bits = np.round(X)
    assert np.all(np.abs(X - bits) <= noise)
    np.testing.assert_array_equal(y, bits[:, 0].astype(int) ^ bits[:, 1].astype(int))
    assert np.abs(X - bits).max() > noise / 2  # the noise is actually applied


def test_xor_deterministic_per_seed():
    first = make_xor(30, 0.2, np.random.default_rng(7))
    again = make_xor(30, 0.2, np.random.default_rng(7))
    other = make_xor(30, 0.2, np.random.default_rng(8))
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_xor_test_set_is_fixed():
    X1, y1 = xor_test_set(40, 0.1)
    np.random.default_rng(123).random(10)  # unrelated draws must not matter
    X2, y2 = xor_test_set(40, 0.1)
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)
    X3, _ = make_xor(40, 0.1, np.random.default_rng(XOR_TEST_SEED))
    np.testing.assert_array_equal(X1, X3)


def test_xor_rejects_negative_arguments():
    with pytest.raises(ValueError):
        make_xor(-1, 0.1, np.random.default_rng(0))
    with pytest.raises(ValueError):
        make_xor(10, -0.1, np.random.default_rng(0))


# ---------------------------------------------------------------- npz


def save(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def assert_bad(path: Path, key: str) -> str:
    with pytest.raises(DataError) as caught:
        load_npz(path)
    message = str(caught.value)
    assert str(path) in message
    assert repr(key) in message
    return message


@pytest.fixture
def good_X() -> np.ndarray:
    return np.random.default_rng(0).random((6, 2, 3))


def test_npz_without_test_arrays(tmp_path, good_X):
    path = save(tmp_path / "d.npz", X=good_X, y=np.array([0, 1, 2, 0, 1, 2]))
    data = load_npz(path)
    assert data.X.shape == (6, 6)
    np.testing.assert_array_equal(data.X, good_X.reshape(6, 6))
    assert data.y.dtype == np.int64
    assert data.X_test is None and data.y_test is None
    assert data.n_classes == 3
    assert data.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_npz_with_test_arrays_and_float_labels(tmp_path, good_X):
    path = save(
        tmp_path / "d.npz",
        X=good_X,
        y=np.array([0.0, 1.0, 1.0, 0.0, 1.0, 0.0]),
        X_test=np.ones((2, 6)),
        y_test=np.array([4, 1], dtype=np.uint8),
    )
    data = load_npz(path)
    assert data.y.dtype == np.int64
    assert data.X_test.shape == (2, 6)
    np.testing.assert_array_equal(data.y_test, [4, 1])
    assert data.n_classes == 5  # the largest label may appear only in the test set


def test_npz_single_class_still_two_classes(tmp_path):
    data = load_npz(save(tmp_path / "d.npz", X=np.zeros((3, 1)), y=np.zeros(3, dtype=int)))
    assert data.n_classes == 2


Y6 = np.array([0, 1, 0, 1, 0, 1])


@pytest.mark.parametrize(
    ("key", "arrays"),
    [
        ("X", {"y": Y6}),
        ("y", {"X": np.zeros((6, 2))}),
        ("X", {"X": np.zeros(6), "y": Y6}),
        ("X", {"X": np.zeros((0, 2)), "y": np.zeros(0, dtype=int)}),
        ("X", {"X": np.zeros((6, 0)), "y": Y6}),
        ("X", {"X": np.array([[0.0, np.nan]] * 6), "y": Y6}),
        ("X", {"X": np.array([[0.0, np.inf]] * 6), "y": Y6}),
        ("X", {"X": np.array([["a", "b"]] * 6), "y": Y6}),
        ("y", {"X": np.zeros((6, 2)), "y": np.array([0, 1, 0.5, 1, 0, 1])}),
        ("y", {"X": np.zeros((6, 2)), "y": np.array([0, 1, np.nan, 1, 0, 1])}),
        ("y", {"X": np.zeros((6, 2)), "y": np.array([0, 1, -1, 1, 0, 1])}),
        ("y", {"X": np.zeros((6, 2)), "y": Y6[:5]}),
        ("y", {"X": np.zeros((6, 2)), "y": Y6.reshape(6, 1)}),
        ("y", {"X": np.zeros((6, 2)), "y": Y6.astype("S1")}),  # bytes: names are unicode
        ("y_test", {"X": np.zeros((6, 2)), "y": Y6, "X_test": np.zeros((2, 2))}),
        ("X_test", {"X": np.zeros((6, 2)), "y": Y6, "y_test": np.zeros(2, dtype=int)}),
        (
            "X_test",
            {"X": np.zeros((6, 2)), "y": Y6, "X_test": np.zeros((2, 3)), "y_test": Y6[:2]},
        ),
        (
            "y_test",
            {"X": np.zeros((6, 2)), "y": Y6, "X_test": np.zeros((2, 2)), "y_test": Y6[:3]},
        ),
        (
            "y_test",
            {"X": np.zeros((6, 2)), "y": Y6, "X_test": np.zeros((2, 2)), "y_test": [-3, 1]},
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_npz_bad_array_names_key(tmp_path, key, arrays):
    assert_bad(save(tmp_path / "bad.npz", **arrays), key)


def test_npz_object_array_refused(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, X=np.array([[1, "a"]] * 2, dtype=object), y=np.array([0, 1]))
    assert_bad(path, "X")


def test_npz_missing_file(tmp_path):
    path = tmp_path / "nowhere.npz"
    with pytest.raises(DataError, match="does not exist") as caught:
        load_npz(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    "content",
    [b"just some text, not a zip", b"PK\x03\x04truncated zip", b""],
    ids=["text", "broken-zip", "empty"],
)
def test_npz_unreadable_file(tmp_path, content):
    path = tmp_path / "junk.npz"
    path.write_bytes(content)
    with pytest.raises(DataError, match="not a .npz") as caught:
        load_npz(path)
    assert str(path) in str(caught.value)


def test_npz_plain_npy_refused(tmp_path):
    path = tmp_path / "single.npy"
    np.save(path, np.zeros((3, 2)))
    with pytest.raises(DataError, match="single .npy array"):
        load_npz(path)


# ---------------------------------------------------------------- split


def labelled(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(n * 3, dtype=np.float64).reshape(n, 3), np.arange(n)


def split_off(X, y, fraction, rng):
    """(X_keep, y_keep, X_split, y_split) by split_indices' rows."""
    keep, split = split_indices(len(y), fraction, rng)
    return X[keep], y[keep], X[split], y[split]


@pytest.mark.parametrize(("n", "fraction", "n_split"), [(100, 0.1, 10), (7, 0.5, 4), (10, 1.0, 10)])
def test_split_sizes_disjoint_and_covering(n, fraction, n_split):
    X, y = labelled(n)
    X_keep, y_keep, X_split, y_split = split_off(X, y, fraction, np.random.default_rng(3))
    assert len(y_split) == len(X_split) == n_split
    assert len(y_keep) == len(X_keep) == n - n_split
    assert set(y_keep).isdisjoint(y_split)
    assert sorted(np.concatenate([y_keep, y_split])) == list(range(n))
    # Rows stay together: X row i belongs with label i.
    np.testing.assert_array_equal(X_keep, X[y_keep])
    np.testing.assert_array_equal(X_split, X[y_split])


def test_split_zero_fraction_gives_empty_part():
    X, y = labelled(5)
    X_keep, y_keep, X_split, y_split = split_off(X, y, 0.0, np.random.default_rng(0))
    assert X_split.shape == (0, 3)
    assert y_split.shape == (0,)
    assert y_split.dtype == y.dtype
    np.testing.assert_array_equal(X_keep, X)


def test_split_deterministic_per_seed():
    X, y = labelled(50)
    first = split_off(X, y, 0.2, np.random.default_rng(11))
    again = split_off(X, y, 0.2, np.random.default_rng(11))
    other = split_off(X, y, 0.2, np.random.default_rng(12))
    np.testing.assert_array_equal(first[3], again[3])
    assert not np.array_equal(first[3], other[3])


def test_split_rejects_bad_arguments():
    X, y = labelled(4)
    with pytest.raises(ValueError):
        split_off(X, y, 1.5, np.random.default_rng(0))


# ---------------------------------------------------------------- npz: labels, task, splits


def npz_cfg(path: Path, **keys):
    from mlptrain.config import DataConfig

    return DataConfig(dataset="npz", path=str(path), **keys)


def test_npz_one_hot_labels_are_taken_as_classes_with_a_note(tmp_path):
    y = np.array([0, 2, 1, 2, 0, 1])
    data = load_npz(save(tmp_path / "d.npz", X=np.zeros((6, 2)), y=np.eye(3)[y]))
    np.testing.assert_array_equal(data.y, y)
    assert data.n_classes == 3 and data.y.dtype == np.int64
    assert data.notes == ["array 'y' is one-hot (3 columns): took each row's 1 as its class"]
    two_ones = np.eye(3)[y] + np.eye(3)[(y + 1) % 3]  # not one-hot: still refused
    assert_bad(save(tmp_path / "bad.npz", X=np.zeros((6, 2)), y=two_ones), "y")


def test_npz_validation_arrays_are_the_validation_split(tmp_path):
    from mlptrain.data import load_dataset
    from mlptrain.seeding import streams

    rng = np.random.default_rng(0)
    X, X_val = rng.random((40, 3)), rng.random((7, 3))
    path = save(tmp_path / "d.npz", X=X, y=np.arange(40) % 2, X_val=X_val,
                y_val=np.arange(7) % 2)
    d = load_dataset(npz_cfg(path, val_fraction=0.5, test_fraction=0.25, standardize=False),
                     streams(0))
    np.testing.assert_array_equal(d.X_val, X_val)
    # standardized (the default), by the statistics of the training rows alone
    scaled = load_dataset(npz_cfg(path, val_fraction=0.5, test_fraction=0.25), streams(0))
    mean, std = d.X_train.mean(axis=0), d.X_train.std(axis=0)
    np.testing.assert_allclose(scaled.X_val, (X_val - mean) / std, rtol=1e-12, atol=1e-12)
    assert len(d.y_train) == 30 and len(d.y_test) == 10  # val_fraction carves nothing
    assert any("X_val and y_val (7 samples) instead of data.val_fraction" in n
               for n in d.notes)
    assert_bad(save(tmp_path / "half.npz", X=X, y=np.arange(40) % 2, X_val=X_val), "y_val")


def test_npz_task_auto_and_booleans(tmp_path):
    X = np.zeros((30, 2))
    values = load_npz(save(tmp_path / "v.npz", X=X, y=np.linspace(0, 1, 30)), "auto")
    assert values.task == "regression" and values.n_classes == 1
    assert values.y.dtype == np.float64
    flags = load_npz(save(tmp_path / "b.npz", X=X, y=np.arange(30) % 2 == 0), "auto")
    assert flags.task == "classification" and flags.class_names == ["False", "True"]
    np.testing.assert_array_equal(flags.y[:4], [1, 0, 1, 0])
    from mlptrain.errors import ConfigError

    with pytest.raises(ConfigError, match="30 distinct whole numbers"):
        load_npz(save(tmp_path / "ids.npz", X=X, y=np.arange(30)), "auto")


def test_npz_with_more_classes_than_rows_can_teach_is_refused(tmp_path):
    from mlptrain.data import load_dataset
    from mlptrain.errors import ConfigError
    from mlptrain.seeding import streams

    path = save(tmp_path / "ids.npz", X=np.zeros((30, 2)), y=np.arange(30))
    with pytest.raises(ConfigError, match=r"30 classes for 30 rows.*task = \"regression\""):
        load_dataset(npz_cfg(path, task="classification"), streams(0))


def test_npz_relative_path_is_read_beside_the_config(tmp_path, monkeypatch):
    from mlptrain.config import load_config
    from mlptrain.experiment import plan

    (tmp_path / "project").mkdir(), (tmp_path / "elsewhere").mkdir()
    save(tmp_path / "project" / "d.npz", X=np.random.default_rng(0).random((40, 2)),
         y=np.arange(40) % 2)
    config = tmp_path / "project" / "d.toml"
    config.write_text('[data]\ndataset = "npz"\npath = "d.npz"\n[model]\nhidden = 4\n')
    monkeypatch.chdir(tmp_path / "elsewhere")
    shown = plan(load_config(config))
    assert shown.source == str(tmp_path / "project" / "d.npz") and shown.task == "classification"


def test_npz_class_names_train_and_eval_data_maps_a_files_names_to_the_runs(tmp_path):
    """y saved as text (np.array(["setosa", ...])) is classes numbered in sorted order with
    their names kept; a file scored by eval --data numbers its own names in its own order, so
    they are mapped to the run's classes by name, and a name the run never saw is refused."""
    from typer.testing import CliRunner

    from mlptrain.cli import app

    rng = np.random.default_rng(3)
    names = np.array(["cat", "dog", "emu"])
    y = names[np.arange(90) % 3]
    X = rng.normal(size=(90, 2)) + 3 * (np.arange(90) % 3)[:, None]
    save(tmp_path / "named.npz", X=X, y=y)
    config = tmp_path / "c.toml"
    config.write_text('[data]\ndataset = "npz"\npath = "named.npz"\n[model]\nhidden = 8\n'
                      '[optimizer]\nname = "adam"\nlr = 0.01\n[train]\nepochs = 30\n'
                      '[report]\nplots = false\n')
    runs = tmp_path / "runs"
    invoke = lambda *a: CliRunner().invoke(app, [str(x) for x in a])  # noqa: E731
    assert invoke("fit", config, "--runs-dir", runs).exit_code == 0
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    assert json.loads((run / "summary.json").read_text())["dataset"]["class_names"] == \
        ["cat", "dog", "emu"]
    only = X[y == "emu"]  # this file's own class 0 is 'emu', the run's class 2
    save(tmp_path / "emus.npz", X=only, y=np.array(["emu"] * len(only)))
    scored = json.loads(invoke("eval", run, "--data", tmp_path / "emus.npz", "--json").stdout)
    assert scored["accuracy"] > 0.9
    save(tmp_path / "owls.npz", X=only[:3], y=np.array(["owl"] * 3))
    refused = invoke("eval", run, "--data", tmp_path / "owls.npz")
    assert refused.exit_code == 1 and "'owl', which run" in " ".join(refused.output.split())
