"""Shared fixtures: the repository root, a private runs directory, small configs."""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import threading
from pathlib import Path

import pytest

pytest.register_assert_rewrite("gpu_common")  # its checks report as a test's own asserts

# The tests keep the machine's BLAS threads: a timed choice (backend/threads.py) moves float32
# rounding, and runs compared byte for byte must not choose apart; test_threads.py turns it on
os.environ.setdefault("MLPTRAIN_CPU_TUNE", "0")

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory):
    """The tests' own per-user cache (data/cache.py: decoded MNIST), never the user's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture
def runs_dir(tmp_path, monkeypatch) -> Path:
    """A runs root of the test's own; also what MLPTRAIN_RUNS_DIR points at."""
    path = tmp_path / "runs"
    monkeypatch.setenv("MLPTRAIN_RUNS_DIR", str(path))
    return path


@pytest.fixture
def xor_config() -> Path:
    return CONFIGS / "xor.toml"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class names it so
        pass


@contextlib.contextmanager
def serve_directory(directory: Path):
    """An HTTP server on 127.0.0.1 serving `directory`, as a public mirror would; yields its
    base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
