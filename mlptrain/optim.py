"""Optimizers that update parameters in place, and learning-rate schedules.

Protocol: `step(params, grads, lr)` updates every named array of `params` in place from the
same-named array of `grads` (which it may overwrite: gradients are scratch, recomputed every
step); `state_dict()` / `load_state_dict()` move the optimizer state to and from host arrays.
The arithmetic is the backend's (`ops.sgd_update`, `ops.adam_update`), in place. When params and
grads are a model's flat `Parameters`, the optimizer keeps its state in the same layout and
updates the whole model with one call on the flat buffers; plain dicts go name by name.

Weight decay: `sgd` and `adam` add the L2 term wd * p to the gradient (the gradient of
wd/2 |p|^2); `adamw` decays the weights directly, decoupled from the adaptive step
(Loshchilov & Hutter), which is what AdamW means in the usual frameworks.
"""

from __future__ import annotations

import math

import numpy as np

from mlptrain.errors import ConfigError
from mlptrain.model import Parameters


def _state_like(ops, params: dict) -> dict:
    """Zeroed optimizer state shaped like `params`; in the same flat layout when it has one."""
    if isinstance(params, Parameters):
        return params.zeros_like(ops)
    return {name: ops.zeros(p.shape, p.dtype) for name, p in params.items()}


def _fused(params: dict, grads: dict, state: dict) -> bool:
    """True when params, grads and the optimizer's state share one flat layout (the state got
    its layout from the params at construction): then update the flat buffers."""
    layout = getattr(state, "layout", None)
    return (layout is not None and getattr(params, "layout", None) is layout
            and getattr(grads, "layout", None) is layout)


class SGD:
    """v <- mu v + g;  p <- p - lr v  (Nesterov: p <- p - lr (g + mu v)).

    With mu = 0 this is plain mini-batch SGD, p <- p - lr g, as in the blog.
    """

    def __init__(self, ops, params: dict, momentum=0.0, nesterov=False, weight_decay=0.0):
        if not 0.0 <= momentum < 1.0:
            raise ConfigError(f"SGD momentum must be in [0, 1), got {momentum}.")
        if nesterov and momentum == 0.0:
            raise ConfigError("SGD with nesterov = true needs a momentum > 0.")
        if weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {weight_decay}.")
        self.ops, self.xp = ops, ops.xp
        self.momentum, self.nesterov = momentum, nesterov
        self.weight_decay = weight_decay
        self.velocity = _state_like(ops, params)

    def step(self, params: dict, grads: dict, lr: float) -> None:
        update, v = self.ops.sgd_update, self.velocity
        # a Python float: a NumPy float64 scalar would run float32 updates in float64 (NEP 50)
        hyper = (float(lr), self.momentum, self.nesterov, self.weight_decay)
        if _fused(params, grads, v):  # the whole model in one call
            update(params.flat, grads.flat, v.flat, *hyper)
            return
        for name, p in params.items():
            update(p, grads[name], v[name], *hyper)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {f"velocity.{n}": _host(self.ops, v) for n, v in self.velocity.items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        for name, v in self.velocity.items():
            v[...] = self.xp.asarray(state[f"velocity.{name}"])


class Adam:
    """Adam with bias correction (Kingma & Ba), optionally with decoupled weight decay.

    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;  t <- t + 1
    p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    """

    def __init__(self, ops, params: dict, beta1=0.9, beta2=0.999, eps=1e-8,
                 weight_decay=0.0, decoupled=False):
        for key, value in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"Adam {key} must be in [0, 1), got {value}.")
        if eps <= 0 or weight_decay < 0:
            raise ConfigError(f"Adam needs eps > 0 and weight_decay >= 0, got {eps}, "
                              f"{weight_decay}.")
        self.ops, self.xp = ops, ops.xp
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.weight_decay, self.decoupled = weight_decay, decoupled
        self.t = 0
        self.m = _state_like(ops, params)
        self.v = _state_like(ops, params)

    def step(self, params: dict, grads: dict, lr: float) -> None:
        self.t += 1
        update, m, v = self.ops.adam_update, self.m, self.v
        hyper = (self.t, float(lr), self.beta1, self.beta2, self.eps, self.weight_decay,
                 self.decoupled)  # float(lr): see SGD.step
        if _fused(params, grads, m):  # the whole model in one call (m and v share a layout)
            update(params.flat, grads.flat, m.flat, v.flat, *hyper)
            return
        for name, p in params.items():
            update(p, grads[name], m[name], v[name], *hyper)

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {"t": np.array(self.t)}
        state.update({f"m.{n}": _host(self.ops, a) for n, a in self.m.items()})
        state.update({f"v.{n}": _host(self.ops, a) for n, a in self.v.items()})
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.t = int(state["t"])
        for name in self.m:
            self.m[name][...] = self.xp.asarray(state[f"m.{name}"])
            self.v[name][...] = self.xp.asarray(state[f"v.{name}"])


def _host(ops, array) -> np.ndarray:
    return np.array(ops.to_host(array), order="C")


OPTIMIZERS = ("sgd", "adam", "adamw")


def build_optimizer(cfg, ops, params: dict):
    """The optimizer an [optimizer] config section describes."""
    if cfg.name == "sgd":
        return SGD(ops, params, cfg.momentum, cfg.nesterov, cfg.weight_decay)
    return Adam(ops, params, cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay,
                decoupled=cfg.name == "adamw")


# ---------------------------------------------------------------------------------------------
# Learning-rate schedules: the rate for a global step, as a pure function of the step count.
# ---------------------------------------------------------------------------------------------

SCHEDULES = ("constant", "step", "cosine", "onecycle")


def learning_rate(cfg, base_lr: float, step: int, steps_per_epoch: int, epochs: int) -> float:
    """The learning rate for global step `step` (0-based) under the [schedule] config.

    warmup:   lr = base * (step + 1) / warmup_steps          while step < warmup_steps
    constant: lr = base
    step:     lr = base * gamma ** floor(epoch / step_epochs)
    cosine:   lr = min_lr + (base - min_lr) (1 + cos(pi t)) / 2, t going 0 -> 1 after warmup
    onecycle: lr = base * one_cycle(step), rising from base * start_factor to base over the
              warmup, then falling to min_lr (see _one_cycle)
    """
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
    if cfg.name == "onecycle":
        return base_lr * _one_cycle(step, warmup_steps, epochs * steps_per_epoch,
                                    cfg.start_factor, cfg.min_lr / base_lr)
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if cfg.name == "step":
        return base_lr * cfg.gamma ** (step // steps_per_epoch // cfg.step_epochs)
    if cfg.name == "cosine":
        last = max(epochs * steps_per_epoch - warmup_steps - 1, 1)  # t = 1 at the last step
        t = min((step - warmup_steps) / last, 1.0)
        return cfg.min_lr + (base_lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * t))
    return base_lr


def momentum(cfg, base_momentum: float, step: int, steps_per_epoch: int, epochs: int) -> float:
    """SGD momentum for global step `step`: fixed, except under onecycle with momentum_low > 0,
    where it mirrors the rate (Smith & Topal): base -> momentum_low while the rate rises, back
    to base while it falls, so the effective step lr / (1 - mu) grows more gently."""
    if cfg.name != "onecycle" or not cfg.momentum_low or not base_momentum:
        return base_momentum
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
    # one_cycle goes 0 -> 1 -> 0 between its ends here; mu follows base -> low -> base
    rise = _one_cycle(step, warmup_steps, epochs * steps_per_epoch, 0.0, 0.0)
    return base_momentum - (base_momentum - cfg.momentum_low) * rise


def _one_cycle(step: int, warmup_steps: int, total_steps: int, start: float,
               end: float) -> float:
    """A factor that follows half a cosine from `start` up to 1 over the first warmup_steps,
    then half a cosine from 1 down to `end` at the last step (Smith's one-cycle policy):

    rising:  f = start + (1 - start) (1 - cos(pi t)) / 2,  t = step / warmup_steps
    falling: f = end + (1 - end) (1 + cos(pi t)) / 2,      t = (step - warmup) / (last - warmup)
    """
    if step < warmup_steps:
        t = step / warmup_steps
        return start + (1 - start) * 0.5 * (1 - math.cos(math.pi * t))
    last = max(total_steps - warmup_steps - 1, 1)
    t = min((step - warmup_steps) / last, 1.0)
    return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * t))
