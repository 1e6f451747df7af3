"""A regression guard for the lean training step that does not time anything.

After a warm-up step (which makes the workspace, loss cache and scratch buffers), a training
step on the NumPy backend must not allocate array memory: gathering the batch, forward, loss,
backward and the optimizer update all write into buffers made once. tracemalloc's peak over
several steps, minus what was in use before them, bounds every temporary made meanwhile.

NumPy itself may take small fixed-size buffers inside a ufunc call (at most 8192 elements for
broadcasting or casting, e.g. a bias add) and the interpreter makes small objects, so the test
allows a few tens of KiB; the model below is sized so that every array of the step is larger
than that allowance, hence any copy of one - an activation, a gradient, the logits, a weight
matrix - fails the test.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from mlptrain import nn
from mlptrain.backend import get_backend
from mlptrain.model import MLP
from mlptrain.optim import SGD, Adam
from mlptrain.loop import Split, to_device

ops = get_backend("cpu")

BATCH = 256
SIZES = [200, 320, 160, 64]  # (256, 64) float32 logits = 64 KiB, the smallest (B, n) array
ALLOWANCE = 48 * 1024  # bytes: below any array of the step, above NumPy's ufunc buffers
STEPS = 4

OPTIMIZERS = {
    "sgd": lambda p: SGD(ops, p),
    "nesterov+wd": lambda p: SGD(ops, p, momentum=0.9, nesterov=True, weight_decay=1e-4),
    "adam+l2": lambda p: Adam(ops, p, weight_decay=1e-4),
    "adamw": lambda p: Adam(ops, p, weight_decay=1e-2, decoupled=True),
}


def make_step(activation: str, loss: str, optimizer: str, dtype=np.float32):
    """A model on random data and a function doing one training step as the loop does."""
    n_classes = 2 if loss == "sigmoid_bce" else SIZES[-1]
    sizes = [*SIZES[:-1], 1] if loss == "sigmoid_bce" else SIZES  # BCE: one logit per row
    model = MLP(ops, sizes, nn.make_activation(activation), nn.make_loss(loss, n_classes),
                dtype)
    model.initialize("he_uniform", np.random.default_rng(0))
    opt = OPTIMIZERS[optimizer](model.params)
    rng = np.random.default_rng(1)
    n = 4 * BATCH
    train: Split = to_device(ops, model, rng.normal(size=(n, sizes[0])),
                             rng.integers(0, n_classes, size=n))
    order = ops.asarray(rng.permutation(n), np.int64)
    targets = ops.empty((BATCH, *train.targets.shape[1:]), train.targets.dtype)

    def step(i: int):
        index = order[(i % 4) * BATCH:(i % 4 + 1) * BATCH]
        ws = model.workspace(BATCH)
        ops.take_rows(train.X, index, out=ws.x)
        ops.take_rows(train.targets, index, out=targets)
        loss_sum, correct = model.loss_and_grad(ws, targets, 1.0 / BATCH)
        opt.step(model.params, model.grads, 0.01)
        return loss_sum, correct

    return model, step


def temporaries(step) -> int:
    """Bytes allocated above the starting level during STEPS steps, after one warm-up."""
    step(0)
    tracemalloc.start()
    try:
        step(1)  # anything lazily made on a second call is set-up too
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(2, 2 + STEPS):
            step(i)
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


# every activation and loss with plain SGD, and every optimizer on the benchmark's model kind
CASES = [(act, loss, "sgd") for act in ("relu", "tanh", "sigmoid")
         for loss in ("softmax_cross_entropy", "sigmoid_bce")]
CASES += [("relu", "softmax_cross_entropy", opt) for opt in sorted(OPTIMIZERS) if opt != "sgd"]


@pytest.mark.parametrize(("activation", "loss", "optimizer"), CASES)
def test_training_step_allocates_no_arrays(activation, loss, optimizer):
    _, step = make_step(activation, loss, optimizer)
    extra = temporaries(step)
    assert extra < ALLOWANCE, (
        f"a steady-state training step allocated {extra} bytes of temporaries; some primitive "
        "makes a new array instead of writing into its buffer")


def test_the_guard_catches_a_copy(monkeypatch):
    """The test above fails if someone adds one copy of the smallest array, the logits."""
    _, step = make_step("relu", "softmax_cross_entropy", "sgd")
    add_bias = ops.add_bias

    def add_bias_and_copy(z, bias):  # add_bias is called for the logits only
        z.copy()
        return add_bias(z, bias)

    monkeypatch.setattr(ops, "add_bias", add_bias_and_copy)
    assert temporaries(step) >= ALLOWANCE


def test_float64_steps_are_lean_too():
    _, step = make_step("relu", "softmax_cross_entropy", "adamw", dtype=np.float64)
    assert temporaries(step) < 2 * ALLOWANCE  # float64 doubles NumPy's ufunc buffers


def test_the_folded_plain_sgd_step_is_lean_too():
    """Plain SGD's step inside the products (loss_and_grad with sgd_lr, as EagerStep runs it
    where ops.folds_sgd): its BLAS calls are made once and allocate nothing afterwards."""
    model, _ = make_step("relu", "softmax_cross_entropy", "sgd")
    rng = np.random.default_rng(2)
    ws = model.workspace(BATCH)
    ws.x[...] = rng.normal(size=ws.x.shape)
    targets = ops.asarray(rng.integers(0, SIZES[-1], size=BATCH), np.int64)
    assert temporaries(lambda i: model.loss_and_grad(ws, targets, 1.0 / BATCH,
                                                     sgd_lr=0.01)) < ALLOWANCE
