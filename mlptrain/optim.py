"""Optimizers that update parameters in place (schedules are in schedules.py).

Protocol: `kind` (an OptimizerKind: what a device graph compiles the update from, instead of
recognising an optimizer by its attributes); `buffers()` (its state sets, in the update's argument
order); `step(params, grads, lr)` updates every named array of `params` in place from the
same-named array of `grads` (which it may overwrite: gradients are scratch, recomputed every
step); `state_dict()` / `load_state_dict()` move the optimizer state to and from host arrays.
The arithmetic is the backend's (`ops.sgd_update`, `ops.adam_update`, ...), in place. When
params and grads are a model's flat `Parameters`, the optimizer keeps its state in the same
layout and updates the whole model with one call on the flat buffers; plain dicts go name by
name. A group's optimizer (a model of G members, arrays (G, ...)) takes a rate per member, lr
(G,), and weight_decay (G,); `member_state` / `load_members` move a member's state in the
format of a run trained alone. `groups`: a group's step runs it; `replays`: a captured one too.

Weight decay: `sgd` and `adam` add the L2 term wd * p to the gradient (the gradient of
wd/2 |p|^2); `adamw` decays the weights directly, decoupled from the adaptive step
(Loshchilov & Hutter), which is what AdamW means in the usual frameworks.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

import numpy as np

from mlptrain.errors import ConfigError, TrainingError
from mlptrain.model import Parameters


class OptimizerKind(enum.Enum):
    """Which update an optimizer runs; the [optimizer] name keys it."""

    SGD = "sgd"
    ADAM = "adam"
    ADAMW = "adamw"  # Adam with decoupled weight decay
    RMSPROP = "rmsprop"


OPTIMIZERS = tuple(kind.value for kind in OptimizerKind)


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer's kind and hyper-parameters (the learning rate is the schedule's)."""

    kind: OptimizerKind
    momentum: float = 0.0  # sgd
    nesterov: bool = False  # sgd
    beta1: float = 0.9  # adam, adamw
    beta2: float = 0.999
    eps: float = 1e-8  # adam, adamw, rmsprop
    weight_decay: float = 0.0
    rho: float = 0.99  # rmsprop

    @classmethod
    def from_config(cls, cfg) -> OptimizerSpec:
        """From an [optimizer] config section."""
        return cls(OptimizerKind(cfg.name), cfg.momentum, cfg.nesterov, cfg.beta1, cfg.beta2,
                   cfg.eps, cfg.weight_decay, cfg.rho)


def _state_like(ops, params: dict) -> dict:
    """Zeroed optimizer state shaped like `params`; in the same flat layout when it has one."""
    if isinstance(params, Parameters):
        return params.zeros_like(ops)
    return {name: ops.zeros(p.shape, p.dtype) for name, p in params.items()}


def _fused(params: dict, grads: dict, state: dict) -> bool:
    """True when params, grads and the optimizer's state share one flat layout (the state got
    its layout from the params at construction): then update the flat buffers."""
    return (isinstance(params, Parameters) and isinstance(grads, Parameters)
            and isinstance(state, Parameters)
            and params.layout is state.layout and grads.layout is state.layout)


class _Optimizer:
    """What every optimizer shares: its state sets (`state_names`, each shaped and laid out like
    the params), their host copies, and the update applied to the whole flat buffers at once
    where params, grads and state share one layout."""

    state_names: tuple[str, ...] = ()
    plain = False  # plain SGD's p <- p - lr g (SGD says when it is)

    def _make_state(self, ops, params: dict) -> None:
        self.ops, self.xp = ops, ops.xp
        for name in self.state_names:
            setattr(self, name, _state_like(ops, params))

    def buffers(self) -> tuple:
        """The state sets the update reads and writes, in its argument order."""
        return tuple([getattr(self, name) for name in self.state_names])

    def _apply(self, update, params: dict, grads: dict, *hyper) -> None:
        state = self.buffers()
        # a group's per-member rates or decays (G,) go name by name: each array's leading axis
        # is then the members'
        if not any([getattr(h, "ndim", 0) for h in hyper]) and _fused(params, grads, state[0]):
            update(params.flat, grads.flat, *[s.flat for s in state], *hyper)
            return
        for name, p in params.items():
            update(p, grads[name], *(s[name] for s in state), *hyper)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {f"{set_name}.{n}": _host(self.ops, a)
                for set_name, arrays in zip(self.state_names, self.buffers())
                for n, a in arrays.items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        for set_name, arrays in zip(self.state_names, self.buffers()):
            for n, a in arrays.items():
                a[...] = self.xp.asarray(state[f"{set_name}.{n}"])

    def member_state(self, g: int, sizes: list[int]) -> dict[str, np.ndarray]:
        """A group's member g (of layer sizes `sizes`): its state_dict, as if trained alone."""
        return {f"{set_name}.{n}": a for set_name, arrays in zip(self.state_names, self.buffers())
                for n, a in arrays.member(self.ops, g, sizes).items()}

    def load_members(self, states: dict[int, dict], member_sizes: list) -> None:
        """Into a group's optimizer: each member g's state_dict states[g] (from a run trained
        alone, or as a member)."""
        for g, state in states.items():
            for set_name, arrays in zip(self.state_names, self.buffers()):
                arrays.load_member(self.ops, g, member_sizes[g],
                                   {n: state[f"{set_name}.{n}"] for n in arrays})


class SGD(_Optimizer):
    """v <- mu v + g;  p <- p - lr v  (Nesterov: p <- p - lr (g + mu v)).

    With mu = 0 this is plain mini-batch SGD, p <- p - lr g, as in the blog.
    """

    kind = OptimizerKind.SGD
    groups = True  # a group's batched step runs it, a rate and decay per member
    replays = True  # its step reads only device buffers and allocates nothing: a captured
    # group step replays it
    state_names = ("velocity",)

    def __init__(self, ops, params: dict, momentum=0.0, nesterov=False, weight_decay=0.0):
        if not 0.0 <= momentum < 1.0:
            raise ConfigError(f"SGD momentum must be in [0, 1), got {momentum}.")
        if nesterov and momentum == 0.0:
            raise ConfigError("SGD with nesterov = true needs a momentum > 0.")
        _check_decay(ops, weight_decay)
        self.momentum, self.nesterov = momentum, nesterov
        self.weight_decay = weight_decay
        self._make_state(ops, params)

    @classmethod
    def from_spec(cls, ops, params: dict, spec: OptimizerSpec) -> SGD:
        return cls(ops, params, spec.momentum, spec.nesterov, spec.weight_decay)

    def step(self, params: dict, grads: dict, lr) -> None:
        self._apply(self.ops.sgd_update, params, grads, _rate(lr), self.momentum, self.nesterov,
                    self.weight_decay)

    @property
    def plain(self) -> bool:
        """p <- p - lr g and nothing more (no momentum, no decay): a step that a backward pass
        can take inside its products (nn.Linear.backward's sgd_lr)."""
        return not self.momentum and not getattr(self.weight_decay, "ndim", 0) \
            and not self.weight_decay


class Adam(_Optimizer):
    """Adam with bias correction (Kingma & Ba), optionally with decoupled weight decay.

    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;  t <- t + 1
    p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

    A group's members step together: they share t.
    """

    groups = True
    replays = False  # a captured step would keep the t of its capture (a host number)
    state_names = ("m", "v")

    def __init__(self, ops, params: dict, beta1=0.9, beta2=0.999, eps=1e-8,
                 weight_decay=0.0, decoupled=False):
        for key, value in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"Adam {key} must be in [0, 1), got {value}.")
        if eps <= 0:
            raise ConfigError(f"Adam needs eps > 0, got {eps}.")
        _check_decay(ops, weight_decay)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.weight_decay, self.decoupled = weight_decay, decoupled
        self.kind = OptimizerKind.ADAMW if decoupled else OptimizerKind.ADAM
        self.t = 0  # steps taken: the bias correction's exponent
        self._make_state(ops, params)

    @classmethod
    def from_spec(cls, ops, params: dict, spec: OptimizerSpec) -> Adam:
        return cls(ops, params, spec.beta1, spec.beta2, spec.eps, spec.weight_decay,
                   decoupled=spec.kind is OptimizerKind.ADAMW)

    def step(self, params: dict, grads: dict, lr) -> None:
        self.t += 1
        self._apply(self.ops.adam_update, params, grads, self.t, _rate(lr), self.beta1,
                    self.beta2, self.eps, self.weight_decay, self.decoupled)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"t": np.array(self.t), **super().state_dict()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.t = int(state["t"])
        super().load_state_dict(state)

    def member_state(self, g: int, sizes: list[int]) -> dict[str, np.ndarray]:
        return {"t": np.array(self.t), **super().member_state(g, sizes)}

    def load_members(self, states: dict[int, dict], member_sizes: list) -> None:
        counts = {int(state["t"]) for state in states.values()}
        if len(counts) > 1:
            raise TrainingError(f"a group's members step together, but their Adam step counts "
                                f"differ ({sorted(counts)}); resume each alone (`mlptrain fit "
                                "--resume RUN`).")
        self.t = counts.pop() if counts else self.t
        super().load_members(states, member_sizes)


class RMSprop(_Optimizer):
    """v <- rho v + (1 - rho) g^2;  p <- p - lr g / (sqrt(v) + eps)   (Tieleman & Hinton).

    Adam without its first moment and bias correction: each weight's step is the gradient
    divided by the running root mean square of its recent gradients. weight_decay adds the L2
    term wd p to g first, as sgd and adam do.
    """

    kind = OptimizerKind.RMSPROP
    groups = True
    replays = False  # the reference update allocates its temporaries, which a captured step
    # would keep writing after they are freed
    state_names = ("v",)

    def __init__(self, ops, params: dict, rho=0.99, eps=1e-8, weight_decay=0.0):
        if not 0.0 <= rho < 1.0 or eps <= 0:
            raise ConfigError(f"RMSprop needs rho in [0, 1) and eps > 0, got {rho}, {eps}.")
        _check_decay(ops, weight_decay)
        self.rho, self.eps, self.weight_decay = rho, eps, weight_decay
        self._make_state(ops, params)

    @classmethod
    def from_spec(cls, ops, params: dict, spec: OptimizerSpec) -> RMSprop:
        return cls(ops, params, spec.rho, spec.eps, spec.weight_decay)

    def step(self, params: dict, grads: dict, lr) -> None:
        self._apply(self.ops.rmsprop_update, params, grads, _rate(lr), self.rho, self.eps,
                    self.weight_decay)


def _rate(lr):
    """A Python float (a NumPy float64 scalar would run float32 updates in float64: NEP 50), or
    a group's (G,) rates, one per member, as they are."""
    return lr if getattr(lr, "ndim", 0) else float(lr)  # (np.ndim: a microsecond a step)


def _check_decay(ops, weight_decay) -> None:
    if np.any(ops.to_host(weight_decay) < 0):  # a group's (G,) on its device too
        raise ConfigError(f"weight_decay must be >= 0, got {weight_decay}.")


def _host(ops, array) -> np.ndarray:
    return np.array(ops.to_host(array), order="C")


# every kind's class: a kind without one fails here, at import, not in a run
OPTIMIZER_CLASSES = {OptimizerKind.SGD: SGD, OptimizerKind.ADAM: Adam, OptimizerKind.ADAMW: Adam,
                     OptimizerKind.RMSPROP: RMSprop}
assert set(OPTIMIZER_CLASSES) == set(OptimizerKind)


def build_optimizer(spec: OptimizerSpec, ops, params: dict, decays=None):
    """The optimizer a step declares (step.optimizer), over `params`; or a group's, over its
    (G, ...) arrays, with each member's weight decay `decays` (G,) (the members' specs differ
    in it alone, step.shared_part)."""
    if decays is not None and np.any(decays):
        spec = replace(spec, weight_decay=ops.asarray(np.asarray(decays), params.flat.dtype))
    return OPTIMIZER_CLASSES[spec.kind].from_spec(ops, params, spec)
