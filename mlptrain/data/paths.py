"""Where a user's data file is, and its fingerprint: the one place that resolves [data] path."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from mlptrain.errors import ConfigError, DataError


def data_file(cfg, near: Sequence[Path], what: str) -> Path:
    """The file [data] path names, as an absolute path. A relative path is looked for beside
    the config file first (`near`: its folder), then in the working directory, so a config
    and its data travel together; a run records the path this returns. `what`: the file the
    dataset needs, for the message when the path is empty."""
    if not cfg.path:
        raise ConfigError(f"[data] dataset = {cfg.dataset!r} needs [data] path, {what}.")
    path = Path(cfg.path).expanduser()
    if path.is_absolute():
        return path  # the loader says if it is missing
    places = [*near, Path.cwd()]
    for folder in places:
        if (folder / path).exists():
            return Path(os.path.abspath(folder / path))
    raise DataError(f"[data] path = {cfg.path!r} does not exist: looked for it in "
                    f"{' and '.join(str(p) for p in dict.fromkeys(places))}. A relative path "
                    "is read beside the config file, else in the working directory; give the "
                    "file's location.")


def file_sha256(path: Path) -> str:
    """The SHA-256 of a dataset file's bytes, which a run records (a resume compares it)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as error:  # removed or made unreadable since it was read
        raise DataError(f"Dataset file {path} cannot be read ({error}).") from None
    return digest.hexdigest()
