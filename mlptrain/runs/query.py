"""Runs you can query: one record per run directory, filters, and config differences.

Everything here reads the files a run wrote (summary.json, metrics.jsonl, config.toml); a run
whose files are damaged is still listed, with status `damaged`, rather than hiding the others.
"""

from __future__ import annotations

import fnmatch
import json
from typing import Any

from mlptrain.config import Config, applies_to, tomllib
from mlptrain.errors import MlptrainError, RunStoreError
from mlptrain.model import architecture
from mlptrain.runs import Run, RunStore
from mlptrain.runs.schema import run_seconds
from mlptrain.runs.store import creation_order, writer_status

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
        model=architecture(model.get("sizes", []), model.get("activation", "?")),
        status=_status(summary), best_val_accuracy=max(val) if val else None,
        test_accuracy=final.get("test_accuracy"),
        seconds=run_seconds(summary)[0],
        epochs=summary.get("epochs_completed"), started=summary.get("started"))
    if "test_r2" in final:  # a regression's test scores (it has no accuracy)
        record.update(test_rmse=final.get("test_rmse"), test_r2=final.get("test_r2"))
    return record


def _metrics_or_none(run: Run):
    """The run's metrics; None before its first epoch ended (a damaged file still raises)."""
    if not run.has("metrics.jsonl"):
        return None
    return run.read_metrics()


def _status(summary: dict) -> str:
    """The recorded status, except a `running` run whose process is gone is `stale` (killed,
    or the machine went down): it can be resumed."""
    return "stale" if writer_status(summary) == "gone" else summary.get("status", "damaged")


def require_weights(run: Run) -> None:
    """Raises, for a run that has no weights.npz yet, an error that says why (interrupted: how
    to resume it; failed: its error) instead of naming a missing file."""
    if not run.has("weights.npz"):
        raise RunStoreError(_why_no_weights(run))


def _why_no_weights(run: Run) -> str:
    if not run.has("summary.json"):
        summary = {}
    else:  # a damaged summary or metrics file is the first thing to say (RunStoreError)
        summary = run.read_summary()
        if run.has("metrics.jsonl"):
            run.read_metrics()
    status, position = _status(summary), summary.get("position") or {}
    epoch, step = position.get("epoch", summary.get("epochs_completed") or 0), position.get("step")
    if step:  # in the middle of `epoch` (1-based)
        where = f"at epoch {epoch}, step {step}"
    else:  # at the end of `epoch`
        where = f"after epoch {epoch}" if epoch else "before its first step"
    resume = f"resume it with `mlptrain fit --resume {run.run_id}`"
    if status == "interrupted":
        return f"run {run.run_id} was interrupted {where}: {resume}."
    if status == "stale":
        return f"run {run.run_id} stopped {where} without finishing (its process is gone): " \
               f"{resume}."
    if status == "running":
        return f"run {run.run_id} is still training; it has no weights.npz until it finishes."
    if status == "failed":
        return f"run {run.run_id} failed and saved no weights: {summary.get('error', '?')}"
    return f"run {run.run_id} has no weights.npz (looked in {run.path})."


def sweep_of(run: Run) -> str | None:
    """The sweep whose trial the run is, from its sweep.json; None for a run of `fit` (or a
    sweep.json that cannot be read: the run is then a sweep's no longer)."""
    try:
        mark = json.loads(run.read_file("sweep.json").decode("utf-8"))
    except (MlptrainError, ValueError, RecursionError):
        return None
    sweep = mark.get("sweep_id") if isinstance(mark, dict) else None
    return sweep if isinstance(sweep, str) else None


def list_runs(store: RunStore, status: str | None = None, name: str | None = None,
              dataset: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Records of the store's runs, newest first, filtered; `name` may be a glob (mnist*)."""
    records = [run_record(run) for run in sorted(store.runs(), key=creation_order, reverse=True)]
    if status:
        records = [r for r in records if r["status"] == status]
    if name:
        pattern = name if any(c in name for c in "*?[") else f"*{name}*"
        records = [r for r in records if r["name"] and fnmatch.fnmatchcase(r["name"], pattern)]
    if dataset:
        records = [r for r in records if r["dataset"] == dataset]
    return records[:limit] if limit else records


def read_config(run: Run) -> dict[str, Any]:
    """The run's resolved config, as the tables of its config.toml (a key this version does not
    know is shown as written), checked against its summary (check_config) where that is
    readable (a damaged summary is the run record's to report)."""
    text = run.read_config_text()
    try:
        tables = tomllib.loads(text)
    except ValueError as exc:  # TOMLDecodeError, or an integer of more than 4300 digits
        raise RunStoreError(f"{run.path / 'config.toml'} cannot be read ({exc}).") from None
    try:
        summary = run.read_summary()
    except RunStoreError:
        return tables
    written = {**_DEFAULTS, **_flatten(tables)}  # a key left out reads as its default
    check_config(run, {key: written.get(key) for key in CHECKED}, summary)
    return tables


CHECKED = ("data.dataset", "model.hidden", "model.activation")  # what a summary records too


def check_config(run: Run, values: dict[str, Any], summary: dict) -> None:
    """RunStoreError where the config's `values` of CHECKED disagree with what the run's
    summary recorded of its data and network: every reader rebuilds a run from both, and a
    config.toml emptied or edited since (an empty one reads as every default: MNIST's
    784-128-10 network) would blame the run's weights or data for the difference, or export
    a network the run never trained."""
    model, dataset = summary.get("model") or {}, summary.get("dataset") or {}
    hidden, sizes = values["model.hidden"], model.get("sizes")
    recorded = {"data.dataset": (values["data.dataset"], dataset.get("name")),
                "model.hidden": ([hidden] if isinstance(hidden, int) else hidden,
                                 sizes[1:-1] if sizes else None),
                "model.activation": (values["model.activation"], model.get("activation"))}
    for key, (value, saved) in recorded.items():
        if saved is not None and value != saved:
            raise RunStoreError(
                f"{run.path / 'config.toml'} does not match the run's summary.json: {key} is "
                f"{value!r} there, {saved!r} in the summary. The run's files were changed "
                "after it wrote them; move the run away or delete it with `mlptrain runs rm`.")


def flat_config(run: Run) -> dict[str, Any]:
    """The run's resolved config as {"section.key": value}."""
    return _flatten(read_config(run))


def _flatten(config: dict[str, Any]) -> dict[str, Any]:
    """{"section": {"key": v}} -> {"section.key": v}."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


_DEFAULTS = _flatten(Config(name="").to_dict())  # every key's default, flat ("name" aside)


def config_changes(run: Run) -> dict[str, Any]:
    """The run's config keys whose value differs from the default, leaving out the keys its
    dataset does not read; data.dataset always comes first."""
    flat, defaults = flat_config(run), _DEFAULTS
    dataset = flat.get("data.dataset", defaults["data.dataset"])
    changed = {"data.dataset": dataset}
    for key, value in flat.items():
        section, _, name = key.rpartition(".")
        if key != "name" and value != defaults.get(key) and applies_to(section, name, dataset):
            changed[key] = value
    return changed


def config_table(runs: list[Run]) -> list[tuple[str, list[Any], bool]]:
    """(key, value per run, differs) for every config key any of the runs has."""
    configs = [flat_config(run) for run in runs]
    keys = list(dict.fromkeys(k for c in configs for k in c))
    rows = []
    for key in keys:
        values = [c.get(key) for c in configs]
        rows.append((key, values, any(v != values[0] for v in values)))
    return rows
