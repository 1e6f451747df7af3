"""MNIST loading from the vendored files, checksum checks, and downloads from a local server."""

from __future__ import annotations

import gzip
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

from mlptrain.data.mnist import MNIST_FILES, DownloadProgress, load_mnist
from mlptrain.errors import DataError

from conftest import serve_directory

REPO = Path(__file__).resolve().parent.parent
VENDORED = REPO / "data" / "mnist"
IMAGE_FILES = [MNIST_FILES[key].name for key in ("train_images", "test_images")]
LABEL_FILES = [MNIST_FILES[key].name for key in ("train_labels", "test_labels")]


@pytest.fixture(scope="module")
def mnist():
    return load_mnist(VENDORED, download=False)


def corrupt_labels_gz(source: Path, target: Path) -> None:
    """Write a still-valid gzip whose first label is changed, so only the checksum catches it."""
    content = bytearray(gzip.decompress(source.read_bytes()))
    first_label = 8  # the IDX label header is 8 bytes
    content[first_label] = (content[first_label] + 1) % 10
    target.write_bytes(gzip.compress(bytes(content)))


@pytest.fixture(scope="module")
def mirror_url(tmp_path_factory):
    """Base URL of a local HTTP server: good/ serves the real files, bad/ corrupt labels."""
    root = tmp_path_factory.mktemp("mirror")
    good, bad = root / "good", root / "bad"
    good.mkdir()
    bad.mkdir()
    for name in IMAGE_FILES + LABEL_FILES:
        shutil.copyfile(VENDORED / f"{name}.gz", good / f"{name}.gz")
    for name in LABEL_FILES:
        corrupt_labels_gz(VENDORED / f"{name}.gz", bad / f"{name}.gz")
    with serve_directory(root) as url:
        yield url


@pytest.fixture
def dead_mirror():
    """A URL on a port that is bound but not listening, so connections are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{blocker.getsockname()[1]}/"


@pytest.fixture
def dir_with_images(tmp_path) -> Path:
    """A data dir that already holds the image files, so only the small labels get downloaded."""
    data_dir = tmp_path / "mnist"
    data_dir.mkdir()
    for name in IMAGE_FILES:
        os.symlink(VENDORED / f"{name}.gz", data_dir / f"{name}.gz")
    return data_dir


def test_vendored_files_load(mnist):
    assert mnist.train_images.shape == (60000, 784)
    assert mnist.test_images.shape == (10000, 784)
    assert mnist.train_images.dtype == mnist.test_images.dtype == np.float32
    assert mnist.train_labels.shape == (60000,)
    assert mnist.test_labels.shape == (10000,)
    assert mnist.train_labels.dtype == mnist.test_labels.dtype == np.int64
    for images in (mnist.train_images, mnist.test_images):
        assert images.min() == 0.0
        assert images.max() == 1.0
    for labels, n in ((mnist.train_labels, 60000), (mnist.test_labels, 10000)):
        counts = np.bincount(labels, minlength=10)
        assert len(counts) == 10
        assert counts.min() > n // 20  # every digit well represented
    assert mnist.source == str(VENDORED)


def test_checksums_are_the_pinned_ones(mnist):
    assert mnist.checksums == {f.name: f.sha256 for f in MNIST_FILES.values()}


def test_pinned_checksums_match_vendored_readme():
    readme = (VENDORED / "README.md").read_text()
    for mnist_file in MNIST_FILES.values():
        assert mnist_file.sha256 in readme


def test_corrupt_local_file_names_file_and_hashes(dir_with_images):
    labels = MNIST_FILES["train_labels"]
    corrupt_labels_gz(VENDORED / f"{labels.name}.gz", dir_with_images / f"{labels.name}.gz")
    with pytest.raises(DataError) as caught:
        load_mnist(dir_with_images, download=False)
    message = str(caught.value)
    assert f"{labels.name}.gz" in message
    assert labels.sha256 in message
    assert "delete" in message


def test_raw_decompressed_files_accepted(dir_with_images, mnist):
    for name in LABEL_FILES:
        raw = gzip.decompress((VENDORED / f"{name}.gz").read_bytes())
        (dir_with_images / name).write_bytes(raw)
    loaded = load_mnist(dir_with_images, download=False)
    np.testing.assert_array_equal(loaded.test_labels, mnist.test_labels)


def test_missing_file_without_download(dir_with_images):
    with pytest.raises(DataError) as caught:
        load_mnist(dir_with_images, download=False)
    assert MNIST_FILES["train_labels"].name in str(caught.value)


def test_download_all_files(tmp_path, mirror_url, mnist):
    data_dir = tmp_path / "fresh" / "mnist"
    events: list[DownloadProgress] = []
    loaded = load_mnist(data_dir, mirrors=[mirror_url + "good/"], progress=events.append)

    np.testing.assert_array_equal(loaded.train_images, mnist.train_images)
    np.testing.assert_array_equal(loaded.test_labels, mnist.test_labels)
    assert loaded.checksums == mnist.checksums
    expected_files = {f"{f.name}.gz" for f in MNIST_FILES.values()}
    assert {p.name for p in data_dir.iterdir()} == expected_files

    for mnist_file in MNIST_FILES.values():
        done = [e.done_bytes for e in events if e.file == mnist_file.name]
        size = (VENDORED / f"{mnist_file.name}.gz").stat().st_size
        assert done, f"no progress reported for {mnist_file.name}"
        assert all(a < b for a, b in zip(done, done[1:]))
        assert done[-1] == size
        assert {e.total_bytes for e in events if e.file == mnist_file.name} == {size}
    # Second load finds the downloaded files and needs no network.
    load_mnist(data_dir, mirrors=[], download=False)


def test_corrupt_mirror_leaves_no_file(dir_with_images, mirror_url):
    before = sorted(p.name for p in dir_with_images.iterdir())
    with pytest.raises(DataError) as caught:
        load_mnist(dir_with_images, mirrors=[mirror_url + "bad/"])
    message = str(caught.value)
    assert f"{mirror_url}bad/{MNIST_FILES['train_labels'].name}.gz" in message
    assert "checksum" in message
    assert sorted(p.name for p in dir_with_images.iterdir()) == before


def test_unreachable_mirror_then_good_one(dir_with_images, mirror_url, dead_mirror, mnist):
    loaded = load_mnist(dir_with_images, mirrors=[dead_mirror, mirror_url + "good"])
    np.testing.assert_array_equal(loaded.train_labels, mnist.train_labels)
    for name in LABEL_FILES:
        assert (dir_with_images / f"{name}.gz").is_file()


def test_all_mirrors_failing_lists_each_url(dir_with_images, mirror_url, dead_mirror):
    mirrors = [dead_mirror, mirror_url + "bad/", mirror_url + "missing/"]
    with pytest.raises(DataError) as caught:
        load_mnist(dir_with_images, mirrors=mirrors, timeout=5)
    message = str(caught.value)
    name = MNIST_FILES["train_labels"].name
    for mirror in mirrors:
        assert f"{mirror}{name}.gz" in message
    assert "404" in message
    assert "by hand" in message
    assert str(dir_with_images) in message


def test_unwritable_data_directory_is_a_clear_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(DataError, match="cannot be created") as info:
        load_mnist(blocker / "mnist", mirrors=["http://127.0.0.1:9/"])
    assert "data.path" in str(info.value)


def test_the_last_files_loaded_are_reused_read_only_until_one_changes(tmp_path):
    for f in VENDORED.glob("*.gz"):
        shutil.copy(f, tmp_path / f.name)
    first = load_mnist(tmp_path, download=False)
    assert load_mnist(tmp_path, download=False) is first  # a sweep's trials read them once
    with pytest.raises(ValueError):
        first.train_images[0, 0] = 1  # shared by every run: nobody may write into them
    labels = next(tmp_path.glob("t10k-labels*"))
    stat = labels.stat()
    os.utime(labels, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    again = load_mnist(tmp_path, download=False)
    assert again is not first  # read (and verified) afresh
    np.testing.assert_array_equal(again.test_labels, first.test_labels)
    labels.write_bytes(gzip.compress(b"not an idx file"))
    with pytest.raises(DataError):
        load_mnist(tmp_path, download=False)


def test_split_seed_fixes_the_held_out_digits_across_train_seeds():
    from mlptrain.config import parse_config
    from mlptrain.data import load_dataset
    from mlptrain.seeding import streams

    def rows(seed, *overrides):
        return load_dataset(parse_config("", overrides=list(overrides)).data, streams(seed)).rows

    default, own = rows(3), rows(3, "data.split_seed=3")  # -1 follows train.seed exactly
    assert all(np.array_equal(default[k], own[k]) for k in ("train", "val"))
    fixed = [rows(seed, "data.split_seed=0")["val"] for seed in (1, 2)]
    assert np.array_equal(fixed[0], fixed[1]) and np.array_equal(fixed[0], rows(0)["val"])
    assert not np.array_equal(rows(1)["val"], rows(2)["val"])  # without it: a split per seed


def test_a_pooled_split_is_copied_out_of_the_pool_when_first_asked_for():
    from mlptrain.config import parse_config
    from mlptrain.data import load_dataset
    from mlptrain.seeding import streams

    d = load_dataset(parse_config("").data, streams(0))
    assert d.X_train is None and d.X_val is None and d.n_features == 784  # rows of the pool
    assert len(d.targets("train")) == 54000 and d.X_train is None  # the targets alone
    X, y = d.split("train")
    np.testing.assert_array_equal(X, d.pool[0][d.rows["train"]])
    np.testing.assert_array_equal(y, d.pool[1][d.rows["train"]])
    assert d.split("train")[0] is X and d.X_val is None  # copied once, and that split alone
