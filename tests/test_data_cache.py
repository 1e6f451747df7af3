"""The per-user cache of decoded MNIST files (data/cache.py): used only when it names the source
as it is now and holds bytes with the pinned checksum; anything else is read from the source."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from mlptrain.data import cache, mnist
from mlptrain.data.mnist import MNIST_FILES, load_mnist
from mlptrain.errors import DataError

VENDORED = Path(__file__).resolve().parent.parent / "data" / "mnist"
LABELS = MNIST_FILES["test_labels"]  # the smallest file


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    """A copy of the four files, and a cache of this test's own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for f in VENDORED.glob("*.gz"):
        shutil.copy(f, tmp_path / f.name)
    return tmp_path


def load(data_dir: Path) -> mnist.MnistArrays:
    mnist._last_loaded.clear()  # not the copy this process kept: the files (or the cache)
    return load_mnist(data_dir, download=False)


def entry(name: str = LABELS.name) -> Path:
    return cache.user_cache() / "decoded" / name


def no_source_reads(monkeypatch) -> None:
    """Makes reading any MNIST file from its source fail the test."""
    def refuse(path):
        raise AssertionError(f"{path} was read, not taken from the cache")

    monkeypatch.setattr(mnist, "decompressed_bytes", refuse)


def same(a: mnist.MnistArrays, b: mnist.MnistArrays) -> None:
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_a_second_process_takes_the_decoded_files_from_the_cache(data_dir, monkeypatch):
    first = load(data_dir)
    assert all(entry(f.name).is_file() for f in MNIST_FILES.values())
    no_source_reads(monkeypatch)
    same(load(data_dir), first)


def test_an_entry_of_a_changed_source_is_not_used(data_dir, monkeypatch):
    first = load(data_dir)
    source = data_dir / f"{LABELS.name}.gz"
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    read = []
    monkeypatch.setattr(mnist, "decompressed_bytes",
                        lambda path: read.append(path) or gzip.decompress(path.read_bytes()))
    same(load(data_dir), first)
    assert read == [source]  # that file alone was read again, and its entry renewed
    no_source_reads(monkeypatch)
    same(load(data_dir), first)


def test_a_bad_source_is_refused_even_with_a_good_entry(data_dir):
    load(data_dir)
    source = data_dir / f"{LABELS.name}.gz"
    content = bytearray(gzip.decompress(source.read_bytes()))
    content[8] = (content[8] + 1) % 10  # the first label
    source.write_bytes(gzip.compress(bytes(content)))
    with pytest.raises(DataError, match=LABELS.sha256):
        load(data_dir)


def plant_fifo(path: Path) -> None:
    os.mkfifo(path)


def plant_huge(path: Path) -> None:
    with open(path, "wb") as f:
        f.truncate(cache.LARGEST_ENTRY + 1)  # sparse: no disk used


@pytest.mark.parametrize("plant", [
    lambda p: p.write_bytes(b""),
    lambda p: p.write_bytes(b"garbage\n" * 100),
    lambda p: p.write_bytes(p.read_bytes()[:-1]),  # truncated
    lambda p: p.write_bytes(p.read_bytes()[:-1] + bytes([p.read_bytes()[-1] ^ 1])),  # a label
    lambda p: p.write_bytes(p.read_bytes().replace(b'", ', b'x", ', 1)),  # another source
    lambda p: (p.unlink(), p.mkdir()),
    lambda p: (p.unlink(), p.symlink_to(os.devnull)),
    lambda p: (p.unlink(), p.symlink_to(p.parent / "nowhere")),
    lambda p: (p.unlink(), plant_fifo(p)),
    lambda p: (p.unlink(), plant_huge(p)),
], ids=["empty", "garbage", "truncated", "corrupt", "other-source", "directory",
        "device", "dangling-link", "fifo", "huge"])
def test_a_bad_entry_is_a_miss_and_the_source_is_read(data_dir, plant):
    first = load(data_dir)
    plant(entry())
    same(load(data_dir), first)


def test_an_entry_with_the_right_key_and_other_bytes_is_a_miss(data_dir, monkeypatch):
    first = load(data_dir)
    other = entry(MNIST_FILES["train_labels"].name).read_bytes().split(b"\n", 1)[1]
    key = entry().read_bytes().split(b"\n", 1)[0]
    entry().write_bytes(key + b"\n" + other)  # a whole, valid IDX file: not this one
    same(load(data_dir), first)


def test_an_unwritable_cache_is_passed_over(data_dir, monkeypatch):
    blocked = data_dir / "not-a-folder"
    blocked.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))  # the cache cannot be created
    first = load(data_dir)
    same(load(data_dir), first)
    assert blocked.read_text() == ""


def test_concurrent_writers_leave_one_whole_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    source = tmp_path / "source"
    content = os.urandom(1 << 20)
    source.write_bytes(content)
    digest = hashlib.sha256(content).hexdigest()
    start, got = threading.Barrier(8), []

    def reader() -> None:
        start.wait()
        for _ in range(5):
            got.append(bytes(cache.decoded("x", source, digest, source.read_bytes)))

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == [content] * 40
    assert os.listdir(tmp_path / "cache" / "mlptrain" / "decoded") == ["x"]  # no temporaries
    assert bytes(cache.decoded("x", source, digest, lambda: pytest.fail("read"))) == content
