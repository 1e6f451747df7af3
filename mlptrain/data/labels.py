"""What a user's target column is: classes or quantities (data.task), and how classes are named.

`auto` decides from the values: names (text) and booleans are classes; numbers that are not
all whole are quantities (regression); whole numbers are classes when there are few of them
(at most AUTO_MAX_CLASSES distinct values and at least ROWS_PER_CLASS rows per value on
average), and otherwise could be either (counts, years, ids, or many classes), so they are
refused with the sentence that sets data.task. Whole numbers stored as floats count as whole
(pandas writes integer columns with a gap as floats).
"""

from __future__ import annotations

import numpy as np

from mlptrain.errors import ConfigError, DataError

TASKS = ("auto", "classification", "regression")
AUTO_MAX_CLASSES = 50  # auto: more distinct whole numbers than this may be a quantity
ROWS_PER_CLASS = 5  # auto: fewer rows per distinct whole number than this may be one too
MAX_CLASSES = 1000  # a classification target with more classes is refused (a quantity?)


def decide_task(y: np.ndarray, task: str, where: str) -> str:
    """data.task for target values y (N,) of numbers, booleans or text: as set, or decided
    from the values (see the module's docstring). `where` names the target in a message."""
    if task != "auto":
        return task
    if y.dtype.kind in "bUSO":
        return "classification"
    if not np.array_equal(y, np.round(y)):  # finite: every loader checks its numbers
        return "regression"
    distinct = len(np.unique(y))
    if distinct <= max(2, min(AUTO_MAX_CLASSES, len(y) // ROWS_PER_CLASS)):
        return "classification"
    raise ConfigError(
        f"{where} holds {distinct} distinct whole numbers in {len(y)} rows: they may be class "
        "labels or quantities, and data.task = \"auto\" will not guess (it takes whole numbers "
        f"as classes when there are at most {AUTO_MAX_CLASSES} of them and at least "
        f"{ROWS_PER_CLASS} rows per value). Set [data] task = \"classification\" or task = "
        "\"regression\".")


def check_class_count(n_classes: int, n_rows: int, where: str) -> None:
    """ConfigError for more classes than the data can teach: above MAX_CLASSES, or fewer than
    two rows per class on average (a target that is a quantity, taken for classes)."""
    if n_classes > MAX_CLASSES or (n_classes > 2 and 2 * n_classes > n_rows):
        raise ConfigError(
            f"{where} has {n_classes:,} classes for {n_rows:,} rows: too many to learn as "
            f"classes (at most {MAX_CLASSES:,}, and at least 2 rows per class). If the target "
            "is a quantity, set [data] task = \"regression\".")


def check_two_classes(y: np.ndarray, names: list[str] | None, where: str) -> None:
    """DataError for class labels y (N,) (indices; `names`: theirs, where they have names) of
    one class alone: a classifier learns to tell classes apart, so it would score 100% by
    answering that class without learning anything (and its other output has no name)."""
    distinct = np.unique(y)
    if len(distinct) == 1:
        only = int(distinct[0])
        name = names[only] if names and only < len(names) else str(only)
        raise DataError(
            f"{where} holds one class ({name!r}) in all {len(y):,} rows: there is nothing to "
            "tell it apart from. A classifier needs rows of at least two classes; add rows of "
            "another class, or, if the column is a quantity, set [data] task = \"regression\".")


def classes_of(values: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Labels that are names, booleans or numbers a table spells, as classes 0..C-1 in sorted
    order (numbers by value), and each class's name."""
    distinct, index = np.unique(values, return_inverse=True)
    return index.reshape(-1).astype(np.int64), [label_name(v) for v in distinct.tolist()]


def label_name(value) -> str:
    """A class's name as a person writes it: 3 for 3.0."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
