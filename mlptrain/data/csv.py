"""A user's own table: a CSV file whose header row names its columns ([data] dataset = "csv").

The target column (data.target; default the last) gives the labels, the feature columns
(data.features; default every other) the inputs: numbers as they are, categorical columns
(data.categorical; "auto": those whose values are mostly not numbers) one-hot, one input per
value of the column's vocabulary (its distinct values, sorted). A missing cell (empty, NA,
NaN) is an error naming its line and column unless data.missing fills it with the column's
mean or drops its row. How the columns became inputs, the encoding, is recorded in the run:
`eval --data` and `predict` encode a table of yours the same way (encode_table). Reading
the file is data/table.py's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlptrain.data.dataset import Dataset, Loading
from mlptrain.data.labels import (check_class_count, check_two_classes, classes_of,
                                   decide_task, label_name)
from mlptrain.data.paths import data_file, file_sha256
from mlptrain.data.split import hold_out_test
from mlptrain.data.table import (Table, column_count, missing_cell, number_like,
                                  read_table)
from mlptrain.data.weights import check_sample_weights, rows_of
from mlptrain.errors import ConfigError, DataError
from mlptrain.memory import byte_size, host_available

MISSING_POLICIES = ("error", "mean", "drop")  # data.missing: what a missing cell does
NEEDS = "the .csv file: a header row naming the columns, then one row per sample"
SHOWN = 8  # names listed in a note or a message before "..."
LISTED = 100  # a header's names listed where one was not found


def csv_dataset(cfg, at: Loading) -> Dataset:
    """The [data] section's table as a Dataset, test_fraction of it held out (seeded like the
    validation split)."""
    path = data_file(cfg, at.near, NEEDS)
    table = read_table(path, cfg.delimiter)
    encoding = fit_encoding(table, cfg)
    X, rows, notes = encode_table(table, encoding)
    y, task, names = _fit_target(table, rows, cfg.task, encoding)
    encoding.update(task=task, classes=names)
    n_classes = 1 if task == "regression" else max(2, len(names))
    if task == "classification":
        where = f"{path}: target column {encoding['target']!r}"
        check_two_classes(y, names, where)
        check_class_count(n_classes, len(y), where)
    w = _sample_weights(table, rows, cfg.sample_weight)
    keep, test = hold_out_test(len(y), cfg.test_fraction, at.split_rng, notes)
    X, y, X_test, y_test = X[keep], y[keep], X[test], y[test]
    _fill_means(table, encoding, X, X_test)
    return Dataset("csv", X, y, None, None, X_test, y_test, n_classes, (X.shape[1],), str(path),
                   {path.name: file_sha256(path)}, task=task, class_names=names,
                   notes=[describe(encoding), *notes], encoding=encoding,
                   w_train=rows_of(w, keep), w_test=rows_of(w, test),
                   weighting={"sample_weight": f"column {cfg.sample_weight!r}"} if w is not None
                   else {})


def csv_shape(cfg, near: Sequence[Path]) -> tuple[int, int, int]:
    """(lines after the header, columns but one, 2): a bound for the memory check, from the
    header and a count of the file's newlines."""
    path = data_file(cfg, near, NEEDS)
    columns = column_count(path, cfg.delimiter)
    try:
        with open(path, "rb") as f:
            lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except OSError as exc:
        raise DataError(f"Dataset file {path} cannot be read ({exc}).") from None
    return lines, max(columns - 1, 1), 2


# -- the encoding: from a training table, then applied to any table -----------------------------


def fit_encoding(table: Table, cfg) -> dict[str, Any]:
    """How the [data] section's columns of `table` become inputs: JSON-able, recorded in the
    run. The vocabulary of a categorical column is taken over every row of the file (a row is
    dropped only where the column is used); the mean that fills a numeric one, over the rows
    the run trains and validates on (_fill_means)."""
    target, weight = cfg.target or table.columns[-1], cfg.sample_weight
    features = list(cfg.features) or [c for c in table.columns if c not in (target, weight)]
    _check_columns(table, [target], "[data] target")
    _check_columns(table, features, "[data] features")
    if weight:
        _check_columns(table, [weight], "[data] sample_weight")
        if weight == target or weight in features:
            raise ConfigError(f"[data] sample_weight = {weight!r} is also the "
                              f"{'target' if weight == target else 'feature'} column; a column "
                              "of weights weighs the rows, it is not learned from.")
    if not features:
        raise ConfigError(f"{table.path} has no column but the target {target!r}; a table "
                          "needs feature columns to learn from (data.delimiter = "
                          f"{cfg.delimiter!r}: is that the file's separator?).")
    if target in features:
        raise ConfigError(f"[data] features lists the target column {target!r}; a column is a "
                          "feature or the target, not both.")
    categorical = [c for c in features if not _mostly_numbers(table, c)] \
        if cfg.categorical == "auto" else list(cfg.categorical)
    for name in categorical:
        if name not in features:
            raise ConfigError(f"[data] categorical: {name!r} is not one of the feature columns "
                              f"of {table.path} ({_names(features)}).")
    numeric = [c for c in features if c not in categorical]
    for column in numeric:
        _check_numbers(table, column)
    # missing = mean: the columns a mean fills, their means taken later from the rows that
    # are not held out for the test (_fill_means), so the test rows never shape the inputs
    fill = dict.fromkeys(numeric, math.nan) if cfg.missing == "mean" else {}
    return {"delimiter": cfg.delimiter, "target": target, "features": features,
            "categorical": {c: sorted({v for v in table.cells[c] if not missing_cell(v)})
                            for c in categorical},
            "missing": cfg.missing, "fill": fill}


def encode_table(table: Table, encoding: dict[str, Any], labelled: bool = True
                 ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """X (N, D) float64 of the table's rows as the encoding makes them, the rows kept (drop)
    and notes; the target column must be there when `labelled`."""
    features = encoding["features"]
    needed = [encoding["target"], *features] if labelled else features
    _check_columns(table, needed, "a column the run uses", DataError)
    rows, notes = _rows_kept(table, needed, encoding, every_row=not labelled)
    _check_width(table, len(rows), encoding)
    blocks = [_one_hot(table, rows, c, encoding["categorical"][c])
              if c in encoding["categorical"] else _numeric(table, rows, c, encoding["fill"])
              for c in features]
    return np.concatenate(blocks, axis=1), rows, notes


def table_inputs(path: Path, encoding: dict[str, Any], labelled: bool
                 ) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """A table of yours encoded as the run's training table was (eval --data, predict): X,
    the class indices of its target column when `labelled`, and notes."""
    if not encoding:
        raise DataError(f"{path} is a CSV table, but the run was not trained on one, so it "
                        "has no columns to read from it; give a .npz (or .npy) array of its "
                        "inputs.")
    table = read_table(path, encoding["delimiter"])
    X, rows, notes = encode_table(table, encoding, labelled)
    return X, _known_target(table, rows, encoding) if labelled else None, notes


def describe(encoding: dict[str, Any]) -> str:
    """The columns a run uses, in words (fit --dry-run, the run's notes)."""
    features, categorical = encoding["features"], encoding["categorical"]
    text = f"columns: target {encoding['target']!r}; {len(features)} features ({_names(features)})"
    if categorical:
        text += "; one-hot: " + ", ".join(f"{c} ({len(v)} values)"
                                          for c, v in categorical.items())
    return text


def input_names(encoding: dict[str, Any]) -> list[str]:
    """Each input's name, in X's column order: its column's, or `column=value` for one of a
    one-hot column's inputs."""
    categorical = encoding["categorical"]
    return [name for c in encoding["features"]
            for name in ([f"{c}={v}" for v in categorical[c]] if c in categorical else [c])]


def _check_width(table: Table, rows: int, encoding: dict[str, Any]) -> None:
    """DataError when the encoded table cannot fit the memory available, before it is made:
    a one-hot column of many values (an identifier, a free-text column) is an input per
    value, and 60,000 rows of 60,000 distinct names would take 27 GiB, twice over."""
    categorical = encoding["categorical"]
    width = sum(len(categorical.get(c, [None])) for c in encoding["features"])
    need, available = 2 * rows * width * 8, host_available()  # the blocks, then X
    if available is None or need <= available or not categorical:
        return
    widest = max(categorical, key=lambda c: len(categorical[c]))
    raise DataError(f"{table.path}: its {rows:,} rows encode to {width:,} inputs each "
                    f"({byte_size(need)}, more than the {byte_size(available)} of memory "
                    f"available): one-hot column {widest!r} alone has "
                    f"{len(categorical[widest]):,} distinct values, an input per value. Leave it "
                    "out of data.features (an identifier or free text teaches nothing about "
                    "other rows).")


def _check_columns(table: Table, names: list[str], key: str, error=ConfigError) -> None:
    for name in names:
        if name not in table.columns:
            raise error(f"{key}: {table.path} has no column {name!r}; its header names "
                        f"{_names(table.columns, shown=LISTED)}.")


def _mostly_numbers(table: Table, column: str) -> bool:
    """categorical = "auto": whether a column is numeric, its cells mostly numbers. A column of
    numbers with a few other cells ('inf', a typo, a stray unit) is a numeric column with bad
    cells, which _check_numbers names, not categories: one-hot, each of its numbers would
    become an input of its own."""
    cells = [c for c in table.cells[column] if not missing_cell(c)]
    return 2 * sum(map(number_like, cells)) > len(cells) or not cells


def _check_numbers(table: Table, column: str) -> None:
    for row, (n, cell) in enumerate(zip(table.numbers(column), table.cells[column])):
        if n is None and not missing_cell(cell):
            raise DataError(f"{table.place(row, column)}: {cell!r} is not a finite number, but "
                            "the column is numeric (not in data.categorical); fix the cell, or "
                            "list the column in data.categorical.")


def _fill_means(table: Table, encoding: dict[str, Any], X: np.ndarray,
                X_test: np.ndarray) -> None:
    """missing = mean: each filled column's missing cells (NaN in X and X_test) get the mean
    of its values in X, the rows not held out for the test, and the encoding records it (eval
    --data and predict fill with it too)."""
    start = 0
    for column in encoding["features"]:
        width = len(encoding["categorical"].get(column, [None]))
        if column in encoding["fill"]:
            present = X[:, start][~np.isnan(X[:, start])]
            if not present.size:
                raise DataError(f"{table.path}: column {column!r} has no values outside the "
                                "test rows to take a mean of; fill it in, or leave it out of "
                                "data.features.")
            mean = encoding["fill"][column] = float(present.mean())
            for part in (X, X_test):
                part[np.isnan(part[:, start]), start] = mean
        start += width


def _rows_kept(table: Table, columns: list[str], encoding: dict[str, Any],
               every_row: bool = False) -> tuple[np.ndarray, list[str]]:
    """The rows to use under data.missing (drop: those with no missing cell in `columns`).
    `every_row` (predict, which answers each row in order): none is dropped, as the answers
    after it would then belong to the rows below theirs."""
    policy, fill = encoding["missing"], encoding["fill"]
    gaps = [(row, c) for c in columns for row, cell in enumerate(table.cells[c])
            if missing_cell(cell) and not (policy == "mean" and c in fill)]
    if gaps and (policy != "drop" or every_row):
        row, column = min(gaps)
        cell = table.cells[column][row]
        raise DataError(f"{table.place(row, column)}: missing value "
                        f"({repr(cell) if cell else 'an empty cell'}); "
                        + _gap_hint(policy, every_row))
    dropped = sorted({row for row, _ in gaps})
    rows = np.setdiff1d(np.arange(len(table.lines)), dropped)
    if not len(rows):
        raise DataError(f"{table.path}: every row has a missing value (data.missing = \"drop\" "
                        "dropped them all).")
    notes = [f"dropped {len(dropped)} row(s) with missing values (lines "
             f"{_names([table.lines[r] for r in dropped], quote=False)})"] if dropped else []
    return rows, notes


def _gap_hint(policy: str, every_row: bool) -> str:
    """What to do about a missing cell that data.missing (`policy`) does not fill."""
    if every_row:  # the run's own setting cannot change, and no row may be dropped
        return ("fill it in: predict answers each row of the file, in order, so none is "
                "dropped" + (", and the run's means fill numeric feature columns only."
                             if policy == "mean" else "."))
    why = "cannot be filled with a mean: it is the target or categorical; " \
        if policy == "mean" else ""
    return (f"{why}fill it in, or set [data] missing = \"mean\" (numeric feature columns) or "
            "\"drop\".")


def _numeric(table: Table, rows: np.ndarray, column: str, fill: dict[str, float]) -> np.ndarray:
    values = table.numbers(column)
    out = np.empty((len(rows), 1))
    for i, row in enumerate(rows):
        if values[row] is None and not missing_cell(table.cells[column][row]):
            _check_numbers(table, column)  # names the cell
        out[i, 0] = fill.get(column, math.nan) if values[row] is None else values[row]
    return out


def _one_hot(table: Table, rows: np.ndarray, column: str, vocabulary: list[str]) -> np.ndarray:
    index = {value: i for i, value in enumerate(vocabulary)}
    out = np.zeros((len(rows), len(vocabulary)))
    for i, row in enumerate(rows):
        cell = table.cells[column][row]
        if cell not in index:
            raise DataError(f"{table.place(row, column)}: category {cell!r} was not in the "
                            f"training data; the run knows {_names(vocabulary)}. Use one of "
                            "those, or train on data that has it.")
        out[i, index[cell]] = 1.0
    return out


def _sample_weights(table: Table, rows: np.ndarray, column: str) -> np.ndarray | None:
    """The kept rows' weights from data.sample_weight's column (None: no column named)."""
    if not column:
        return None
    return check_sample_weights(table.numbers(column), rows, f"{table.path}, column {column!r}",
                                lambda row: table.place(row, column))


# -- the target -----------------------------------------------------------------------------------


def _target_values(table: Table, rows: np.ndarray, column: str) -> np.ndarray:
    """The target's cells as numbers (float64) when all are numbers, else as text."""
    numbers = table.numbers(column)
    if all(numbers[r] is not None for r in rows):
        return np.array([numbers[r] for r in rows], np.float64)
    return np.array([table.cells[column][r] for r in rows])


def _fit_target(table: Table, rows: np.ndarray, task: str, encoding: dict[str, Any]
                ) -> tuple[np.ndarray, str, list[str] | None]:
    """(y, task, class names) of the training table's target column (data.task decided)."""
    column = encoding["target"]
    _check_target_cells(table, rows, column, task)
    values = _target_values(table, rows, column)
    task = decide_task(values, task, f"{table.path}: target column {column!r}")
    if task == "classification":
        y, names = classes_of(values)
        return y, task, names
    if values.dtype.kind != "f":
        row = next(r for r in rows if table.numbers(column)[r] is None)
        raise DataError(f"{table.place(row, column)}: {table.cells[column][row]!r} is not a "
                        "number, but data.task = \"regression\" needs numbers to regress.")
    return values, task, None


def _check_target_cells(table: Table, rows: np.ndarray, column: str, task: str) -> None:
    """DataError for a target cell that would become a class of its own by mistake: one that
    spells a number but no finite one ('inf'), or, with task auto, text among cells that are
    mostly numbers (a typo in a column of class numbers or of values)."""
    cells, numbers = table.cells[column], table.numbers(column)
    typo = task == "auto" and 2 * sum(number_like(cells[r]) for r in rows) > len(rows)
    for row in rows:
        cell = cells[row]
        if numbers[row] is None and (number_like(cell) or typo):
            finite = sum(numbers[r] is not None for r in rows)
            raise DataError(
                f"{table.place(row, column)}: {cell!r} is not a finite number, but {finite} of "
                f"the target's {len(rows)} cells are; fix the cell" + (
                    "" if number_like(cell) else ", or set [data] task = \"classification\" to "
                    "take every cell as a class name") + ".")


def _known_target(table: Table, rows: np.ndarray, encoding: dict[str, Any]) -> np.ndarray:
    """The target column of a table of yours as the run's class indices, or, for a run that
    regresses it, as its values (float64)."""
    column, names = encoding["target"], encoding.get("classes")
    numbers = table.numbers(column)
    if encoding.get("task") == "regression":
        for row in rows:
            if numbers[row] is None:
                raise DataError(f"{table.place(row, column)}: {table.cells[column][row]!r} is "
                                f"not a number, but the run regresses column {column!r}.")
        return np.array([numbers[row] for row in rows], np.float64)
    index = {name: i for i, name in enumerate(names)}
    y = np.empty(len(rows), np.int64)
    for i, row in enumerate(rows):
        cell = table.cells[column][row]
        name = label_name(numbers[row]) if numbers[row] is not None else cell
        if name not in index:
            raise DataError(f"{table.place(row, column)}: class {cell!r} was not in the "
                            f"training data; the run knows {_names(names)}.")
        y[i] = index[name]
    return y


def _names(items: Sequence, quote: bool = True, shown: int = SHOWN) -> str:
    listed = [repr(i) if quote else str(i) for i in items[:shown]]
    return ", ".join(listed) + (f", ... ({len(items)} in all)" if len(items) > shown else "")
