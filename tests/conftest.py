"""Shared fixtures: the repository root, a private runs directory, small configs."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"


@pytest.fixture
def runs_dir(tmp_path, monkeypatch) -> Path:
    """A runs root of the test's own; also what MLPTRAIN_RUNS_DIR points at."""
    path = tmp_path / "runs"
    monkeypatch.setenv("MLPTRAIN_RUNS_DIR", str(path))
    return path


@pytest.fixture
def xor_config() -> Path:
    return CONFIGS / "xor.toml"
