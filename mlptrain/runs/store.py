"""The run store: one directory per fit under a runs root, every file written atomically.

    runs/<YYYYmmdd-HHMMSS>-<name>-<6 hex>/
      config.toml     resolved config (+ the overrides, as comments)
      metrics.jsonl   one JSON object per epoch;  metrics.csv: the same table
      weights.npz     final parameters, keys layers.{i}.weight / layers.{i}.bias
      checkpoint.npz  parameters, optimizer state, RNG state and position
      preprocess.npz  the training split's feature mean and std (data.standardize), and its
                      target's (data.standardize_target), if used
      summary.json    status, final metrics, timings, device, versions, dataset checksums
      sweep.json      the sweep a trial's run belongs to;  *.png, *.svg: its figures

A file is written to a temporary name in the same directory and renamed over the old one, so a
reader (or a crash) only ever sees a whole old file or a whole new one; the temporary's name is
random and created exclusively, and the rename replaces a link at the file's name rather than
writing through it. Every file mlptrain writes goes through atomic_write_bytes, save three that
are made the same way by other means: a sweep's lock (O_EXCL, it must fail if present), an
MNIST download (streamed into a mkstemp file, renamed once verified) and the cache of decoded
MNIST files (data/cache.py: a mkstemp file renamed, without fsync). A run directory is
created with an atomic mkdir and never reused.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import errno
import io
import json
import os
import platform
import re
import secrets
import shutil
import stat
import time
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mlptrain.arrayfiles import Expect, read_npz
from mlptrain.errors import RunStoreError
from mlptrain.runs.schema import CHECKPOINT, check_metrics_record, check_network, check_summary

RUNS_DIR_ENV = "MLPTRAIN_RUNS_DIR"
TMP_SUFFIX = ".tmp"
TMP_NAME = re.compile(r"\..+\.(\d+)-[0-9a-f]{8,16}\.tmp")  # .<file>.<pid>-<16 hex>.tmp
TMP_ATTEMPTS = 100  # random temporary names tried before a write gives up
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can hold
RUN_FILES = ("config.toml", "metrics.jsonl", "metrics.csv", "weights.npz", "checkpoint.npz",
             "summary.json", "sweep.json", "preprocess.npz")  # what a run writes, besides figures
FIGURE_SUFFIXES = (".png", ".svg")
SWEEPS_DIR = "sweeps"  # under the runs root: one folder per sweep (sweep/store.py)
SWEEP_FILES = ("spec.json", "trials.json", "summary.json", "summary.csv", ".lock")  # besides
# its figures


def default_runs_dir() -> Path:
    return Path(os.environ.get(RUNS_DIR_ENV) or "runs").expanduser()  # `~/runs`, unexpanded


def atomic_write_bytes(path: Path, data: bytes,
                       check: Callable[[Path], None] | None = None) -> None:
    """Writes `data` to a new temporary beside `path` and renames it over `path`; `check`, if
    given, reads the temporary first and raises to keep it from ever taking `path`.

    The rename replaces whatever `path` is, a symbolic link included: no write goes through a
    link to a file elsewhere. An OSError (a full disk, a read-only directory) names `path`, not
    the temporary, and the temporary is removed: on a full disk that gives back the space a
    later, smaller write (the summary that marks the run failed) needs."""
    tmp = None
    try:
        _check_replaceable(path)
        fd, tmp = _new_temporary(path)
        with open(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
        tmp = None  # renamed: the name is no longer ours to remove
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()


def _check_replaceable(path: Path) -> None:
    """An OSError unless `path` is absent, a file or a link, what a write may replace: the
    rename would put a file in place of a device (`config init --out /dev/null --force`, run
    as root, replaced /dev/null) or fail on a folder with a less telling error."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        kind = "a folder" if stat.S_ISDIR(mode) else "a device, a pipe or a socket"
        raise OSError(errno.EEXIST, f"it is {kind}, not a file; give the path of a file",
                      str(path))


def _append(path: Path, text: str) -> None:
    """`text` added at the end of the existing regular file `path` in one write, flushed to
    disk; never through a link (O_NOFOLLOW), never creating the file."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
                 | getattr(os, "O_CLOEXEC", 0))
    try:
        data = text.encode("utf-8")
        if os.write(fd, data) != len(data):
            raise OSError(errno.EIO, "a short write", str(path))
        os.fsync(fd)
    finally:
        os.close(fd)


def _new_temporary(path: Path) -> tuple[int, Path]:
    """(descriptor, name) of a file created for this write alone, beside `path`. The name
    holds 64 random bits, and O_EXCL | O_NOFOLLOW make a name someone planted first (a link,
    a file) fail instead of being written through; then another name is drawn."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) \
        | getattr(os, "O_CLOEXEC", 0)
    for _ in range(TMP_ATTEMPTS):
        tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(8)}{TMP_SUFFIX}")
        try:
            return os.open(tmp, flags, 0o666), tmp  # the umask applies, as for any new file
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"no free temporary name after {TMP_ATTEMPTS} tries",
                          str(path))


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Deletes the hidden temporaries in `directory` that a killed writer left behind (their
    process is gone); a live writer's are kept. Returns what was removed."""
    removed = []
    try:
        entries = list(Path(directory).iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = TMP_NAME.fullmatch(entry.name)
        # a pid of ours is an earlier write of this process: it no longer writes that file
        pid = int(match.group(1)) if match else None
        if match and (pid == os.getpid() or not process_alive(pid)):
            with contextlib.suppress(OSError):
                entry.unlink()
                removed.append(entry)
    return removed


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine (someone else's counts too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def is_run_dir(path: Path) -> bool:
    """Whether `path` is a run's directory: it holds the config.toml and summary.json a run
    writes first (a project folder with only a config.toml is not one), or it is named as a
    run id (stamp-name-hash: only `RunStore.create` makes such a folder) and holds a
    config.toml, as the store lists its runs: a run whose summary is lost or damaged is still
    a run, read (its readers name the file at fault), protected and removed as one."""
    if (path / "config.toml").is_file() and (path / "summary.json").is_file():
        return True
    return RUN_ID.match(path.name) is not None and os.path.lexists(path / "config.toml")


def run_holding(path: Path) -> Path | None:
    """The run directory of which `path` names one of the run's own files (RUN_FILES, a
    figure), following links in the folders as a write to `path` would; else None."""
    folder = path.parent.resolve()
    own = path.name in RUN_FILES or path.suffix in FIGURE_SUFFIXES
    return folder if own and is_run_dir(folder) else None


def check_runs_root(root: Path) -> None:
    """A RunStoreError unless `root` can hold runs: a folder (or none yet), neither a run's
    directory nor inside one. `--runs-dir RUN` wrote new runs inside that run, where no
    command lists them and `runs rm` of it deletes them along."""
    if root.exists() and not root.is_dir():
        raise RunStoreError(f"the runs directory {root} is a file, not a folder; give "
                            "--runs-dir a folder (it is created if missing).")
    resolved = root.resolve()
    for folder in (resolved, *resolved.parents):
        if is_run_dir(folder):
            raise RunStoreError(f"the runs directory {root} is "
                                + ("" if folder == resolved else "inside ")
                                + f"run {folder.name}'s directory; give --runs-dir the folder "
                                f"that holds the runs ({folder.parent}), or another folder.")


def sweep_holding(path: Path) -> Path | None:
    """The sweep directory (runs/sweeps/<id>/, sweep/store.py's) of which `path` names one of
    the sweep's own files (SWEEP_FILES, a figure), links followed; else None."""
    folder = path.parent.resolve()
    own = path.name in SWEEP_FILES or path.suffix in FIGURE_SUFFIXES
    is_sweep = folder.parent.name == SWEEPS_DIR and any(
        os.path.lexists(folder / name) for name in ("trials.json", "spec.json"))
    return folder if own and is_sweep else None


def check_not_run_file(path: Path) -> None:
    """A RunStoreError when `path` names one of a run's own files (run_holding), which only
    that run's training writes, or one of a sweep's (sweep_holding), which only that sweep
    writes: an export, a config or a figure written there would replace the run's weights,
    summary or figures, or the sweep's record of its trials (whose runs it then forgets)."""
    for owner, holding, writer in (("run", run_holding, "its training"),
                                   ("sweep", sweep_holding, "that sweep")):
        folder = holding(path)
        if folder is not None:
            raise RunStoreError(f"{path} is one of {owner} {folder.name}'s own files, which "
                                f"only {writer} writes; choose another file.")


def writer_status(summary: dict[str, Any]) -> str | None:
    """Whether the process a `running` run's summary records (pid, host) still writes it:
    "alive" (on this machine), "gone" (a stale run: killed, or its machine restarted; it may be
    resumed) or "elsewhere" (recorded on another machine, which cannot be asked). None when the
    run is not running, or the summary names no process or this one."""
    pid, host = summary.get("pid"), summary.get("host")
    if summary.get("status") != "running" or not pid:
        return None
    if host and host != platform.node():
        return "elsewhere"
    if pid == os.getpid():  # an earlier sitting of this process, which writes one run at once
        return None
    return "alive" if process_alive(pid) else "gone"


def read_regular_file(path: Path) -> bytes:
    """The bytes of the regular file `path`; OSError for anything else. Looked at first:
    opening a pipe put in a file's place would wait for a writer forever."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise OSError(errno.EINVAL, "not a regular file but a folder, a pipe or a device",
                      str(path))
    return Path(path).read_bytes()


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


class Run:
    """One run directory and the files in it."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.metrics: list[dict[str, Any]] = []
        self._columns: list[str] = []  # metrics.csv's header (write_metrics sets it)
        self.found_as: str | None = None  # how RunStore.find matched a name, for the CLI

    @property
    def run_id(self) -> str:
        return self.path.name

    # -- writing --------------------------------------------------------------------------------

    def open_for_writing(self) -> None:
        """Before an existing run is written again (a resume, alone or in a sweep's group):
        refuses while another process writes it, then removes what a writer killed mid-write
        left behind."""
        self.check_no_writer()
        remove_stale_temporaries(self.path)

    def check_no_writer(self, summary: dict[str, Any] | None = None) -> None:
        """One writer per run: a RunStoreError while the process that the summary (default:
        summary.json) records as writing the run still lives, or lives on another machine,
        which cannot be asked. A run whose process is gone (stale) may be written again."""
        summary = self.read_summary() if summary is None else summary
        state, pid, host = writer_status(summary), summary.get("pid"), summary.get("host")
        if state == "alive":
            raise RunStoreError(
                f"run {self.run_id} is being trained by process {pid} on this machine (its "
                "summary.json says so, and that process is alive); one process writes a run "
                "at a time. Wait for it to finish, or stop it (Ctrl-C in its terminal, or "
                f"`kill -TERM {pid}`: it saves a checkpoint) and then resume.")
        if state == "elsewhere":
            raise RunStoreError(
                f"run {self.run_id} is recorded as running in process {pid} on {host}, another "
                "machine, which this one cannot ask whether it still runs; one process writes "
                f"a run at a time. Resume it on {host}, where a process that is gone leaves "
                "the run stale.")

    def write_config(self, toml_text: str) -> None:
        atomic_write_text(self.path / "config.toml", toml_text)

    def append_metrics(self, *records: dict[str, Any]) -> None:
        """Adds epochs' records as lines at the end of metrics.jsonl and of metrics.csv, each
        file in one write (a killed process leaves whole lines; rewriting both files whole
        each epoch cost a 200-epoch run on a small table 0.65 s of its 1.1 s). The first
        records, ones with a column the CSV lacks, or a file that cannot be appended to (gone,
        a link) rewrite both whole, as write_metrics does."""
        columns = self._columns
        if not self.metrics or not {k for r in records for k in r} <= set(columns):
            self.write_metrics([*self.metrics, *records])
            return
        rows = io.StringIO()
        csv.DictWriter(rows, fieldnames=columns, lineterminator="\n").writerows(records)
        try:
            _append(self.path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in records))
            _append(self.path / "metrics.csv", rows.getvalue())
        except OSError:
            self.write_metrics([*self.metrics, *records])
            return
        self.metrics.extend(records)

    def write_metrics(self, records: list[dict[str, Any]]) -> None:
        """Replaces the metrics with `records` (a resumed run restores its checkpoint's)."""
        self.metrics = list(records)
        lines = "".join(json.dumps(r) + "\n" for r in self.metrics)
        atomic_write_text(self.path / "metrics.jsonl", lines)
        # the CSV's header: every key in first-seen order (append_metrics adds rows under it)
        self._columns = columns = list(dict.fromkeys(k for r in self.metrics for k in r))
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.metrics)
        atomic_write_text(self.path / "metrics.csv", out.getvalue())

    def write_weights(self, state: dict[str, np.ndarray]) -> None:
        atomic_write_bytes(self.path / "weights.npz", npz_bytes(state))

    def write_checkpoint(self, arrays: dict[str, np.ndarray]) -> None:
        atomic_write_bytes(self.path / "checkpoint.npz", npz_bytes(arrays))

    def write_preprocess(self, arrays: dict[str, np.ndarray]) -> None:
        atomic_write_bytes(self.path / "preprocess.npz", npz_bytes(arrays))

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_text(self.path / "summary.json", json.dumps(summary, indent=2) + "\n")

    def remove(self) -> Path | None:
        """Deletes the run directory: renamed aside first, so a half-deleted run is never
        listed. A run directory that is a symbolic link loses the link alone: its target is
        returned and left as it was. RunStore.remove checks that this is a run of the store."""
        target = self.path.resolve() if self.path.is_symlink() else None
        doomed = self.path.with_name(f".deleting-{self.path.name}-{secrets.token_hex(3)}")
        try:
            os.replace(self.path, doomed)
        except OSError as exc:
            raise RunStoreError(f"cannot delete run {self.path}: {exc.strerror or exc}; "
                                "nothing was deleted.") from None
        try:
            if doomed.is_symlink():  # looked at again: whatever it is now, never follow a link
                doomed.unlink()
            else:
                shutil.rmtree(doomed)
        except OSError as exc:
            raise RunStoreError(f"run {self.run_id} was set aside as {doomed} (no longer "
                                f"listed) but not all of it could be deleted ({exc}); delete "
                                "that folder by hand.") from None
        return target

    # -- reading --------------------------------------------------------------------------------

    def read_summary(self, network: bool = False) -> dict[str, Any]:
        """summary.json, checked to have the shape this tool writes (schema.py); with
        `network`, also to describe a network this version can rebuild (check_network)."""
        summary = self._read_json_lines("summary.json", whole=True)
        self._checked("summary.json", check_summary, summary)
        if network:
            self._checked("summary.json", check_network, summary)
        return summary

    def read_metrics(self) -> list[dict[str, Any]]:
        """metrics.jsonl: one record per epoch, each checked like the loop writes them."""
        records = self._read_json_lines("metrics.jsonl", whole=False)
        for number, record in enumerate(records, start=1):
            self._checked("metrics.jsonl", check_metrics_record, record, f"line {number}: ")
        return records

    def _checked(self, name: str, check, value, where: str = "") -> None:
        problem = check(value)
        if problem:
            raise RunStoreError(f"{self.path / name} is damaged: {where}{problem}. The run's "
                                "files were changed after it wrote them; move the run away "
                                "or delete it with `mlptrain runs rm`.")

    def _read_json_lines(self, name: str, whole: bool):
        try:
            text = self.read_file(name).decode("utf-8")
            if whole:
                return json.loads(text)
            *lines, tail = text.split("\n")  # every write ends its lines: tail is ""
            return [json.loads(line) for line in lines if line.strip()] + _torn(tail)
        except (ValueError, RecursionError) as exc:  # also an integer of over 4300 digits
            raise RunStoreError(f"{self.path / name} is not valid JSON ({exc}); the run's "
                                "files were changed or damaged after it wrote them.") from None

    def read_weights(self, expect: Expect = Expect()) -> dict[str, np.ndarray]:
        """weights.npz, every array finite; `expect`: the shapes of the network reading it."""
        return self._read_npz("weights.npz", expect)

    def read_preprocess(self, features: int) -> dict[str, np.ndarray]:
        """preprocess.npz: `mean` and `std`, each (features,), and `target_mean` and
        `target_std`, each (1,), those it holds finite."""
        shapes = {"mean": (features,), "std": (features,), "target_mean": (1,),
                  "target_std": (1,)}
        return self._read_npz("preprocess.npz", Expect(shapes=shapes,
                                                        shapes_of=f"{features} input features"))

    def read_checkpoint(self) -> dict[str, np.ndarray]:
        return self._read_npz("checkpoint.npz", CHECKPOINT)

    def has(self, name: str) -> bool:
        """Whether the run has a file of this name, whatever it is (a link that leads nowhere
        counts: reading it says what is wrong, rather than the run seeming not to have it)."""
        return os.path.lexists(self.path / name)

    def read_config_text(self) -> str:
        """config.toml's text (the run's resolved config; experiment.setup.run_config parses
        and checks it)."""
        try:
            return self.read_file("config.toml").decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RunStoreError(f"{self.path / 'config.toml'} is not UTF-8 text ({exc}); the "
                                "run's files were changed or damaged after it wrote them."
                                ) from None

    def read_file(self, name: str) -> bytes:
        """The bytes of the run's file `name`; RunStoreError when it is missing, not a regular
        file, or cannot be read."""
        path = self.path / name
        try:
            return read_regular_file(path)
        except FileNotFoundError:
            raise RunStoreError(f"run {self.run_id} has no {name} (looked in {self.path}); "
                                "the run may have failed before writing it.") from None
        except OSError as exc:  # a directory in its place, no permission, an I/O error
            raise RunStoreError(f"{path} cannot be read ({exc.strerror or exc}).") from None

    def _read_npz(self, name: str, expect: Expect) -> dict[str, np.ndarray]:
        if not (self.path / name).is_file():
            self.read_file(name)  # the error that says why a run has no such file
        return read_npz(self.path / name, str(self.path / name), RunStoreError, expect)


class RunStore:
    """The runs root: creates new runs and finds existing ones by id, prefix, path or latest."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_runs_dir()

    def create(self, name: str) -> Run:
        """A new, empty run directory; the id is unique even for runs started at once."""
        check_runs_root(self.root)
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
        """Every run under the root, oldest first (ids start with their creation time): each
        folder that holds a config.toml, whatever it is (a damaged one is listed as damaged);
        one without (yet) is not listed. No root yet: none; a root that is no folder: an
        error."""
        if not os.path.lexists(self.root):
            return []
        try:
            entries = sorted(self.root.iterdir())
        except OSError as exc:  # a file, a link loop, no permission
            raise RunStoreError(f"the runs directory {self.root} cannot be listed "
                                f"({exc.strerror or exc}); give a folder with --runs-dir or "
                                f"{RUNS_DIR_ENV}.") from None
        return [Run(p) for p in entries if p.is_dir() and not p.name.startswith(".")
                and os.path.lexists(p / "config.toml")]

    def find(self, ref: str) -> Run:
        """A run by `latest`, id, unique id prefix, the hash that ends its id (77d460), its
        name (the newest run of that name), or directory path. A bare word is looked up among
        the runs first, so a folder of that name in the working directory (a project's
        `xor/`) never stands for the run `xor`; a path must hold a run (is_run_dir). When `ref`
        named the run other than by id, path or `latest`, the returned Run's `found_as` says
        how (for the CLI)."""
        if not ref.strip():  # an unset shell variable: "" is a prefix of every run id
            raise RunStoreError(f"an empty run reference ({ref!r}) names no run; give a run "
                                "id, a unique prefix of one, the hash that ends one, a run "
                                "name, a run directory, or `latest`.")
        as_path = Path(ref)
        if _is_path(ref):
            if is_run_dir(as_path):
                return Run(as_path)
            raise RunStoreError(f"{ref} is not a run directory (a run's holds both "
                                "config.toml and summary.json). Give a run's directory, id "
                                "or name.")
        runs = sorted(self.runs(), key=creation_order)
        if ref == "latest" and runs:
            return runs[-1]
        for how, matches in _candidates(runs, ref):
            if how in ("prefix", "hash") and matches:
                _check_not_also_a_name(runs, ref, how, matches)
            if len(matches) == 1 or (matches and how == "name"):
                run = matches[-1]  # a name: the newest of its runs
                run.found_as = _found_note(how, ref, run, len(matches))
                return run
            if matches:
                listed = ", ".join(r.run_id for r in matches[:5])
                raise RunStoreError(f"{ref!r} matches {len(matches)} runs in {self.root} "
                                    f"({listed}{', ...' if len(matches) > 5 else ''}); give "
                                    "more of the id.")
        own = self.root / ref
        if RUN_ID.match(ref) and own.is_dir():  # its folder, not listed: say why
            raise RunStoreError(f"run {ref} has no config.toml (looked in {own}), so it is "
                                "not a run yet: its process was stopped before writing it, "
                                "or the file was deleted since. There is nothing to read; "
                                "delete the folder by hand.")
        if ref != "latest" and is_run_dir(as_path):  # a run's folder outside the runs root
            return Run(as_path)
        if not runs:
            no_match = "" if ref == "latest" else f"no run matches {ref!r}: "
            raise RunStoreError(f"{no_match}there are no runs in {self.root} yet; start one "
                                "with `mlptrain fit CONFIG`.")
        raise RunStoreError(f"no run matches {ref!r} in {self.root}. Give a run id, a unique "
                            "prefix of one, the 6-character hash that ends one, a run name, a "
                            f"run directory, or `latest`.{_did_you_mean(runs, ref)}")

    def short_refs(self) -> dict[str, str]:
        """Run id -> a short reference that find() takes for that run: the hash that ends its
        id (548dbe) where no other run's id ends or starts with it and no run is named so,
        else the whole id."""
        runs = self.runs()
        hashes = Counter(_id_parts(r)[1] for r in runs)
        taken = {r.run_id[:6] for r in runs} | {_id_parts(r)[0] for r in runs}
        refs = {}
        for run in runs:
            h = _id_parts(run)[1]
            refs[run.run_id] = h if h and hashes[h] == 1 and h not in taken else run.run_id
        return refs

    def check_removable(self, run: Run) -> None:
        """Refuses to delete anything but a run of this store: a run directory (is_run_dir)
        whose entry lies in the runs root, links in the path to it resolved, that no live
        process on this machine is training."""
        entry = run.path.parent.resolve() / run.path.name
        if entry.parent != self.root.resolve() or run.path.name in ("", ".", ".."):
            raise RunStoreError(f"{run.path} is not in the runs directory {self.root}: "
                                "`runs rm` deletes only runs there (--runs-dir names another "
                                "runs directory). Nothing was deleted.")
        if not is_run_dir(run.path):
            raise RunStoreError(f"{run.path} is not a run directory (a run's holds both "
                                "config.toml and summary.json). Nothing was deleted.")
        try:
            summary = run.read_summary()
        except RunStoreError:  # damaged: deleting it is the advice its own error gives
            return
        if writer_status(summary) == "alive":
            raise RunStoreError(f"run {run.run_id} is being trained by process "
                                f"{summary['pid']} on this machine; stop it first (deleting "
                                "it would fail that training). Nothing was deleted.")

    def remove(self, run: Run) -> Path | None:
        """Deletes a run of this store (check_removable); for a link, the link alone, and
        returns its target."""
        self.check_removable(run)
        return run.remove()


def _torn(tail: str) -> list:
    """The record of a JSON-lines file's unterminated last line: none where it is not whole
    JSON, the line a process killed mid-append left torn (the records before it stand)."""
    try:
        return [json.loads(tail)] if tail.strip() else []
    except (ValueError, RecursionError):
        return []


def _is_path(ref: str) -> bool:
    """Whether a run reference is written as a path (a bare word is first a run's id or name)."""
    separators = [os.sep, os.altsep] if os.altsep else [os.sep]
    return ref in (".", "..") or any(sep in ref for sep in separators)


def creation_order(run: Run) -> tuple[str, int]:
    """Ids start with the second a run was created; config.toml's time orders one second."""
    try:
        return run.run_id[:15], (run.path / "config.toml").stat().st_mtime_ns
    except OSError:
        return run.run_id[:15], 0


RUN_ID = re.compile(r"^\d{8}-\d{6}-(?P<name>.+)-(?P<hash>[0-9a-f]{6})$")  # stamp-name-hash


def _id_parts(run: Run) -> tuple[str | None, str | None]:
    """(name, hash) of a run id, or (None, None) for a directory named otherwise."""
    m = RUN_ID.match(run.run_id)
    return (m["name"], m["hash"]) if m else (None, None)


def _candidates(runs: list[Run], ref: str):
    """(how, runs matching) for each way of naming a run, most specific first; oldest first."""
    yield "id", [r for r in runs if r.run_id == ref]
    yield "prefix", [r for r in runs if r.run_id.startswith(ref)]
    is_hash = re.fullmatch(r"[0-9a-f]{3,6}", ref) is not None
    yield "hash", [r for r in runs if is_hash and (_id_parts(r)[1] or "").startswith(ref)]
    yield "name", [r for r in runs if _id_parts(r)[0] == ref]


def _check_not_also_a_name(runs: list[Run], ref: str, how: str, matches: list[Run]) -> None:
    """A RunStoreError where `ref`, a prefix of ids or the start of an id's hash, is also
    another run's name: a run named `fed` and one whose hash is fed3a1 (or one named 2026
    and every id of the year) would otherwise be picked apart without a word."""
    named = [r for r in runs if _id_parts(r)[0] == ref and r not in matches]
    if named:
        what = "begins the hash that ends" if how == "hash" else "begins the id of"
        ids = ", ".join(r.run_id for r in matches[:3]) + (", ..." if len(matches) > 3 else "")
        raise RunStoreError(f"{ref!r} is the name of run {named[-1].run_id} and also {what} "
                            f"run {ids}; give the whole id of the run you mean.")


def _found_note(how: str, ref: str, run: Run, count: int) -> str | None:
    if how != "name":
        return None
    newest = f"the newest of its {count} runs" if count > 1 else "its only run"
    return f"{ref!r} is a run name: using {newest}, {run.run_id}"


def _did_you_mean(runs: list[Run], ref: str) -> str:
    """A close id, name or hash for a typo, as ' Did you mean ...?', or ''."""
    names = {p[0] for p in map(_id_parts, runs) if p[0]}
    hashes = {p[1] for p in map(_id_parts, runs) if p[1]}
    ids = [r.run_id for r in runs]
    for label, words in (("a run name", sorted(names)), ("a run id", ids),
                         ("the hash of a run id", sorted(hashes))):
        close = difflib.get_close_matches(ref, words, n=1, cutoff=0.7)
        if close:
            return f" Did you mean `{close[0]}` ({label})?"
    return ""
