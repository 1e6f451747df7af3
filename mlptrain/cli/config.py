"""`mlptrain config ...`: work with config files without training."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from mlptrain.cli.common import a_path, err, fail, out, plain
from mlptrain.config import commented_defaults, ignored_keys, load_config, read_config_text
from mlptrain.data import DATASETS
from mlptrain.errors import ConfigError, MlptrainError
from mlptrain.runs import atomic_write_text
from mlptrain.runs.store import check_not_run_file
from mlptrain.text import plural


Dataset = Enum("Dataset", {name: name for name in DATASETS}, type=str)  # --dataset's choices


def config_check(
    file: Path = typer.Argument(..., metavar="CONFIG", help="The TOML config to validate."),
    set_: Optional[List[str]] = typer.Option(
        None, "--set", "-s", metavar="SECTION.KEY=VALUE", help="Override one key (repeatable)."),
):
    """Validate a config (keys, types, ranges, names; a [sweep] table's axes and trials too)
    without loading data or training."""
    from mlptrain.sweep.grid import MAX_TRIALS, declared_sweep

    try:
        text = read_config_text(file)
        cfg = load_config(file, set_ or [], text)
        spec = declared_sweep(file, set_ or [], text)
    except MlptrainError as exc:
        fail(exc)
    plain(out, f"{file}: valid config for run {cfg.name!r} ({cfg.data.dataset}, hidden "
               f"{cfg.model.hidden}, {cfg.optimizer.name}, {plural(cfg.train.epochs, 'epoch')})")
    for note in ignored_keys(cfg):
        plain(out, f"note: {note}")
    if spec is not None:
        axes = " x ".join(f"{len(a.values)} ({a.key})" for a in spec.axes)
        more = f"; more than {MAX_TRIALS:,}: run it with --samples N" \
            if spec.size > MAX_TRIALS else ""
        plain(out, f"[sweep]: {plural(spec.size, 'trial')}: {axes}{more}")


def config_init(
    dataset: Dataset = typer.Option(Dataset.mnist, "--dataset", case_sensitive=False,
                                    help="The dataset the config trains on."),
    out_file: Optional[Path] = typer.Option(None, "--out", "-o", metavar="FILE", parser=a_path,
                                            help="Write the config here (default: print it)."),
    force: bool = typer.Option(False, "--force", help="Overwrite FILE if it exists."),
):
    """Start a config: every key at its default, each with the comment that explains it."""
    text = commented_defaults(dataset.value)
    if out_file is None:
        print(text, end="")
        return
    try:
        check_not_run_file(out_file)
        if out_file.exists() and not force:
            raise ConfigError(f"{out_file} exists; pass --force to overwrite it, or choose "
                              "another --out.")
        out_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_file, text)
    except OSError as exc:
        fail(ConfigError(f"cannot write {out_file}: {exc.strerror or exc}."))
    except MlptrainError as exc:
        fail(exc)
    plain(err, f"wrote {out_file}; train with `mlptrain fit {out_file}`")
