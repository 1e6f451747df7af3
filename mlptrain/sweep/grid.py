"""A sweep's grid: axes over dotted config keys, validated like the config, expanded to trials.

    [sweep]
    "model.hidden" = [2, 4, 8, 16]      # every value of every axis is one coordinate
    "train.seed" = [0, 1, 2]            # 4 x 3 = 12 trials

An axis key names a config key as `section.key` (or `name`); each of its values is checked by the
same rules as that key in a config file, so a bad value names the file, the axis and the value.
`--grid key=v1,v2,...` adds or replaces an axis; `--samples N` keeps N random grid points.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from mlptrain.config import (_FIELDS, MAX_NAME, SECTIONS, Config, _check_value, _did_you_mean,
                             check_name, load_config, read_config_text, tomllib, value_of,
                             with_values)
from mlptrain.errors import ConfigError

SWEEP_TABLE = "sweep"
REPLICATE_AXES = ("train.seed",)  # axes averaged over in the summary: the rest is a grid point
MAX_TRIALS = 10_000  # trials one sweep runs: each is a run directory, a config and a process


@dataclass
class Axis:
    key: str  # dotted config key, e.g. model.hidden
    values: list[Any]
    place: str = ""  # where it was given, for errors: `file, line 9: [sweep] "key"`, `--grid key`


@dataclass
class Trial:
    """One grid point: its position in the full grid, coordinates and run name."""

    index: int
    point: dict[str, Any]  # axis key -> value
    name: str
    config: Config = field(repr=False)


@dataclass
class SweepSpec:
    """Everything that defines a sweep; two runs of the same spec are the same sweep. Its
    trials are counted before any is built (the product of the axes' lengths) and built from
    the parsed base config, each on demand: a grid of 10**9 points costs nothing to sample
    from, and `--dry-run` builds the few it shows."""

    name: str
    source: str
    base: Config  # the config with --set applied, before any axis
    axes: list[Axis]
    samples: int  # 0 = the whole grid
    sample_seed: int
    text: str = field(default="", repr=False)  # the config file's, to name lines in errors
    # whether each trial draws its run's figures as `fit` does ([report] plots). Off by
    # default: a run's figures take a core 0.4-1 s, longer than a grouped trial's training,
    # and `mlptrain plot RUN` draws them on demand. Not part of what the sweep runs (its id):
    # the same command with or without figures finds the same trials.
    trial_figures: bool = False

    @property
    def grid_size(self) -> int:
        return math.prod(len(a.values) for a in self.axes)  # Python ints: never overflows

    @property
    def size(self) -> int:
        """How many trials the sweep runs: its samples, or the whole grid."""
        return self.samples or self.grid_size

    def first(self, n: int) -> list[Trial]:
        """The first n trials (in grid order), built without building the others."""
        return [self.trial(i) for i in itertools.islice(self.indices, n)]

    @cached_property
    def indices(self) -> Sequence[int]:
        """The grid index of each trial, in grid order."""
        return grid_indices(self.grid_size, self.samples, self.sample_seed)

    @cached_property
    def trials(self) -> list[Trial]:
        """Every trial; ConfigError, naming the count and --samples, for more than
        MAX_TRIALS (each is a run directory and a process start)."""
        if self.size > MAX_TRIALS:
            raise ConfigError(too_many(self))
        return self.first(self.size)

    def trial(self, index: int) -> Trial:
        """The trial at grid index `index`: the base with the point's values as --set."""
        point = point_at(self.axes, index)
        try:
            config = with_values(self.base, point, self.text,
                                 {a.key: a.place for a in self.axes if a.place})
        except ConfigError as exc:  # a rule across keys that this point's values break
            shown = ", ".join(f"{k}={toml_value(v)}" for k, v in point.items())
            raise ConfigError(f"trial #{index} ({shown}): {exc}") from None
        config.overrides = [*self.base.overrides,
                            *(f"{key}={toml_value(value)}" for key, value in point.items())]
        config.name = trial_name(point.get("name", self.name), point)
        if config.report.plots and not self.trial_figures:
            config.report.plots = False  # a copy of the base's section (with_values)
            config.overrides.append("report.plots=false")  # the run's config.toml says so
        return Trial(index, point, config.name, config)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source,
                "axes": {a.key: a.values for a in self.axes},
                "samples": self.samples, "sample_seed": self.sample_seed,
                "overrides": self.base.overrides, "base": self.base.to_dict()}

    @property
    def sweep_id(self) -> str:
        """The sweep's name plus a hash of what it runs: the same spec finds the same sweep."""
        identity = {k: v for k, v in self.to_dict().items() if k not in ("source", "overrides")}
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        return f"{self.name}-{digest[:8]}"


def too_many(spec: SweepSpec) -> str:
    """Why a sweep of more than MAX_TRIALS trials is refused, and what to do instead."""
    lengths = " x ".join(f"{len(a.values)} ({a.key})" for a in spec.axes)
    what = (f"--samples {spec.samples}" if spec.samples else
            f"the grid has {spec.grid_size:,} points: {lengths}")
    return (f"{what}: a sweep runs at most {MAX_TRIALS:,} trials (each is a run). Draw fewer "
            f"with --samples N (N <= {MAX_TRIALS:,}), or give the axes fewer values; "
            "--dry-run shows the first trials of any grid.")


def load_sweep(path: str | Path, overrides: Sequence[str] = (), grid: Sequence[str] = (),
               samples: int = 0, sample_seed: int = 0,
               trial_figures: bool = False, text: str | None = None) -> SweepSpec:
    """Reads a sweep config: its [sweep] table, then --grid axes, then (unless there are too
    many to run: see SweepSpec.trials) the trials, which draw their runs' figures only with
    `trial_figures` (SweepSpec.trial_figures). `text`: the file's, when read already."""
    path = Path(path)
    if text is None:
        text = read_config_text(path)  # once: a config from a pipe has no second reading
    base = load_config(path, overrides, text)  # reports bad base keys first
    table = tomllib.loads(text).get(SWEEP_TABLE, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: {SWEEP_TABLE} = {table!r}: expected a table [sweep] of axes "
                          'such as "model.hidden" = [2, 4, 8].')
    axes = {}
    for key, values in _flatten(table).items():
        where = _file_place(path, text, key)
        axes[key] = Axis(key, _check_axis(key, values, where), where())
    for item in grid:
        key, values = parse_grid_option(item)
        axes[key] = Axis(key, _check_axis(key, values, lambda k=key: f"--grid {k}"),
                         f"--grid {key}")
    if not axes:
        raise ConfigError(f"{path} has no [sweep] axes and no --grid was given; add for example "
                          '[sweep] "model.hidden" = [2, 4, 8] or --grid model.hidden=2,4,8.')
    spec = SweepSpec(base.name, str(path), base, list(axes.values()), samples, sample_seed, text,
                     trial_figures)
    if samples < 0:
        raise ConfigError(f"--samples {samples}: expected 0 (the whole grid) or more.")
    if samples > spec.grid_size:
        raise ConfigError(f"--samples {samples} is more than the {spec.grid_size} points of the "
                          "grid; ask for fewer, or leave --samples out to run them all.")
    if spec.size <= MAX_TRIALS:
        spec.trials  # built now: a point that breaks a rule across keys refuses the grid
    return spec


def declared_sweep(path: str | Path, overrides: Sequence[str], text: str) -> SweepSpec | None:
    """The sweep a config's own [sweep] table declares, every axis and trial checked as
    `mlptrain sweep` would (`config check`: a bad axis must not wait for the sweep to be run);
    None for a config without one."""
    if SWEEP_TABLE not in tomllib.loads(text):
        return None
    return load_sweep(path, overrides, text=text)


# -- axes ----------------------------------------------------------------------------------------


def parse_grid_option(item: str) -> tuple[str, list[Any]]:
    """`key=v1,v2,...` -> (key, values). Values are read as TOML (so `[256,128],[64]` is two
    lists) or, failing that, split at the commas between values (not those inside a list, a
    table or a string: `{a = 1, b = 2},balanced` is two) with bare words taken as strings."""
    if "=" not in item:
        raise ConfigError(f"--grid {item!r} is not of the form section.key=v1,v2,... (for "
                          "example --grid model.hidden=2,4,8).")
    key, text = (part.strip() for part in item.split("=", 1))
    if not key:
        raise ConfigError(f"--grid {item!r} names no key before the =; write section.key=v1,"
                          "v2,... (for example --grid model.hidden=2,4,8).")
    if not text:
        raise ConfigError(f"--grid {item!r} gives no values; list them after the =, separated "
                          "by commas.")
    parts = [part.strip() for part in _top_level_parts(text)]
    try:
        values = tomllib.loads(f"v = [{text}]")["v"]
    except tomllib.TOMLDecodeError:
        return key, [value_of(key, part) for part in parts]
    if len(values) == len(parts):  # a key of text takes `2019` as written (config.value_of)
        values = [value_of(key, part) if not isinstance(v, (str, list, dict)) else v
                  for v, part in zip(values, parts)]
    return key, values


def _top_level_parts(text: str) -> list[str]:
    """text cut at each comma outside brackets, braces and quotes."""
    parts, depth, quote, start = [], 0, "", 0
    for i, c in enumerate(text):
        if quote:
            quote = "" if c == quote else quote
        elif c in "\"'":
            quote = c
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return parts + [text[start:]]


def _flatten(table: dict, prefix: str = "") -> dict[str, Any]:
    """Both `"model.hidden" = [...]` and `[sweep.model] hidden = [...]` name model.hidden."""
    flat = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _check_axis(key: str, values: Any, where: Callable[[], str]) -> list[Any]:
    """The axis's values, each checked against its config key's type and constraints."""
    f = _config_field(key, where)
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where()} = {values!r}: expected a non-empty list of values, "
                          "one per grid coordinate.")
    seen = []
    for value in values:
        item = _check_value(f, value, where) if f is not None else _check_name(value, where)
        if item in seen:
            raise ConfigError(f"{where()}: the value {value!r} appears twice; each value is one "
                              "coordinate of the grid.")
        seen.append(item)
    return list(values)  # as written (16, not [16]): they name the trials and the summary


def _config_field(key: str, where: Callable[[], str]):
    if key == "name":
        return None
    section, _, name = key.partition(".")
    if section in SECTIONS and not name:  # `--grid model=...`: a section, not one of its keys
        raise ConfigError(f"{where()}: [{section}] is a section; an axis names one of its keys "
                          f"as {section}.key, one of {', '.join(_FIELDS[section])}.")
    if section not in SECTIONS or not name:
        keys = ["name", *SECTIONS]
        raise ConfigError(f"{where()}: an axis must name a config key as section.key, with a "
                          f"section among {', '.join(SECTIONS)} (for example model.hidden)."
                          f"{_did_you_mean(section, keys)}")
    known = {f.name: f for f in fields(SECTIONS[section])}
    if name not in known:
        raise ConfigError(f"{where()}: [{section}] has no key {name!r}. Valid keys: "
                          f"{', '.join(known)}.{_did_you_mean(name, list(known))}")
    return known[name]


def _check_name(value: Any, where: Callable[[], str]) -> str:
    """A `name` axis's value: a run name as config.check_name has it, and not empty (the trials
    are named after it)."""
    if value == "":
        raise ConfigError(f"{where()} = '': a trial's name cannot be empty.")
    return check_name(value, where())


def _file_place(path: Path, text: str, key: str) -> Callable[[], str]:
    """Names an axis in the config file, with its line when it can be found."""
    def where() -> str:
        line = _axis_line(text, key)
        return f"{path}{f', line {line}' if line else ''}: [sweep] {json.dumps(key)}"
    return where


def _axis_line(text: str, key: str) -> int | None:
    current = None
    last = key.rsplit(".", 1)[-1]
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip()
        header = re.match(r"^\[\s*([A-Za-z0-9_.\-]+)\s*\]", stripped)
        if header:
            current = header.group(1)
            continue
        if current == SWEEP_TABLE:
            pattern = rf"^[\"']?{re.escape(key)}[\"']?\s*="
        elif current and current.startswith(SWEEP_TABLE + "."):  # [sweep.model] hidden = [...]
            pattern = rf"^{re.escape(last)}\s*="
        else:
            continue
        if re.match(pattern, stripped):
            return number
    return None


# -- points and trials ---------------------------------------------------------------------------


def grid_indices(size: int, samples: int = 0, seed: int = 0) -> Sequence[int]:
    """Every index of a grid of `size` points, or `samples` of them drawn without replacement
    (numpy's draw of k from n needs O(k) memory, not O(n)), sorted."""
    if not samples:
        return range(size)
    if size >= 2**63:  # beyond what the generator draws from
        raise ConfigError(f"--samples: the grid has {size:.3g} points, too many to draw from "
                          "(at most 2**63 - 1); give the axes fewer values.")
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(size, size=samples, replace=False))


def point_at(axes: list[Axis], index: int) -> dict[str, Any]:
    """The grid point at `index`: its digits in the mixed radix of the axes' lengths, the last
    axis the least significant (it varies fastest)."""
    values = []
    for axis in reversed(axes):
        index, digit = divmod(index, len(axis.values))
        values.append(axis.values[digit])
    return dict(zip([a.key for a in axes], reversed(values)))


def toml_value(value: Any) -> str:
    """One value as an inline TOML value on one line (JSON's spelling is TOML for these)."""
    return json.dumps(value)


def trial_name(base_name: str, point: dict[str, Any]) -> str:
    """`mnist-capacity_hidden-16_seed-2`: the base name and each coordinate, in the run id."""
    short = [key.rsplit(".", 1)[-1] for key in point]
    parts = [base_name]
    for key, label in zip(point, short):
        label = key if short.count(label) > 1 else label
        value = point[key]
        if isinstance(value, list):
            shown = "x".join(str(v) for v in value) or "none"  # hidden = []: a linear model
        elif isinstance(value, bool):
            shown = "true" if value else "false"
        elif isinstance(value, dict):  # class_weight = {a = 1, b = 2.5}: a-1.b-2.5
            shown = ".".join(f"{k}-{v:g}" if isinstance(v, (int, float)) else f"{k}-{v}"
                             for k, v in value.items()) or "none"
        else:
            shown = str(value)
        parts.append(f"{label}-{shown}")
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", "_".join(parts))
    if len(name) > MAX_NAME:  # many or long coordinates: keep it a valid, distinct name
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{name[:MAX_NAME - 9]}-{digest}"
    return name
