"""The MNIST handwritten digits: locating, downloading, verifying and loading the IDX files.

Every file is verified against a pinned SHA-256 of its decompressed bytes, so a run can name
exactly the data it saw. Gzip headers differ between otherwise identical copies, which is why
the checksum is taken after decompression.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from mlptrain.data.cache import decoded
from mlptrain.data.idx import decompressed_bytes, is_gzip, parse_idx
from mlptrain.errors import DataError

IMAGE_SIDE = 28
N_DIGITS = 10
DOWNLOAD_CHUNK_BYTES = 64 * 1024
DEFAULT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class MnistFile:
    """One of the four MNIST files: its base name (without .gz) and pinned checksum."""

    name: str
    sha256: str


MNIST_FILES: Mapping[str, MnistFile] = {
    "train_images": MnistFile(
        "train-images-idx3-ubyte",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    "train_labels": MnistFile(
        "train-labels-idx1-ubyte",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    "test_images": MnistFile(
        "t10k-images-idx3-ubyte",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    "test_labels": MnistFile(
        "t10k-labels-idx1-ubyte",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
}

DEFAULT_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)


@dataclass(frozen=True)
class DownloadProgress:
    """How far the download of one file has got; total_bytes is None if the server hides it."""

    file: str
    done_bytes: int
    total_bytes: int | None


@dataclass
class MnistArrays:
    """MNIST ready for an MLP: flattened images scaled to [0, 1] and integer labels."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    checksums: dict[str, str]
    source: str


ProgressCallback = Callable[[DownloadProgress], None]


def load_mnist(
    data_dir: Path,
    mirrors: Sequence[str] = DEFAULT_MIRRORS,
    download: bool = True,
    progress: ProgressCallback | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> MnistArrays:
    """Load the four MNIST files from data_dir, downloading missing ones if allowed. The last
    files loaded are kept, read-only, and returned again while their size and modification
    time are unchanged: a sweep's trials in one process read and verify them once."""
    data_dir = Path(data_dir)
    # a file given for the folder: else each MNIST file would be "missing in" it
    if data_dir.exists() and not data_dir.is_dir():
        raise DataError(
            f"MNIST's data.path {data_dir} is a file, not a folder; give the folder that holds "
            "the four IDX files (train-images-idx3-ubyte.gz, ...), or one to download them into."
        )
    key = _files_key(data_dir)
    if key is not None and _last_loaded and _last_loaded[0] == key:
        return _last_loaded[1]
    raw: dict[str, np.ndarray] = {}
    checksums: dict[str, str] = {}
    for logical_name, mnist_file in MNIST_FILES.items():
        local = _find_local(data_dir, mnist_file.name)
        if local is not None:
            array = parse_idx(local, decoded(mnist_file.name, local, mnist_file.sha256,
                                             lambda: _verified_bytes(local, mnist_file)))
        elif download:
            array = _download(mnist_file, data_dir, mirrors, timeout, progress)
        else:
            raise DataError(
                f"MNIST file {mnist_file.name} is missing: neither {mnist_file.name}.gz nor "
                f"{mnist_file.name} exists in {data_dir}. Enable downloading, or place the "
                "file there by hand (the repository vendors all four in data/mnist/)."
            )
        raw[logical_name] = array
        checksums[mnist_file.name] = mnist_file.sha256
    train_images, train_labels = _checked_split(
        raw["train_images"], raw["train_labels"], "train", data_dir
    )
    test_images, test_labels = _checked_split(
        raw["test_images"], raw["test_labels"], "test", data_dir
    )
    loaded = MnistArrays(
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        checksums=checksums,
        source=str(data_dir),
    )
    for array in (loaded.train_images, loaded.train_labels, loaded.test_images,
                  loaded.test_labels):
        array.flags.writeable = False  # shared by every run that gets them
    _last_loaded[:] = [key or _files_key(data_dir), loaded]  # (downloaded: now on disk)
    return loaded


_last_loaded: list = []  # [files key, MnistArrays] of the last load_mnist


def _files_key(data_dir: Path) -> tuple | None:
    """What identifies the four files on disk (path, size, modification time); None when one
    is missing."""
    key = []
    for mnist_file in MNIST_FILES.values():
        local = _find_local(data_dir, mnist_file.name)
        if local is None:
            return None
        stat = local.stat()
        key.append((str(local.absolute()), stat.st_size, stat.st_mtime_ns))
    return tuple(key)


VENDORED = Path("data") / "mnist"  # where a clone of the repository keeps the four files


def find_vendored_mnist(package_copy: Path, near: Sequence[Path] = ()) -> Path | None:
    """The first folder that holds all four MNIST files, looking in this order: `package_copy`
    (the repository's data/mnist when the package runs from a checkout), then data/mnist in
    each folder of `near` and every parent of it (the config file's folder, the working
    directory: a clone that `pip install .` copied the package out of), or None.
    """
    candidates = [Path(package_copy)]
    for start in near:
        start = Path(start).resolve()
        candidates += [folder / VENDORED for folder in (start, *start.parents)]
    seen: set[Path] = set()
    for folder in candidates:
        if folder not in seen and has_mnist(folder):
            return folder
        seen.add(folder)
    return None


def has_mnist(folder: Path) -> bool:
    """Whether all four files (gzipped or not) are in `folder`; checksums are checked on load."""
    return all(_find_local(Path(folder), f.name) for f in MNIST_FILES.values())


def _find_local(data_dir: Path, name: str) -> Path | None:
    for candidate in (data_dir / f"{name}.gz", data_dir / name):
        if candidate.is_file():
            return candidate
    return None


def _verified_bytes(path: Path, mnist_file: MnistFile) -> bytes:
    """The file's decompressed bytes, which must have the pinned checksum."""
    content = decompressed_bytes(path)
    digest = hashlib.sha256(content).hexdigest()
    if digest != mnist_file.sha256:
        raise DataError(
            f"MNIST file {path} has the wrong checksum: expected SHA-256 {mnist_file.sha256} "
            f"of the decompressed bytes, found {digest}. The file is corrupt or a different "
            "dataset; delete it so it is downloaded again, or restore it from the repository "
            "(data/mnist/)."
        )
    return content


def _download(
    mnist_file: MnistFile,
    data_dir: Path,
    mirrors: Sequence[str],
    timeout: float,
    progress: ProgressCallback | None,
) -> np.ndarray:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(
            f"MNIST file {mnist_file.name} is missing and cannot be downloaded: the data "
            f"directory {data_dir} cannot be created ({error}). Point data.path at a writable "
            "folder, or at one that already holds the four IDX files."
        ) from None
    from http.client import HTTPException  # (the network's modules: only for a download)

    failures: list[str] = []
    for mirror in mirrors:
        url = _file_url(mirror, mnist_file.name)
        try:
            return _download_from(url, mnist_file, data_dir, timeout, progress)
        except (OSError, HTTPException, ValueError, DataError) as error:
            # OSError covers URLError/HTTPError and socket timeouts; ValueError a malformed URL.
            failures.append(f"{url}: {error}")
    tried = "; ".join(failures) if failures else "no mirrors were configured"
    raise DataError(
        f"Could not download MNIST file {mnist_file.name}.gz into {data_dir}. Tried: {tried}. "
        f"Download {mnist_file.name}.gz from any MNIST mirror by hand and place it in "
        f"{data_dir} (or copy the repository's data/mnist/ files there); its decompressed "
        f"SHA-256 must be {mnist_file.sha256}."
    )


def _file_url(mirror: str, name: str) -> str:
    # Mirrors are base URLs; tolerate one given without its trailing slash.
    base = mirror if mirror.endswith("/") else mirror + "/"
    return f"{base}{name}.gz"


def _download_from(
    url: str,
    mnist_file: MnistFile,
    data_dir: Path,
    timeout: float,
    progress: ProgressCallback | None,
) -> np.ndarray:
    # A temp file in the destination directory lets the final rename be atomic, so an
    # interrupted or corrupt download never leaves a file that looks complete.
    handle, temp_name = tempfile.mkstemp(
        prefix=f".{mnist_file.name}.", suffix=".part", dir=data_dir
    )
    temp_path = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as sink:
            _stream(url, sink, mnist_file.name, timeout, progress)
        array = parse_idx(temp_path, _verified_bytes(temp_path, mnist_file))
        final_name = f"{mnist_file.name}.gz" if is_gzip(temp_path) else mnist_file.name
        os.replace(temp_path, data_dir / final_name)
        return array
    finally:
        temp_path.unlink(missing_ok=True)


def _stream(
    url: str,
    sink: BinaryIO,
    name: str,
    timeout: float,
    progress: ProgressCallback | None,
) -> None:
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as response:
        length_header = response.headers.get("Content-Length")
        total = int(length_header) if length_header and length_header.isdigit() else None
        done = 0
        if progress is not None:  # connected: a display can show the file before bytes arrive
            progress(DownloadProgress(file=name, done_bytes=0, total_bytes=total))
        while chunk := response.read(DOWNLOAD_CHUNK_BYTES):
            sink.write(chunk)
            done += len(chunk)
            if progress is not None:
                progress(DownloadProgress(file=name, done_bytes=done, total_bytes=total))
    if total is not None and done != total:
        raise DataError(
            f"the server announced {total} bytes but the connection ended after {done} bytes"
        )


def _checked_split(
    images: np.ndarray, labels: np.ndarray, split: str, data_dir: Path
) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes and label range, then convert to the layout the model consumes."""
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise DataError(
            f"MNIST {split} images in {data_dir} have shape {images.shape}; expected "
            f"(N, {IMAGE_SIDE}, {IMAGE_SIDE}). Replace the files with the original MNIST files."
        )
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(
            f"MNIST {split} labels in {data_dir} have shape {labels.shape}; expected "
            f"({images.shape[0]},) to match the images. Replace the files with the original "
            "MNIST files."
        )
    if labels.size and int(labels.max()) >= N_DIGITS:
        raise DataError(
            f"MNIST {split} labels in {data_dir} include {int(labels.max())}; expected digits "
            f"0..{N_DIGITS - 1}. Replace the files with the original MNIST files."
        )
    flat = images.reshape(images.shape[0], IMAGE_SIDE * IMAGE_SIDE)
    return scale_pixels(flat), labels.astype(np.int64)


PIXEL_MAX = 255  # MNIST's pixels are bytes


def scale_pixels(pixels: np.ndarray) -> np.ndarray:
    """0-255 pixels as the network sees every MNIST image: float32 in [0, 1], divided in
    float32 (the same bits for the loader's images and for a user's copy of them)."""
    out = pixels.astype(np.float32)
    out /= np.float32(PIXEL_MAX)
    return out
