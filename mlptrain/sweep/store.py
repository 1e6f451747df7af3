"""A sweep's directory: its spec, the trial list with run ids and status, the summary, figures.

    runs/sweeps/<name>-<spec hash>/
      spec.json      axes, samples, the base config: what the sweep runs
      trials.json    one record per trial: coordinates, status, run id, final metrics
      summary.json   per-trial rows and per-point mean/std; summary.csv: the same, as a table
      capacity.png   test accuracy (a regression's: R^2) against hidden width (when model.hidden
                     is an axis)

The directory name is derived from the spec, so running the same sweep again finds it and
resumes. A lock file keeps two processes from running one sweep at once.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from mlptrain.errors import MlptrainError
from mlptrain.runs import Run, atomic_write_text
from mlptrain.runs.schema import check_trial_record, run_seconds
from mlptrain.runs.store import (SWEEPS_DIR, check_runs_root, process_alive,
                                 read_regular_file, remove_stale_temporaries, writer_status)
from mlptrain.sweep.executors import SweepError
from mlptrain.sweep.grid import SweepSpec

TRIALS_SECONDS = 1.0  # write_trials(soon=True) writes trials.json at most this often

# SWEEPS_DIR (runs/store.py): under the runs root; holds no config.toml, so it is not a run
DONE = "completed"
AFRESH = "; move the sweep directory away to start the sweep afresh"  # a damaged record's fix


class SweepDir:
    def __init__(self, runs_root: Path, spec: SweepSpec):
        self.runs_root = runs_root
        self.spec = spec
        self.path = runs_root / SWEEPS_DIR / spec.sweep_id
        self.records = self._records()
        self._written_at = -math.inf  # when write_trials last wrote
        self.unwritten = False  # records changed since (write_trials(soon=True) held back)

    @property
    def lock_path(self) -> Path:
        return self.path / ".lock"

    def open(self) -> None:
        """Creates the directory (or finds it), takes the lock and writes spec and trials."""
        check_runs_root(self.runs_root)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SweepError(f"cannot create the sweep directory {self.path}: {exc}.") from None
        self._lock()
        remove_stale_temporaries(self.path)  # left by a sweep process killed mid-write
        self.adopt_finished_runs()
        spec = {"sweep_id": self.spec.sweep_id, **self.spec.to_dict()}
        atomic_write_text(self.path / "spec.json", json.dumps(spec, indent=2) + "\n")
        self.write_trials()

    def close(self) -> None:
        if self.unwritten:
            self.write_trials()
        self.lock_path.unlink(missing_ok=True)

    def _lock(self) -> None:
        for _ in range(2):
            try:
                fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                holder = _read_pid(self.lock_path)
                if holder and process_alive(holder):
                    raise SweepError(f"sweep {self.spec.sweep_id} is already running in process "
                                     f"{holder} (lock {self.lock_path}); wait for it or stop "
                                     "it first.") from None
                try:  # left by a process that died
                    self.lock_path.unlink(missing_ok=True)
                except OSError as exc:  # a folder in its place, say
                    raise SweepError(f"cannot take the lock {self.lock_path}: "
                                     f"{exc.strerror or exc}; remove it.") from None
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            return
        raise SweepError(f"cannot take the lock {self.lock_path}.")

    def _records(self) -> dict[int, dict[str, Any]]:
        """The trial records: those saved by an earlier run of this sweep, else fresh ones."""
        path = self.path / "trials.json"
        saved = {r["index"]: r for r in _saved_trials(path, AFRESH)} if path.exists() else {}
        records = {}
        for trial in self.spec.trials:
            kept = saved.get(trial.index)
            # the folder is named by the spec: its record of a trial is that trial's
            if kept is not None and kept["point"] != json.loads(json.dumps(trial.point)):
                raise SweepError(f"{path} is damaged: its trial {trial.index} has the point "
                                 f"{json.dumps(kept['point'])}, but the sweep's trial "
                                 f"{trial.index} is {json.dumps(trial.point)}{AFRESH}.")
            records[trial.index] = kept or {
                "index": trial.index, "name": trial.name, "point": trial.point,
                "status": "pending", "run_id": None, "previous_runs": [], "final": None,
                "parameters": None, "epochs": 0, "seconds": None, "error": ""}
        return records

    def mark(self, index: int) -> dict[str, Any]:
        """What a trial's run records of the sweep it belongs to (its sweep.json)."""
        record = self.records[index]
        return {"sweep_id": self.spec.sweep_id, "sweep_path": str(self.path),
                "index": index, "point": record["point"]}

    def adopt_finished_runs(self) -> list[int]:
        """Takes up what a killed sweep's workers did after trials.json was last written (it
        is written at most every TRIALS_SECONDS): a trial not completed there whose run (found
        by the sweep.json a worker writes into it) completed is recorded completed, so a rerun
        does not train it again; else its newest run that can continue (interrupted or stale,
        with a checkpoint) becomes its run, so a rerun continues it instead of starting
        afresh. Its other runs are listed in previous_runs, never left outside the summary.
        Returns the indices adopted as completed."""
        found: dict[int, list[Run]] = {}
        for run in _runs_with_marks(self.runs_root, self.spec.sweep_id):
            found.setdefault(run[1], []).append(run[0])
        adopted = []
        for index, record in self.records.items():
            if record["status"] == DONE:
                continue
            runs = {r.run_id: r for r in found.get(index, [])}
            if record["run_id"]:
                runs.setdefault(record["run_id"], Run(self.runs_root / record["run_id"]))
            summaries = {rid: _summary_or_none(run) for rid, run in sorted(runs.items())}
            done = [rid for rid, s in summaries.items() if s and s["status"] == DONE]
            going_on = [rid for rid, s in summaries.items() if _can_continue(runs[rid], s)]
            keep = (done or going_on or [record["run_id"]])[-1]
            for rid in summaries:
                if rid != keep and rid not in record["previous_runs"]:
                    record["previous_runs"].append(rid)
            record["run_id"] = keep
            if done:
                s = summaries[keep]
                record.update(status=DONE, final=s.get("final"), error="",
                              epochs=s.get("epochs_completed", 0),
                              parameters=(s.get("model") or {}).get("parameters"),
                              seconds=run_seconds(s)[0])
                adopted.append(index)
        return adopted

    def is_done(self, index: int) -> bool:
        """Completed, and its run still says so (a deleted run is run again)."""
        return _trial_completed(self.runs_root, self.records[index])

    def resumable(self, index: int) -> str | None:
        """The run id an unfinished trial continues from: its run left a checkpoint (grouped
        members write theirs in the same format) and was interrupted (Ctrl-C, SIGTERM) or is
        stale (its process was killed, whichever executor ran it); else None."""
        run_id = self.records[index]["run_id"]
        if not run_id or self.records[index]["status"] == DONE:
            return None
        run = Run(self.runs_root / run_id)
        return run_id if _can_continue(run, _summary_or_none(run)) else None

    def write_trials(self, soon: bool = False) -> None:
        """trials.json from the records: now, or with `soon` at most every TRIALS_SECONDS
        (a group of 240 trials starts and ends in bursts, and each write holds every trial;
        close() writes what is left). A record a crash keeps from being written costs
        nothing: the next run adopts a trial whose run completed (is_done reads the run)."""
        now = time.monotonic()
        if soon and now - self._written_at < TRIALS_SECONDS:
            self.unwritten = True
            return
        data = {"sweep_id": self.spec.sweep_id,
                "trials": [self.records[t.index] for t in self.spec.trials]}
        atomic_write_text(self.path / "trials.json", json.dumps(data, indent=2) + "\n")
        self._written_at, self.unwritten = now, False

    def write_text(self, name: str, text: str) -> Path:
        atomic_write_text(self.path / name, text)
        return self.path / name


def find_sweep(runs_root: Path, ref: str) -> Path:
    """A sweep's directory under runs_root/sweeps: by its id, a unique prefix of one, or
    `latest` (the sweep whose trials.json was written last); SweepError naming the choices."""
    root = runs_root / SWEEPS_DIR
    if not ref.strip():  # a prefix of every id: it would pick a sweep no one named
        raise SweepError(f"an empty sweep reference ({ref!r}) names no sweep; give a sweep id, "
                         "a unique prefix of one, or latest.")
    try:  # a damaged trials.json is still a sweep's: reading it says what is wrong
        sweeps = sorted(p for p in root.iterdir() if os.path.lexists(p / "trials.json"))
    except OSError:
        sweeps = []
    if not sweeps:
        raise SweepError(f"there are no sweeps in {root}; `mlptrain sweep CONFIG` writes one "
                         "there (or name another runs folder with --runs-dir).")
    if ref == "latest":
        return max(sweeps, key=lambda p: os.lstat(p / "trials.json").st_mtime)
    matches = [p for p in sweeps if p.name == ref] or [p for p in sweeps
                                                       if p.name.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    problem = "matches several sweeps" if matches else "names no sweep"
    names = ", ".join(p.name for p in matches or sweeps)
    raise SweepError(f"{ref!r} {problem} in {root} ({names}); give a sweep id, a unique prefix "
                     "of one, or latest.")


def completed_trial_runs(runs_root: Path, sweep: Path) -> list[Path]:
    """The run directories of every trial of a sweep, in trial order; SweepError naming the
    trials whose runs have not completed (running the same sweep again finishes them)."""
    records = _saved_trials(sweep / "trials.json")
    names = [r["name"] for r in records]
    completed = [_trial_completed(runs_root, r) for r in records]
    unfinished = [name for name, c in zip(names, completed) if not c]
    if unfinished:
        raise SweepError(f"sweep {sweep.name} has {len(unfinished)} of {len(records)} trials "
                         f"not completed ({', '.join(unfinished[:5])}"
                         f"{', ...' if len(unfinished) > 5 else ''}); run the same `mlptrain "
                         "sweep` command again to finish them, or name the runs you want.")
    return [runs_root / r["run_id"] for r in records]


def _saved_trials(path: Path, advice: str = "") -> list[dict[str, Any]]:
    """trials.json's records, each of the shape its readers rely on
    (schema.check_trial_record); SweepError naming the first fault."""
    try:
        trials = json.loads(read_regular_file(path).decode("utf-8"))["trials"]
        if not isinstance(trials, list):
            raise TypeError(f"'trials' is {type(trials).__name__}, not a list")
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        why = getattr(exc, "strerror", None) or exc  # an OSError's without its path again
        raise SweepError(f"{path} cannot be read ({why}){advice}.") from None
    for number, record in enumerate(trials, start=1):
        problem = check_trial_record(record)
        if problem:
            raise SweepError(f"{path} is damaged: its trial {number}: {problem}{advice}.")
    return trials


def _trial_completed(runs_root: Path, record: dict[str, Any]) -> bool:
    """A trial record marked completed whose run still says so (not deleted or damaged)."""
    if record.get("status") != DONE or not record.get("run_id"):
        return False
    try:
        return Run(runs_root / record["run_id"]).read_summary()["status"] == DONE
    except Exception:  # noqa: BLE001 - missing or damaged run files
        return False


def stale_run_of(runs_root: Path, mark: dict[str, Any] | None) -> str | None:
    """The newest run of the trial `mark` names (its sweep.json) whose process is gone and
    which left a checkpoint, or None: what a worker killed mid-trial leaves. A scheduler that
    hands the trial to another worker (Dask does, when a worker dies) continues that run
    instead of training the trial again from its first step."""
    if not mark:
        return None
    runs = [run for run, index in _runs_with_marks(Path(runs_root), mark["sweep_id"])
            if index == mark["index"]]
    for run in reversed(runs):  # run ids begin with their start time
        summary = _summary_or_none(run)
        if _can_continue(run, summary) and writer_status(summary) == "gone":
            return run.run_id
    return None


def _runs_with_marks(runs_root: Path, sweep_id: str):
    """(run, trial index) of every run under runs_root whose sweep.json names this sweep."""
    try:
        entries = sorted(runs_root.iterdir())
    except OSError:
        return
    for path in entries:
        try:  # (a run's reader: never waits on a pipe in the file's place)
            mark = json.loads(Run(path).read_file("sweep.json").decode("utf-8"))
        except (MlptrainError, ValueError, RecursionError):
            continue
        if isinstance(mark, dict) and mark.get("sweep_id") == sweep_id \
                and isinstance(mark.get("index"), int):
            yield Run(path), mark["index"]


def _can_continue(run: Run, summary: dict[str, Any] | None) -> bool:
    """Whether a trial's run goes on from its checkpoint: interrupted, or still `running` on
    this machine: stale (its process is gone), or alive, which reopening it refuses, naming
    that process, rather than training the trial twice at once."""
    if not summary or not (run.path / "checkpoint.npz").is_file():
        return False
    return summary.get("status") == "interrupted" or writer_status(summary) in ("gone", "alive")


def _summary_or_none(run: Run) -> dict[str, Any] | None:
    try:
        return run.read_summary()
    except MlptrainError:
        return None


def _read_pid(path: Path) -> int | None:
    try:  # (never waits on a pipe in the lock's place)
        return int(read_regular_file(path).decode("ascii").strip())
    except (OSError, ValueError):
        return None

