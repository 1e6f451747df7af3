"""The declared step: built once from a config, the one place each aid is decided, and the one
decision of which path runs it (backend.epoch_path)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from conftest import CONFIGS

from mlptrain import loop, nn
from mlptrain.backend.cuda import dispatch
from mlptrain.backend import Backend, NumpyBackend, describe_path, epoch_path, get_backend
from mlptrain.config import load_config, parse_config
from mlptrain.errors import BackendError, ConfigError
from mlptrain.experiment import prepare
from mlptrain.model import build_model
from mlptrain.optim import (OPTIMIZER_CLASSES, SGD, Adam, OptimizerKind, OptimizerSpec,
                            build_optimizer)
from schedule_rates import learning_rate, momentum
from mlptrain.step import AugmentSpec, build_step

MNIST = ((28, 28), 10, 54_000)  # input shape, classes, training samples


def test_mnist_best_declares_every_aid():
    config = load_config(CONFIGS / "mnist-best.toml")
    step = build_step(config, *MNIST)
    assert (step.activation, step.loss, step.label_smoothing, step.outputs) == \
        ("relu", "softmax_cross_entropy", 0.1, 10)
    assert (step.dropout_input, step.dropout_hidden, step.max_norm) == (0.1, 0.3, 3.5)
    assert step.augment == AugmentSpec((28, 28), shift=2, rotate=8.0, scale=0.08, shear=8.0)
    assert step.augment.affine and step.dropout_rates(3) == (0.1, 0.3, 0.3)
    assert step.optimizer.kind is OptimizerKind.SGD and step.optimizer.nesterov
    assert (step.batch_size, step.steps_per_epoch, step.epochs, step.seed) == (128, 422, 80, 0)
    assert step.dtype == "float32" and step.checkpoint_every == 0
    assert step.aids() == ["dropout", "augmentation", "max-norm", "label smoothing"]


def test_the_plain_configs_declare_no_aid():
    xor = build_step(load_config(CONFIGS / "xor.toml"), (2,), 2, 640)
    assert xor.loss == "sigmoid_bce" and xor.outputs == 1 and xor.aids() == []
    assert build_step(load_config(CONFIGS / "mnist.toml"), *MNIST).aids() == []


def test_the_schedule_yields_every_steps_rate_and_momentum_as_host_arrays():
    config = parse_config('[optimizer]\nmomentum = 0.95\n[schedule]\nname = "onecycle"\n'
                          'warmup_epochs = 1\nmomentum_low = 0.85\n[train]\nepochs = 3\n')
    step = build_step(config, (4,), 3, 100)  # batch 128 > 100 samples: one step of 100
    assert (step.batch_size, step.steps_per_epoch) == (100, 1)
    config.train.epochs = 4
    step = build_step(config, (4,), 3, 1000)  # 8 steps per epoch, the last of 104 rows
    lrs, mus = step.schedule.lrs(8, 8), step.schedule.momenta(8, 8)
    assert lrs.dtype == mus.dtype == np.float64 and lrs.shape == mus.shape == (8,)
    for i, s in enumerate(range(8, 16)):
        assert lrs[i] == learning_rate(config.schedule, 0.1, s, 8, 4) == step.schedule.lr(s)
        assert mus[i] == momentum(config.schedule, 0.95, s, 8, 4) == step.schedule.momentum(s)
    assert step.cycles_momentum and "momentum cycling" in step.aids()
    adam = parse_config('[optimizer]\nname = "adam"\n[schedule]\nname = "onecycle"\n'
                        'momentum_low = 0.85\n')
    assert not build_step(adam, (4,), 3, 1000).cycles_momentum  # Adam has no momentum to cycle


def test_parts_that_do_not_fit_together_are_config_errors():
    smooth = parse_config("[model]\nlabel_smoothing = 0.1\n")
    with pytest.raises(ConfigError, match="label_smoothing = 0.1 needs the softmax"):
        build_step(smooth, (2,), 2, 100)  # auto picks sigmoid_bce for two classes
    assert build_step(smooth, (2,), 3, 100).loss_fn().smoothing == 0.1
    with pytest.raises(ConfigError, match="augment_shift = 2: augmentation distorts images"):
        parse_config('[data]\ndataset = "xor"\naugment_shift = 2\n')  # config check sees it


def test_the_model_and_its_loss_come_from_the_step():
    step = build_step(parse_config('[model]\nhidden = [5]\nactivation = "leaky_relu"\n'
                                   'leaky_slope = 0.2\nlabel_smoothing = 0.2\n'
                                   '[train]\ndtype = "float64"\n'), (3,), 4, 10)
    model = build_model(step, [5], get_backend("cpu"), 3)
    assert model.sizes == [3, 5, 4] and model.dtype == np.float64
    assert model.activation.slope == 0.2 and model.loss.smoothing == 0.2


def test_the_eager_step_builds_the_aids_the_step_declares():
    config = load_config(CONFIGS / "mnist-best.toml", ["data.limit=256", "model.hidden=[16, 8]"])
    p = prepare(config)
    assert p.model.dropout is None  # nothing drops until a step runs the model
    eager = loop.EagerStep(p.step, p.model, build_optimizer(p.step.optimizer, p.model.ops,
                                                            p.model.params))
    assert p.model.dropout.rates == [0.1, 0.3, 0.3]
    assert len(eager.max_norm.weights) == 2 and eager.max_norm.limit == 3.5
    assert eager.augment is not None and eager.augment.shift == 2
    plain = prepare(load_config(CONFIGS / "mnist.toml", ["data.limit=256"]))
    eager = loop.EagerStep(plain.step, plain.model, build_optimizer(
        plain.step.optimizer, plain.model.ops, plain.model.params))
    assert (plain.model.dropout, eager.max_norm, eager.augment) == (None, None, None)


def test_numpy_always_steps_eagerly_and_says_so():
    step = build_step(load_config(CONFIGS / "mnist.toml"), *MNIST)
    assert epoch_path(step, NumpyBackend()) == ["cpu"]
    assert describe_path(["cpu"]) == "eager: cpu"
    assert describe_path(["dropout", "max-norm"]) == "eager: dropout; max-norm"
    assert describe_path([]) == "cuda graph"


def test_a_missing_primitive_is_a_backend_error_not_an_attribute_error():
    class Partial(Backend):  # a backend that implements nothing
        name, device = "partial", "cpu"

    with pytest.raises(BackendError, match="partial backend .cpu. has no 'matmul' primitive"):
        Partial().matmul
    with pytest.raises(BackendError, match="no 'epoch_runner'"):
        NumpyBackend().epoch_runner  # NumPy has no epoch graph to run
    with pytest.raises(AttributeError):  # anything outside the protocol stays an AttributeError
        NumpyBackend().no_such_thing


# -- dispatch: every kind the config names maps to its own kernel, or to the eager path --------


def test_every_kind_has_its_kernel_or_a_stated_reason():
    """Each activation, loss and optimizer kind the config accepts either has a kernel in the
    CUDA dispatch tables or makes graph_blockers name it (and the step then runs eagerly)."""
    base = build_step(load_config(CONFIGS / "mnist.toml"), *MNIST)
    for activation in nn.ACTIVATIONS:
        reasons = dispatch.graph_blockers(replace(base, activation=activation))
        assert (activation in dispatch.ACT_IDS) != (f"the {activation} activation" in
                                                   " ".join(reasons))
    for loss in nn.LOSSES:
        reasons = dispatch.graph_blockers(replace(base, loss=loss))
        assert (loss in dispatch.LOSS_KERNELS) != (f"the {loss} loss" in " ".join(reasons))
    known = set(nn.LOSSES) | set(nn.REGRESSION_LOSSES)  # no kernel for a loss that is not one
    assert set(dispatch.LOSS_KERNELS) <= known
    assert set(dispatch.REAL_TARGET_IDS) == set(nn.REGRESSION_LOSSES)
    for kind in OptimizerKind:
        step = replace(base, optimizer=replace(base.optimizer, kind=kind))
        if kind not in dispatch.UPDATE_KERNELS:
            assert dispatch.graph_blockers(step) == [f"no kernel for the {kind.value} optimizer"]
            continue
        assert dispatch.graph_blockers(step) == []
        assert dispatch.kernel_names(step, np.float32)[1] == \
            f"{dispatch.UPDATE_KERNELS[kind]}<float>"


def test_a_kind_without_a_kernel_runs_eagerly_never_another_kinds_kernel(monkeypatch):
    base = build_step(load_config(CONFIGS / "mnist.toml"), *MNIST)
    adam = replace(base, optimizer=replace(base.optimizer, kind=OptimizerKind.ADAM))
    monkeypatch.delitem(dispatch.UPDATE_KERNELS, OptimizerKind.ADAM)
    monkeypatch.delitem(dispatch.LOSS_KERNELS, "softmax_cross_entropy")
    assert dispatch.graph_blockers(adam) == ["no kernel for the softmax_cross_entropy loss",
                                             "no kernel for the adam optimizer"]
    with pytest.raises(KeyError):  # asked for a kernel anyway: no fallback to another kind's
        dispatch.kernel_names(adam, np.float32)


def test_every_optimizer_kind_has_its_class():
    assert set(OPTIMIZER_CLASSES) == set(OptimizerKind)
    for kind in OptimizerKind:
        spec = load_config(CONFIGS / "xor.toml", [f"optimizer.name={kind.value}"]).optimizer
        optimizer = build_optimizer(OptimizerSpec.from_config(spec), NumpyBackend(),
                                    {"w": np.zeros(3)})
        assert type(optimizer) is OPTIMIZER_CLASSES[kind] and optimizer.kind is kind
    assert (OPTIMIZER_CLASSES[OptimizerKind.SGD], OPTIMIZER_CLASSES[OptimizerKind.ADAMW]) == \
        (SGD, Adam)
