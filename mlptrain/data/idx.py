"""Reader for the IDX format that MNIST is distributed in.

An IDX file is a big-endian header (two zero bytes, a dtype byte, a byte with the number of
dimensions, then one uint32 per dimension) followed by the raw data. The files usually come
gzip-compressed; we detect that from the content rather than the name, because copies are often
renamed or decompressed by hand.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import zlib
from pathlib import Path

import numpy as np

from mlptrain.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
UBYTE_DTYPE = 0x08
HEADER_PREFIX_BYTES = 4
DIMENSION_BYTES = 4


def is_gzip(path: Path) -> bool:
    """Whether the file starts with the gzip magic bytes."""
    with open(path, "rb") as stream:
        return stream.read(len(GZIP_MAGIC)) == GZIP_MAGIC


def read_idx(path: Path) -> tuple[np.ndarray, str]:
    """Read an IDX file (gzip-compressed or raw).

    Returns the uint8 array shaped as the header says, and the SHA-256 hex digest of the
    decompressed bytes (the value that published checksums refer to).
    """
    path = Path(path)
    content = decompressed_bytes(path)
    digest = hashlib.sha256(content).hexdigest()
    # the copy makes the array writable and independent of the decompressed buffer
    return parse_idx(path, content).copy(), digest


def decompressed_bytes(path: Path) -> bytes:
    """The IDX file's bytes, decompressed if it is gzipped (the bytes its checksum covers)."""
    try:
        stored = path.read_bytes()
    except FileNotFoundError:
        raise DataError(
            f"IDX file {path} does not exist. Expected an IDX file (raw or gzip-compressed) at "
            "that path; check the data directory, or let the tool download the file again."
        ) from None
    except OSError as error:
        raise DataError(
            f"IDX file {path} cannot be read ({error}). Check that it is a readable regular "
            "file, or delete it so it is downloaded again."
        ) from None
    if not stored.startswith(GZIP_MAGIC):
        return stored
    try:
        return gzip.decompress(stored)
    except (EOFError, OSError, zlib.error) as error:
        # EOFError is what a gzip stream cut short raises; the others mean it is damaged.
        raise DataError(
            f"IDX file {path} starts like a gzip file but cannot be decompressed ({error}): "
            f"it is {len(stored)} bytes and is truncated or corrupt. Delete it so it is "
            "downloaded again, or restore it from the repository."
        ) from None


def parse_idx(path: Path, content: bytes) -> np.ndarray:
    """The uint8 array that an IDX file's decompressed bytes hold, a read-only view of them (a
    copy of MNIST's training images cost a sweep's first read up to 0.2 s of page faults);
    `path` names the file in errors."""
    shape = _parse_header(path, content)
    header_bytes = HEADER_PREFIX_BYTES + DIMENSION_BYTES * len(shape)
    expected = math.prod(shape)  # Python ints: int64 would wrap 65536**4 around to 0
    found = len(content) - header_bytes
    if found != expected:
        relation = "shorter" if found < expected else "longer"
        raise DataError(
            f"IDX file {path} has a header announcing shape {shape}, i.e. {expected} data "
            f"bytes, but its data is {found} bytes ({relation} than announced). The file is "
            f"{'truncated' if found < expected else 'damaged'}; delete it so it is downloaded "
            "again, or restore it from the repository."
        )
    return np.frombuffer(content, dtype=np.uint8, offset=header_bytes).reshape(shape)


def _parse_header(path: Path, content: bytes) -> tuple[int, ...]:
    if len(content) < HEADER_PREFIX_BYTES:
        raise DataError(
            f"IDX file {path} is only {len(content)} bytes, shorter than the "
            f"{HEADER_PREFIX_BYTES}-byte IDX magic. It is truncated or not an IDX file; "
            "delete it so it is downloaded again, or restore it from the repository."
        )
    zero0, zero1, dtype_code, n_dims = content[:HEADER_PREFIX_BYTES]
    if zero0 != 0 or zero1 != 0:
        raise DataError(
            f"IDX file {path} does not start with the IDX magic: expected two zero bytes, "
            f"found 0x{content[:2].hex()}. It is not an IDX file (or is compressed in a format "
            "other than gzip); replace it with the original file."
        )
    if dtype_code != UBYTE_DTYPE:
        raise DataError(
            f"IDX file {path} has data type byte 0x{dtype_code:02x}; only 0x{UBYTE_DTYPE:02x} "
            "(unsigned byte, as MNIST uses) is supported. Replace it with an unsigned-byte "
            "IDX file."
        )
    if n_dims == 0:
        raise DataError(
            f"IDX file {path} declares 0 dimensions; expected at least 1. The header is "
            "corrupt; replace the file with the original."
        )
    header_bytes = HEADER_PREFIX_BYTES + DIMENSION_BYTES * n_dims
    if len(content) < header_bytes:
        raise DataError(
            f"IDX file {path} declares {n_dims} dimensions, which needs a {header_bytes}-byte "
            f"header, but the file is only {len(content)} bytes. It is truncated; delete it "
            "so it is downloaded again, or restore it from the repository."
        )
    sizes = np.frombuffer(content, dtype=">u4", count=n_dims, offset=HEADER_PREFIX_BYTES)
    return tuple(int(size) for size in sizes)
