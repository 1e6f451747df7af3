"""The run store: one directory per fit under a runs root, every file written atomically.

    runs/<YYYYmmdd-HHMMSS>-<name>-<6 hex>/
      config.toml     resolved config (+ the overrides, as comments)
      metrics.jsonl   one JSON object per epoch;  metrics.csv: the same table
      weights.npz     final parameters, keys layers.{i}.weight / layers.{i}.bias
      checkpoint.npz  parameters, optimizer state, RNG state and position
      summary.json    status, final metrics, timings, device, versions, dataset checksums

A file is written to a temporary name in the same directory and renamed over the old one, so a
reader (or a crash) only ever sees a whole old file or a whole new one. A run directory is
created with an atomic mkdir and never reused.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from mlptrain.errors import RunStoreError

RUNS_DIR_ENV = "MLPTRAIN_RUNS_DIR"
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can hold


def default_runs_dir() -> Path:
    return Path(os.environ.get(RUNS_DIR_ENV) or "runs")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """The bytes np.savez would write, minus its clock: every zip entry is dated 1980-01-01, so
    the same arrays always give the same bytes (a resumed run's weights match byte for byte)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for key, value in arrays.items():
            entry = io.BytesIO()
            np.lib.format.write_array(entry, np.asanyarray(value), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{key}.npy", date_time=ZIP_EPOCH), entry.getvalue())
    return buffer.getvalue()


def npz_arrays(data: bytes) -> dict[str, np.ndarray]:
    """The arrays of .npz bytes (the inverse of npz_bytes); ValueError if they are not one."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, EOFError, zipfile.BadZipFile) as exc:  # what damaged zips raise
        raise ValueError(str(exc)) from None


class Run:
    """One run directory and the files in it."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.metrics: list[dict[str, Any]] = []

    @property
    def run_id(self) -> str:
        return self.path.name

    # -- writing --------------------------------------------------------------------------------

    def write_config(self, toml_text: str) -> None:
        atomic_write_text(self.path / "config.toml", toml_text)

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Adds one epoch's record and rewrites metrics.jsonl and metrics.csv whole."""
        self.write_metrics([*self.metrics, record])

    def write_metrics(self, records: list[dict[str, Any]]) -> None:
        """Replaces the metrics with `records` (a resumed run restores its checkpoint's)."""
        self.metrics = list(records)
        lines = "".join(json.dumps(r) + "\n" for r in self.metrics)
        atomic_write_text(self.path / "metrics.jsonl", lines)
        columns = list(dict.fromkeys(k for r in self.metrics for k in r))
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.metrics)
        atomic_write_text(self.path / "metrics.csv", out.getvalue())

    def write_weights(self, state: dict[str, np.ndarray]) -> None:
        atomic_write_bytes(self.path / "weights.npz", npz_bytes(state))

    def write_checkpoint(self, arrays: dict[str, np.ndarray]) -> None:
        atomic_write_bytes(self.path / "checkpoint.npz", npz_bytes(arrays))

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_text(self.path / "summary.json", json.dumps(summary, indent=2) + "\n")

    def remove(self) -> None:
        """Deletes the run directory: renamed aside first, so a half-deleted run is never listed."""
        doomed = self.path.with_name(f".deleting-{self.path.name}-{secrets.token_hex(3)}")
        try:
            os.replace(self.path, doomed)
            shutil.rmtree(doomed)
        except OSError as exc:
            raise RunStoreError(f"cannot delete run {self.path}: {exc}.") from None

    # -- reading --------------------------------------------------------------------------------

    def read_summary(self) -> dict[str, Any]:
        return self._read_json_lines("summary.json", whole=True)

    def read_metrics(self) -> list[dict[str, Any]]:
        return self._read_json_lines("metrics.jsonl", whole=False)

    def _read_json_lines(self, name: str, whole: bool):
        try:
            text = self._read(name).decode("utf-8")
            if whole:
                return json.loads(text)
            return [json.loads(line) for line in text.split("\n") if line.strip()]
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RunStoreError(f"{self.path / name} is not valid JSON ({exc}); the run's "
                                "files were changed or damaged after it wrote them.") from None

    def read_weights(self) -> dict[str, np.ndarray]:
        return self._read_npz("weights.npz")

    def read_checkpoint(self) -> dict[str, np.ndarray]:
        return self._read_npz("checkpoint.npz")

    def _read(self, name: str) -> bytes:
        try:
            return (self.path / name).read_bytes()
        except FileNotFoundError:
            raise RunStoreError(f"run {self.run_id} has no {name} (looked in {self.path}); "
                                "the run may have failed before writing it.") from None

    def _read_npz(self, name: str) -> dict[str, np.ndarray]:
        try:
            return npz_arrays(self._read(name))
        except ValueError as exc:
            raise RunStoreError(f"{self.path / name} is not a readable .npz file ({exc}); "
                                "the run's files were changed or damaged after it wrote them.")


class RunStore:
    """The runs root: creates new runs and finds existing ones by id, prefix, path or latest."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_runs_dir()

    def create(self, name: str) -> Run:
        """A new, empty run directory; the id is unique even for runs started at once."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunStoreError(f"cannot create the runs directory {self.root}: {exc}.") from None
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for _ in range(100):
            path = self.root / f"{stamp}-{name}-{secrets.token_hex(3)}"
            try:
                path.mkdir()  # atomic: fails if another process took this id
            except FileExistsError:
                continue
            except OSError as exc:
                raise RunStoreError(f"cannot create run directory {path}: {exc}.") from None
            return Run(path)
        raise RunStoreError(f"could not find a free run id under {self.root}.")

    def runs(self) -> list[Run]:
        """Every run under the root, oldest first (ids start with their creation time)."""
        if not self.root.is_dir():
            return []
        return [Run(p) for p in sorted(self.root.iterdir())
                if p.is_dir() and not p.name.startswith(".") and (p / "config.toml").exists()]

    def find(self, ref: str) -> Run:
        """A run by id, unique id prefix, directory path, or `latest`."""
        as_path = Path(ref)
        if (as_path / "config.toml").exists():
            return Run(as_path)
        runs = self.runs()
        if ref == "latest":
            if not runs:
                raise RunStoreError(f"there are no runs in {self.root} yet; start one with "
                                    "`mlptrain fit CONFIG`.")
            return runs[-1]
        matches = [r for r in runs if r.run_id == ref] or \
                  [r for r in runs if r.run_id.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise RunStoreError(f"no run matches {ref!r} in {self.root}. Give a run id, a "
                                "unique prefix of one, a run directory, or `latest`.")
        listed = ", ".join(r.run_id for r in matches[:5])
        raise RunStoreError(f"{ref!r} matches {len(matches)} runs in {self.root} ({listed}"
                            f"{', ...' if len(matches) > 5 else ''}); give more of the id.")
