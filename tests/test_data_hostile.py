"""A user's own data at its worst: each file here once trained silently wrong, crashed with a
traceback or blamed the wrong thing; now it stops with one paragraph naming the culprit (file,
line, column, array), exit code 1, and no run left behind."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mlptrain.cli import app
from mlptrain.config import DataConfig
from mlptrain.data import csv as csv_module
from mlptrain.data import load_dataset, outside_inputs
from mlptrain.data.mnist import load_mnist
from mlptrain.data.npz import load_npz
from mlptrain.errors import DataError
from mlptrain.seeding import streams

runner = CliRunner()


def one_line(text: str) -> str:
    return " ".join(text.replace("│", " ").split())


def load(path: Path, **keys):
    """load_dataset of the table or .npz at `path` (raw features: these tests read them)."""
    keys.setdefault("standardize", False)
    cfg = DataConfig(dataset=path.suffix[1:], path=str(path), val_fraction=0.0, **keys)
    return load_dataset(cfg, streams(0))


def table(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def numbers(n: int = 40) -> list[str]:
    """Rows `a,b,label` of numbers with two classes."""
    return [f"{i * 0.5},{(i * 7) % 5},{'xy'[i % 2]}" for i in range(n)]


def fit(tmp_path: Path, data: str, *more: str):
    """`mlptrain fit` of a two-epoch config with these [data] lines, in-process."""
    config = tmp_path / "c.toml"
    config.write_text(f'[data]\n{data}\n[train]\nepochs = 2\nbatch_size = 8\n'
                      '[report]\nplots = false\n' + "\n".join(more))
    return runner.invoke(app, ["fit", str(config), "--runs-dir", str(tmp_path / "runs")])


def refused(result, *phrases: str) -> str:
    """The one-paragraph error of a command that stopped as the tool explains failures."""
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    text = one_line(result.stderr)
    assert text.startswith("error:") and "Traceback" not in text and "Warning" not in text
    for phrase in phrases:
        assert phrase in text, text
    return text


# -- a numeric column's bad cells are named, never one-hot --------------------------------------


@pytest.mark.parametrize("cell", ["x1", "inf", "-Infinity", "1,5", "\x00"])
def test_a_bad_cell_in_a_numeric_column_is_named_not_one_hot(tmp_path, cell):
    """One stray cell used to make `auto` take the column for categories: 41 inputs, one per
    number, and a run that trained on them without a word."""
    rows = numbers()
    rows[7] = f'"{cell}",1,x'
    with pytest.raises(DataError, match=r"line 9, column 'a': .* is not a finite number"):
        load(table(tmp_path / "t.csv", "a,b,label", rows))


def test_a_column_mostly_of_text_is_still_categories(tmp_path):
    sizes = ["S", "M", "L", "10"]
    path = table(tmp_path / "t.csv", "size,b,label",
                 [f"{sizes[i % 4]},{i},{'xy'[i % 2]}" for i in range(40)])
    assert load(path).encoding["categorical"] == {"size": ["10", "L", "M", "S"]}


@pytest.mark.parametrize("cell, task, phrase", [
    ("inf", "auto", "'inf' is not a finite number, but 39 of the target's 40 cells are; fix"),
    ("inf", "classification", "'inf' is not a finite number"),
    ("l", "auto", 'or set [data] task = "classification" to take every cell as a class name'),
])
def test_a_target_cell_that_would_become_a_class_of_its_own_is_named(tmp_path, cell, task,
                                                                     phrase):
    rows = [f"{i},{i % 2}" for i in range(40)]
    rows[3] = f"3,{cell}"
    with pytest.raises(DataError, match="line 5, column 'label'") as error:
        load(table(tmp_path / "t.csv", "a,label", rows), task=task)
    assert phrase in str(error.value)


def test_text_among_class_numbers_is_a_class_when_the_task_says_so(tmp_path):
    rows = [f"{i},{i % 2}" for i in range(40)]
    rows[3] = "3,unknown"
    assert load(table(tmp_path / "t.csv", "a,label", rows),
                task="classification").class_names == ["0", "1", "unknown"]


# -- the header -----------------------------------------------------------------------------------


@pytest.mark.parametrize("header, rows, column", [
    (",a,b,label", [f"{i},{r}" for i, r in enumerate(numbers())], 1),  # pandas' index
    ("a,b,label,", [f"{r}," for r in numbers()], 4),  # a trailing delimiter on every line
])
def test_an_unnamed_column_is_refused_not_learned_from(tmp_path, header, rows, column):
    path = table(tmp_path / "t.csv", header, rows)
    with pytest.raises(DataError, match=f"column {column} of the header has no name"):
        load(path)


def test_a_file_of_blank_lines_is_empty(tmp_path):
    (tmp_path / "t.csv").write_text("  \n\t\n")
    with pytest.raises(DataError, match="is empty; expected a header row"):
        load(tmp_path / "t.csv")


def test_predict_never_drops_a_row_so_each_answer_stays_with_its_row(tmp_path):
    """A run that drops rows with gaps (missing = "drop") dropped them from predict's input
    too: 3 rows got 2 answers, the second one labelled "sample 1" but the third row's."""
    rows = numbers()
    rows[5] = "2.5,,y"
    table(tmp_path / "t.csv", "a,b,label", rows)
    assert fit(tmp_path, 'dataset = "csv"\npath = "t.csv"\nmissing = "drop"').exit_code == 0
    table(tmp_path / "mine.csv", "a,b", ["1,1", "-1,", "-1,1"])
    refused(runner.invoke(app, ["predict", "latest", str(tmp_path / "mine.csv"), "--runs-dir",
                                str(tmp_path / "runs")]),
            "mine.csv, line 3, column 'b': missing value (an empty cell); fill it in: predict "
            "answers each row of the file, in order, so none is dropped.")


# -- classes --------------------------------------------------------------------------------------


def test_a_table_of_one_class_is_refused_and_leaves_no_run(tmp_path):
    """It trained to 100%, then eval and predict crashed (IndexError) naming its other class."""
    table(tmp_path / "t.csv", "a,label", [f"{i},cat" for i in range(30)])
    refused(fit(tmp_path, 'dataset = "csv"\npath = "t.csv"'),
            "target column 'label' holds one class ('cat') in all 30 rows")
    assert not any((tmp_path / "runs").glob("*/summary.json"))


@pytest.mark.parametrize("y", [np.zeros(30, np.int64), np.array(["cat"] * 30)])
def test_an_npz_of_one_class_is_refused(tmp_path, y):
    np.savez(tmp_path / "d.npz", X=np.arange(60.0).reshape(30, 2), y=y)
    refused(fit(tmp_path, 'dataset = "npz"\npath = "d.npz"'), "d.npz: array 'y' holds one class")


def test_a_class_only_the_test_split_holds_is_noted(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.arange(40.0).reshape(20, 2), y=np.array(["a", "b"] * 10),
             X_test=np.zeros((3, 2)), y_test=np.array(["a", "b", "zz"]))
    notes = load(tmp_path / "d.npz").notes
    assert any("no training rows for 1 class(es)" in n and "'zz'" in n for n in notes), notes


# -- sizes and scales -----------------------------------------------------------------------------


def test_a_one_hot_too_wide_for_memory_is_refused_before_it_is_made(tmp_path, monkeypatch):
    """An identifier column taken for categories: 60,000 rows of 60,000 names ended in
    numpy's _ArrayMemoryError (27 GiB) with a traceback."""
    path = table(tmp_path / "t.csv", "id,a,label", [f"u{i},{i},{'xy'[i % 2]}" for i in range(40)])
    monkeypatch.setattr(csv_module, "host_available", lambda: 10_000)
    with pytest.raises(DataError, match=r"40 rows encode to 41 inputs .* one-hot column 'id' "
                                        r"alone has 40 distinct values"):
        load(path)


def regression_table(path: Path, scale: float) -> Path:
    return table(path, "a,y", [f"{i},{(i % 7) * scale!r}" for i in range(40)])


def test_a_target_beyond_the_network_dtype_is_refused_at_fit(tmp_path):
    """Standardized, 1e39 trained in float32 and reported an RMSE of 2.5e38 and R^2 NaN."""
    regression_table(tmp_path / "t.csv", 1e39)
    refused(fit(tmp_path, 'dataset = "csv"\npath = "t.csv"\ntask = "regression"'),
            "sample 1 holds 1e+39 (its target), beyond what the run's float32 network")


def test_eval_data_refuses_a_target_beyond_the_network_dtype(tmp_path):
    """It printed numpy's overflow warnings and a loss and RMSE of inf."""
    regression_table(tmp_path / "t.csv", 1.0)
    assert fit(tmp_path, 'dataset = "csv"\npath = "t.csv"\ntask = "regression"').exit_code == 0
    table(tmp_path / "mine.csv", "a,y", ["1,1e300"])
    refused(runner.invoke(app, ["eval", "latest", "--data", str(tmp_path / "mine.csv"),
                                "--runs-dir", str(tmp_path / "runs")]),
            "mine.csv: sample 0 holds 1e+300 (its target)")


def test_a_feature_left_unscaled_is_said_before_it_trains_silently_wrong(tmp_path):
    """standardize = false and a feature of 1e7: the first step killed every ReLU, and the run
    completed answering one class, with no word of why."""
    table(tmp_path / "t.csv", "a,b,y", [f"{i * 1e6},{i % 3},{i % 2}" for i in range(40)])
    result = fit(tmp_path, 'dataset = "csv"\npath = "t.csv"\nstandardize = false')
    assert "'a' reaches 3.9e+07 and the features are not standardized, so the loss may blow " \
           "up; set [data] standardize = true" in one_line(result.stdout + result.stderr)


def test_a_run_diverged_by_its_unscaled_target_names_it_not_only_the_rate(tmp_path):
    table(tmp_path / "t.csv", "a,y", [f"{i % 3},{i * 1e6}" for i in range(40)])
    refused(fit(tmp_path, 'dataset = "csv"\npath = "t.csv"\ntask = "regression"\n'
                          "standardize_target = false"),
            "the training loss became", "The data's own scale is the likelier cause: the target "
            "reaches 3.9e+07 and is not standardized", "set [data] standardize_target = true")


# -- npz, MNIST -----------------------------------------------------------------------------------


def test_an_npz_without_x_lists_the_arrays_it_holds(tmp_path):
    np.savez(tmp_path / "d.npz", features=np.zeros((3, 2)), labels=np.zeros(3))
    with pytest.raises(DataError, match=r"has no array 'X' \(found: \['features', 'labels'\]\)"):
        load_npz(tmp_path / "d.npz")


def test_an_mnist_path_naming_a_file_says_so(tmp_path):
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(DataError, match="is a file, not a folder; give the folder that holds"):
        load_mnist(tmp_path / "train-images-idx3-ubyte.gz", download=False)


@pytest.mark.parametrize("value, ok", [(1e30, False), (-5.0, False), (255.4, True),
                                       (-0.02, True)])
def test_an_mnist_runs_inputs_must_be_pixels(value, ok):
    """1e30 "pixels" were scaled by 255 and answered with 100% confidence."""
    X = np.full((1, 784), 0.5)
    X[0, 3] = value
    cfg = DataConfig(dataset="mnist")
    if ok:
        outside_inputs(X, cfg, "mnist", np.float32, "input x.npy")
        return
    with pytest.raises(DataError, match=re.escape(f"input x.npy: sample 0 holds {value:g} "
                                                  "(pixel 3), which no image holds")):
        outside_inputs(X, cfg, "mnist", np.float32, "input x.npy")


# -- a run's data file, changed after the run ----------------------------------------------------


@pytest.mark.parametrize("standardize", ["true", "false"])
def test_a_data_file_that_gained_a_column_is_named_not_broadcast(tmp_path, standardize):
    """eval, plot and export (standardized) crashed in numpy's broadcasting, and fit --resume
    --allow-data-change too (all read the file again through prepare_saved); unstandardized,
    the error blamed the run's weights.npz."""
    table(tmp_path / "t.csv", "a,b,label", numbers())
    runs = str(tmp_path / "runs")
    assert fit(tmp_path, f'dataset = "csv"\npath = "t.csv"\nstandardize = {standardize}'
               ).exit_code == 0
    table(tmp_path / "t.csv", "a,b,c,label", [r.replace(",", ",7,", 1) for r in numbers()])
    refused(runner.invoke(app, ["eval", "latest", "--runs-dir", runs]),
            "t.csv now gives 3 inputs per sample, but the run was trained on 2: the file changed")


def test_eval_says_when_a_run_s_data_changed_since_it_read_it(tmp_path):
    table(tmp_path / "t.csv", "a,b,label", numbers())
    assert fit(tmp_path, 'dataset = "csv"\npath = "t.csv"').exit_code == 0
    table(tmp_path / "t.csv", "a,b,label", [r.replace(".5,", ".25,") for r in numbers()])
    result = runner.invoke(app, ["eval", "latest", "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert "the data changed since the run read it (t.csv: another SHA-256)" in one_line(
        result.stderr)
