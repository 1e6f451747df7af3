"""`mlptrain config ...`: work with config files without training."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from mlptrain.cli.common import fail, out
from mlptrain.config import load_config
from mlptrain.errors import MlptrainError


def config_check(
    file: Path = typer.Argument(..., metavar="FILE", help="The TOML config to validate."),
    set_: Optional[List[str]] = typer.Option(
        None, "--set", "-s", metavar="SECTION.KEY=VALUE", help="Override one key (repeatable)."),
):
    """Validate a config (keys, types, ranges, names) without loading data or training."""
    try:
        cfg = load_config(file, set_ or [])
    except MlptrainError as exc:
        fail(exc)
    out.print(f"{file}: valid config for run {cfg.name!r} ({cfg.data.dataset}, hidden "
              f"{cfg.model.hidden}, {cfg.optimizer.name}, {cfg.train.epochs} epochs)",
              highlight=False, soft_wrap=True)
