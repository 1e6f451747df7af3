"""Runs you can query: one record per run directory, filters, and config differences.

Everything here reads the files a run wrote (summary.json, metrics.jsonl, config.toml); a run
whose files are damaged is still listed, with status `damaged`, rather than hiding the others.
"""

from __future__ import annotations

import fnmatch
import os
import platform
import sys
from typing import Any

from mlptrain.errors import MlptrainError, RunStoreError
from mlptrain.runs import Run, RunStore

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

STATUSES = ("running", "completed", "interrupted", "failed", "stale", "damaged")


def run_record(run: Run) -> dict[str, Any]:
    """What `mlptrain runs` shows of one run, read from its files."""
    record: dict[str, Any] = {"id": run.run_id, "path": str(run.path)}
    try:
        summary, metrics = run.read_summary(), _metrics_or_none(run)
    except MlptrainError as exc:
        return {**record, "name": None, "dataset": None, "model": None, "status": "damaged",
                "best_val_accuracy": None, "test_accuracy": None, "seconds": None,
                "epochs": None, "started": None, "error": str(exc)}
    model = summary.get("model") or {}
    final = summary.get("final") or {}
    val = [m["val_accuracy"] for m in metrics or [] if m.get("val_accuracy") is not None]
    record.update(
        name=summary.get("name"), dataset=(summary.get("dataset") or {}).get("name"),
        model="-".join(map(str, model.get("sizes", []))) + f" {model.get('activation', '?')}",
        status=_status(summary), best_val_accuracy=max(val) if val else None,
        test_accuracy=final.get("test_accuracy"),
        seconds=(summary.get("timing") or {}).get("wall_seconds"),
        epochs=summary.get("epochs_completed"), started=summary.get("started"))
    return record


def _metrics_or_none(run: Run):
    try:
        return run.read_metrics()
    except RunStoreError:  # no epoch finished yet
        return None


def _status(summary: dict) -> str:
    """The recorded status, except a `running` run whose process is gone is `stale` (killed,
    or the machine went down): it can be resumed."""
    status = summary.get("status", "damaged")
    pid, host = summary.get("pid"), summary.get("host")
    if status == "running" and pid and host == platform.node() and not _alive(pid):
        return "stale"
    return status


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def list_runs(store: RunStore, status: str | None = None, name: str | None = None,
              dataset: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Records of the store's runs, newest first, filtered; `name` may be a glob (mnist*)."""
    records = [run_record(run) for run in sorted(store.runs(), key=_creation, reverse=True)]
    if status:
        records = [r for r in records if r["status"] == status]
    if name:
        pattern = name if any(c in name for c in "*?[") else f"*{name}*"
        records = [r for r in records if r["name"] and fnmatch.fnmatchcase(r["name"], pattern)]
    if dataset:
        records = [r for r in records if r["dataset"] == dataset]
    return records[:limit] if limit else records


def _creation(run: Run) -> tuple[str, int]:
    """Ids start with the second a run was created; config.toml's time orders one second."""
    try:
        return run.run_id[:15], (run.path / "config.toml").stat().st_mtime_ns
    except OSError:
        return run.run_id[:15], 0


def flat_config(run: Run) -> dict[str, Any]:
    """The run's resolved config as {"section.key": value}."""
    try:
        raw = tomllib.loads((run.path / "config.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RunStoreError(f"{run.path / 'config.toml'} cannot be read ({exc}).") from None
    flat = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def config_table(runs: list[Run]) -> list[tuple[str, list[Any], bool]]:
    """(key, value per run, differs) for every config key any of the runs has."""
    configs = [flat_config(run) for run in runs]
    keys = list(dict.fromkeys(k for c in configs for k in c))
    rows = []
    for key in keys:
        values = [c.get(key) for c in configs]
        rows.append((key, values, any(v != values[0] for v in values)))
    return rows
