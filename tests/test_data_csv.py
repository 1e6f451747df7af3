"""dataset = "csv": a table with a header row, its columns as inputs and target, missing cells,
the path beside the config, data.task, and a CSV run through fit -> eval -> predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mlptrain.cli import app
from mlptrain.config import DataConfig, load_config, parse_config
from mlptrain.data import load_dataset
from mlptrain.data.csv import encode_table, fit_encoding, read_table
from mlptrain.data.labels import decide_task
from mlptrain.errors import ConfigError, DataError
from mlptrain.experiment import plan
from mlptrain.seeding import streams

from conftest import CONFIGS, ROOT

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line(text: str) -> str:
    return " ".join(text.replace("│", " ").split())


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def load(path: Path, **keys):
    """load_dataset of the table at `path` with [data] keys; every row in train or test; the
    columns as encoded (standardize off unless asked: these tests read the encoding)."""
    keys.setdefault("standardize", False)
    cfg = DataConfig(dataset="csv", path=str(path), val_fraction=0.0, **keys)
    return load_dataset(cfg, streams(0))


def test_a_tables_inputs_are_standardized_by_default_by_the_training_rows(tmp_path):
    rows = "\n".join(f"{i * 1000.0},{(i * 7) % 5},{'ab'[i % 2]}" for i in range(40))
    path = write(tmp_path / "t.csv", "big,small,label\n" + rows + "\n")
    raw, scaled = load(path), load(path, standardize=True)
    mean, std = raw.X_train.mean(axis=0), raw.X_train.std(axis=0)
    np.testing.assert_allclose(scaled.X_test, (raw.X_test - mean) / std, rtol=1e-12,
                               atol=1e-12)
    assert scaled.scaler is not None and raw.scaler is None


def fit_table(config: Path, table: str, runs_dir: Path, lr: float, epochs: int,
              batch_size: int) -> Path:
    """`mlptrain fit` of a config (written at `config`) training a small network on the CSV
    `table` beside it; the run's folder (the only one in runs_dir)."""
    write(config, f'[data]\ndataset = "csv"\npath = "{table}"\n[model]\nhidden = 8\n'
          f'[optimizer]\nname = "adam"\nlr = {lr}\n[train]\nepochs = {epochs}\n'
          f'batch_size = {batch_size}\n[report]\nplots = false\n')
    result = run("fit", config)
    assert result.exit_code == 0, result.output
    (path,) = runs_dir.iterdir()
    return path


def all_rows(d, key: int = 0):
    """X and y of every split, the rows sorted by input `key` (the file's order here)."""
    X = np.concatenate([d.X_train, d.X_val, d.X_test])
    y = np.concatenate([d.y_train, d.y_val, d.y_test])
    order = np.argsort(X[:, key], kind="stable")
    return X[order], y[order]


PETS = """weight, height ,colour,kind
1.5,10,red,dog
2.5,20,blue,cat
3.5,30,red,eel
4.5,40,green,cat
5.5,50,blue,dog
6.5,60,red,cat
"""


def test_header_names_columns_target_is_last_and_text_columns_are_one_hot(tmp_path):
    d = load(write(tmp_path / "pets.csv", PETS), test_fraction=0.5)
    assert d.name == "csv" and d.task == "classification"
    assert d.class_names == ["cat", "dog", "eel"] and d.n_classes == 3
    X, y = all_rows(d)
    # weight, height, then colour one-hot over its sorted vocabulary blue, green, red
    np.testing.assert_allclose(X[0], [1.5, 10, 0, 0, 1])
    np.testing.assert_allclose(X[3], [4.5, 40, 0, 1, 0])
    np.testing.assert_array_equal(y, [1, 0, 2, 0, 1, 0])
    assert d.encoding["categorical"] == {"colour": ["blue", "green", "red"]}
    assert d.encoding["features"] == ["weight", "height", "colour"]  # names stripped
    assert d.source == str(tmp_path / "pets.csv") and d.checksums["pets.csv"]


def test_named_target_features_and_categorical_and_a_delimiter(tmp_path):
    path = write(tmp_path / "semi.csv", PETS.replace(",", ";"))
    d = load(path, delimiter=";", target="colour", features=["height", "weight"],
             categorical=["height"], test_fraction=0.5)
    assert d.class_names == ["blue", "green", "red"]
    X, y = all_rows(d, key=-1)
    assert X.shape == (6, 7)  # height one-hot (6 distinct texts), then weight
    assert d.encoding["categorical"]["height"] == ["10", "20", "30", "40", "50", "60"]
    np.testing.assert_allclose(X[:, -1], [1.5, 2.5, 3.5, 4.5, 5.5, 6.5])
    np.testing.assert_array_equal(X[:, :6], np.eye(6)[[0, 1, 2, 3, 4, 5]])
    np.testing.assert_array_equal(y, [2, 0, 2, 1, 0, 2])


def test_a_column_the_config_names_must_exist_and_the_error_lists_the_header(tmp_path):
    path = write(tmp_path / "pets.csv", PETS)
    with pytest.raises(ConfigError, match=r"target.*no column 'species'.*'weight', 'height', "
                       r"'colour', 'kind'"):
        load(path, target="species")
    with pytest.raises(ConfigError, match=r"features.*no column 'mass'"):
        load(path, features=["weight", "mass"])
    with pytest.raises(ConfigError, match=r"categorical: 'kind' is not one of the feature"):
        load(path, categorical=["kind"])


def test_a_row_with_another_cell_count_names_its_line(tmp_path):
    path = write(tmp_path / "short.csv", PETS.replace("3.5,30,red,eel", "3.5,30,eel"))
    with pytest.raises(DataError, match=r"short.csv, line 4: 3 cells, but the header names 4"):
        load(path)


# -- missing cells ---------------------------------------------------------------------------------

GAPS = """x,y,label
1,10,a
2,,b
3,30,a
NA,40,b

5,NaN,a
6,60,b
7,70,a
8,80,b
"""


def test_a_missing_cell_is_an_error_naming_its_line_and_column(tmp_path):
    path = write(tmp_path / "gaps.csv", GAPS)
    with pytest.raises(DataError) as caught:
        load(path)
    message = str(caught.value)
    assert "gaps.csv, line 3, column 'y': missing value" in message  # the first one
    assert 'missing = "mean"' in message and '"drop"' in message


def test_missing_mean_fills_each_numeric_column_with_its_training_rows_mean(tmp_path):
    d = load(write(tmp_path / "gaps.csv", GAPS), missing="mean", test_fraction=0.25)
    X, _ = all_rows(d)
    assert X.shape == (8, 2) and not np.isnan(X).any()
    fill = d.encoding["fill"]
    # the means of the rows the run trains on (a filled cell holds the mean, which leaves the
    # mean as it was), never of the test rows: the whole file's would differ here
    np.testing.assert_allclose([fill["x"], fill["y"]], d.X_train.mean(axis=0), rtol=1e-12)
    assert fill["x"] != pytest.approx(np.mean([1, 2, 3, 5, 6, 7, 8]))
    filled = {row[0]: row[1] for row in X}  # the file's gaps: x on line 5, y on lines 3 and 6
    assert filled[2.0] == pytest.approx(fill["y"]) and filled[5.0] == pytest.approx(fill["y"])
    assert filled[fill["x"]] == pytest.approx(40.0)


def test_missing_mean_cannot_fill_the_target(tmp_path):
    path = write(tmp_path / "gaps.csv", GAPS.replace("7,70,a", "7,70,"))
    with pytest.raises(DataError, match=r"line 9, column 'label'.*target or categorical"):
        load(path, missing="mean")


def test_missing_drop_drops_the_rows_and_says_how_many(tmp_path):
    d = load(write(tmp_path / "gaps.csv", GAPS), missing="drop", test_fraction=0.25)
    X, y = all_rows(d)
    np.testing.assert_allclose(X[:, 0], [1, 3, 6, 7, 8])
    assert "dropped 3 row(s) with missing values (lines 3, 5, 7)" in d.notes


# -- where the file is -----------------------------------------------------------------------------


def test_a_relative_path_is_found_beside_the_config_before_the_working_directory(
        tmp_path, monkeypatch):
    beside, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    beside.mkdir(), elsewhere.mkdir()
    write(beside / "pets.csv", PETS)
    write(elsewhere / "pets.csv", PETS.replace("1.5,10", "9.5,10"))  # another table
    config = write(beside / "pets.toml", '[data]\ndataset = "csv"\npath = "pets.csv"\n'
                   "test_fraction = 0.5\n[model]\nhidden = 4\n")
    monkeypatch.chdir(elsewhere)
    shown = plan(load_config(config))
    assert shown.source == str(beside / "pets.csv")  # absolute, beside the config
    assert shown.task == "classification" and shown.classes == ["cat", "dog", "eel"]
    # without the file beside the config, the working directory's is read
    (beside / "pets.csv").unlink()
    assert plan(load_config(config)).source == str(elsewhere / "pets.csv")
    (elsewhere / "pets.csv").unlink()
    with pytest.raises(DataError, match=rf"'pets.csv' does not exist: looked for it in "
                       rf"{beside} and {elsewhere}"):
        plan(load_config(config))


# -- data.task -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("values", "task"), [
    (np.array(["a", "b", "a"]), "classification"),  # names
    (np.array([True, False, True]), "classification"),  # booleans
    (np.array([0.5, 1.0, 2.25, 3.0]), "regression"),  # numbers not all whole
    (np.arange(100) % 3, "classification"),  # 3 values, 33 rows each
    (np.arange(100.0) % 3, "classification"),  # whole floats count as whole
])
def test_task_auto_decides_from_the_values(values, task):
    assert decide_task(values, "auto", "y") == task


def test_task_auto_refuses_many_whole_numbers_and_a_set_task_is_kept():
    years = np.arange(1950, 2050)  # 100 distinct whole numbers in 100 rows
    with pytest.raises(ConfigError, match=r'100 distinct whole numbers.*task = '
                                          r'"classification" or task = "regression"'):
        decide_task(years, "auto", "column 'year'")
    few_rows = np.array([0, 1, 2, 0, 1, 2])  # 3 values, 2 rows each: fewer than 5 per value
    with pytest.raises(ConfigError, match="may be class labels or quantities"):
        decide_task(few_rows, "auto", "y")
    assert decide_task(years, "regression", "y") == "regression"
    assert decide_task(few_rows, "classification", "y") == "classification"


def test_a_target_with_more_classes_than_the_rows_can_teach_is_refused(tmp_path):
    rows = "".join(f"{i},name{i}\n" for i in range(20))  # every row its own class
    path = write(tmp_path / "ids.csv", "x,who\n" + rows)
    with pytest.raises(ConfigError, match=r"20 classes for 20 rows.*task = \"regression\""):
        load(path, task="classification")


def test_a_regression_target_loads_as_values_and_trains(tmp_path, runs_dir):
    rng = np.random.default_rng(0)
    x = rng.random(40)
    path = write(tmp_path / "line.csv", "x,price\n" + "".join(
        f"{a!r},{2 * a + 0.5!r}\n" for a in x.tolist()))
    d = load(path)
    assert d.task == "regression" and d.n_classes == 1 and d.class_names is None
    assert d.y_train.dtype == np.float64
    np.testing.assert_allclose(d.y_train, 2 * d.X_train[:, 0] + 0.5)
    path = fit_table(tmp_path / "line.toml", "line.csv", runs_dir, lr=0.01, epochs=60,
                     batch_size=8)
    summary = json.loads((path / "summary.json").read_text())
    assert summary["model"]["loss"] == "mse"  # auto, for a real-valued target
    assert summary["final"]["test_r2"] > 0.9 and summary["final"]["test_rmse"] < 0.2


# -- a CSV run, through the CLI --------------------------------------------------------------------


def pets(n: int, seed: int, colours=("red", "green", "blue")) -> str:
    """n rows: two numbers and a colour that tell three kinds of pet apart."""
    rng = np.random.default_rng(seed)
    kinds = rng.integers(0, 3, n)
    centres = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]])
    X = centres[kinds] + rng.normal(0, 0.4, (n, 2))
    names = np.array(["cat", "dog", "eel"])
    return "weight,height,colour,kind\n" + "".join(
        f"{a:.4f},{b:.4f},{colours[k]},{names[k]}\n" for (a, b), k in zip(X, kinds))


@pytest.fixture
def csv_run(tmp_path, runs_dir):
    """A completed run trained on pets.csv (beside its config), and its folder."""
    project = tmp_path / "project"
    project.mkdir()
    write(project / "pets.csv", pets(150, 0))
    return fit_table(project / "pets.toml", "pets.csv", runs_dir, lr=0.05, epochs=20,
                     batch_size=16), project


def test_fit_records_the_table_and_eval_and_predict_speak_its_class_names(
        csv_run, tmp_path, monkeypatch):
    path, project = csv_run
    summary = json.loads((path / "summary.json").read_text())
    dataset = summary["dataset"]
    assert dataset["task"] == "classification"
    assert dataset["class_names"] == ["cat", "dog", "eel"]
    assert dataset["source"] == str(project / "pets.csv")
    assert dataset["encoding"]["categorical"] == {"colour": ["blue", "green", "red"]}
    assert any(note.startswith("columns: target 'kind'; 3 features") for note in dataset["notes"])
    assert f'path = "{project / "pets.csv"}"' in (path / "config.toml").read_text()
    monkeypatch.chdir(tmp_path)  # the run finds its table from any folder
    own = json.loads(run("eval", path.name, "--json").stdout)
    assert own["accuracy"] == pytest.approx(summary["final"]["test_accuracy"], abs=1e-9)
    assert [r["name"] for r in own["classes"]["per_class"]] == ["cat", "dog", "eel"]
    # the whole table through --data: each split's right answers, added up
    whole = json.loads(run("eval", path.name, "--data", project / "pets.csv", "--json").stdout)
    n = dataset["samples"]
    right = sum(summary["final"][f"{s}_accuracy"] * n[s] for s in ("train", "val", "test"))
    assert whole["samples"] == sum(n.values()) == 150
    assert whole["accuracy"] * 150 == pytest.approx(right, abs=0.5)
    shown = run("eval", path.name)
    assert shown.exit_code == 0 and "eel" in shown.stdout
    # predict: a table of new rows, without the target column, read by column name
    new = write(tmp_path / "new.csv", "colour,height,weight\nred,0.1,0.2\ngreen,0.2,2.9\n")
    result = run("predict", path.name, new, "--json")
    assert result.exit_code == 0, result.output
    answers = json.loads(result.stdout)["predictions"]
    assert [a[0]["name"] for a in answers] == ["cat", "dog"]
    assert all(a[0]["name"] == ["cat", "dog", "eel"][a[0]["class"]] for a in answers)
    text = run("predict", path.name, new).stdout
    assert "sample 0: cat (" in text and "sample 1: dog (" in text


def test_a_category_the_run_never_saw_is_an_error_at_predict_and_eval(csv_run, tmp_path):
    path, _ = csv_run
    new = write(tmp_path / "new.csv", "weight,height,colour\n0.1,0.2,red\n0.3,0.1,purple\n")
    result = run("predict", path.name, new)
    assert result.exit_code == 1 and "Traceback" not in result.output
    message = one_line(result.stderr)
    assert "new.csv, line 3, column 'colour': category 'purple' was not in the training" \
        in message and "'blue', 'green', 'red'" in message
    labelled = write(tmp_path / "labelled.csv", "weight,height,colour,kind\n0.1,0.2,red,cow\n")
    result = run("eval", path.name, "--data", labelled)
    assert result.exit_code == 1 and "class 'cow' was not in the training" in \
        one_line(result.stderr)
    result = run("eval", path.name, "--data", new)  # no target column to score against
    assert result.exit_code == 1 and "has no column 'kind'" in one_line(result.stderr)


def test_dry_run_says_the_task_and_the_columns(tmp_path, runs_dir):
    write(tmp_path / "pets.csv", pets(60, 1))
    config = write(tmp_path / "pets.toml", '[data]\ndataset = "csv"\npath = "pets.csv"\n')
    result = run("fit", config, "--dry-run")
    assert result.exit_code == 0, result.output
    text = one_line(result.stdout)
    assert "task: classification, 3 classes (cat, dog, eel)" in text
    assert "columns: target 'kind'; 3 features ('weight', 'height', 'colour'); one-hot: " \
           "colour (3 values)" in text
    assert not runs_dir.exists()


def test_config_init_for_csv_is_a_working_starter(tmp_path, runs_dir):
    result = run("config", "init", "--dataset", "csv", "--out", tmp_path / "start.toml")
    assert result.exit_code == 0, result.output
    write(tmp_path / "my-data.csv", pets(80, 2))
    result = run("fit", tmp_path / "start.toml", "--set", "train.epochs=1", "--set",
                 "report.plots=false", "-q")
    assert result.exit_code == 0, result.output
    assert json.loads(next(runs_dir.iterdir()).joinpath("summary.json").read_text())[
        "dataset"]["class_names"] == ["cat", "dog", "eel"]


@pytest.mark.parametrize(("line", "message"), [
    ('categorical = "colour"', 'expected "auto" or a list of column names'),
    ('delimiter = ";;"', "expected the one character between"),
    ('missing = "zero"', "expected one of error, mean, drop"),
    ('task = "ranking"', "expected one of auto, classification, regression"),
    ('features = ["a", "b", "a"]', "names the column 'a' twice; list each column once"),
    ('categorical = ["a", "a"]', "names the column 'a' twice"),
])
def test_the_csv_keys_are_checked_at_the_config(line, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(f'[data]\ndataset = "csv"\npath = "x.csv"\n{line}\n')


def test_the_wine_config_trains_on_its_bundled_table(runs_dir):
    cfg = load_config(CONFIGS / "wine.toml")
    shown = plan(cfg)
    assert shown.source == str(ROOT / "data" / "tabular" / "wine.csv")
    assert shown.samples["train"] + shown.samples["val"] + shown.samples["test"] == 178
    assert shown.classes == ["class_0", "class_1", "class_2"]
    assert any("13 features" in note for note in shown.notes)


def test_encode_table_reads_columns_by_name_in_any_order(tmp_path):
    table = read_table(write(tmp_path / "pets.csv", PETS), ",")
    cfg = DataConfig(dataset="csv", path="pets.csv")
    encoding = fit_encoding(table, cfg)
    shuffled = read_table(write(tmp_path / "other.csv",
                                "colour,weight,height\nblue,7.5,70\n"), ",")
    X, rows, notes = encode_table(shuffled, encoding, labelled=False)
    np.testing.assert_allclose(X, [[7.5, 70, 1, 0, 0]])
    assert list(rows) == [0] and notes == []


def test_a_file_that_is_not_utf8_text_stops_with_one_line_naming_it(tmp_path):
    """The memory check reads the header before the loader does: both say what is wrong."""
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00a,b\n1,2\n")
    config = write(tmp_path / "c.toml", '[data]\ndataset = "csv"\npath = "bin.csv"\n')
    result = run("fit", config, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "bin.csv is not UTF-8 text" in one_line(result.output)


def test_a_table_too_small_to_hold_out_a_test_row_trains_draws_and_says_so(tmp_path):
    write(tmp_path / "two.csv", "a,b,y\n1,2,x\n3,4,z\n")
    config = write(tmp_path / "c.toml", '[data]\ndataset = "csv"\npath = "two.csv"\n'
                   'val_fraction = 0.0\n[train]\nepochs = 2\n')
    runs = tmp_path / "runs"
    fitted = run("fit", config, "--runs-dir", runs)
    assert fitted.exit_code == 0, fitted.output
    (path,) = [p for p in runs.iterdir() if p.is_dir()]
    figures = json.loads((path / "summary.json").read_text())["figures"]
    assert figures["files"] == ["curves.png"]  # the figures of test samples: none to draw
    scored = run("eval", "--runs-dir", runs)
    assert scored.exit_code == 1 and "empty test split (a table too small" in one_line(
        scored.output)
