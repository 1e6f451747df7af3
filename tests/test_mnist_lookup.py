"""Finding the vendored data/mnist when the package does not run from the clone (`pip install .`):
beside the config file and its parents, then the working directory and its parents, before any
download."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import CONFIGS, ROOT

import mlptrain.data as data
from mlptrain.config import load_config
from mlptrain.data.mnist import find_vendored_mnist, has_mnist
from mlptrain.experiment import prepare

VENDORED = ROOT / "data" / "mnist"
OFFLINE = 'data.mirrors=["http://127.0.0.1:9/"]'  # the discard port: a download fails at once


def fake_clone(root: Path) -> Path:
    """A clone's layout: configs/mnist.toml and data/mnist/ holding the four files (links)."""
    (root / "configs").mkdir(parents=True)
    shutil.copy(CONFIGS / "mnist.toml", root / "configs" / "mnist.toml")
    (root / "data" / "mnist").mkdir(parents=True)
    for f in VENDORED.glob("*.gz"):
        (root / "data" / "mnist" / f.name).symlink_to(f)
    return root


@pytest.fixture
def installed_elsewhere(monkeypatch, tmp_path):
    """The package's own checkout has no data/mnist, as after a non-editable install; the
    working directory is an empty folder and the cache another."""
    monkeypatch.setattr(data, "REPO_MNIST_DIR", tmp_path / "site-packages" / "data" / "mnist")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    return tmp_path


def test_the_package_checkout_comes_first(tmp_path):
    clone = fake_clone(tmp_path / "clone")
    assert find_vendored_mnist(VENDORED, [clone]) == VENDORED


def test_found_beside_the_config_files_parents(installed_elsewhere):
    clone = fake_clone(installed_elsewhere / "clone")
    config = load_config(clone / "configs" / "mnist.toml", ["data.limit=100", OFFLINE,
                                                           "data.download=false"])
    p = prepare(config)
    assert Path(p.dataset.source) == clone / "data" / "mnist"
    assert len(p.dataset.y_train) == 100


def test_found_from_the_working_directory(installed_elsewhere, monkeypatch):
    clone = fake_clone(installed_elsewhere / "clone")
    (clone / "runs").mkdir()
    monkeypatch.chdir(clone / "runs")  # a sub-folder of the clone
    assert data.default_mnist_dir() == clone / "data" / "mnist"


def test_a_folder_missing_a_file_is_skipped(installed_elsewhere):
    clone = fake_clone(installed_elsewhere / "clone")
    next((clone / "data" / "mnist").glob("t10k-labels*")).unlink()
    assert not has_mnist(clone / "data" / "mnist")
    assert find_vendored_mnist(data.REPO_MNIST_DIR, [clone / "configs"]) is None
    assert data.default_mnist_dir([clone / "configs"]) == \
        installed_elsewhere / "cache" / "mlptrain" / "mnist"  # downloads would fill the cache


@pytest.mark.slow
def test_a_non_editable_install_fits_inside_the_clone_offline(tmp_path):
    """`pip install .` into a fresh venv, then `mlptrain fit configs/mnist.toml` in the clone."""
    clone = tmp_path / "clone"
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    for name in tracked + [str(p.relative_to(ROOT)) for p in (ROOT / "mlptrain").rglob("*.py")]:
        if (ROOT / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / name, clone / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    # the venv reads mlptrain's dependencies where the tests run (a fresh environment has them
    # there, not in the system's site-packages); a path in a .pth file runs no .pth of its
    # own, so this environment's editable mlptrain stays out of the venv
    paths = {sysconfig.get_path(k) for k in ("purelib", "platlib")}
    site = subprocess.run([str(venv / "bin" / "python"), "-c",
                           "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "dependencies.pth").write_text("\n".join(sorted(paths)) + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    # the wheel is built here, offline, by the setuptools the test extra installs
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "--no-index", "-q", "-w", str(tmp_path),
                            "."], cwd=clone, env=env, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("mlptrain-*.whl")
    pip = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                          "install", "--no-deps", "--no-index", "-q", str(wheel)], cwd=clone,
                         env=env, capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import mlptrain; print(mlptrain.__file__)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert str(venv) in where  # the installed copy, not the clone's or the editable one
    fit = subprocess.run([str(venv / "bin" / "mlptrain"), "fit", "configs/mnist.toml", "--set",
                          "data.limit=500", "--set", "train.epochs=1", "--set", OFFLINE,
                          "--set", "report.plots=false", "--runs-dir", "runs", "--json"],
                         cwd=clone, env=env, capture_output=True, text=True, timeout=300)
    assert fit.returncode == 0, fit.stderr
    assert '"status": "completed"' in fit.stdout
    assert str(clone / "data" / "mnist") in fit.stdout  # the dataset's source
