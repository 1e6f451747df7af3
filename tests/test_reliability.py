"""Reliability (issue 14): no traceback on any path, nothing silently wrong.

Each test names the class of failure it pins; most drive the real CLI in a subprocess with real
signals, a real tmpfs (root only) and real files.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import CONFIGS, ROOT

from mlptrain.config import load_config
from mlptrain.experiment import fit_experiment
from mlptrain.runs import RunStore
from mlptrain.loop import StopFlag

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
XOR = CONFIGS / "xor.toml"


def mlptrain(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "mlptrain", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout)


def assert_clear_error(done: subprocess.CompletedProcess, *phrases: str, code: int = 1) -> None:
    assert done.returncode == code, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    text = " ".join(done.stderr.split())
    for phrase in phrases:
        assert phrase in text, text


def interrupted_run(runs: Path, *overrides: str):
    """A run stopped after its first batch (status interrupted, with a checkpoint)."""
    stop = StopFlag()
    stop.set()
    return fit_experiment(load_config(XOR, list(overrides)), RunStore(runs), stop=stop)


# -- Ctrl-C while Python imports -------------------------------------------------------------------


def test_ctrl_c_during_imports_exits_130_with_one_line(tmp_path):
    """The console script's body; the 'R' marks the moment main()'s guard holds, after
    interpreter startup and the (tiny) mlptrain.cli package, which are before any guard can
    exist (a signal before it, on a loaded machine, ended the process by SIGINT). SIGINT at
    moments spread over the ~0.3 s in which main() imports NumPy, Typer and the commands."""
    code = ("import os, sys; import mlptrain.cli as cli; load = cli._load_app; "
            "cli._load_app = lambda: (os.write(1, b'R'), load())[1]; sys.exit(cli.main())")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for delay in (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3):
        # enough epochs that the fit cannot end before the signal on a fast, idle machine
        proc = subprocess.Popen([sys.executable, "-c", code, "fit", str(XOR), "--runs-dir",
                                 str(tmp_path / "runs"), "-q", "--set", "train.epochs=100000"],
                                env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout.read(1) == b"R"
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        err = err.decode()
        assert proc.returncode == 130, (delay, err)
        assert "Traceback" not in err and "interrupted" in err, (delay, err)
        if "checkpoint" not in err:  # stopped before training: exactly one line
            assert err.strip() == "interrupted", (delay, err)


# -- OSError during a run: a full disk, a read-only directory --------------------------------------


@pytest.fixture
def tmpfs(tmp_path):
    """A 2 MB tmpfs (root only: mounting needs it)."""
    if not IS_ROOT or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    where = tmp_path / "small"
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)],
                      capture_output=True).returncode:
        pytest.skip("this machine does not allow mounting a tmpfs")
    yield where
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_full_disk_while_writing_a_checkpoint_marks_the_run_failed(tmpfs):
    # 2 x 512 x 512 weights with momentum: a checkpoint of ~2 MB does not fit in 2 MB
    done = mlptrain("fit", XOR, "--set", "model.hidden=[512,512]", "--set", "train.epochs=1",
                    "--set", "optimizer.momentum=0.9", "--runs-dir", tmpfs, "-q")
    assert_clear_error(done, "No space left on device (ENOSPC)", "checkpoint.npz",
                       "The disk is full", "marked failed", "mlptrain fit --resume")
    (run,) = [p for p in tmpfs.iterdir()]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and "ENOSPC" in summary["error"]
    assert load_config(run / "config.toml").model.hidden == [512, 512]  # earlier files whole
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def _read_only(path: Path):
    """Makes `path` read-only for this test's processes: a read-only remount when root (root
    ignores permission bits), else chmod."""
    if IS_ROOT:
        subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
    else:
        for p in [path, *path.rglob("*")]:
            p.chmod(0o555 if p.is_dir() else 0o444)


def test_resume_in_a_read_only_runs_dir_is_a_clear_error(tmpfs):
    run = interrupted_run(tmpfs)
    before = {p.name: p.read_bytes() for p in run.path.iterdir()}
    _read_only(tmpfs)
    done = mlptrain("fit", "--resume", run.path, "--runs-dir", tmpfs)
    assert_clear_error(done, "Read-only file system (EROFS)", str(run.path / "metrics.jsonl"),
                       "files it wrote before are kept")
    assert {p.name: p.read_bytes() for p in run.path.iterdir()} == before


def test_resume_in_a_read_only_dir_without_root(tmp_path):
    if IS_ROOT:
        pytest.skip("root ignores permission bits (the tmpfs test covers root)")
    run = interrupted_run(tmp_path / "runs")
    _read_only(run.path)
    try:
        done = mlptrain("fit", "--resume", run.path)
        assert_clear_error(done, "Permission denied (EACCES)", "metrics.jsonl")
    finally:
        run.path.chmod(0o755)


# -- run files of the wrong shape ------------------------------------------------------------------

DAMAGE = {
    "summary null": ("summary.json", "null"),
    "summary list": ("summary.json", "[]"),
    "status a number": ("summary.json", '{"status": 5, "model": {"sizes": [2, 1]}}'),
    "model null": ("summary.json", '{"status": "completed", "model": null}'),
    "final a string": ("summary.json",
                       '{"status": "completed", "model": {"sizes": [2, 1]}, "final": "x"}'),
    "metrics null line": ("metrics.jsonl", '{"epoch": 1, "train_loss": 0.5}\nnull\n'),
    "metrics loss a string": ("metrics.jsonl", '{"epoch": 1, "train_loss": "low"}\n'),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_a_damaged_run_is_listed_as_damaged_and_refused_clearly(tmp_path, damage):
    runs = tmp_path / "runs"
    good = interrupted_run(runs, "name=good")
    bad = interrupted_run(runs, "name=bad")
    name, text = DAMAGE[damage]
    (bad.path / name).write_text(text)
    listed = mlptrain("runs", "--json", "--runs-dir", runs)
    assert listed.returncode == 0, listed.stderr
    status = {r["id"]: r["status"] for r in json.loads(listed.stdout)}
    assert status == {good.run_id: "interrupted", bad.run_id: "damaged"}
    for args in (("runs", "show", bad.run_id), ("plot", bad.run_id)):
        assert_clear_error(mlptrain(*args, "--runs-dir", runs), "is damaged", name)
    resumed = mlptrain("fit", "--resume", bad.run_id, "--runs-dir", runs, "-q")
    if name == "summary.json":
        assert_clear_error(resumed, "is damaged", name)
    else:  # the checkpoint holds the history: a resume rewrites metrics.jsonl whole
        assert resumed.returncode == 0, resumed.stderr
        assert RunStore(runs).find(bad.run_id).read_metrics()


# -- memory: estimated from the config, refused before allocating ----------------------------------


@pytest.mark.parametrize("setting, culprit", [("model.hidden=1000000000", "model.hidden"),
                                              ("data.samples=1000000000000", "samples")])
def test_a_config_that_cannot_fit_in_memory_is_refused_up_front(tmp_path, setting, culprit):
    done = mlptrain("fit", XOR, "--set", setting, "--runs-dir", tmp_path / "runs")
    assert_clear_error(done, "this config needs about", "TiB of memory", culprit)
    assert not (tmp_path / "runs").exists()  # refused before a run (or an array) was made
    dry = mlptrain("fit", XOR, "--set", setting, "--dry-run")
    assert_clear_error(dry, "this config needs about")


def test_the_estimate_lets_the_shipped_configs_through():
    from mlptrain import memory
    from mlptrain.backend import get_backend

    for config in sorted(CONFIGS.glob("*.toml")):
        cfg = load_config(config)
        if cfg.data.dataset == "npz" or cfg.train.device != "cpu":
            continue
        need = memory.check_data_fits(cfg, get_backend("cpu"))
        assert 0 < need.data_host + need.device < 8 * 2**30, config


# -- labels checked against the loss ---------------------------------------------------------------


def test_labels_that_the_loss_cannot_score_are_refused(tmp_path):
    three = tmp_path / "three.npz"
    np.savez(three, X=np.random.default_rng(0).random((30, 2)), y=np.arange(30) % 3)
    done = mlptrain("fit", XOR, "--set", "data.dataset=npz", "--set", f"data.path={three}",
                    "--runs-dir", tmp_path / "runs")
    assert_clear_error(done, "sigmoid_bce", "labels go up to 2", "softmax_cross_entropy")
    wraps = tmp_path / "wraps.npz"
    y = np.array([0, 1] * 14 + [1, 2**64 - 1], dtype=np.uint64)  # int64(2**64-1) == -1
    np.savez(wraps, X=np.random.default_rng(0).random((30, 2)), y=y)
    done = mlptrain("fit", XOR, "--set", "data.dataset=npz", "--set", f"data.path={wraps}",
                    "--runs-dir", tmp_path / "runs")
    assert_clear_error(done, "label 29 is 18446744073709551615", "largest class index")
    assert not (tmp_path / "runs").exists()


# -- resume after the data changed on disk ---------------------------------------------------------


def test_resume_refuses_data_that_changed_unless_allowed(tmp_path):
    data = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    X = rng.random((60, 2))
    np.savez(data, X=X, y=(X[:, 0] > 0.5).astype(int))
    run = interrupted_run(tmp_path / "runs", "data.dataset=npz", f"data.path={data}",
                          "train.epochs=2")
    np.savez(data, X=X[::-1], y=(X[::-1, 0] > 0.5).astype(int))  # same shape, other order
    done = mlptrain("fit", "--resume", run.path)
    assert_clear_error(done, "the dataset changed since run", "d.npz had SHA-256",
                       "--allow-data-change")
    assert json.loads((run.path / "summary.json").read_text())["status"] == "interrupted"
    done = mlptrain("fit", "--resume", run.path, "--allow-data-change", "-q")
    assert done.returncode == 0, done.stderr
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["data_changes"][0]["files"] == ["d.npz"]


# -- names and strings: whatever a run writes reads back -------------------------------------------


def test_a_config_file_named_with_a_space_gives_a_valid_run_name(tmp_path):
    config = tmp_path / "my experiment.toml"
    config.write_text(XOR.read_text().replace('name = "xor"', "") + "\n")
    done = mlptrain("fit", config, "--set", "train.epochs=1", "--runs-dir", tmp_path / "runs",
                    "-q")
    assert done.returncode == 0, done.stderr
    (run,) = (tmp_path / "runs").iterdir()
    assert "-my-experiment-" in run.name
    saved = load_config(run / "config.toml")
    assert saved == load_config(config, ["train.epochs=1"]) and saved.name == "my-experiment"
    assert mlptrain("eval", run.name, "--runs-dir", tmp_path / "runs").returncode == 0


def test_a_newline_in_the_config_path_or_a_set_value(tmp_path):
    odd = tmp_path / "line\nbreak"
    odd.mkdir()
    config = odd / "xor.toml"
    shutil.copy(XOR, config)
    done = mlptrain("fit", config, "--set", "train.epochs=1", "--runs-dir", tmp_path / "runs",
                    "-q")
    assert done.returncode == 0, done.stderr
    (run,) = (tmp_path / "runs").iterdir()
    assert load_config(run / "config.toml") == load_config(config, ["train.epochs=1"])
    done = mlptrain("fit", XOR, "--set", "data.path=a\nb", "--runs-dir", tmp_path / "runs")
    assert_clear_error(done, "--set data.path", "control character '\\n'")


def test_a_10_mb_name_fails_at_validation_with_a_short_message(tmp_path):
    config = tmp_path / "long.toml"
    config.write_text(f'name = "{"a" * 10_000_000}"\n[data]\ndataset = "xor"\n')
    done = mlptrain("fit", config, "--runs-dir", tmp_path / "runs")
    assert_clear_error(done, "expected a run name of at most 100")
    assert len(done.stderr) < 1000 and not (tmp_path / "runs").exists()


# -- predict on a decompression bomb ---------------------------------------------------------------


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that claims width x height 8-bit gray pixels (no image data: Pillow's size check
    comes first)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("mnist") / "runs"
    done = mlptrain("fit", CONFIGS / "mnist.toml", "--set", "data.limit=300", "--set",
                    "train.epochs=1", "--set", "report.plots=false", "--runs-dir", runs, "-q")
    assert done.returncode == 0, done.stderr
    return runs


@pytest.mark.parametrize("side", [20_000, 12_000])  # past 2x the limit: error; past 1x: warning
def test_predict_refuses_a_decompression_bomb(mnist_run, tmp_path, side):
    bomb = tmp_path / "bomb.png"
    _png_header_only(bomb, side, side)
    done = mlptrain("predict", "latest", bomb, "--runs-dir", mnist_run)
    assert_clear_error(done, "is too large to read safely", str(bomb))


# -- SIGKILL during a write: stale temporaries are cleaned when the run is next written ------------


def test_stale_temporaries_are_removed_when_a_run_is_resumed(tmp_path):
    run = interrupted_run(tmp_path / "runs", "train.epochs=1")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # a pid now gone
    stale = run.path / f".checkpoint.npz.{dead}-0123abcd.tmp"
    live = run.path / f".summary.json.{os.getpid()}-89abcdef.tmp"  # a writer still alive
    stale.write_bytes(b"half a checkpoint")
    live.write_bytes(b"being written")
    done = mlptrain("fit", "--resume", run.path, "-q")
    assert done.returncode == 0, done.stderr
    assert not stale.exists() and live.exists()


@pytest.mark.slow
def test_sigkill_during_writes_leaves_no_temporaries_after_resume(tmp_path):
    """A real SIGKILL at moments inside a run that checkpoints every step, then a resume."""
    runs = tmp_path / "runs"
    for delay in (0.3, 0.7):  # after the run's first checkpoint: inside its stream of writes
        started = set(runs.glob("*/checkpoint.npz"))
        proc = subprocess.Popen([sys.executable, "-m", "mlptrain", "fit", str(XOR), "--set",
                                 "train.checkpoint_every=1", "--set", "model.hidden=[256]",
                                 "--runs-dir", str(runs), "-q"],
                                env={**os.environ, "PYTHONPATH": str(ROOT)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60  # start-up time varies with the machine's load
        while set(runs.glob("*/checkpoint.npz")) == started and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(delay)
        proc.kill()
        proc.wait()
    resumed = 0
    for run in runs.iterdir():
        if not (run / "checkpoint.npz").exists():
            continue  # killed before its first checkpoint: nothing to resume
        done = mlptrain("fit", "--resume", run, "-q", timeout=300)
        assert done.returncode == 0, done.stderr
        assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
        resumed += 1
    assert resumed == 2


# -- no write follows a link or a name someone else can plant ------------------------------------


def test_an_atomic_write_replaces_a_link_at_its_destination_never_its_target(tmp_path):
    from mlptrain.runs import atomic_write_text

    outside = tmp_path / "outside.txt"
    outside.write_text("theirs")
    link = tmp_path / "folder" / "summary.json"
    link.parent.mkdir()
    link.symlink_to(outside)
    atomic_write_text(link, "ours")
    assert outside.read_text() == "theirs"
    assert not link.is_symlink() and link.read_text() == "ours"


def test_an_atomic_write_never_writes_through_a_link_planted_at_its_temporary_name(
        tmp_path, monkeypatch):
    """Whoever guesses the next temporary name and plants a link there gains nothing: the
    temporary is created exclusively (O_EXCL, O_NOFOLLOW), so another name is drawn."""
    from mlptrain.runs import atomic_write_text
    from mlptrain.runs import store

    outside = tmp_path / "outside.txt"
    outside.write_text("theirs")
    target = tmp_path / "trials.json"
    names = iter(["0" * 16, "1" * 16])  # the first name drawn is the planted one
    monkeypatch.setattr(store.secrets, "token_hex", lambda n: next(names))
    (tmp_path / f".trials.json.{os.getpid()}-{'0' * 16}.tmp").symlink_to(outside)
    atomic_write_text(target, "ours")
    assert outside.read_text() == "theirs" and target.read_text() == "ours"


def test_config_init_replaces_a_link_at_out_and_leaves_its_target(tmp_path):
    outside = tmp_path / "outside.toml"
    outside.write_text("theirs")
    link = tmp_path / "my.toml"
    link.symlink_to(outside)
    done = mlptrain("config", "init", "--dataset", "xor", "--out", link, "--force")
    assert done.returncode == 0, done.stderr
    assert outside.read_text() == "theirs"
    assert not link.is_symlink() and "[data]" in link.read_text()


def test_no_command_but_a_run_s_training_writes_its_files(tmp_path):
    """The cousins of `export --out RUN/weights.npz`: a config, a committee's figure or
    another run's figures written into a run's folder replaced that run's own files."""
    runs = tmp_path / "runs"
    a, b = (fit_experiment(load_config(XOR, ["train.epochs=1", "report.plots=false", f"name={n}"]),
                           RunStore(runs)) for n in ("a", "b"))
    config = (b.path / "config.toml").read_bytes()
    done = mlptrain("config", "init", "--dataset", "xor", "--out", b.path / "config.toml",
                    "--force")
    assert_clear_error(done, f"is one of run {b.run_id}'s own files")
    done = mlptrain("ensemble", a.path, b.path, "--figure", b.path / "curves.png")
    assert_clear_error(done, f"is one of run {b.run_id}'s own files")
    done = mlptrain("plot", a.path, "--out", b.path)
    assert_clear_error(done, f"is the folder of run {b.run_id}")
    assert (b.path / "config.toml").read_bytes() == config
    assert not list(b.path.glob("*.png"))
