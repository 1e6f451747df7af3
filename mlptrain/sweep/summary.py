"""The sweep summary: one row per trial, and the mean and standard deviation of each metric per
grid point, taken over the replicate axes (the seeds) among the trials that completed.

The standard deviation is the sample one (n - 1 in the denominator); with one trial it is None.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any

from mlptrain.sweep.grid import REPLICATE_AXES

METRICS = ("test_accuracy", "test_loss", "val_accuracy", "val_loss", "train_accuracy",
           "train_loss", "seconds")
# a regression's trials score RMSE, MAE and R^2 instead (experiment/training.py final_metrics); the
# first of each is its headline (the capacity figure's)
REGRESSION_METRICS = ("test_r2", "test_rmse", "test_mae", "test_loss", "val_rmse", "val_loss",
                      "train_rmse", "train_loss", "seconds")
TRIAL_COLUMNS = ("index", "name", "status", "run_id", "parameters", "epochs")


def sweep_metrics(records: list[dict[str, Any]]) -> tuple[str, ...]:
    """The metrics a sweep's tables hold: a regression's where its trials scored R^2 (the
    trials of a sweep share their data, so their task), else a classifier's."""
    regression = any("test_r2" in (r.get("final") or {}) for r in records)
    return REGRESSION_METRICS if regression else METRICS


def trial_rows(axes: list[str], records: list[dict[str, Any]],
               metrics: tuple[str, ...] = METRICS) -> list[dict[str, Any]]:
    """One flat row per trial: its coordinates, status, run id and final `metrics`."""
    rows = []
    for r in records:
        row = {key: r["point"][key] for key in axes}
        row.update({k: r.get(k) for k in TRIAL_COLUMNS})
        final = r.get("final") or {}
        row.update({m: final.get(m) for m in metrics if m != "seconds"})
        row["seconds"] = r.get("seconds")
        rows.append(row)
    return rows


def group_rows(axes: list[str], rows: list[dict[str, Any]],
               replicate: tuple[str, ...] = REPLICATE_AXES,
               metrics: tuple[str, ...] = METRICS) -> list[dict[str, Any]]:
    """Per grid point (the coordinates on the non-replicate axes, in grid order): n completed
    trials, and mean and std of every metric over them."""
    point_axes = [a for a in axes if a not in replicate]
    groups: dict[str, dict[str, Any]] = {}
    for row in rows:
        point = {a: row[a] for a in point_axes}
        group = groups.setdefault(repr(point), {"point": point, "rows": []})
        if row["status"] == "completed":
            group["rows"].append(row)
    out = []
    for group in groups.values():
        members = group["rows"]
        stats: dict[str, Any] = {"point": group["point"], "n": len(members),
                                 "parameters": members[0]["parameters"] if members else None,
                                 "mean": {}, "std": {}}
        for metric in metrics:
            values = [m[metric] for m in members if m[metric] is not None]
            stats["mean"][metric], stats["std"][metric] = mean_std(values)
        out.append(stats)
    return out


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """(mean, sample standard deviation); None where undefined (no values; one value's std)."""
    n = len(values)
    if n == 0:
        return None, None
    mean = sum(values) / n
    if n == 1:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def summary_csv(axes: list[str], rows: list[dict[str, Any]], groups: list[dict[str, Any]],
                metrics: tuple[str, ...] = METRICS) -> str:
    """One table: `row` = trial (one per trial), then mean and std (one each per grid point)."""
    columns = ["row", *axes, "n", *TRIAL_COLUMNS, *metrics]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({"row": "trial", "n": 1, **{k: _cell(v) for k, v in row.items()}})
    for g in groups:
        for kind in ("mean", "std"):
            cells = {"row": kind, "n": g["n"], "parameters": g["parameters"]}
            cells.update({k: _cell(v) for k, v in g["point"].items()})
            cells.update({m: _cell(v) for m, v in g[kind].items()})
            writer.writerow(cells)
    return out.getvalue()


def _cell(value: Any) -> Any:
    if isinstance(value, list):  # a layer list such as [256, 128]
        return " ".join(str(v) for v in value) or "[]"  # [] (no hidden layer) stays visible
    return "" if value is None else value
