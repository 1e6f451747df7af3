"""A gradient check for users: the configured network's analytic gradients against central
finite differences, in float64, on a small batch of the configured data.

For each parameter array the relative error of analytic a against numeric n is
max |a - n| / max(|a| + |n|, FLOOR) over the entries checked; the floor keeps entries whose
gradient is (nearly) zero from turning round-off into a large ratio. ReLU-like activations have
a kink at 0; a difference step that crosses one would fail an entry for a reason that is no bug,
which the tiny step and the float64 inputs make very unlikely.

Dropout is random, so the check freezes it: the masks are drawn once, by the analytic pass, and
every forward of the finite differences reuses them. Both sides then differentiate the same
function, the network under those masks, and a wrong dropout backward still fails.
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from mlptrain.config import Config
from mlptrain.experiment.setup import prepare
from mlptrain.regularize import dropout_of
from mlptrain.loop import to_device

EPS = 1e-6  # central-difference step, in float64
FLOOR = 1e-7  # relative-error denominator floor
TOLERANCE = 1e-5  # a layer passes when its largest relative error is below this


@dataclass
class ParameterCheck:
    name: str  # layers.{i}.weight / layers.{i}.bias
    shape: tuple[int, ...]
    checked: int  # entries compared
    size: int  # entries in the array
    max_rel_error: float
    max_abs_gradient: float

    @property
    def passed(self) -> bool:
        return self.max_rel_error < TOLERANCE


@dataclass
class GradcheckReport:
    activation: str
    loss: str
    sizes: list[int]
    batch: int
    checks: list[ParameterCheck]
    dropout: list[float] = field(default_factory=list)  # rates, masks held fixed
    analytic: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # name -> grad

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


def gradcheck(config: Config, batch: int = 8, entries: int = 30, seed: int = 0,
              data_progress=None) -> GradcheckReport:
    """Checks every parameter array of the configured model; `entries` per array are picked at
    random (0 = every entry: exact but slow for big layers)."""
    config = dataclasses.replace(config, train=dataclasses.replace(config.train,
                                                                   dtype="float64"))
    p = prepare(config, data_progress)
    p.model.dropout = dropout_of(p.step, p.model)  # the training forward's masks, held fixed
    _perturb_biases(p.model, np.random.default_rng(seed))
    X, y = p.dataset.split("train")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(y), size=min(batch, len(y)), replace=False)
    return check_model(p.model, X[pick], y[pick], entries, rng)


def check_model(model, X: np.ndarray, y: np.ndarray, entries: int = 30,
                rng: np.random.Generator | None = None) -> GradcheckReport:
    """Checks a float64 model's gradients of the mean loss over the batch (X, y) as it stands
    (its weights, no perturbation); `rng` picks the entries (0 = every entry)."""
    ops, rng = model.ops, rng or np.random.default_rng(0)
    data = to_device(ops, model, X, y)
    ws = model.workspace(data.size)
    ws.x[...] = data.X

    def mean_loss() -> float:  # the training forward: under the frozen dropout masks
        logits = model.forward(ws, training=True)
        loss_sum = ops.loss_forward(model.loss, logits, data.targets, ws.loss_cache)[0]
        return ops.to_float(loss_sum) / data.size

    with frozen_dropout(model):
        model.loss_and_grad(ws, data.targets, 1.0 / data.size)  # draws the masks, once
        analytic = {name: np.array(ops.to_host(g)) for name, g in model.grads.items()}
        checks = [_check(name, param, analytic[name], entries, rng, mean_loss)
                  for name, param in model.params.items()]
    rates = list(model.dropout.rates) if model.dropout is not None else []
    return GradcheckReport(model.activation.name, model.loss.name, model.sizes, data.size,
                           checks, rates, analytic)


@contextmanager
def frozen_dropout(model):
    """Within the block the model's dropout keeps the first masks it draws (none: no-op).

    Needs from regularize.Dropout only its `frozen` switch: while set, a draw keeps the masks
    it already holds, and forward(training=True) applies them.
    """
    drop = model.dropout
    if drop is None:
        yield
        return
    before = drop.frozen
    drop.frozen = True
    try:
        yield
    finally:
        drop.frozen = before


def _check(name: str, param, analytic: np.ndarray, entries: int, rng, loss) -> ParameterCheck:
    size = int(np.prod(param.shape))
    flat = rng.choice(size, size=min(entries, size), replace=False) if entries else \
        np.arange(size)
    numeric = np.array([_central_difference(param, np.unravel_index(i, param.shape), loss)
                        for i in flat])
    a = analytic.reshape(-1)[flat]
    err = np.abs(a - numeric) / np.maximum(np.abs(a) + np.abs(numeric), FLOOR)
    return ParameterCheck(name, tuple(param.shape), len(flat), size, float(err.max()),
                          float(np.abs(a).max()))


def _central_difference(param, index, loss) -> float:
    old = param[index]
    param[index] = old + EPS
    plus = loss()
    param[index] = old - EPS
    minus = loss()
    param[index] = old
    return (plus - minus) / (2 * EPS)


def _perturb_biases(model, rng) -> None:
    """Initialised biases are 0, which would leave a bias bug that only shows for b != 0
    unseen; small random biases exercise them."""
    for layer in model.layers:
        layer.bias[...] = model.ops.asarray(rng.normal(0, 0.1, layer.bias.shape), model.dtype)
