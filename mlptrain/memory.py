"""How much memory a config needs, estimated before anything is allocated, and the refusal of
what cannot fit.

`model.hidden = 10**9` or `data.samples = 10**12` would otherwise end in NumPy's
`_ArrayMemoryError` (or the kernel's OOM killer) after minutes of work. The estimate is coarse
on purpose (within a small factor): it only has to tell "fits" from "cannot possibly fit".

    data         the loaded arrays in float64 (+ their split copies) and the training copy in
                 the model's dtype
    parameters   weights + gradients + optimizer state (+ the best weights when early stopping)
                 + the host copies a checkpoint write makes
    activations  one training batch's buffers (activations, deltas, dropout masks) for the
                 full and the last, partial batch; one evaluation batch's
On the CPU everything comes out of the host's available memory (MemAvailable); on a GPU the
device part is compared with the device's free memory, which the backend reports.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlptrain.errors import ConfigError
from mlptrain.optim import OPTIMIZER_CLASSES, OptimizerKind

MEMINFO = Path("/proc/meminfo")


@dataclass
class Estimate:
    """Bytes each part needs; `what` says where the data figure comes from."""

    data_host: int  # the loaded float64 arrays and their split copies
    data_device: int  # the splits in the model's dtype, where the model trains
    parameters: int
    activations: int
    what: str

    @property
    def device(self) -> int:
        return self.data_device + self.parameters + self.activations


def data_shape(data_cfg, near: Sequence[Path] = ()) -> tuple[int, int, int]:
    """(samples, features, classes) the [data] section will load, read without loading it (a
    file's headers at most; classes: at least 2, known after loading). `near`: the config
    file's folder, where a relative data.path is looked for first."""
    # imported here: data.npz reads headers with arrayfiles, which imports this module
    from mlptrain.data import data_shape as shape_of

    return shape_of(data_cfg, near)


def estimate(config, n_samples: int, n_features: int, n_classes: int) -> Estimate:
    """Bytes the run of `config` needs with this data (Python integers: no overflow)."""
    item = np.dtype(config.train.dtype).itemsize
    loss = config.model.loss
    outputs = 1 if loss == "sigmoid_bce" or (loss == "auto" and n_classes == 2) else n_classes
    sizes = [n_features, *config.model.hidden, outputs]
    params = sum((i + 1) * o for i, o in zip(sizes[:-1], sizes[1:]))
    optimizer = OPTIMIZER_CLASSES[OptimizerKind(config.optimizer.name)]
    buffers = 2 + len(optimizer.state_names)  # weights, grads, the optimizer's state
    buffers += 1 if config.train.patience else 0  # the best epoch's weights
    host_copies = 2  # a checkpoint: the weights' host copies and the .npz bytes
    n_train = n_samples if not config.data.limit else min(n_samples, config.data.limit)
    batch = max(1, min(config.train.batch_size, n_train))
    eval_batch = max(1, min(config.train.eval_batch_size, n_samples))
    width = sum(sizes)
    # acts + deltas + dropout masks + loss cache, for a full and a last partial batch
    per_row = 3 * width + 2 * outputs
    rows = n_samples * (n_features + 1)  # features and a label per sample
    return Estimate(
        data_host=rows * 2 * 8, data_device=rows * item,
        parameters=params * item * (buffers + host_copies),
        activations=(2 * batch + eval_batch) * per_row * item,
        what=f"{n_samples:,} samples x {n_features:,} features")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may use, not the machine's
    except AttributeError:  # pragma: no cover - macOS and Windows
        return os.cpu_count() or 1


def host_available() -> int | None:
    """MemAvailable from /proc/meminfo, in bytes; None where there is no such file."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_fits(config, ops, n_samples: int, n_features: int, n_classes: int) -> Estimate:
    """ConfigError if the run cannot fit in memory; the estimate otherwise."""
    need = estimate(config, n_samples, n_features, n_classes)
    if ops.device == "cpu":  # one memory for all of it
        _refuse_over(config, need, need.data_host + need.device, host_available(),
                     "available host memory (MemAvailable)")
    else:  # the host holds the loaded data; the device the rest
        _refuse_over(config, need, need.data_host, host_available(),
                     "available host memory (MemAvailable)")
        _refuse_over(config, need, need.device, ops.free_bytes(),
                     f"free memory on the {ops.device} device")
    return need


def _refuse_over(config, need: Estimate, required: int, available: int | None,
                 where: str) -> None:
    if available is None or required <= available:
        return
    raise ConfigError(
        f"this config needs about {byte_size(required)} of memory, but only "
        f"{byte_size(available)} is {where}: data "
        f"{byte_size(need.data_host + need.data_device)} ({need.what}), parameters with "
        f"gradients and optimizer state {byte_size(need.parameters)} (model.hidden = "
        f"{_brief(config.model.hidden)}), activations {byte_size(need.activations)} "
        f"(train.batch_size = {config.train.batch_size}, train.eval_batch_size = "
        f"{config.train.eval_batch_size}). Make the largest of these smaller.")


def check_data_fits(config, ops) -> Estimate:
    """Before loading: the estimate from what the config says of the data."""
    from mlptrain.config import config_folder  # config imports data, whose readers import this

    return check_fits(config, ops, *data_shape(config.data, config_folder(config)))


def byte_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def _brief(hidden) -> str:
    text = str(hidden)
    return text if len(text) <= 40 else text[:37] + "..."
