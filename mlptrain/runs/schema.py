"""The shapes of the JSON files a run writes, checked when they are read back.

Valid JSON is not enough: `null`, `[]` or `{"status": 5}` in summary.json parse, and then fail
somewhere far away (`None.get`, a number compared with a string). Each reader checks the shape
here once, so every caller may rely on it. A check returns None when the value is fine, else a
short description of the first problem (the reader turns it into a RunStoreError).

Only the keys a reader uses are checked; other keys are left alone, so a newer version's extra
keys do not make a run unreadable.

checkpoint.npz is read by arrayfiles.read_npz with CHECKPOINT below: which of its arrays hold
JSON text and which floats may be infinite; every other array holds finite real numbers.
"""

from __future__ import annotations

import math
import sys
from typing import Any, Callable

import mlptrain
from mlptrain import nn
from mlptrain.arrayfiles import Expect
from mlptrain.data.labels import TASKS as LABEL_TASKS

# what runs/checkpoint.py writes: JSON texts (every RNG's state, the metrics history, the GPU's
# product plans); a best validation loss that starts infinite, an epoch's running loss sum;
# and the counters, each one number
CHECKPOINT = Expect(
    text=("rng.", "history", "product_plans"), nonfinite=("best.val_loss", "running.loss_sum"),
    shapes={key: () for key in ("epoch", "step", "position", "format", "best.epoch",
                                "best.val_loss")},
    shapes_of="a checkpoint's counter (one number)")

RUN_STATUSES = ("running", "completed", "interrupted", "failed")  # what fit writes
TASKS = tuple(t for t in LABEL_TASKS if t != "auto")  # a dataset's, as loading decides it


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    """An int or float that a reader can take as a float (an int of 400 digits overflows)."""
    return isinstance(v, float) or (_is_int(v) and abs(v) <= sys.float_info.max)


def _is_str(v) -> bool:
    return isinstance(v, str)


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def _list_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, list) and all(check(x) for x in v)


def _dict_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, dict) and all(_is_str(k) and check(x) for k, x in v.items())


_count = lambda v: _is_int(v) and v >= 0  # noqa: E731
_pair = lambda v: isinstance(v, list) and len(v) == 2 and all(map(_is_number, v))  # noqa: E731
_metrics = _dict_of(_optional(_is_number))  # split_loss / split_accuracy -> value or None

# key -> (what it must be, in words; the check). Present keys only, except REQUIRED.
SUMMARY_KEYS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "status": (f"one of {', '.join(RUN_STATUSES)}", lambda v: v in RUN_STATUSES),
    "run_id": ("a string", _is_str),
    "name": ("a string", _is_str),
    "started": ("a string", _is_str),
    "finished": ("a string", _is_str),
    "error": ("a string", _is_str),
    "host": ("a string or null", _optional(_is_str)),
    "pid": ("an integer or null", _optional(_is_int)),
    "device": ("a string", _is_str),
    "dtype": ("a string", _is_str),
    "overrides": ("a list of strings", _list_of(_is_str)),
    "epochs_planned": ("a count", _count),
    "epochs_completed": ("a count", _count),
    "resumed": ("a count", _count),
    "earlier_sittings_seconds": ("a number >= 0", lambda v: _is_number(v) and v >= 0),
    "best_epoch": ("an integer", _is_int),
    "stopped_early": ("true or false", lambda v: isinstance(v, bool)),
    "final": ("null or a table of numbers", _optional(_metrics)),
    "timing": ("null or a table of numbers", _optional(_metrics)),
    "position": ("a table of counts", _dict_of(_count)),
    "model": ("a table with sizes (a list of positive integers)",
              lambda v: isinstance(v, dict) and _list_of(lambda n: _is_int(n) and n > 0)(
                  v.get("sizes")) and len(v["sizes"]) >= 2
              and all(_is_str(v.get(k, "")) for k in ("activation", "loss"))
              and _is_int(v.get("parameters", 0))),
    "dataset": ("a table (name, source, input_shape, checksums, samples, task, class_names, "
                "encoding)",
                lambda v: isinstance(v, dict)
                and all(_optional(_is_str)(v.get(k)) for k in ("name", "source"))
                and _optional(_list_of(lambda n: _is_int(n) and n > 0))(v.get("input_shape"))
                and _optional(_dict_of(_is_str))(v.get("checksums"))
                and _optional(_dict_of(_count))(v.get("samples"))
                and v.get("task") in (None, *TASKS)
                and _optional(_list_of(_is_str))(v.get("class_names"))
                and _optional(lambda e: isinstance(e, dict))(v.get("encoding"))),
    "versions": ("a table of version strings", _dict_of(_optional(_is_str))),
    "warnings": ("a list of strings", _list_of(_is_str)),
    "figures": ("a table with files (a list of file names)",
                lambda v: isinstance(v, dict) and _list_of(_is_str)(v.get("files", []))),
    "data_changes": ("a list of tables", _list_of(lambda c: isinstance(c, dict))),
    # predict's references: a top probability, and pairs: the percentiles and each image
    # statistic's [low, high] range
    "reference": ("a table of [low, high] pairs and a top_probability", _optional(
        lambda v: isinstance(v, dict) and all(
            _is_number(x) if k == "top_probability" else _pair(x) for k, x in v.items()))),
}
REQUIRED = ("status",)  # the rest is checked where present (a reader defaults it)


# a sweep's trials.json: one record per trial (sweep/store.py), each key a reader uses
TRIAL_KEYS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "index": ("a count", _count),
    "name": ("a string", _is_str),
    "point": ("a table of the trial's config values", lambda v: isinstance(v, dict)),
    "status": ("a string", _is_str),
    "run_id": ("null or a run id (a folder name in the runs directory)",
               _optional(lambda v: _is_str(v) and _is_run_id(v))),
    "previous_runs": ("a list of run ids", _list_of(lambda v: _is_str(v) and _is_run_id(v))),
    "final": ("null or a table of numbers", _optional(_metrics)),
    "parameters": ("null or a count", _optional(_count)),
    "epochs": ("a count", _count),
    "seconds": ("null or a number >= 0", _optional(lambda v: _is_number(v) and v >= 0)),
    "error": ("a string", _is_str),
}


def _is_run_id(v: str) -> bool:
    """A bare folder name: a record naming `../elsewhere` must not lead a reader out of the
    runs directory."""
    return v not in ("", ".", "..") and "/" not in v and "\\" not in v


def check_trial_record(record: Any) -> str | None:
    """One trial of a sweep's trials.json: every key of TRIAL_KEYS, each of its shape."""
    if not isinstance(record, dict):
        return f"expected a JSON object, found {_kind(record)}"
    for key, (expected, check) in TRIAL_KEYS.items():
        if key not in record:
            return f"the key {key!r} is missing"
        if not check(record[key]):
            return f"{key!r} should be {expected}, found {_brief(record[key])}"
    return None


def written_by(summary: dict) -> str | None:
    """Where another mlptrain than this one wrote the run (its summary's versions say so), a
    note for a message about what this version cannot read of it; else None."""
    version = (summary.get("versions") or {}).get("mlptrain")
    if version is None or version == mlptrain.__version__:
        return None
    return (f" (mlptrain {version} wrote the run, this is {mlptrain.__version__}: read it "
            "with the version that wrote it)")


def run_metric(summary: dict) -> str:
    """The metric a saved run's loss declares (its summary names the loss): accuracy, or a
    regression's rmse; a loss this version does not know is shown as a classifier's."""
    loss = (summary.get("model") or {}).get("loss")
    return nn.LOSSES[loss].metric if loss in nn.LOSSES else "accuracy"


def run_seconds(summary: dict) -> tuple[float | None, float | None]:
    """A finished run's (wall, training) seconds over all its sittings; a summary from before
    sittings were counted gives its last sitting's. None: not recorded."""
    timing = summary.get("timing") or {}
    return (timing.get("run_wall_seconds", timing.get("wall_seconds")),
            timing.get("run_training_seconds", timing.get("training_seconds")))


def check_summary(summary: Any) -> str | None:
    if not isinstance(summary, dict):
        return f"expected a JSON object, found {_kind(summary)}"
    for key in REQUIRED:
        if key not in summary:
            return f"the key {key!r} is missing"
    for key, (expected, check) in SUMMARY_KEYS.items():
        if key in summary and not check(summary[key]):
            return f"{key!r} should be {expected}, found {_brief(summary[key])}"
    return None


def check_network(summary: dict) -> str | None:
    """What a reader that rebuilds a run's network (eval, predict, plot, ensemble, export,
    resume) needs of a summary that passed check_summary: the 'model' every run records from
    its start, with an activation and a loss this version has, an input shape of as many
    values as the network takes (predict reshapes images to it), and, for a classifier whose
    classes have names, a name for each of its classes (looked up by class index)."""
    model = summary.get("model")
    if model is None:
        return "the key 'model' is missing"
    for key, known in (("activation", nn.ACTIVATIONS), ("loss", nn.LOSSES)):
        if model.get(key) not in known:
            return (f"'model' has the {key} {_brief(model.get(key))}, which this version does "
                    f"not know ({', '.join(known)}){written_by(summary) or ''}")
    shape = (summary.get("dataset") or {}).get("input_shape")
    if shape is not None and math.prod(shape) != model["sizes"][0]:
        return (f"'dataset' input_shape {shape} holds {math.prod(shape)} values, but the "
                f"network ('model' sizes) takes {model['sizes'][0]}")
    names = (summary.get("dataset") or {}).get("class_names")
    if names is None or nn.LOSSES[model["loss"]].task != "classification":
        return None
    classes = max(2, model["sizes"][-1])
    if len(names) != classes:
        return (f"'dataset' names {len(names)} classes (class_names), but the network "
                f"('model' sizes) has {classes}")
    return None


def check_metrics_record(record: Any) -> str | None:
    """One epoch's record: {"epoch": n >= 1, "<metric>": number or null, ...}."""
    if not isinstance(record, dict):
        return f"expected a JSON object, found {_kind(record)}"
    if not (_is_int(record.get("epoch")) and record["epoch"] >= 1):
        return f"'epoch' should be an integer >= 1, found {_brief(record.get('epoch'))}"
    for key, value in record.items():
        if not _optional(_is_number)(value):
            return f"{key!r} should be a number or null, found {_brief(value)}"
    return None


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
