"""The experiment config: the schema, its defaults, TOML loading, --set overrides, validation.

Every default lives here, once, with a one-line comment. A config file names only what it
changes; `resolve` fills in the rest, and a run saves the resolved config so it can be replayed.
Validation happens at this boundary and names the culprit: file, line, key, value, what was
expected, and for a typo the closest valid key.
"""

from __future__ import annotations

import copy
import difflib
import math
import re
import sys
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

# the one TOML reader shim: other modules import `tomllib` from here
if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

import numpy as np
import tomli_w

from mlptrain import nn
from mlptrain.backend import DEVICES, PRECISIONS
from mlptrain.data import DATASETS, FILE_SOURCES, IMAGE_SOURCES, SOURCES
from mlptrain.data.csv import MISSING_POLICIES
from mlptrain.data.labels import TASKS
from mlptrain.data.weights import BALANCED
from mlptrain.data.mnist import DEFAULT_MIRRORS as MNIST_MIRRORS
from mlptrain.errors import ConfigError
from mlptrain.optim import OPTIMIZERS
from mlptrain.schedules import SCHEDULES

NAME_PATTERN = re.compile(r"[A-Za-z0-9_.\-]*")  # a run name becomes part of a directory name
MAX_NAME = 100  # characters: a run id adds 23, and a file name may hold 255 bytes
MAX_STRING = 4096  # characters in any string value: the longest path Linux accepts
MAX_CONFIG_BYTES = 16 * 2**20  # a config file's size: a 10,000-point grid fits many times over
CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # no newline, tab or NUL in a name, path or URL

# Every number has a finite range (the option's low and high): a value that passes here must
# not overflow later (noise = 1e308 makes U(-noise, noise) draw infinities), and one beyond
# these bounds is a typo rather than a setting.
MAX_RATE = 1e6  # a learning rate (or its floor): SGD's step lr * grad stays far from overflow
MAX_PIXELS = 100.0  # an elastic displacement or its smoothness: a digit is 20 pixels wide

DTYPES = ("float32", "float64")

# the settings that alone read a key (option's read_by): an optimizer's, a schedule's own
_SGD = ("optimizer.name", ("sgd",))
_ADAM = ("optimizer.name", ("adam", "adamw"))
_ADAPTIVE = ("optimizer.name", ("adam", "adamw", "rmsprop"))
_RMSPROP = ("optimizer.name", ("rmsprop",))
_STEP = ("schedule.name", ("step",))
_DECAYING = ("schedule.name", ("cosine", "onecycle"))
_ONECYCLE = ("schedule.name", ("onecycle",))
_LEAKY = ("model.activation", ("leaky_relu",))
_HUBER = ("model.loss", ("huber",))
_GPU = ("train.device", ("cuda", "auto"))  # the CPU computes in the dtype, whatever precision says
PLOT_FORMATS = ("png", "svg")


def option(default, *, choices=None, low=None, high=None, low_open=False, high_open=False,
           read_by=None):
    """A config field with its constraints declared as data (checked by `_check_value`).
    `read_by`: (dotted key, its values) under which alone the field is read, such as
    ("optimizer.name", ("sgd",)); set otherwise, it is named by `ignored_keys`."""
    meta = {"choices": choices, "low": low, "high": high,
            "low_open": low_open, "high_open": high_open, "read_by": read_by}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    dataset: str = option("mnist", choices=DATASETS)  # xor | mnist | npz (a file with X and y) | csv (a table with a header row)
    path: str = option("")  # npz, csv: the file (relative: beside this config, else the working directory); mnist: the IDX folder ("" = vendored data/mnist)
    task: str = option("auto", choices=TASKS)  # npz, csv: auto (decided from the target's values) | classification | regression
    target: str = option("")  # csv: the target column's name ("" = the last column)
    features: list[str] = option([])  # csv: the feature columns' names ([] = every other column)
    categorical: str | list[str] = option("auto")  # csv: columns one-hot encoded: "auto" (those mostly not numbers) or a list of names
    delimiter: str = option(",")  # csv: the one character between cells
    missing: str = option("error", choices=MISSING_POLICIES)  # csv: an empty, NA or NaN cell: error | mean (the column's mean fills it) | drop (its row)
    sample_weight: str = option("")  # csv: the column of each row's weight in the loss ("" = none; it is then no feature; an npz's weights are its array w)
    class_weight: str | dict[str, float] = option("", low=0.0, high=1e6)  # classes: "" (none) | "balanced" (n_samples / (n_classes * count), counted on the train split) | a table {class name = weight}; times any sample weight
    val_fraction: float = option(0.1, low=0.0, high=1.0, high_open=True)  # held out for val
    split_seed: int = option(-1, low=-1)  # seeds the held-out splits (-1 = train.seed)
    limit: int = option(0, low=0)  # train on at most this many samples (0 = all): quick tries
    test_fraction: float = option(0.2, low=0.0, high=1.0, low_open=True, high_open=True)  # npz, csv: held out as the test set (npz: unless the file has X_test)
    standardize: bool = option(True)  # npz, csv: each feature to mean 0, std 1 by the train split's statistics
    standardize_target: bool = option(True)  # regression: train on (y - mean) / std of the train split; metrics stay in y's units (poisson: ignored, counts stay counts)
    download: bool = option(True)  # mnist: fetch missing IDX files from the public mirrors
    mirrors: list[str] = option(list(MNIST_MIRRORS))  # mnist: base URLs tried in order
    noise: float = option(0.1, low=0.0, high=100.0)  # xor: inputs are bits + U(-noise, noise)
    samples: int = option(800, low=2)  # xor: training samples drawn, before the val split
    test_samples: int = option(1000, low=1)  # xor: size of the fixed test set
    normalize_width: int = option(0, low=0, high=28)  # images: digits stretched to this width (0 = off)
    augment_shift: int = option(0, low=0, high=int(MAX_PIXELS))  # images: random shift of up to this many pixels
    augment_rotate: float = option(0.0, low=0.0, high=90.0)  # images: rotate up to +-degrees
    augment_scale: float = option(0.0, low=0.0, high=1.0, high_open=True)  # images: zoom +-frac
    augment_shear: float = option(0.0, low=0.0, high=60.0)  # images: shear up to +-degrees
    augment_scale_x: float = option(0.0, low=0.0, high=1.0, high_open=True)  # images: width +-frac
    augment_scale_y: float = option(0.0, low=0.0, high=1.0, high_open=True)  # images: height +-frac
    augment_narrow_classes: list[int] = option([], low=0, high=9)  # images: labels with narrower limits
    augment_narrow_factor: float = option(0.5, low=0.0, high=1.0, low_open=True)  # images: their rotate, shear x this
    augment_elastic: float | list[float] = option(0.0, low=0.0, high=MAX_PIXELS)  # images: elastic strength, pixels, or [lo, hi] per image
    augment_elastic_sigma: float | list[float] = option(4.0, low=0.0, low_open=True, high=MAX_PIXELS)  # images: its smoothness, pixels, or [lo, hi]


@dataclass
class ModelConfig:
    hidden: list[int] = option([128], low=1)  # hidden layer widths: an int or a list ([] = linear)
    activation: str = option("relu", choices=tuple(nn.ACTIVATIONS))  # between Linear layers
    leaky_slope: float = option(0.01, low=0, high=1, low_open=True, high_open=True, read_by=_LEAKY)  # z<0 slope
    loss: str = option("auto", choices=("auto", *nn.LOSSES))  # auto: sigmoid_bce for 2 classes, softmax_cross_entropy for more, mse for a real-valued target
    huber_delta: float = option(1.0, low=0.0, low_open=True, high=1e6, read_by=_HUBER)  # huber: where squared error turns absolute (in standardized target units)
    init: str = option("xavier_uniform", choices=tuple(nn.INITIALIZERS))  # weight init
    weights: str = option("")  # a weights.npz to start from instead of the init
    dropout_input: float = option(0.0, low=0.0, high=1.0, high_open=True)  # drop input pixels
    dropout_hidden: float = option(0.0, low=0.0, high=1.0, high_open=True)  # drop hidden units
    max_norm: float = option(0.0, low=0.0, high=1e3)  # cap each unit's incoming weight norm (0 = off)
    label_smoothing: float = option(0.0, low=0.0, high=1.0, high_open=True)  # softmax targets


@dataclass
class OptimizerConfig:
    name: str = option("sgd", choices=OPTIMIZERS)  # the update (adamw: Adam with decoupled weight decay)
    lr: float = option(0.1, low=0.0, low_open=True, high=MAX_RATE)  # base learning rate
    momentum: float = option(0.0, low=0.0, high=1.0, high_open=True, read_by=_SGD)  # sgd only
    nesterov: bool = option(False)  # sgd only, needs momentum > 0
    beta1: float = option(0.9, low=0.0, high=1.0, high_open=True, read_by=_ADAM)  # adam: gradient average
    beta2: float = option(0.999, low=0.0, high=1.0, high_open=True, read_by=_ADAM)  # adam: square average
    eps: float = option(1e-8, low=0.0, low_open=True, high=1.0, read_by=_ADAPTIVE)  # adam, rmsprop: keeps the step finite
    rho: float = option(0.99, low=0.0, high=1.0, high_open=True, read_by=_RMSPROP)  # rmsprop: square average
    weight_decay: float = option(0.0, low=0.0, high=10.0)  # sgd/adam/rmsprop: L2 on the gradient; adamw: decoupled


@dataclass
class ScheduleConfig:
    name: str = option("constant", choices=SCHEDULES)  # constant | step | cosine | onecycle
    warmup_epochs: float = option(0.0, low=0.0, high=1e6)  # ramp from ~0 to lr, in epochs (onecycle: rise)
    step_epochs: int = option(10, low=1, read_by=_STEP)  # step: multiply by gamma every this many epochs
    gamma: float = option(0.1, low=0.0, high=1.0, low_open=True, read_by=_STEP)  # step: the decay factor
    min_lr: float = option(0.0, low=0.0, high=MAX_RATE, read_by=_DECAYING)  # cosine, onecycle: the rate at the last step
    start_factor: float = option(0.04, low=0.0, high=1.0, low_open=True, read_by=_ONECYCLE)  # onecycle: lr*this first
    momentum_low: float = option(0.0, low=0.0, high=1.0, high_open=True, read_by=_ONECYCLE)  # onecycle: 0 = fixed


@dataclass
class TrainConfig:
    epochs: int = option(10, low=1)  # passes over the training set
    batch_size: int = option(128, low=1)  # samples per SGD step
    seed: int = option(0, low=0)  # seeds init, shuffling, splits and generated data
    dtype: str = option("float32", choices=DTYPES)  # float64 for checks, float32 for speed
    device: str = option("cpu", choices=DEVICES)  # where the arrays live
    precision: str = option("fp32", choices=PRECISIONS, read_by=_GPU)  # float32 products on a GPU: fp32's accuracy, or tf32 (one TF32 product on the tensor cores: faster, ~1e-3 relative error); the CPU and float64 ignore it
    eval_batch_size: int = option(8192, low=1)  # evaluation needs no gradients: big batches
    patience: int = option(0, low=0)  # early stopping: epochs without val-loss gain (0 = off)
    min_delta: float = option(0.0, low=0.0, high=1e3)  # early stopping: the gain that counts
    checkpoint_every: int = option(0, low=0)  # steps between checkpoints (0 = at epoch ends)
    checkpoint_epochs: int = option(0, low=0)  # epochs between epoch-end checkpoints (0 = auto: at most one a second)


@dataclass
class ReportConfig:
    plots: bool = option(True)  # draw the run's figures when fit ends (sweep trials: --trial-figures)
    format: str = option("png", choices=PLOT_FORMATS)  # png | svg


SECTIONS = {"data": DataConfig, "model": ModelConfig, "optimizer": OptimizerConfig,
            "schedule": ScheduleConfig, "train": TrainConfig, "report": ReportConfig}
_FIELDS = {section: {f.name: f for f in fields(cls)} for section, cls in SECTIONS.items()}


@dataclass
class Config:
    name: str = ""  # the run's name ("" = the config file's stem)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    source: str = field(default="<defaults>", compare=False)  # where it was read from
    overrides: list[str] = field(default_factory=list, compare=False)  # --set given

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain TOML-able data (no provenance fields)."""
        out = {"name": self.name}
        out.update({section: asdict(getattr(self, section)) for section in SECTIONS})
        return out

    def to_toml(self) -> str:
        """The resolved config as TOML that `load_config` reads back to an equal Config; the
        provenance goes in comments, escaped (a newline in a path must not end a comment)."""
        header = f"# resolved from {_comment(self.source)}\n"
        if self.overrides:
            header += "".join(f"# --set {_comment(o)}\n" for o in self.overrides)
        return header + tomli_w.dumps(self.to_dict())


def _comment(text: str) -> str:
    """`text` safe inside a one-line TOML comment: control characters shown as escapes."""
    return CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def name_from_stem(stem: str) -> str:
    """A valid run name from a config file's stem: `my experiment` -> `my-experiment` (runs of
    other characters become one '-'), clipped to MAX_NAME; `run` if nothing is left."""
    name = re.sub(r"[^A-Za-z0-9_.\-]+", "-", stem).strip("-")[:MAX_NAME].rstrip("-")
    return "latest-run" if name == "latest" else name or "run"  # (check_name: `latest`)


def check_name(value: Any, where: str) -> str:
    """A run name: letters, digits, '.', '_' or '-', at most MAX_NAME characters."""
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value) \
            or len(value) > MAX_NAME:
        raise ConfigError(f"{where} = {_show(value)}: expected a run name of at most {MAX_NAME} "
                          "letters, digits, '.', '_' or '-'.")
    if value == "latest":  # every command reads `latest` as the newest run, never this name
        raise ConfigError(f"{where} = 'latest': every command reads `latest` as the newest "
                          "run, so none could find a run by this name; choose another.")
    return value


def ignored_keys(config: Config) -> list[str]:
    """The keys set away from their defaults that nothing in this config reads, each in a
    sentence: an optimizer's or schedule's own key under another one (momentum = 0.9 with
    adam), a key of another dataset (samples with mnist). No error, as a sweep may vary the
    setting that reads them; `config check`, `fit --dry-run` and the run's summary say so."""
    found = []
    for section, cls in SECTIONS.items():
        part, defaults = getattr(config, section), defaults_of(section)
        for f in fields(cls):
            value = getattr(part, f.name)
            if value == defaults[f.name]:
                continue
            why = _unread(config, section, f)
            if why:
                found.append(f"[{section}] {f.name} = {_show(value)} does nothing: {why}")
    return found


def _unread(config: Config, section: str, f) -> str:
    """Why `config` reads no [section] f ("": it does)."""
    if section == "data" and not applies_to(section, f.name, config.data.dataset):
        return f"the {config.data.dataset} dataset does not read it"
    if f.metadata["read_by"]:
        key, values = f.metadata["read_by"]
        given = getattr(getattr(config, key.split(".")[0]), key.split(".")[1])
        if given not in values:
            return f"only {key} = {' or '.join(values)} reads it, and it is {given!r} here"
    return ""


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def load_config(path: str | Path, overrides: Sequence[str] = (), text: str | None = None
                ) -> Config:
    """Reads a TOML config, applies `section.key=value` overrides, validates, fills defaults.
    `text`: the file's, read already (read_config_text), so a pipe is read once."""
    path = Path(path)
    text = read_config_text(path) if text is None else text
    return parse_config(text, source=str(path), overrides=overrides,
                        default_name=name_from_stem(path.stem))


def read_config_text(path: Path) -> str:
    """A config file's text, read once and at most MAX_CONFIG_BYTES of it: a config may come
    from a pipe (`fit <(...)`), which a second read would find empty, and a path given by
    mistake (a dataset, /dev/zero) must not be read into memory whole."""
    if path.is_dir():
        raise ConfigError(f"config file {path} is a directory; pass the path of a TOML "
                          "experiment config inside it, for example configs/mnist.toml.")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist. Pass the path of a TOML "
                          "experiment config, for example configs/mnist.toml.") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror or exc}.") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} holds more than {MAX_CONFIG_BYTES // 2**20} MiB, "
                          "which no experiment config does; is it a data file? Pass the path "
                          "of a TOML experiment config, for example configs/mnist.toml.")
    try:
        return data.decode("utf-8-sig")  # the BOM an editor on Windows may write is no syntax
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start} is "
                          f"{data[exc.start]:#04x}): a config is TOML, which is UTF-8 text; "
                          "save it as UTF-8 (a binary or data file is no config).") from None


def parse_config(text: str, source: str = "<string>", overrides: Sequence[str] = (),
                 default_name: str = "run") -> Config:
    try:
        raw = tomllib.loads(text)
    except ValueError as exc:  # TOMLDecodeError, or an integer of more than 4300 digits
        raise ConfigError(f"{source} is not valid TOML: {exc}. Fix the syntax at that "
                          "line (strings need quotes, tables look like [section]).") from None
    given = [_apply_override(raw, item) for item in overrides]
    where = _Where(source, text, {(s, k): f"--set {s}.{k}" if s else f"--set {k}"
                                  for s, k in given})
    config = _build(raw, where)
    _check_across(config, where)
    config.source, config.overrides = source, list(overrides)
    config.name = config.name or default_name
    return config


def with_values(config: Config, values: dict[str, Any], text: str = "",
                places: dict[str, str] | None = None) -> Config:
    """A copy of `config` with dotted keys (`model.hidden`, or `name`; known keys, as a
    sweep's checked axes are) set as `--set key=value` sets them: each value checked like its
    key, then the rules across keys. A sweep builds its trials' configs this way from one
    parsed base instead of parsing the file again for each. `text`: the file's, to name the
    line of a key a rule blames; `places`: where each key's value was given, as errors name it
    (a sweep's axis: `file, line 9: [sweep] "key"`; default `--set key`)."""
    places = {key: (places or {}).get(key, f"--set {key}") for key in values}
    # a new object for every section, not a deep copy: 10,000 trials are built in a blink,
    # and no one changes a value in place (a list such as model.hidden is replaced whole)
    out = copy.copy(config)
    for name in SECTIONS:
        setattr(out, name, copy.copy(getattr(config, name)))
    out.overrides = list(config.overrides)
    for dotted, value in values.items():
        section, _, key = dotted.rpartition(".")
        where = places[dotted]
        if not section:
            out.name = check_name(value, where)
            continue
        checked = _check_value(_FIELDS[section][key], value, lambda: where)
        setattr(getattr(out, section), key, checked)
    given = {d: f"--set {d}" for d in (o.partition("=")[0].strip() for o in config.overrides)}
    given.update(places)  # the base's --set, then the new values
    overridden = {(s or None, k): place for d, place in given.items()
                  for s, _, k in [d.rpartition(".")]}
    _check_across(out, _Where(config.source, text, overridden))
    return out


# the [data] keys that switch augmentation on (config validation and the step read it)
AUGMENT_KEYS = ("augment_shift", "augment_rotate", "augment_scale", "augment_shear",
                "augment_elastic", "augment_scale_x", "augment_scale_y")


def _cross_field_rules(c: Config) -> list[tuple[str, str, bool, str]]:
    """Rules between keys that need no data, as (section, key to blame, broken?, why).

    Rules that need the data (a 2-class .npz with loss = auto, say) stay where the data is.
    Keys another setting merely ignores (min_delta with patience 0, momentum_low outside
    onecycle) are no error: a sweep may vary the setting that uses them.
    """
    o, m, d, s, t = c.optimizer, c.model, c.data, c.schedule, c.train
    augment = [k for k in AUGMENT_KEYS if getattr(d, k)]
    two_classes = m.loss == "sigmoid_bce" or (m.loss == "auto" and d.dataset == "xor")
    return [
        ("optimizer", "nesterov", o.nesterov and o.name == "sgd" and not o.momentum,
         "Nesterov momentum needs [optimizer] momentum > 0 (it is 0); set a momentum such as "
         "0.9, or nesterov = false"),
        ("optimizer", "nesterov", o.nesterov and o.name != "sgd",
         f"nesterov belongs to sgd; {o.name} has no Nesterov variant. Set it to false"),
        ("model", "label_smoothing", m.label_smoothing > 0 and two_classes,
         "label smoothing needs the softmax_cross_entropy loss, but this model uses "
         "sigmoid_bce" + (" (loss = auto with the 2-class xor data)" if m.loss == "auto" else "")
         + ". Set model.loss = \"softmax_cross_entropy\" or label_smoothing = 0"),
        ("train", "patience", t.patience > 0 and d.val_fraction == 0,
         "early stopping needs a validation split, but [data] val_fraction = 0; set one (e.g. "
         "0.1) or patience = 0"),
        ("data", "path", d.dataset in FILE_SOURCES and not d.path,
         f"dataset = {d.dataset!r} needs [data] path, {SOURCES[d.dataset].file}"),
        ("data", augment[0] if augment else "", bool(augment) and d.dataset not in IMAGE_SOURCES,
         f"augmentation distorts images, but the {d.dataset} dataset's samples are flat "
         "vectors; set the augment_* keys to 0"),
        ("data", "normalize_width", d.normalize_width > 0 and d.dataset not in IMAGE_SOURCES,
         f"width normalisation stretches images, but the {d.dataset} dataset's samples are "
         "flat vectors; set normalize_width = 0"),
        ("data", "categorical", isinstance(d.categorical, str) and d.categorical != "auto",
         "expected \"auto\" or a list of column names, such as [\"colour\"]"),
        ("data", "features", bool(_repeated(d.features)),
         f"names the column {_repeated(d.features)!r} twice; list each column once"),
        ("data", "categorical", bool(_repeated(d.categorical)),
         f"names the column {_repeated(d.categorical)!r} twice; list each column once"),
        ("data", "class_weight", isinstance(d.class_weight, str) and
         d.class_weight not in ("", BALANCED),
         f"expected \"{BALANCED}\", \"\" (no class weights) or a table of class names and "
         "weights, such as {cat = 2.0, dog = 1.0}"),
        ("data", "sample_weight", bool(d.sample_weight) and d.dataset != "csv",
         f"sample_weight names a column of a table (dataset = \"csv\"), but the dataset is "
         f"{d.dataset!r}" + (": an npz gives its weights as the array w beside X and y, "
                             "used when present; set sample_weight = \"\""
                             if d.dataset == "npz" else "; set sample_weight = \"\"")),
        ("data", "delimiter", len(d.delimiter) != 1,
         "expected the one character between a table's cells, such as \",\" or \";\""),
        ("data", "augment_scale", d.augment_scale > 0 and bool(d.augment_scale_x or
                                                              d.augment_scale_y),
         "one zoom factor for both axes and per-axis factors (augment_scale_x / "
         "augment_scale_y) cannot both be set; use augment_scale = 0 with the per-axis keys, or "
         "drop them"),
        ("schedule", "warmup_epochs", s.warmup_epochs > 0 and s.warmup_epochs >= t.epochs,
         f"the warm-up must end before the last epoch ([train] epochs = {t.epochs})"),
        ("schedule", "min_lr", s.name in ("cosine", "onecycle") and s.min_lr > o.lr,
         f"the schedule would end above [optimizer] lr = {o.lr:g}; min_lr must not exceed it"),
        ("schedule", "momentum_low", s.name == "onecycle" and o.name == "sgd" and
         0 < o.momentum <= s.momentum_low,
         "onecycle cycles SGD's momentum down to momentum_low, which must be below "
         f"[optimizer] momentum = {o.momentum:g}"),
        *_underflow_rules(c),
    ]


def _underflow_rules(c: Config) -> list[tuple[str, str, bool, str]]:
    """A positive number below the smallest normal number of the run's dtype is a typo, not a
    setting: the arithmetic rounds it to 0 or keeps a few bits of it (optimizer.lr = 1e-300
    trained nothing in float32; eps = 1e-50 became 0 and the Adam step 0/0). Only the keys
    that break it are listed: a sweep checks 10,000 trials."""
    tiny = _TINY[c.train.dtype]
    wider = " (or train.dtype = \"float64\")" if c.train.dtype != "float64" else ""
    return [(section, f.name, True,
             f"positive, but below {tiny:.3g}, the smallest normal number of the run's "
             f"{c.train.dtype} arithmetic, which rounds it to 0 or keeps a few bits of it; give "
             "a larger value" + ("" if f.metadata["low_open"] else " or 0") + wider)
            for section, f in _FLOAT_FIELDS
            if any(0 < abs(v) < tiny for v in _numbers(getattr(getattr(c, section), f.name)))]


_TINY = {dtype: float(np.finfo(dtype).tiny) for dtype in DTYPES}
_FLOAT_FIELDS = [(section, f) for section, named in _FIELDS.items() for f in named.values()
                 if str(f.type).startswith("float")]


def _numbers(value) -> list:
    """A float field's numbers: one, or a range's two."""
    return value if isinstance(value, list) else [value]


def _repeated(names) -> str:
    """The first name a list gives twice ("": none); a column listed twice would be two
    inputs of the same values."""
    seen: set[str] = set()
    for name in names if isinstance(names, list) else ():
        if name in seen:
            return name
        seen.add(name)
    return ""


def _check_across(config: Config, where: _Where) -> None:
    for section, key, broken, why in _cross_field_rules(config):
        if broken:
            value = _show(getattr(getattr(config, section), key))
            raise ConfigError(f"{where(section, key)} = {value}: {why}.")


def config_folder(config: Config) -> list[Path]:
    """The folder of the config file, where a relative data.path (and a vendored data/mnist)
    is looked for first; none for a config that was not read from a file."""
    source = Path(config.source)
    return [source.parent] if source.is_file() else []


@dataclass
class _Where:
    """Names a place in the config text for error messages."""

    source: str
    text: str
    # (section, key) -> where its value was given instead of the text (--set, a sweep's axis)
    overridden: dict = field(default_factory=dict)

    def __call__(self, section: str | None, key: str) -> str:
        if len(key) > 60:  # an unknown key can be any length: keep the message short
            return f"{self.source}: " + (f"[{section}] " if section else "") + _show(key)
        if (section, key) in self.overridden:
            return self.overridden[(section, key)]
        line = _line_of(self.text, section, key)
        where = f"{self.source}, line {line}" if line else self.source
        return f"{where}: " + (f"[{section}] {key}" if section else key)


def _line_of(text: str, section: str | None, key: str) -> int | None:
    """The line where `key` is set inside `[section]` (best effort; TOML has other spellings)."""
    current = None
    for number, line in enumerate(text.split("\n"), start=1):  # TOML's newline only
        stripped = line.strip()
        header = re.match(r"^\[\s*([A-Za-z0-9_\-]+)\s*\]", stripped)
        if header:
            current = header.group(1)
            if key == current and section is None:
                return number
        elif current == section and re.match(rf"^{re.escape(key)}\s*=", stripped):
            return number
    return None


def _apply_override(raw: dict, item: str) -> tuple[str | None, str]:
    """Applies one `--set section.key=value` (the value read as TOML, else as a string);
    returns (section, key)."""
    if "=" not in item:
        raise ConfigError(f"--set {_show(item)} is not of the form section.key=value "
                          "(for example --set train.epochs=5).")
    dotted, value_text = (part.strip() for part in item.split("=", 1))
    parts = dotted.split(".")
    if len(parts) == 1 and parts[0] == "name":
        parts = ["name"]
    elif len(parts) != 2 or not all(parts):
        raise ConfigError(f"--set {_show(item)}: {_show(dotted)} must be section.key, one of the sections "
                          f"{', '.join(SECTIONS)} (for example train.epochs).")
    elif parts[0] not in SECTIONS:  # named here: the file holds no such section to blame
        raise ConfigError(f"--set {_show(item)}: {_show(parts[0])} is not a section; expected "
                          f"one of {', '.join(SECTIONS)}." + _not_a_section(parts[0]))
    value = value_of(dotted, value_text)
    if len(parts) == 1:
        raw["name"] = value
        return None, "name"
    section = raw.setdefault(parts[0], {})
    if not isinstance(section, dict):
        raise ConfigError(f"--set {_show(item)}: {_show(parts[0])} is a value in the config, "
                          "not a table.")
    section[parts[1]] = value
    return parts[0], parts[1]


def _not_a_section(word: str) -> str:
    """The hint after `--set WORD.key`: a sweep's axes come with --grid, a typo gets the
    closest section."""
    if word == "sweep":
        return (" A sweep's axes are given with `mlptrain sweep CONFIG --grid "
                "section.key=v1,v2,...`; --set changes one key of every trial.")
    return _did_you_mean(word, list(SECTIONS))


def value_of(dotted: str, text: str) -> Any:
    """A value given on the command line for the key `dotted` (--set, one of --grid's): TOML
    (`[256,128]`, `"a b"`, `1e-3`), else the text as a string (a bare word such as relu). A
    key that takes text alone takes the text as written where TOML reads a number, a boolean
    or a date: `name=5`, `data.target=2019` or `data.path=2024-01-01` name the run, the
    column or the file `5`, `2019`, `2024-01-01`."""
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except ValueError:  # TOMLDecodeError (or an integer too long to read)
        return text
    return text if _takes_text(dotted) and not isinstance(value, (str, list, dict)) else value


def _takes_text(dotted: str) -> bool:
    """Whether a scalar given for the key `dotted` can only be text: `name`, or a field whose
    type starts with str (`str`, `str | list[str]`, `str | dict[str, float]`)."""
    section, _, key = dotted.rpartition(".")
    f = _FIELDS.get(section, {}).get(key)
    return dotted == "name" or (f is not None and str(f.type).startswith("str"))


def _build(raw: dict, where: _Where) -> Config:
    config = Config()
    for key, value in raw.items():
        if key == "name":
            config.name = check_name(value, where(None, "name"))
        elif key == "sweep":
            continue  # a sweep's grid: read by mlptrain.sweep; fit trains the base config
        elif key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{where(None, key)} = {value!r}: expected a table [{key}].")
            setattr(config, key, _build_section(key, value, where))
        else:
            raise ConfigError(f"{where(None, key)}: unknown top-level key or section. "
                              f"Expected name or one of the sections "
                              f"[{'], ['.join(SECTIONS)}].{_did_you_mean(key, ['name', *SECTIONS])}")
    return config


def _build_section(section: str, values: dict, where: _Where):
    cls = SECTIONS[section]
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{where(section, key)}: unknown key in [{section}]. Valid keys: "
                              f"{', '.join(known)}.{_did_you_mean(key, list(known))}")
        kwargs[key] = _check_value(known[key], value, lambda: where(section, key))
    return cls(**kwargs)


def _did_you_mean(word: str, candidates: list[str]) -> str:
    """' Did you mean `x`?' for the candidate closest to `word`, case aside (SGD: sgd), or ''."""
    folded = {c.lower(): c for c in candidates}
    close = difflib.get_close_matches(word.lower(), list(folded), n=1, cutoff=0.6)
    return f" Did you mean `{folded[close[0]]}`?" if close else ""


_EXPECTED = {"int": "an integer", "float": "a number", "bool": "true or false",
             "str": "a string", "list[int]": "an integer or a list of integers",
             "list[str]": "a list of strings",
             "str | list[str]": "a string or a list of strings",
             "float | list[float]": "a number or a two-number range [low, high]",
             "str | dict[str, float]": "a string or a table {name = number}"}


def _check_value(f, value, where) -> Any:
    """Checks one value's type, range and allowed names; returns it normalized."""
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    meta = f.metadata
    if kind == "list[int]" and isinstance(value, int) and not isinstance(value, bool):
        value = [value]  # hidden = 128 means one hidden layer
    if not _has_type(value, kind):
        raise ConfigError(f"{where()} = {_show(value)}: expected {_EXPECTED[kind]}.")
    if isinstance(value, dict):  # str | dict[str, float]: names and their numbers
        return _check_table(value, meta, where)
    if kind == "float | list[float]" and isinstance(value, list):
        value = [_finite(v, where) for v in value]
    elif kind in ("float", "float | list[float]"):
        value = _finite(value, where)
    items = value if isinstance(value, list) else [value]
    if kind == "float | list[float]":
        return _check_range_pair(value, meta, where)
    for item in items:
        # TOML integers are 64-bit, but the parser accepts any size
        if kind in ("int", "list[int]") and abs(item) >= 2**63:
            raise ConfigError(f"{where()} = {_show(value)}: expected an integer below 2**63.")
        _check_range(item, meta, where)
    if kind in ("str", "list[str]", "str | list[str]", "str | dict[str, float]"):
        for item in items:
            _check_string(item, where)
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f"{where()} = {_show(value)}: expected one of "
                          f"{', '.join(meta['choices'])}.{_did_you_mean(str(value), list(meta['choices']))}")
    return value


def _check_table(value: dict, meta, where) -> dict[str, float]:
    """A table of names and numbers, each number finite and in the field's range."""
    out = {}
    for name, number in value.items():
        _check_string(name, where)
        at = lambda: f"{where()}.{name}"  # noqa: E731 - the entry a message names
        out[name] = _finite(number, at)
        _check_range(out[name], meta, at)
    return out


def _check_range_pair(value, meta, where):
    """A number, or [low, high] (low <= high, each in the field's range): a value drawn
    uniformly per image. [x, x] is the number x (one place decides that it is no range)."""
    if not isinstance(value, list):
        _check_range(value, meta, where)
        return value
    if len(value) != 2:
        raise ConfigError(f"{where()} = {_show(value)}: a range is two numbers [low, high], "
                          f"found {len(value)}.")
    low, high = value
    for item in value:
        _check_range(item, meta, where)
    if low > high:
        raise ConfigError(f"{where()} = {_show(value)}: the range's low end exceeds its high "
                          "end; write [low, high].")
    return low if low == high else [low, high]


def _check_string(value: str, where) -> None:
    """Every string value is a path, a URL or a name: no control characters, no novel."""
    if len(value) > MAX_STRING:
        raise ConfigError(f"{where()} = {_show(value)}: expected at most {MAX_STRING} "
                          f"characters, found {len(value)}.")
    bad = CONTROL.search(value)
    if bad:
        raise ConfigError(f"{where()} = {_show(value)}: control character "
                          f"{bad.group()!r} at position {bad.start()}; expected plain text.")


def _finite(value, where) -> float:
    try:
        value = float(value)
    except OverflowError:  # TOML integers have no size limit; floats do
        value = math.inf
    if not math.isfinite(value):
        raise ConfigError(f"{where()} = {_show(value)}: expected a finite number.")
    return value


def _has_type(value, kind: str) -> bool:
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if kind == "float | list[float]":
        number = lambda v: (isinstance(v, (int, float))  # noqa: E731
                            and not isinstance(v, bool))
        return number(value) or (isinstance(value, list) and all(map(number, value)))
    if kind == "int":
        return is_int
    if kind == "float":
        return is_int or isinstance(value, float)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "str | list[str]":
        return isinstance(value, str) or _has_type(value, "list[str]")
    if kind == "str | dict[str, float]":
        return isinstance(value, str) or (isinstance(value, dict) and all(
            _has_type(v, "float") for v in value.values()))
    inner = int if kind == "list[int]" else str
    return isinstance(value, list) and all(
        isinstance(v, inner) and not isinstance(v, bool) for v in value)


def _check_range(value, meta, where) -> None:
    low, high = meta.get("low"), meta.get("high")
    if not isinstance(value, (int, float)):
        return
    too_low = low is not None and (value <= low if meta["low_open"] else value < low)
    too_high = high is not None and (value >= high if meta["high_open"] else value > high)
    if too_low or too_high:
        lo = "" if low is None else f"{'>' if meta['low_open'] else '>='} {low}"
        hi = "" if high is None else f"{'<' if meta['high_open'] else '<='} {high}"
        raise ConfigError(f"{where()} = {_show(value)}: expected a value "
                          f"{' and '.join(p for p in (lo, hi) if p)}.")


def _show(value) -> str:
    """A value for an error message, clipped: a 10 MB string must not make a 20 MB message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and value.bit_length() > 200:  # str() refuses > 4300 digits
        return f"an integer of {value.bit_length()} bits"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


def defaults_of(section: str) -> dict[str, Any]:
    """The defaults of one section, for documentation and tests."""
    out = {}
    for f in fields(SECTIONS[section]):
        out[f.name] = f.default_factory() if f.default is MISSING else f.default
    return out


# ---------------------------------------------------------------------------------------------
# A commented config with every default (`mlptrain config init`)
# ---------------------------------------------------------------------------------------------

# a key whose comment starts with a dataset's name (or `images`) applies to the datasets its
# comment names, as in `npz: the file; mnist: the IDX folder`
_NAMES = "|".join((*DATASETS, "images"))
_FOR = re.compile(rf"^((?:{_NAMES})(?:, (?:{_NAMES}))*)(:|$)")  # `npz, csv: ...` names both
_NAMED = re.compile(rf"\b({_NAMES})\b(?=:)")


# what `config init` writes where a default cannot stand (a file source must name its file)
STARTER_VALUES = {("npz", "data", "path"): "my-data.npz", ("csv", "data", "path"): "my-data.csv"}


def commented_defaults(dataset: str = "mnist") -> str:
    """Every key with its default value and its comment from this file, as a TOML config for
    `dataset`; keys that only another dataset reads are written commented out. The comments
    are read from this module's source, so the file can never drift from the defaults."""
    if dataset not in DATASETS:
        raise ConfigError(f"dataset {dataset!r} is not one of {', '.join(DATASETS)}.")
    comments = field_comments()
    lines = [f"# An mlptrain config for the {dataset} dataset with every key at its default "
             f"(written by `mlptrain config init --dataset {dataset}`).",
             "# A config needs only the keys it changes: delete the others, or keep them as a "
             "record.",
             "# Check it with `mlptrain config check FILE`; train with `mlptrain fit FILE`.",
             "", _key_line("name", "", comments.get(("Config", "name"), ""), True)]
    for section, cls in SECTIONS.items():
        lines += ["", f"[{section}]"]
        for f in fields(cls):
            value = dataset if (section, f.name) == ("data", "dataset") else \
                STARTER_VALUES.get((dataset, section, f.name), defaults_of(section)[f.name])
            comment = comments.get((cls.__name__, f.name), "")
            lines.append(_key_line(f.name, value, _with_choices(comment, f.metadata["choices"]),
                                   _applies(comment, dataset)))
    return "\n".join(lines) + "\n"


def _with_choices(comment: str, choices) -> str:
    """A key's comment and the values it takes, from its declaration (a new activation or
    optimizer is listed without a comment to edit), unless the comment lists them itself."""
    if not choices or " | " in comment:
        return comment
    listed = "one of " + " | ".join(map(str, choices))
    return f"{comment}; {listed}" if comment else listed


def applies_to(section: str, key: str, dataset: str) -> bool:
    """Whether a run on `dataset` reads [section] key (by the key's comment, as above)."""
    cls = SECTIONS.get(section)
    comment = field_comments().get((cls.__name__, key), "") if cls else ""
    return _applies(comment, dataset)


def _applies(comment: str, dataset: str) -> bool:
    first = _FOR.match(comment)
    if not first:
        return True
    named = {*first.group(1).split(", "), *_NAMED.findall(comment)}
    return dataset in named or ("images" in named and dataset in IMAGE_SOURCES)


def _key_line(key: str, value: Any, comment: str, active: bool) -> str:
    line = f"{key} = {_toml_value(value)}" if active else f"# {key} = {_toml_value(value)}"
    return f"{line}  # {comment}" if comment else line


def _toml_value(value: Any) -> str:
    """One value as TOML, lists on one line."""
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml_value, value)) + "]"
    return tomli_w.dumps({"v": value}).strip()[len("v = "):]


def field_comments() -> dict[tuple[str, str], str]:
    """(class name, field name) -> the comment at the end of the field's line in this file."""
    import inspect
    import io
    import tokenize

    found = {}
    for cls in (Config, *SECTIONS.values()):
        try:
            source = inspect.getsource(cls)
        except (OSError, TypeError):  # no source shipped: no comments, the values stay right
            continue
        current, line_start = None, True
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type in (tokenize.NEWLINE, tokenize.NL):
                if tok.type == tokenize.NEWLINE:
                    current = None
                line_start = True
            elif tok.type in (tokenize.INDENT, tokenize.DEDENT):
                continue
            elif tok.type == tokenize.COMMENT:
                if current:
                    found[(cls.__name__, current)] = tok.string.lstrip("#").strip()
            else:
                if line_start and tok.type == tokenize.NAME and tok.start[1] == 4:
                    current = tok.string  # a field: `    name: type = default  # comment`
                line_start = False
    return found
