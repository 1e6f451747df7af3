"""Setting a run up from a config: device, data, the initialised model, and the plan.

`prepare` is the one place a config becomes the objects a run trains: the data, the declared
step (step.py: what every training step does) and the model it shapes. `prepare_run` rebuilds
a saved run the same way, with its weights; `plan` is what `fit --dry-run` shows, including
which path the step will take on the device.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from mlptrain import memory
from mlptrain.arrayfiles import Expect
from mlptrain.backend import describe_path, epoch_path, get_backend
from mlptrain.config import Config, config_folder, load_config
from mlptrain.data import FILE_SOURCES, Dataset, check_dataset_range, load_dataset
from mlptrain.data.standardize import FILE as PREPROCESS_FILE, Standardizer
from mlptrain.errors import ConfigError, ModelError, RunStoreError
from mlptrain.model import MLP, build_model
from mlptrain.runs import Run
from mlptrain.seeding import streams
from mlptrain.step import Step, build_step

SPLITS = ("train", "val", "test")


@dataclass
class Prepared:
    """Everything a run needs, built from a config (and, for a saved run, its weights)."""

    config: Config
    dataset: Dataset
    step: Step
    model: MLP
    rngs: dict[str, np.random.Generator]

    @property
    def path(self) -> str:
        """Which path the step takes on this device: `cuda graph` or `eager: <reasons>`."""
        return describe_path(epoch_path(self.step, self.model.ops))


def prepare(config: Config, data_progress: Callable | None = None,
            dataset: Dataset | None = None, scaler: Standardizer | None = None) -> Prepared:
    """Resolves device, data, the declared step and the initialised model. `dataset`, when
    given, is what this config's [data] and train.seed load (a group's members of one seed
    share it); the init and shuffle streams do not depend on loading it. `scaler`: a saved
    run's standardization (saved_scaler), used instead of fitting the training split's."""
    rngs = streams(config.train.seed)
    ops = get_backend(config.train.device)
    memory.check_data_fits(config, ops)  # before anything is allocated: refuse what cannot fit
    if dataset is None:
        dataset = load_dataset(config.data, rngs, data_progress, config_folder(config), scaler)
        check_dataset_range(dataset, config.train.dtype)
    _refuse_regression(config, dataset)
    config = _with_data_file(config, dataset)
    memory.check_fits(config, ops, sum(len(dataset.split(s)[1]) for s in SPLITS),
                      dataset.n_features, dataset.n_classes)  # now with the data's classes
    step = build_step(config, dataset.input_shape, dataset.n_classes,
                      len(dataset.split("train")[1]))
    model = build_model(step, config.model.hidden, ops, dataset.n_features)
    model.initialize(config.model.init, rngs["init"])
    return Prepared(config, dataset, step, model, rngs)


def _refuse_regression(config: Config, dataset: Dataset) -> None:
    """Until a regression loss exists (then delete this): a target of values is refused here,
    once, instead of being trained as class indices."""
    if dataset.task == "regression":
        decided = "you set" if config.data.task == "regression" else "data.task = \"auto\" " \
                  "decided, as its values are not all whole numbers"
        raise ConfigError(f"{dataset.source}: the target is a quantity to regress ({decided}), "
                          "but regression losses are not available yet: mlptrain trains "
                          "classifiers only. Set [data] task = \"classification\" if the "
                          "values are class labels.")


def load_data_as_given(config: Config) -> Dataset:
    """The dataset `prepare` loads for this config (the same samples in each split), as given:
    no [data] preprocessing (data.normalize_width, data.standardize), for people to look at
    and to tell which samples a split holds."""
    data = replace(config.data, normalize_width=0, standardize=False)
    return load_dataset(data, streams(config.train.seed), None, config_folder(config))


def _with_data_file(config: Config, dataset: Dataset) -> Config:
    """config with data.path the absolute path of the file its data came from: the config a
    run saves, so that eval, predict, plot and resume find the file from any folder."""
    if config.data.dataset not in FILE_SOURCES or config.data.path == dataset.source:
        return config
    return replace(config, data=replace(config.data, path=dataset.source))


def prepare_run(run: Run, device: str | None = None) -> Prepared:
    """A saved run rebuilt from its resolved config, with its saved weights loaded: the data and
    network that `eval`, `plot` and `ensemble` score; on `device` instead of the config's when
    given (figures drawn in helper processes use the CPU, never a GPU context each)."""
    overrides = [f"train.device={device}"] if device else []
    scaler = saved_scaler(run)
    p = prepare(as_saved(load_config(run.path / "config.toml", overrides), scaler),
                scaler=scaler)
    p.model.load_state_dict(run.read_weights(network_expect(p.model)),
                            source=str(run.path / "weights.npz"))
    return p


def saved_scaler(run: Run, summary: dict | None = None) -> Standardizer | None:
    """The statistics a saved run standardized its inputs with, read back from the run, never
    refitted; None where it did not standardize (its summary says whether it did: a run from
    before data.standardize existed did not)."""
    summary = run.read_summary() if summary is None else summary
    if not (summary.get("dataset") or {}).get("standardized"):
        return None
    where = str(run.path / PREPROCESS_FILE)
    arrays = run.read_preprocess(summary["model"]["sizes"][0])
    missing = {"mean", "std"} - set(arrays)
    if missing:
        raise RunStoreError(f"{where} has no array {sorted(missing)[0]!r}; the run's files were "
                            "changed after it wrote them.")
    return Standardizer.from_arrays(arrays, where)


def as_saved(config: Config, scaler: Standardizer | None) -> Config:
    """A saved run's config with data.standardize as the run had it: on where it stored
    statistics (`scaler`), off where it did not, whatever the key's default says today."""
    return replace(config, data=replace(config.data, standardize=scaler is not None))


def network_expect(model: MLP) -> Expect:
    """What a weights file for `model` must hold: each parameter's shape, checked from the
    file's headers before any of its data is read (and, as for every array, finite values)."""
    return Expect(shapes={name: tuple(p.shape) for name, p in model.params.items()},
                  shapes_of=f"the {model.describe_sizes()} network (check model.hidden against "
                            "the network that wrote the file)", shape_error=ModelError)


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
    path: str  # `cuda graph` or `eager: <reasons>` (backend.epoch_path)
    aids: list[str]  # what the step does beyond the plain one (step.aids)
    task: str = "classification"  # data.task as decided
    classes: list[str] = field(default_factory=list)  # each class's name (or index)
    notes: list[str] = field(default_factory=list)  # what loading did (Dataset.notes)
    standardized: bool = False  # features scaled by the training split's mean and std


def plan(config: Config, data_progress: Callable | None = None) -> Plan:
    """Resolves device, data and model as `fit` would, without creating a run."""
    p = prepare(config, data_progress)
    samples = {name: int(len(p.dataset.split(name)[1])) for name in SPLITS}
    return Plan(p.model.describe(), p.model.parameter_count, samples, p.model.ops.device,
                config.train.dtype, p.step.steps_per_epoch, p.step.epochs,
                p.step.checkpoint_every, p.dataset.name, p.dataset.source, p.path,
                p.step.aids(), p.dataset.task, class_names(p.dataset), p.dataset.notes,
                p.dataset.scaler is not None)


def class_names(dataset: Dataset) -> list[str]:
    """Each class's name: the names the data gave, else its index."""
    return list(dataset.class_names or map(str, range(dataset.n_classes)))
