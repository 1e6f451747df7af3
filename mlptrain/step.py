"""The declared training step: everything one optimizer step does, decided once from the config.

A `Step` says what a step computes, not how: the activation, the loss with its label smoothing,
the dropout rates, the augmentation, max-norm, the optimizer's kind and hyper-parameters, and the
schedule (every step's learning rate and momentum), with the batch size, checkpoint interval and
seed. It is built once (`build_step`), frozen, and then only read: the eager loop (loop.py)
executes it with the backend's primitives, and a device backend compiles it into an epoch graph
when it can (`backend.epoch_path` says whether, and if not, why). Nothing else decides what a
step contains, so the two paths cannot drift apart.

Random draws inside a step (dropout masks, augmentation parameters) are keyed by (seed, global
step), so a step is a pure function of the weights, the batch and its step number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from mlptrain import nn
from mlptrain.config import AUGMENT_KEYS
from mlptrain.errors import ConfigError
from mlptrain.optim import OPTIMIZER_CLASSES, OptimizerKind, OptimizerSpec
from mlptrain.schedules import Schedule, build_schedule


@dataclass(frozen=True)
class AugmentSpec:
    """Random distortions of each training image (data/augment.py has the math). Limits: each
    image draws uniformly from +-the limit; 0 turns that distortion off."""

    shape: tuple[int, int]  # (H, W) of one image; a sample is its H*W pixels, row by row
    shift: int = 0  # pixels per axis (an integer draw)
    rotate: float = 0.0  # degrees
    scale: float = 0.0  # zoom by 1 +- this fraction
    shear: float = 0.0  # degrees
    elastic: float | tuple[float, float] = 0.0  # field strength, pixels (0 = off), or (lo, hi)
    elastic_sigma: float | tuple[float, float] = 4.0  # the field's smoothness, pixels, or (lo, hi)
    scale_x: float = 0.0  # per-axis zoom limits (either set: they replace `scale`)
    scale_y: float = 0.0
    narrow_classes: tuple[int, ...] = ()  # labels whose rotate and shear limits are narrowed
    narrow_factor: float = 0.5  # ... by this factor

    @property
    def affine(self) -> bool:
        """True when more than an integer shift is asked (the bilinear path)."""
        return bool(self.rotate or self.scale or self.shear or self.elastic or self.scale_x
                    or self.scale_y)

    def augmenter_args(self) -> dict:
        """The keyword arguments of data.augment.Augmenter besides shape and seed."""
        return dict(shift=self.shift, rotate=self.rotate, scale=self.scale, shear=self.shear,
                    elastic=self.elastic, elastic_sigma=self.elastic_sigma,
                    scale_x=self.scale_x, scale_y=self.scale_y,
                    narrow_classes=self.narrow_classes, narrow_factor=self.narrow_factor)


@dataclass(frozen=True)
class Step:
    """One training step, declared. Rates and limits of 0 mean "off"."""

    activation: str  # a key of nn.ACTIVATIONS
    leaky_slope: float  # leaky_relu only
    loss: str  # a key of nn.LOSSES (auto resolved)
    label_smoothing: float  # softmax_cross_entropy only
    outputs: int  # logits per sample: classes, or 1 for sigmoid_bce and a regression loss
    dropout_input: float  # drop probability of each input feature
    dropout_hidden: float  # drop probability of each hidden unit
    max_norm: float  # cap on each hidden unit's incoming weight norm, after every update
    augment: AugmentSpec | None
    optimizer: OptimizerSpec
    schedule: Schedule  # lr(step), momentum(step); lrs/momenta for a whole epoch
    batch_size: int  # rows per step: the config's, capped at the training set's size
    steps_per_epoch: int  # the last batch of an epoch may be smaller
    epochs: int
    checkpoint_every: int  # global steps between mid-epoch checkpoints (0 = epoch ends only)
    seed: int  # keys the step's random draws, with the step number
    dtype: str  # float32 | float64
    huber_delta: float = 1.0  # huber only
    # a regression loss trains on (y - mean) / std (data.standardize_target): (0, 1) = as given
    target: tuple[float, float] = (0.0, 1.0)
    # the training rows carry weights (data.class_weight, data.sample_weight, an npz's `w`):
    # each batch's loss is sum_b w_b l_b / sum_b w_b (nn.batch_weights)
    weighted: bool = False
    # train.precision: float32 products at fp32's accuracy ("fp32") or one TF32 product each
    # ("tf32"); the backend computes it (get_backend), the step declares it so that only
    # trials of one precision share a group
    precision: str = "fp32"

    # -- what the step's parts are, as the model's objects --------------------------------------

    def activation_fn(self) -> nn.Activation:
        return nn.make_activation(self.activation, self.leaky_slope)

    def loss_fn(self) -> nn.Loss:
        return nn.make_loss(self.loss, self.outputs, self.label_smoothing,
                            huber_delta=self.huber_delta, target=self.target)

    def dropout_rates(self, linear_layers: int) -> tuple[float, ...]:
        """The drop probability of each Linear layer's input: the features, then hidden units."""
        return (self.dropout_input,) + (self.dropout_hidden,) * (linear_layers - 1)

    @property
    def has_dropout(self) -> bool:
        return bool(self.dropout_input or self.dropout_hidden)

    @property
    def cycles_momentum(self) -> bool:
        return self.schedule.cycles_momentum

    def aids(self) -> list[str]:
        """What this step does beyond the plain forward, loss, backward and update, by name
        (dry runs and a backend's reasons name them this way)."""
        named = [("dropout", self.has_dropout), ("augmentation", self.augment is not None),
                 ("max-norm", bool(self.max_norm)),
                 ("label smoothing", bool(self.label_smoothing)),
                 ("sample weights", self.weighted),
                 ("momentum cycling", self.cycles_momentum),
                 ("mid-epoch checkpoints", bool(self.checkpoint_every))]
        return [name for name, on in named if on]


def build_step(config, input_shape: tuple[int, ...], n_classes: int, train_size: int,
               task: str = "classification", target: tuple[float, float] = (0.0, 1.0),
               weighted: bool = False) -> Step:
    """The step a config declares for a dataset of `input_shape` samples, `n_classes` classes
    (1 for a real-valued target), `train_size` training samples and the data's `task`
    (`target`: the (mean, std) a regression loss standardizes y with; `weighted`: whether its
    training rows carry weights); ConfigError when its parts do not fit together."""
    m, t, o = config.model, config.train, config.optimizer
    loss = nn.resolve_loss(m.loss, n_classes, task)
    _check_task(m.loss, loss, task)
    if nn.LOSSES[loss]().outputs(n_classes) == 1 and n_classes > 2:  # scores labels 0, 1 only
        raise ConfigError(f"[model] loss = {m.loss!r} uses {loss}, which scores two classes "
                          f"(labels 0 and 1), but the data's labels go up to {n_classes - 1}. "
                          "Use loss = 'softmax_cross_entropy' (or 'auto'), or relabel the data "
                          "to 0 and 1.")
    if m.label_smoothing and not nn.LOSSES[loss].smooths:
        raise ConfigError(f"[model] label_smoothing = {m.label_smoothing} needs the "
                          f"softmax_cross_entropy loss, but this model uses {loss}.")
    batch = max(1, min(t.batch_size, train_size))
    steps = max(1, math.ceil(train_size / batch))
    spec = OptimizerSpec.from_config(o)
    momentum = spec.momentum if spec.kind is OptimizerKind.SGD else 0.0
    # a linear model (hidden = []) has no hidden unit to drop or cap: those keys declare
    # nothing, so a sweep over model.hidden may hold [] beside nets that use them
    hidden = bool(m.hidden)
    return Step(
        activation=m.activation, leaky_slope=m.leaky_slope, loss=loss,
        label_smoothing=m.label_smoothing, outputs=nn.LOSSES[loss]().outputs(n_classes),
        dropout_input=m.dropout_input, dropout_hidden=m.dropout_hidden if hidden else 0.0,
        max_norm=m.max_norm if hidden else 0.0,
        augment=build_augment_spec(config.data, input_shape), optimizer=spec,
        schedule=build_schedule(config.schedule, o.lr, momentum, steps, t.epochs),
        batch_size=batch, steps_per_epoch=steps, epochs=t.epochs,
        checkpoint_every=t.checkpoint_every, seed=t.seed, dtype=str(np.dtype(t.dtype)),
        huber_delta=m.huber_delta, target=target, weighted=weighted, precision=t.precision)


def _check_task(asked: str, loss: str, task: str) -> None:
    """ConfigError when the loss fits another kind of target than the data's (mse on class
    labels, softmax on real values): it would train, and mean nothing."""
    fits = nn.LOSSES[loss].task
    if fits == task:
        return
    fitting = ", ".join(f"{name!r}" for name, kind in nn.LOSSES.items() if kind.task == task)
    target = {"classification": "class labels", "regression": "real values to regress"}
    uses = f"uses {loss}, which " if asked != loss else ""
    raise ConfigError(
        f"[model] loss = {asked!r} {uses}fits {target[fits]}, but the data's target holds "
        f"{target[task]} (its task is {task!r}). Use loss = 'auto' or one of {fitting}; or, "
        f"for a file of your own, set [data] task = {fits!r} if its target is meant that way.")


def build_augment_spec(data_cfg, input_shape: tuple[int, ...]) -> AugmentSpec | None:
    """The augmentation a [data] section asks for, or None when every augment_* key is 0."""
    asked = {k: getattr(data_cfg, k) for k in AUGMENT_KEYS if getattr(data_cfg, k)}
    if not asked:
        return None
    if len(input_shape) != 2:
        first = next(iter(asked))
        raise ConfigError(f"[data] {first} = {asked[first]}: augmentation needs image data, "
                          f"but the {data_cfg.dataset} dataset has samples of shape "
                          f"{tuple(input_shape)}; set the augment_* keys to 0 for it.")
    d = data_cfg
    ranged = lambda v: tuple(v) if isinstance(v, list) else v  # noqa: E731 (frozen: hashable)
    return AugmentSpec((int(input_shape[0]), int(input_shape[1])), d.augment_shift,
                       d.augment_rotate, d.augment_scale, d.augment_shear,
                       ranged(d.augment_elastic), ranged(d.augment_elastic_sigma),
                       d.augment_scale_x, d.augment_scale_y,
                       tuple(sorted(set(d.augment_narrow_classes))), d.augment_narrow_factor)


# -- which steps members of a group share (G > 1) ---------------------------------------------

# The aids (Step.aids names) a group's batched step executes for every member; any other aid
# keeps a trial alone. (Mid-epoch checkpoints: a group checkpoints at epoch ends.)
GROUPED_AIDS = frozenset({"label smoothing", "mid-epoch checkpoints"})


def member_blockers(step: Step) -> list[str]:
    """Why a trial of this declared step cannot train as a member of a group: the aids, loss
    and optimizer the group's step does not execute, read from their tables (empty: it can)."""
    reasons = [aid for aid in step.aids() if aid not in GROUPED_AIDS]
    if not OPTIMIZER_CLASSES[step.optimizer.kind].groups:
        reasons.append(f"optimizer {step.optimizer.kind.value}")
    if not nn.LOSSES[step.loss].groups:
        reasons.append(f"the {step.loss} loss")
    return reasons


def shared_part(step: Step) -> Step:
    """The step less what each member of a group keeps for itself (its seed's draws, its
    learning rate and its weight decay): equal for the steps of members that may share one."""
    return replace(step, seed=0, schedule=replace(step.schedule, base_lr=0.0),
                   optimizer=replace(step.optimizer, weight_decay=0.0))
