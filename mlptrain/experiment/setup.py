"""Setting a run up from a config: device, data, the initialised model, and the plan.

`prepare` is the one place a config becomes the objects a run trains: the data, the declared
step (step.py: what every training step does) and the model it shapes. `prepare_run` rebuilds
a saved run the same way, with its weights; `plan` is what `fit --dry-run` shows, including
which path the step will take on the device.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from mlptrain import memory
from mlptrain.arrayfiles import Expect, read_npz
from mlptrain.backend import describe_path, epoch_path, get_backend
from mlptrain.config import (DTYPES, Config, config_folder, ignored_keys, name_from_stem,
                             parse_config)
from mlptrain.data import (FILE_SOURCES, Dataset, check_dataset_range, check_saved_width,
                           load_dataset)
from mlptrain.data.dataset import SPLITS, class_names
from mlptrain import nn
from mlptrain.data.standardize import FILE as PREPROCESS_FILE, Standardizer, TargetScale
from mlptrain.errors import ConfigError, DataError, ModelError, RunStoreError
from mlptrain.experiment.diagnose import unscaled_data
from mlptrain.model import MLP, build_model
from mlptrain.runs import Run
from mlptrain.runs.query import check_config
from mlptrain.runs.schema import written_by
from mlptrain.seeding import streams
from mlptrain.step import Step, build_step



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
            dataset: Dataset | None = None, scaler: Standardizer | None = None,
            target: TargetScale | None = None) -> Prepared:
    """Resolves device, data, the declared step and the initialised model. `dataset`, when
    given, is what this config's [data] and train.seed load (a group's members of one seed
    share it); the init and shuffle streams do not depend on loading it. `scaler` and
    `target`: a saved run's standardization of its features and target (saved_scaler,
    saved_target_scale), used instead of fitting the training split's."""
    rngs = streams(config.train.seed)
    ops = get_backend(config.train.device, config.train.precision)
    memory.check_data_fits(config, ops)  # before anything is allocated: refuse what cannot fit
    if dataset is None:
        dataset = load_dataset(config.data, rngs, data_progress, config_folder(config), scaler)
        check_dataset_range(dataset, config.train.dtype)
    dataset.target_scale = _target_scale(config, dataset, target)
    unscaled = unscaled_data(dataset)
    if unscaled:  # said before training, which may blow up or quietly learn nothing
        _note(dataset, unscaled)
    config = _with_data_file(config, dataset)
    memory.check_fits(config, ops, sum(len(dataset.targets(s)) for s in SPLITS),
                      dataset.n_features, dataset.n_classes)  # now with the data's classes
    scale = dataset.target_scale
    step = build_step(config, dataset.input_shape, dataset.n_classes,
                      len(dataset.targets("train")), dataset.task,
                      (scale.mean, scale.std) if scale else (0.0, 1.0),
                      weighted=dataset.w_train is not None)
    model = build_model(step, config.model.hidden, ops, dataset.n_features)
    model.initialize(config.model.init, rngs["init"])
    return Prepared(config, dataset, step, model, rngs)


def _target_scale(config: Config, dataset: Dataset,
                  saved: TargetScale | None) -> TargetScale | None:
    """THE decision whether a run standardizes its target: a regression target, with
    data.standardize_target, unless the loss keeps it as it is (Poisson's counts: its log
    link predicts e^z > 0, which a centred target would not be; the key is ignored there,
    and said so). The statistics are `saved` (a saved run's) or the training split's. Poisson
    also refuses a negative target here: a count cannot be."""
    if dataset.task != "regression":
        return None
    loss = nn.LOSSES[nn.resolve_loss(config.model.loss, dataset.n_classes, dataset.task)]
    if loss.task != "regression":
        return None  # (a classifier's loss on a real target: build_step says why)
    y = dataset.targets("train")
    if not loss.scales_target:
        if len(y) and y.min() < 0:
            raise DataError(f"{dataset.source}: the target holds {y.min():g}, but the {loss.name} "
                            "loss fits counts (0 or more). Use loss = 'mse' or 'huber' for a "
                            "target that may be negative.")
        _note(dataset, f"the target stays as given: the {loss.name} loss fits counts "
                       "(data.standardize_target is ignored)")
        return None
    if not config.data.standardize_target:
        return None
    scale = saved or TargetScale.fit(y, f"{dataset.source} (train split)")
    _note(dataset, f"trained on the target standardized by the training split's mean "
                   f"{scale.mean:.4g} and std {scale.std:.4g} (data.standardize_target); "
                   "predictions and RMSE, MAE, R^2 are in the target's units, the loss in "
                   "standardized units")
    return scale


def _note(dataset: Dataset, note: str) -> None:
    if note not in dataset.notes:  # (a dataset prepared twice says it once)
        dataset.notes.append(note)


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


DAMAGED = (" (the run wrote this file itself, so it was changed after: move the run away or "
           "delete it with `mlptrain runs rm`)")


def run_config(run: Run, overrides: Sequence[str] = ()) -> Config:
    """A saved run's resolved config (its config.toml), checked against what its summary
    records of the run's network and data: every reader rebuilds the run from both, and a
    config.toml emptied or edited since (an empty one reads as every default: MNIST's
    784-128-10 network) would blame the run's weights or data for the difference, or export
    a network the run never trained. Readers call this first: it also checks that the summary
    describes a network (Run.read_summary(network=True))."""
    summary = run.read_summary(network=True)
    path = run.path / "config.toml"
    try:
        config = parse_config(run.read_config_text(), source=str(path), overrides=overrides,
                              default_name=name_from_stem(path.stem))
    except ConfigError as exc:  # the run wrote it whole: another version, or damage since
        raise ConfigError(f"{exc}{written_by(summary) or DAMAGED}") from None
    check_config(run, {"data.dataset": config.data.dataset, "model.hidden": config.model.hidden,
                       "model.activation": config.model.activation}, summary)
    return config


def prepare_run(run: Run, device: str | None = None) -> Prepared:
    """A saved run rebuilt from its resolved config, with its saved weights loaded: the data and
    network that `eval`, `plot` and `ensemble` score; on `device` instead of the config's when
    given (figures drawn in helper processes use the CPU, never a GPU context each)."""
    overrides = [f"train.device={device}"] if device else []
    config = run_config(run, overrides)
    p = prepare_saved(run, run.read_summary(), config)
    p.model.load_state_dict(run.read_weights(run_weights_expect(p.model)),
                            source=str(run.path / "weights.npz"))
    return p


def prepare_saved(run: Run, summary: dict, config: Config,
                  data_progress: Callable | None = None) -> Prepared:
    """prepare() of a saved run's `config`: data.standardize as the run had it, and the
    statistics it stored, its features' and its target's, read back, never refitted."""
    scaler = saved_scaler(run, summary)
    p = prepare(as_saved(config, scaler), data_progress, scaler=scaler,
                target=saved_target_scale(run, summary))
    check_saved_width(p.dataset, summary["model"]["sizes"][0])  # before its weights are read
    return p


def changed_files(summary: dict, checksums: dict[str, str]) -> list[str]:
    """The data files whose SHA-256 (`checksums`, as read now) is not the one the run recorded
    when it read them, by name; [] for the same data."""
    recorded = (summary.get("dataset") or {}).get("checksums") or {}
    return sorted(name for name in set(recorded) | set(checksums)
                  if recorded.get(name) != checksums.get(name))


def saved_scaler(run: Run, summary: dict | None = None) -> Standardizer | None:
    """The statistics a saved run standardized its inputs with, read back from the run, never
    refitted; None where it did not standardize (its summary says whether it did: a run from
    before data.standardize existed did not)."""
    arrays = _saved_statistics(run, summary, "standardized", ("mean", "std"))
    return None if arrays is None else \
        Standardizer.from_arrays(arrays, str(run.path / PREPROCESS_FILE))


def saved_target_scale(run: Run, summary: dict | None = None) -> TargetScale | None:
    """The statistics a saved regression run standardized its target with (read back as
    saved_scaler's); None where it trained on the target as given."""
    arrays = _saved_statistics(run, summary, "target_standardized",
                               ("target_mean", "target_std"))
    return None if arrays is None else \
        TargetScale.from_arrays(arrays, str(run.path / PREPROCESS_FILE))


def saved_loss(run: Run, config: Config, summary: dict | None = None) -> nn.Loss:
    """The loss a saved run trained with, as inference needs it: its summary names it (auto
    resolved), and a regression loss gets the run's target statistics back, so that what the
    network predicts comes out in the target's units."""
    summary = run.read_summary() if summary is None else summary
    scale = saved_target_scale(run, summary)
    return nn.make_loss(summary["model"]["loss"], summary["model"]["sizes"][-1],
                        huber_delta=config.model.huber_delta,
                        target=(scale.mean, scale.std) if scale else (0.0, 1.0))


def _saved_statistics(run: Run, summary: dict | None, flag: str,
                      keys: tuple[str, ...]) -> dict | None:
    """The run's preprocess.npz arrays, holding `keys`, where its summary's dataset says
    `flag`; None where it does not."""
    summary = run.read_summary() if summary is None else summary
    if not (summary.get("dataset") or {}).get(flag):
        return None
    arrays = run.read_preprocess(summary["model"]["sizes"][0])
    missing = set(keys) - set(arrays)
    if missing:
        raise RunStoreError(f"{run.path / PREPROCESS_FILE} has no array "
                            f"{sorted(missing)[0]!r}; the run's files were changed after it "
                            "wrote them.")
    return arrays


def as_saved(config: Config, scaler: Standardizer | None) -> Config:
    """A saved run's config with data.standardize as the run had it: on where it stored
    statistics (`scaler`), off where it did not, whatever the key's default says today.
    (data.standardize_target needs no such care: no regression run predates it.)"""
    return replace(config, data=replace(config.data, standardize=scaler is not None))


def run_weights_expect(model: MLP) -> Expect:
    """What a run's own weights.npz for `model` must hold: network_expect's arrays, of a dtype
    a run trains in (train.dtype's choices): an int or float16 array there was cast without a
    word (ints truncated) and exported as it was."""
    return replace(network_expect(model), dtypes=DTYPES)


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
    ignored: list[str] = field(default_factory=list)  # keys set that nothing reads (ignored_keys)


def load_start_weights(p: Prepared) -> None:
    """The network [model] weights names, in place of p's initialisation (none: nothing to do):
    finite, each array the shape of the model's parameter of its name (checked from the
    headers, before any data is read), blamed on the file, not on training. A new run and its
    dry run read them alike; `~` is the home folder, as in data.path."""
    if not p.config.model.weights:
        return
    path = Path(p.config.model.weights).expanduser()
    p.model.load_state_dict(read_npz(path, f"[model] weights = {str(path)!r}", DataError,
                                     network_expect(p.model)), source=str(path))


def check_new_run(p: Prepared) -> None:
    """ConfigError for what a new run's config asks of data that cannot give it: checked
    before a run (or a dry run) starts, never for a saved run, which trained already. Early
    stopping watches the validation loss, and a validation split that rounds to no rows
    (val_fraction = 0.01 of 20 samples) would turn it off without a word; a shift as wide as
    the images moves every one out of its frame (and pads each batch by it: 10**6 pixels
    asked for petabytes)."""
    t, d = p.config.train, p.config.data
    side = min(p.dataset.input_shape)
    if p.step.augment is not None and d.augment_shift >= side:
        shape = "x".join(map(str, p.dataset.input_shape))
        raise ConfigError(f"[data] augment_shift = {d.augment_shift} moves the {shape} images "
                          f"of the {d.dataset} dataset out of their frame; use at most "
                          f"{side - 1} pixels.")
    if t.patience and not len(p.dataset.targets("val")):
        n = len(p.dataset.targets("train"))
        raise ConfigError(f"[train] patience = {t.patience}: early stopping watches the "
                          f"validation loss, but the validation split is empty ([data] "
                          f"val_fraction = {d.val_fraction:g} held out no row, {n} stayed for "
                          "training); raise val_fraction, or set patience = 0.")


def plan(config: Config, data_progress: Callable | None = None) -> Plan:
    """Resolves device, data and model as `fit` would, without creating a run."""
    p = prepare(config, data_progress)
    load_start_weights(p)  # a file that cannot start this network fails the dry run too
    check_new_run(p)
    samples = {name: int(len(p.dataset.targets(name))) for name in SPLITS}
    return Plan(p.model.describe(), p.model.parameter_count, samples, p.model.ops.device,
                config.train.dtype, p.step.steps_per_epoch, p.step.epochs,
                p.step.checkpoint_every, p.dataset.name, p.dataset.source, p.path,
                p.step.aids(), p.dataset.task, class_names(p.dataset), p.dataset.notes,
                p.dataset.scaler is not None, ignored_keys(config))
