"""Setting a run up from a config: device, data, the initialised model, and the plan.

`prepare` is the one place a config becomes the objects a run trains; `prepare_run` rebuilds a
saved run the same way, with its weights; `plan` is what `fit --dry-run` shows of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from mlptrain.backend import get_backend
from mlptrain.config import Config, load_config
from mlptrain.data import Dataset, load_dataset
from mlptrain.data.augment import build_augmenter
from mlptrain.model import MLP, build_model
from mlptrain.regularize import build_dropout
from mlptrain.runs import Run
from mlptrain.seeding import streams

SPLITS = ("train", "val", "test")


@dataclass
class Prepared:
    """Everything a run needs, built from a config (and, for a saved run, its weights)."""

    config: Config
    dataset: Dataset
    model: MLP
    rngs: dict[str, np.random.Generator]
    augment: Callable | None = None  # distorts a training batch in place (images only)


def prepare(config: Config, data_progress: Callable | None = None) -> Prepared:
    """Resolves device, data and the initialised model."""
    rngs = streams(config.train.seed)
    ops = get_backend(config.train.device)
    dataset = load_dataset(config.data, rngs, data_progress)
    model = build_model(config.model, ops, dataset.n_features, dataset.n_classes,
                        np.dtype(config.train.dtype))
    model.initialize(config.model.init, rngs["init"])
    model.dropout = build_dropout(config.model, model.sizes, ops, rngs["dropout"], model.dtype)
    augment = build_augmenter(config.data, dataset.input_shape, rngs["augment"])
    return Prepared(config, dataset, model, rngs, augment)


def prepare_run(run: Run) -> Prepared:
    """A saved run rebuilt from its resolved config, with its saved weights loaded: the data and
    network that `eval`, `plot` and `ensemble` score."""
    p = prepare(load_config(run.path / "config.toml"))
    p.model.load_state_dict(run.read_weights(), source=str(run.path / "weights.npz"))
    return p


@dataclass
class Plan:
    """What `fit` would do, resolved but not run (fit --dry-run)."""

    layers: list[str]
    parameters: int
    samples: dict[str, int]
    device: str
    dtype: str
    steps_per_epoch: int
    epochs: int
    checkpoint_every: int
    dataset: str
    source: str


def plan(config: Config, data_progress: Callable | None = None) -> Plan:
    """Resolves device, data and model as `fit` would, without creating a run."""
    p = prepare(config, data_progress)
    samples = {name: int(len(p.dataset.split(name)[1])) for name in SPLITS}
    batch = min(config.train.batch_size, samples["train"])
    return Plan(p.model.describe(), p.model.parameter_count, samples, p.model.ops.device,
                config.train.dtype, math.ceil(samples["train"] / batch), config.train.epochs,
                config.train.checkpoint_every, p.dataset.name, p.dataset.source)
