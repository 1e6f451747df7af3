"""Reading .npz archives and .npy files: every array's header is checked before any of its bytes.

np.load trusts a file. An entry whose header claims 10**12 float64 values makes NumPy allocate
8 TB before it reads a byte (a MemoryError), a complex array cast to float loses its imaginary
part without a word, string "weights" of the right names and shapes convert digit by digit, a
zip named .npy loads as an archive, and a pipe blocks until its writer closes it and can be read
only once. Every array the tool reads from a file (a dataset, weights, a checkpoint, an input to
score) therefore comes through here:

- the path must be a regular file, not a pipe, device or folder;
- each entry's header (numpy.lib.format, versions 1.0 and 2.0) is read first: its dtype must be
  a real number (bool, integer, float), or one text for the keys the caller names as JSON text;
  never an object array (that needs pickle, which can run code), complex, structured or bytes;
- its size (shape x item size) must be exactly the bytes the entry holds after the header, its
  shape the one the caller expects where it expects one, and all the entries read must fit the
  memory available together;
- only then are the bytes read, into an array of exactly that size, and floats must be finite
  (except the keys the caller allows to hold inf or NaN).

Anything else raises the caller's error class (an MlptrainError), naming the file, the array and
what was expected.
"""

from __future__ import annotations

import io
import math
import os
import stat
import struct
import tokenize
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.lib import format as npy

from mlptrain.errors import DataError, MlptrainError
from mlptrain.memory import byte_size, host_available

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK"  # a local file header (PK\x03\x04) or, for an empty archive, the end record
REAL_KINDS = "biuf"  # bool, signed and unsigned integers, floats
HEADER_READERS = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}
# what a damaged zip, zip entry or .npy header raises from zipfile, zlib, struct, ast and numpy
UNREADABLE = (OSError, EOFError, ValueError, TypeError, KeyError, IndexError, OverflowError,
              NotImplementedError, RuntimeError, SyntaxError, UnicodeDecodeError, struct.error,
              zlib.error, zipfile.BadZipFile, zipfile.LargeZipFile, tokenize.TokenError)


@dataclass(frozen=True)
class Expect:
    """What a reader knows of the arrays before it reads them. A key in `text` or `nonfinite`
    ending in '.' stands for every key it begins (`rng.`)."""

    text: tuple[str, ...] = ()  # keys that each hold one JSON text (a 0-d unicode array)
    nonfinite: tuple[str, ...] = ()  # float keys that may hold inf or NaN (an initial best)
    labels: tuple[str, ...] = ()  # keys that may hold names (unicode text) as class labels
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # known in advance
    shapes_of: str = "this file"  # whose shapes those are, for a message: "the 784-128-10 ..."
    shape_error: type[MlptrainError] | None = None  # raised for another shape (None: the
    # reader's error); weights that do not fit a network are a ModelError wherever they are
    dtypes: tuple[str, ...] = ()  # the only dtypes its arrays may have (): any real number


@dataclass(frozen=True)
class Header:
    """One array's header: what its bytes will be, known before any of them is read."""

    key: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    data_offset: int  # where the bytes start inside the entry (after magic and header)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize  # Python ints: no overflow


def read_npz(source: Path | str | bytes, name: str, error: type[MlptrainError] = DataError,
             expect: Expect = Expect(), keys: Iterable[str] | None = None
             ) -> dict[str, np.ndarray]:
    """The arrays of a .npz (a path, or its bytes), every one checked as the module says.
    `name` names the file in messages ("Dataset file data.npz"); `keys`: read only these (when
    present), checking only their headers."""
    with _archive(source, name, error) as archive:
        headers = _headers(archive, name, error, expect, keys)
        _check_memory(headers.values(), name, error)
        return {key: _entry_array(archive, h, name, error, expect) for key, h in headers.items()}


def npz_headers(source: Path | str | bytes, name: str, error: type[MlptrainError] = DataError,
                expect: Expect = Expect(), keys: Iterable[str] | None = None
                ) -> dict[str, Header]:
    """The checked headers of a .npz's arrays (all, or `keys`), without reading their data:
    what a memory estimate needs before anything is loaded."""
    with _archive(source, name, error) as archive:
        return _headers(archive, name, error, expect, keys)


def npz_names(source: Path | str | bytes, name: str, error: type[MlptrainError] = DataError
              ) -> list[str]:
    """The names of every entry of a .npz (arrays without their .npy), none of them read:
    what a message says the file holds when a reader found no array it wants in it."""
    with _archive(source, name, error) as archive:
        return [n[:-len(".npy")] if n.endswith(".npy") else n for n in archive.namelist()]


def read_npy(path: Path | str, name: str, error: type[MlptrainError] = DataError) -> np.ndarray:
    """The array of one .npy file, checked as an archive's entries are."""
    size = _regular_file(Path(path), name, error)
    try:
        with open(path, "rb") as f:
            if f.read(len(ZIP_MAGIC)) == ZIP_MAGIC:
                raise error(f"{name} is a zip archive (an .npz), not a single .npy array; "
                            "give it the .npz suffix.")
            f.seek(0)
            header = _header(f, "", size, name, error, Expect())
            _check_memory([header], name, error)
            return _array(f, header, name, error, Expect())
    except UNREADABLE as exc:
        raise error(f"{name} is not a readable .npy array ({_why(exc)}); expected an array "
                    "as numpy.save writes it.") from None


def matches(key: str, names: Iterable[str]) -> bool:
    """Whether `key` is one of `names`, a name ending in '.' standing for a prefix."""
    return any(key == n or (n.endswith(".") and key.startswith(n)) for n in names)


# -- the archive ----------------------------------------------------------------------------------


@contextmanager
def _archive(source: Path | str | bytes, name: str, error: type[MlptrainError]):
    """A .npz opened as a zip, from a regular file or from bytes; refuses anything else."""
    if isinstance(source, bytes):
        file = io.BytesIO(source)
    else:
        _regular_file(Path(source), name, error)
        try:
            file = open(source, "rb")
        except OSError as exc:
            raise error(f"{name} cannot be read ({_why(exc)}).") from None
    with file, _zip(file, name, error) as archive:
        yield archive


def _zip(file, name: str, error: type[MlptrainError]) -> zipfile.ZipFile:
    npz = "not a .npz archive (expected a zip of .npy arrays, as numpy.savez writes)."
    try:
        if file.read(len(NPY_MAGIC)) == NPY_MAGIC:
            raise error(f"{name} is not a readable .npz file: it is a single .npy array, {npz}")
        file.seek(0)
        return zipfile.ZipFile(file)
    except UNREADABLE as exc:
        raise error(f"{name} is not a readable .npz file: {_why(exc)}, so it is {npz}") from None


def _regular_file(path: Path, name: str, error: type[MlptrainError]) -> int:
    """The file's size; refuses a missing path and anything but a regular file (stat only:
    opening a pipe would block until a writer comes)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise error(f"{name} does not exist; check the path (a relative one is resolved from "
                    "the current directory).") from None
    except OSError as exc:
        raise error(f"{name} cannot be read ({_why(exc)}).") from None
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{name} is not a regular file (a pipe, a device or a folder); expected "
                    "a file that can be read more than once (a resumed run reads its data "
                    "again): save the data to a file and give its path.")
    return info.st_size


def _headers(archive: zipfile.ZipFile, name: str, error, expect: Expect,
             keys: Iterable[str] | None) -> dict[str, Header]:
    wanted = None if keys is None else set(keys)
    headers: dict[str, Header] = {}
    for info in archive.infolist():
        key = info.filename[:-len(".npy")] if info.filename.endswith(".npy") else None
        if wanted is not None and key not in wanted:
            continue
        if key is None:
            raise error(f"{name} holds {info.filename!r}, which is not a .npy array; expected "
                        "only the arrays numpy.savez writes.")
        if key in headers:
            raise error(f"{name} holds the array {key!r} twice; expected each name once.")
        try:
            with archive.open(info) as f:
                headers[key] = _header(f, key, info.file_size, name, error, expect)
        except UNREADABLE as exc:
            raise error(f"{name}: array {key!r} cannot be read ({_why(exc)}); expected a .npy "
                        "array as numpy.save writes it.") from None
    return headers


def _entry_array(archive: zipfile.ZipFile, header: Header, name: str, error,
                 expect: Expect) -> np.ndarray:
    try:
        with archive.open(f"{header.key}.npy") as f:
            f.read(header.data_offset)  # the header, checked already
            return _array(f, header, name, error, expect)
    except UNREADABLE as exc:
        raise error(f"{name}: array {header.key!r} cannot be read ({_why(exc)}); the file is "
                    "damaged or was changed after it was written.") from None


# -- one array ------------------------------------------------------------------------------------


def _header(f, key: str, size: int, name: str, error, expect: Expect) -> Header:
    """Reads and checks the magic and header of the .npy at f (`size` bytes in all)."""
    where = _place(name, key)
    version = npy.read_magic(f)
    if version not in HEADER_READERS:
        raise error(f"{where} has .npy format version {version[0]}.{version[1]}; expected 1.0 "
                    "or 2.0 (what numpy.save writes for numbers).")
    shape, fortran_order, dtype = HEADER_READERS[version](f)
    header = Header(key, tuple(shape), dtype, fortran_order, f.tell())
    _check_dtype(header, where, error, expect)
    if any(n < 0 for n in header.shape):
        raise error(f"{where} has shape {header.shape}; expected sizes >= 0.")
    want = expect.shapes.get(key)
    if want is not None and header.shape != tuple(want):
        raise (expect.shape_error or error)(f"{where} has shape {header.shape}, expected "
                                            f"{tuple(want)} for {expect.shapes_of}.")
    held = size - header.data_offset
    if header.nbytes != held:
        raise error(f"{where} claims shape {header.shape} of {dtype} "
                    f"({byte_size(header.nbytes)}), but the file holds {byte_size(max(held, 0))} "
                    "for it: its header does not match its data (the file is damaged or was "
                    "made by hand).")
    return header


def _check_dtype(header: Header, where: str, error, expect: Expect) -> None:
    dtype = header.dtype
    if matches(header.key, expect.text):
        if dtype.kind != "U" or header.shape != ():
            raise error(f"{where} is {dtype} of shape {header.shape}; expected one JSON text "
                        "(a 0-d unicode array).")
        return
    if dtype.kind == "U" and matches(header.key, expect.labels):
        return  # class names: plain unicode, no pickle
    found = ("an object array (reading it would need pickle, which can run code)"
             if dtype.hasobject else
             "a structured array" if dtype.names is not None or dtype.subdtype is not None else
             f"complex ({dtype}: the imaginary part would be lost)" if dtype.kind == "c"
             else f"text ({dtype})" if dtype.kind in "SU"
             else None if dtype.kind in REAL_KINDS else f"of dtype {dtype}")
    if found:
        raise error(f"{where} is {found}; expected numbers (real ones: bool, integer or "
                    "float).")
    if expect.dtypes and dtype.name not in expect.dtypes:
        raise error(f"{where} is {dtype}; expected {' or '.join(expect.dtypes)}.")


def _array(f, header: Header, name: str, error, expect: Expect) -> np.ndarray:
    """The header's array from f, positioned at its data: exactly header.nbytes bytes."""
    shape = header.shape[::-1] if header.fortran_order else header.shape
    try:
        array = np.empty(shape, header.dtype)
    except MemoryError:  # where the available memory is unknown (no /proc/meminfo)
        raise error(f"{_place(name, header.key)} needs {byte_size(header.nbytes)}, more than "
                    "can be allocated.") from None
    view = memoryview(array.reshape(-1).view(np.uint8)) if header.nbytes else memoryview(b"")
    done = 0
    while done < header.nbytes:
        got = f.readinto(view[done:])
        if not got:
            raise EOFError(f"the data ends after {done} of {header.nbytes} bytes")
        done += got
    if f.read(1):  # also makes zipfile check the entry's CRC, at its end
        raise ValueError("more data follows the array")
    if header.fortran_order:
        array = array.transpose()
    _check_finite(array, header.key, _place(name, header.key), error, expect)
    return array


def _check_finite(array: np.ndarray, key: str, where: str, error, expect: Expect) -> None:
    if array.dtype.kind != "f" or matches(key, expect.nonfinite):
        return
    bad = ~np.isfinite(array)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise error(f"{where} holds {int(bad.sum())} NaN or infinite value(s), the first at "
                    f"index {first if len(first) != 1 else first[0]}; expected finite numbers.")


def _check_memory(headers: Iterable[Header], name: str, error) -> None:
    """All the arrays at once must fit the host's available memory (MemAvailable)."""
    headers = list(headers)
    need, available = sum(h.nbytes for h in headers), host_available()
    if available is not None and need > available:
        big = max(headers, key=lambda h: h.nbytes)
        raise error(f"{name} holds {byte_size(need)} of arrays (the largest, "
                    f"{big.key or 'the array'}, shape {big.shape} of {big.dtype}), more than "
                    f"the {byte_size(available)} of memory available; expected arrays that fit.")


def _place(name: str, key: str) -> str:
    """The file and, inside an archive, the array: how a message names where the fault is."""
    return f"{name}: array {key!r}" if key else name


def _why(exc: BaseException) -> str:
    """An exception's first line, short: zipfile and numpy messages can hold a whole header."""
    text = str(exc).splitlines()[0] if str(exc).strip() else ""
    return text[:200] or type(exc).__name__
