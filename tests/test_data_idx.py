"""IDX reader on small synthetic files: round trips and every kind of damaged file."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from mlptrain.data.idx import read_idx
from mlptrain.errors import DataError


def idx_bytes(array: np.ndarray, dtype_code: int = 0x08) -> bytes:
    header = bytes([0, 0, dtype_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def images() -> np.ndarray:
    return np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)


def write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def assert_data_error_names(path: Path, *fragments: str) -> DataError:
    with pytest.raises(DataError) as caught:
        read_idx(path)
    message = str(caught.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message
    return caught.value


def test_raw_round_trip(tmp_path, images):
    content = idx_bytes(images)
    array, digest = read_idx(write(tmp_path / "images-idx3-ubyte", content))
    assert array.dtype == np.uint8
    np.testing.assert_array_equal(array, images)
    assert digest == hashlib.sha256(content).hexdigest()


def test_gzip_round_trip_hashes_decompressed_bytes(tmp_path, images):
    content = idx_bytes(images)
    array, digest = read_idx(write(tmp_path / "images-idx3-ubyte.gz", gzip.compress(content)))
    np.testing.assert_array_equal(array, images)
    assert digest == hashlib.sha256(content).hexdigest()


def test_gzip_detected_by_content_not_suffix(tmp_path, images):
    path = write(tmp_path / "renamed-without-suffix", gzip.compress(idx_bytes(images)))
    array, _ = read_idx(path)
    np.testing.assert_array_equal(array, images)


def test_labels_one_dimension(tmp_path):
    labels = np.array([7, 2, 1, 0, 4], dtype=np.uint8)
    array, _ = read_idx(write(tmp_path / "labels", idx_bytes(labels)))
    assert array.shape == (5,)
    np.testing.assert_array_equal(array, labels)


def test_returned_array_is_writable(tmp_path, images):
    array, _ = read_idx(write(tmp_path / "images", idx_bytes(images)))
    array[0, 0, 0] = 255


def test_truncated_data_gives_byte_counts(tmp_path, images):
    path = write(tmp_path / "short", idx_bytes(images)[:-7])
    assert_data_error_names(path, "60", "53", "shorter")


def test_extra_data_gives_byte_counts(tmp_path, images):
    path = write(tmp_path / "long", idx_bytes(images) + b"\x00\x01\x02")
    assert_data_error_names(path, "60", "63", "longer")


def test_truncated_gzip(tmp_path, images):
    compressed = gzip.compress(idx_bytes(images))
    path = write(tmp_path / "cut.gz", compressed[: len(compressed) // 2])
    assert_data_error_names(path, "gzip")


def test_gzip_magic_with_garbage(tmp_path):
    path = write(tmp_path / "garbage.gz", b"\x1f\x8b" + b"not really gzip at all" * 3)
    assert_data_error_names(path, "gzip")


def test_bad_magic(tmp_path, images):
    path = write(tmp_path / "bad-magic", b"PK" + idx_bytes(images)[2:])
    assert_data_error_names(path, "magic", "0x504b")


def test_unsupported_dtype_byte(tmp_path, images):
    path = write(tmp_path / "floats", idx_bytes(images, dtype_code=0x0D))
    assert_data_error_names(path, "0x0d", "0x08")


def test_truncated_header(tmp_path, images):
    path = write(tmp_path / "header-only", idx_bytes(images)[:9])
    assert_data_error_names(path, "16-byte header", "9 bytes")


def test_tiny_file(tmp_path):
    assert_data_error_names(write(tmp_path / "tiny", b"\x00\x00"), "2 bytes")


def test_missing_file(tmp_path):
    assert_data_error_names(tmp_path / "absent-idx1-ubyte.gz", "does not exist")
