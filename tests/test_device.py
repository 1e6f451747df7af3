"""`train.device` / `--device` where CuPy or a GPU is missing: a clear error, or the CPU for auto.

Runs on every machine (CI has no GPU); the GPU side is tests/test_gpu.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from mlptrain.backend import get_backend
from mlptrain.errors import BackendError

from conftest import CONFIGS, ROOT

HAVE_CUPY = importlib.util.find_spec("cupy") is not None
no_cupy = pytest.mark.skipif(HAVE_CUPY, reason="CuPy is installed: cuda would not fail here")


def fit(tmp_path, *args):
    env = {**os.environ, "MLPTRAIN_RUNS_DIR": str(tmp_path / "runs"),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", "mlptrain", "fit", str(CONFIGS / "xor.toml"),
         "--set", "train.epochs=2", *args],
        check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@no_cupy
def test_cuda_without_cupy_names_the_extra_to_install(tmp_path):
    done = fit(tmp_path, "--device", "cuda")
    assert done.returncode == 1
    assert "pip install 'mlptrain[cuda12]'" in done.stderr
    assert "Traceback" not in done.stderr
    with pytest.raises(BackendError, match=r"mlptrain\[cuda12\]"):
        get_backend("cuda")


@no_cupy
def test_auto_without_cupy_trains_on_the_cpu(tmp_path):
    done = fit(tmp_path, "--device", "auto")
    assert done.returncode == 0, done.stderr
    (run,) = (tmp_path / "runs").iterdir()
    assert json.loads((run / "summary.json").read_text())["device"] == "cpu"
    assert get_backend("auto").device == "cpu"


def test_an_unknown_device_is_a_config_error_naming_the_choices(tmp_path):
    done = fit(tmp_path, "--device", "tpu")
    assert done.returncode == 1
    assert "expected one of cpu, cuda, auto" in done.stderr
    assert "Traceback" not in done.stderr


def test_nothing_outside_the_backend_imports_cupy():
    for path in (ROOT / "mlptrain").rglob("*.py"):
        if "backend" in path.relative_to(ROOT / "mlptrain").parts[:1]:
            continue
        assert "import cupy" not in path.read_text(), path
