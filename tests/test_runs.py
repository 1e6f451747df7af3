"""The run store: unique run directories (threads and processes), finding runs, atomic files."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest

import mlptrain.runs.store as runs_module
from mlptrain.errors import RunStoreError
from mlptrain.runs import Run, RunStore

ID_RE = re.compile(r"^(\d{8}-\d{6})-(.+)-([0-9a-f]{6})$")


def _leftover_temp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def _fixed_stamps(monkeypatch, *stamps: str) -> None:
    """Makes RunStore.create use these timestamps, one per call, in order."""
    queue = list(stamps)
    monkeypatch.setattr(runs_module, "time",
                        types.SimpleNamespace(strftime=lambda fmt: queue.pop(0)))


def _listed(run: Run) -> Run:
    run.write_config("x = 1\n")
    run.write_summary({"status": "running"})  # the two files a fit writes first
    return run


# ----------------------------------------------------------------------------- create


def test_create_names_the_directory(tmp_path):
    before = time.strftime("%Y%m%d-%H%M%S")
    run = RunStore(tmp_path / "runs").create("x")
    after = time.strftime("%Y%m%d-%H%M%S")
    assert run.path.is_dir()
    assert run.path.parent == tmp_path / "runs"
    match = ID_RE.match(run.run_id)
    assert match, run.run_id
    assert before <= match.group(1) <= after
    assert match.group(2) == "x"
    assert run.run_id == run.path.name
    assert list(run.path.iterdir()) == []


def test_create_with_dashed_name(tmp_path):
    run = RunStore(tmp_path).create("xor-small")
    assert ID_RE.match(run.run_id).group(2) == "xor-small"


def test_create_in_threads_gives_distinct_directories(tmp_path):
    store = RunStore(tmp_path / "runs")  # the root does not exist yet: created concurrently
    barrier = threading.Barrier(50)
    results, errors = [], []

    def worker():
        barrier.wait()
        try:
            results.append(store.create("t").path)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(results) == 50
    assert len(set(results)) == 50
    assert all(p.is_dir() for p in results)
    assert len(list((tmp_path / "runs").iterdir())) == 50


def test_create_retries_a_taken_id(tmp_path, monkeypatch):
    store = RunStore(tmp_path)
    _fixed_stamps(monkeypatch, "20240101-000000", "20240101-000000")
    tokens = iter(["aaaaaa", "aaaaaa", "bbbbbb"])
    monkeypatch.setattr(runs_module.secrets, "token_hex", lambda n: next(tokens))
    first = store.create("x")
    second = store.create("x")
    assert first.run_id == "20240101-000000-x-aaaaaa"
    assert second.run_id == "20240101-000000-x-bbbbbb"


def test_create_gives_up_when_no_id_is_free(tmp_path, monkeypatch):
    store = RunStore(tmp_path)
    (tmp_path / "20240101-000000-x-aaaaaa").mkdir()
    monkeypatch.setattr(runs_module, "time",
                        types.SimpleNamespace(strftime=lambda fmt: "20240101-000000"))
    monkeypatch.setattr(runs_module.secrets, "token_hex", lambda n: "aaaaaa")
    with pytest.raises(RunStoreError, match="free run id"):
        store.create("x")


def test_create_under_a_file_is_a_run_store_error(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("", encoding="utf-8")
    with pytest.raises(RunStoreError) as info:
        RunStore(blocker / "runs").create("x")
    assert "runs directory" in str(info.value)


_PROCESS_SCRIPT = r"""
import sys, time
from pathlib import Path
from mlptrain.runs import RunStore
root, go = Path(sys.argv[1]), Path(sys.argv[2])
store = RunStore(root)
print("ready", flush=True)
deadline = time.monotonic() + 30
while not go.exists():
    if time.monotonic() > deadline:
        sys.exit("no go signal")
    time.sleep(0.001)
for _ in range(10):
    print(store.create("p").path, flush=True)
"""


def test_create_in_processes_gives_distinct_directories(tmp_path):
    root, go = tmp_path / "runs", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _PROCESS_SCRIPT, str(root), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    try:
        for proc in procs:  # all four are imported and waiting before any creates
            assert proc.stdout.readline().strip() == "ready"
        go.write_text("", encoding="utf-8")
        outputs = [proc.communicate(timeout=60) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
    paths = [Path(line) for out, _ in outputs for line in out.split()]
    assert len(paths) == 40
    assert len(set(paths)) == 40
    assert all(p.is_dir() and ID_RE.match(p.name) for p in paths)
    assert len(list(root.iterdir())) == 40


# ----------------------------------------------------------------------------- find


def test_runs_lists_only_directories_with_config(tmp_path, monkeypatch):
    store = RunStore(tmp_path)
    _fixed_stamps(monkeypatch, "20240101-000001", "20240101-000002", "20240101-000003")
    a = _listed(store.create("a"))
    store.create("b")  # no config.toml: not (yet) a run
    c = _listed(store.create("c"))
    (tmp_path / "stray-file.txt").write_text("", encoding="utf-8")
    assert [r.run_id for r in store.runs()] == [a.run_id, c.run_id]


def test_runs_of_a_missing_root_is_empty(tmp_path):
    assert RunStore(tmp_path / "nowhere").runs() == []


def test_find_by_id_prefix_and_path(tmp_path, monkeypatch):
    store = RunStore(tmp_path)
    _fixed_stamps(monkeypatch, "20240101-000001", "20240102-000001")
    a = _listed(store.create("a"))
    b = _listed(store.create("b"))
    assert store.find(a.run_id).path == a.path
    assert store.find(b.run_id).path == b.path
    assert store.find("20240101").path == a.path
    assert store.find("20240102-000001-b").path == b.path
    assert store.find(str(a.path)).path == a.path
    assert store.find(str(b.path.resolve())).path == b.path.resolve()


def test_find_by_path_outside_the_store(tmp_path):
    elsewhere = tmp_path / "elsewhere" / "myrun"
    elsewhere.mkdir(parents=True)
    Run(elsewhere).write_config("x = 1\n")
    Run(elsewhere).write_summary({"status": "completed"})
    store = RunStore(tmp_path / "runs")
    assert store.find(str(elsewhere)).path == elsewhere


def test_find_latest_by_time(tmp_path, monkeypatch):
    store = RunStore(tmp_path)
    # the later run gets the smaller random suffix and the alphabetically smaller name:
    # only the timestamp may decide
    _fixed_stamps(monkeypatch, "20240101-120000", "20240101-120001")
    tokens, real = iter(["ffffff", "000000"]), runs_module.secrets.token_hex
    # only the run ids' 3-byte suffixes are forced; temporary file names stay random
    monkeypatch.setattr(runs_module.secrets, "token_hex",
                        lambda n: next(tokens) if n == 3 else real(n))
    older = _listed(store.create("zzz"))
    newer = _listed(store.create("aaa"))
    assert store.find("latest").path == newer.path
    assert store.runs()[0].path == older.path


def test_find_latest_with_hand_made_dirs(tmp_path):
    for name in ["20230101-000000-a-000001", "20250101-000000-a-000000",
                 "20240101-000000-a-ffffff"]:
        (tmp_path / name).mkdir()
        Run(tmp_path / name).write_config("x = 1\n")
    (tmp_path / "20260101-000000-a-000000").mkdir()  # newest, but no config.toml
    assert RunStore(tmp_path).find("latest").run_id == "20250101-000000-a-000000"


def test_exact_id_beats_prefix(tmp_path):
    for name in ["run1", "run10"]:
        (tmp_path / name).mkdir()
        Run(tmp_path / name).write_config("x = 1\n")
    store = RunStore(tmp_path)
    assert store.find("run1").run_id == "run1"
    assert store.find("run10").run_id == "run10"


def test_find_ambiguous_prefix(tmp_path, monkeypatch):
    store = RunStore(tmp_path)
    _fixed_stamps(monkeypatch, "20240101-000001", "20240101-000002")
    a = _listed(store.create("a"))
    b = _listed(store.create("b"))
    with pytest.raises(RunStoreError) as info:
        store.find("20240101")
    msg = str(info.value)
    assert "'20240101'" in msg
    assert "matches 2 runs" in msg
    assert a.run_id in msg and b.run_id in msg
    assert "more of the id" in msg


def test_find_ambiguous_prefix_lists_at_most_five(tmp_path, monkeypatch):
    store = RunStore(tmp_path)
    _fixed_stamps(monkeypatch, *[f"20240101-00000{i}" for i in range(7)])
    made = [_listed(store.create("r")) for _ in range(7)]
    with pytest.raises(RunStoreError) as info:
        store.find("2024")
    msg = str(info.value)
    assert "matches 7 runs" in msg
    assert sum(r.run_id in msg for r in made) == 5
    assert "..." in msg


def test_find_no_match(tmp_path):
    store = RunStore(tmp_path)
    _listed(store.create("a"))
    with pytest.raises(RunStoreError) as info:
        store.find("nothing-like-this")
    msg = str(info.value)
    assert "'nothing-like-this'" in msg
    assert str(tmp_path) in msg
    assert "latest" in msg and "prefix" in msg


def test_find_ignores_runs_without_config(tmp_path):
    store = RunStore(tmp_path)
    run = store.create("a")
    with pytest.raises(RunStoreError):
        store.find(run.run_id)
    with pytest.raises(RunStoreError):
        store.find("latest")
    run.write_config("x = 1\n")
    assert store.find(run.run_id).path == run.path


def test_latest_on_an_empty_store(tmp_path):
    for root in (tmp_path, tmp_path / "missing"):
        with pytest.raises(RunStoreError) as info:
            RunStore(root).find("latest")
        assert "no runs" in str(info.value)
        assert str(root) in str(info.value)


def test_default_runs_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(runs_module.RUNS_DIR_ENV, str(tmp_path / "elsewhere"))
    assert RunStore().root == tmp_path / "elsewhere"
    monkeypatch.delenv(runs_module.RUNS_DIR_ENV)
    assert RunStore().root == Path("runs")


# ----------------------------------------------------------------------------- files


@pytest.fixture
def run(tmp_path):
    return RunStore(tmp_path).create("files")


def test_weights_round_trip(run):
    state = {"layers.0.weight": np.arange(12, dtype=np.float32).reshape(3, 4),
             "layers.0.bias": np.zeros(4, dtype=np.float32),
             "layers.1.weight": np.random.default_rng(0).standard_normal((4, 2)),
             "layers.1.bias": np.array([1.5, -2.0])}
    run.write_weights(state)
    back = run.read_weights()
    assert set(back) == set(state)
    for key, value in state.items():
        assert back[key].dtype == value.dtype
        np.testing.assert_array_equal(back[key], value)
    assert _leftover_temp_files(run.path) == []


def test_checkpoint_round_trip(run):
    arrays = {"step": np.array(7), "rng": np.arange(5, dtype=np.uint64)}
    run.write_checkpoint(arrays)
    back = run.read_checkpoint()
    assert int(back["step"]) == 7
    np.testing.assert_array_equal(back["rng"], arrays["rng"])


def test_weights_overwrite(run):
    run.write_weights({"a": np.ones(3)})
    run.write_weights({"b": np.zeros(2)})
    assert set(run.read_weights()) == {"b"}
    assert _leftover_temp_files(run.path) == []


def test_append_metrics_writes_jsonl_and_csv(run):
    run.append_metrics({"epoch": 1, "loss": 0.5, "acc": 0.8})
    run.append_metrics({"epoch": 2, "loss": 0.25, "acc": 0.9})
    lines = (run.path / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    assert [json.loads(line) for line in lines] == [{"epoch": 1, "loss": 0.5, "acc": 0.8},
                                                    {"epoch": 2, "loss": 0.25, "acc": 0.9}]
    assert run.read_metrics() == [json.loads(line) for line in lines]
    text = (run.path / "metrics.csv").read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows == [["epoch", "loss", "acc"], ["1", "0.5", "0.8"], ["2", "0.25", "0.9"]]
    assert _leftover_temp_files(run.path) == []


def test_metrics_csv_header_is_the_union_of_keys(run):
    run.append_metrics({"epoch": 1, "loss": 0.5})
    run.append_metrics({"epoch": 2, "loss": 0.4, "val_loss": 0.45})
    rows = list(csv.DictReader(io.StringIO((run.path / "metrics.csv").read_text("utf-8"))))
    assert list(rows[0]) == ["epoch", "loss", "val_loss"]
    assert rows[0]["val_loss"] == "" and rows[1]["val_loss"] == "0.45"


def test_summary_and_config_round_trip(run):
    run.write_config('name = "x"\n')
    run.write_summary({"status": "completed", "test": {"acc": 0.98}})
    assert (run.path / "config.toml").read_text(encoding="utf-8") == 'name = "x"\n'
    assert run.read_summary() == {"status": "completed", "test": {"acc": 0.98}}
    assert _leftover_temp_files(run.path) == []


def test_failed_replace_keeps_the_old_file_and_no_temp(run, monkeypatch):
    run.write_weights({"old": np.arange(3)})
    run.write_summary({"status": "running"})
    old_weights = (run.path / "weights.npz").read_bytes()
    real_replace = os.replace

    def failing_replace(src, dst, *args, **kwargs):
        if Path(dst).parent == run.path:
            raise OSError("disk full (simulated)")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(runs_module.os, "replace", failing_replace)
    with pytest.raises((OSError, RunStoreError)):
        run.write_weights({"new": np.arange(1000)})
    with pytest.raises((OSError, RunStoreError)):
        run.write_summary({"status": "completed"})
    monkeypatch.undo()
    assert (run.path / "weights.npz").read_bytes() == old_weights
    assert set(run.read_weights()) == {"old"}
    assert run.read_summary() == {"status": "running"}
    assert _leftover_temp_files(run.path) == []


def test_failed_write_midway_keeps_the_old_file_and_no_temp(run, monkeypatch):
    run.write_summary({"status": "running"})

    def failing_fsync(fd):
        raise OSError("I/O error (simulated)")

    monkeypatch.setattr(runs_module.os, "fsync", failing_fsync)
    with pytest.raises((OSError, RunStoreError)):
        run.write_summary({"status": "completed"})
    monkeypatch.undo()
    assert run.read_summary() == {"status": "running"}
    assert _leftover_temp_files(run.path) == []


def test_read_summary_of_a_missing_file(run):
    with pytest.raises(RunStoreError) as info:
        run.read_summary()
    assert "summary.json" in str(info.value)
    assert run.run_id in str(info.value)


@pytest.mark.parametrize("read", ["read_weights", "read_checkpoint", "read_metrics"])
def test_other_missing_files(run, read):
    with pytest.raises(RunStoreError) as info:
        getattr(run, read)()
    assert run.run_id in str(info.value)


@pytest.mark.parametrize("content", [b"", b"garbage, not an npz", b"\x93NUMPY\x01\x00garbage"])
def test_corrupt_weights(run, content):
    (run.path / "weights.npz").write_bytes(content)
    with pytest.raises(RunStoreError) as info:
        run.read_weights()
    assert "weights.npz" in str(info.value)


def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _flip_a_data_byte(data: bytes) -> bytes:
    out = bytearray(data)
    out[len(out) // 3] ^= 0xFF
    return bytes(out)


@pytest.mark.parametrize("damage", [_truncate, _flip_a_data_byte], ids=["truncated", "bitflip"])
def test_damaged_real_weights(run, damage):
    run.write_weights({"layers.0.weight": np.arange(1000, dtype=np.float64)})
    path = run.path / "weights.npz"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(RunStoreError) as info:
        run.read_weights()
    assert "weights.npz" in str(info.value)


def test_appended_metrics_are_the_bytes_a_whole_rewrite_gives(tmp_path):
    """Each epoch's record is appended (one write per file); the files must equal what
    write_metrics writes whole for the same records, a record with a new column rewrites both
    (the CSV header grows), and an append never writes through a link."""
    records = [{"epoch": e, "lr": 0.1 / e, "train_loss": 1.0 / e} for e in range(1, 5)]
    records.insert(2, {"epoch": 2.5, "lr": 0.05})  # a column missing: an empty CSV cell
    records.append({"epoch": 5, "lr": 0.02, "train_loss": 0.2, "val_loss": 0.3})  # a new one
    appended = RunStore(tmp_path / "a").create("m")
    for r in records:
        appended.append_metrics(r)
    whole = RunStore(tmp_path / "w").create("m")
    whole.write_metrics(records)
    for name in ("metrics.jsonl", "metrics.csv"):
        assert (appended.path / name).read_bytes() == (whole.path / name).read_bytes(), name
    lines = (appended.path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == records
    elsewhere = tmp_path / "elsewhere.jsonl"
    elsewhere.write_text("")
    (appended.path / "metrics.jsonl").unlink()
    (appended.path / "metrics.jsonl").symlink_to(elsewhere)
    appended.append_metrics({"epoch": 6, "lr": 0.01, "train_loss": 0.1, "val_loss": 0.2})
    assert elsewhere.read_text() == "" and not (appended.path / "metrics.jsonl").is_symlink()
    lines = (appended.path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 2.5, 3, 4, 5, 6]
