"""Dropout, max-norm and label smoothing: gradients by central differences in float64, and
each against its written formula."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from mlptrain import nn
from mlptrain.backend import get_backend
from mlptrain.config import ModelConfig
from mlptrain.errors import ConfigError
from mlptrain.model import MLP
from mlptrain.config import parse_config
from mlptrain.model import build_model as model_of_step
from mlptrain.step import build_step
from mlptrain.regularize import Dropout, MaxNorm, dropout_of, max_norm_of
from tests.test_gradients import MLP_EPS, MLP_TINY, TOL, numeric_grad, rel_error
from tests.test_model import build_model

ops = get_backend("cpu")


def small_mlp(rng, sizes=(6, 8, 7, 4), activation="tanh", dtype=np.float64) -> MLP:
    model = MLP(ops, list(sizes), nn.make_activation(activation),
                nn.make_loss("softmax_cross_entropy", sizes[-1]), dtype)
    model.initialize("xavier_uniform", rng)
    for layer in model.layers:
        layer.bias[...] = rng.normal(scale=0.3, size=layer.bias.shape)
    return model


# -- dropout ------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu"])
def test_dropout_gradients_match_finite_differences_with_a_fixed_mask(activation):
    rng = np.random.default_rng(7)
    model = small_mlp(rng, activation=activation)
    model.dropout = Dropout(ops, [0.3, 0.5, 0.4], 1, np.float64)
    batch = 5
    ws = model.workspace(batch)
    ws.x[...] = rng.normal(size=ws.x.shape)
    targets = model.loss.targets(np, rng.integers(0, 4, size=batch), np.float64)

    loss_sum, _ = model.loss_and_grad(ws, targets, 1.0 / batch)  # draws the masks
    grads = {name: np.array(g) for name, g in model.grads.items()}
    model.dropout.frozen = True  # every finite-difference evaluation sees the same masks
    masks = [np.array(m) for m in model.dropout._masks]
    assert all((m == 0).any() for m in masks), "each mask should drop something here"

    def mean_loss() -> float:
        model.dropout.draw(model.sizes[:-1], batch, 1)  # a no-op while frozen
        logits = model.forward(ws, training=True)
        total, _ = model.loss.forward(np, logits, targets, ws.loss_cache)
        return float(total) / batch

    assert float(loss_sum) / batch == pytest.approx(mean_loss(), rel=1e-14)
    for name, p in model.params.items():
        err = rel_error(grads[name], numeric_grad(mean_loss, p, eps=MLP_EPS), tiny=MLP_TINY)
        assert err < TOL, f"{name}: relative error {err:.2e}"
    assert all(np.array_equal(a, b) for a, b in zip(masks, model.dropout._masks))


def test_dropout_forward_is_x_times_scaled_bernoulli_mask():
    p, shape = 0.25, (400, 300)
    drop = Dropout(ops, [p], 3, np.float64)
    drop.draw([shape[1]], shape[0], 0)
    x = np.random.default_rng(4).uniform(1, 2, size=shape)
    out = np.array(drop.forward(0, x))
    kept = out != 0
    # survivors are scaled by exactly 1 / (1 - p); the rest are 0
    np.testing.assert_allclose(out[kept], x[kept] / (1 - p), rtol=1e-15)
    # the drop fraction is p: binomial standard error sqrt(p (1-p) / n) ~ 0.0007 here
    assert abs((~kept).mean() - p) < 0.004
    # E[x~] = x: the mean ratio is 1 within a few standard errors
    assert abs((out / x).mean() - 1.0) < 0.01


def test_dropout_backward_multiplies_by_the_same_mask():
    drop = Dropout(ops, [0.5], 0, np.float32)
    drop.draw([10], 6, 0)
    x = np.ones((6, 10), np.float32)
    out = np.array(drop.forward(0, x))
    dx = np.full((6, 10), 3.0, np.float32)
    drop.backward(0, dx)
    np.testing.assert_array_equal(dx, 3.0 * out)  # mask = out / x with x = 1
    assert dx.dtype == np.float32


def test_dropout_is_a_pure_function_of_seed_layer_and_step():
    def masks(seed, steps=(0, 1), rates=(0.5,)):
        drop = Dropout(ops, list(rates), seed, np.float32)
        out = []
        for step in steps:
            drop.draw([50] * len(rates), 8, step)
            out.append([np.array(drop.forward(i, np.ones((8, 50), np.float32)))
                        for i in range(len(rates))])
        return out

    a, b, c = masks(11), masks(11), masks(12)
    assert all(np.array_equal(u[0], v[0]) for u, v in zip(a, b))
    assert not np.array_equal(a[0][0], a[1][0])  # a new mask for every step
    assert not np.array_equal(a[0][0], c[0][0])  # and for every seed
    # step 1 drawn alone (as after a resume) is step 1 of the sequence: no hidden state
    assert np.array_equal(masks(11, steps=(1,))[0][0], a[1][0])
    two = masks(11, steps=(0,), rates=(0.5, 0.5))[0]
    assert not np.array_equal(two[0], two[1])  # each layer has its own slot


def test_dropout_mask_bits_are_philox_halves_against_the_threshold():
    from mlptrain.seeding import DROPOUT, dropout_threshold, random_bits

    out = np.empty((3, 7), np.float64)
    ops.dropout_mask(5, 2, 2**32 + 9, 0.3, out=out)
    words = random_bits(DROPOUT, 5, 2, 2**32 + 9, 11)  # 21 elements: 11 words
    halves = [(int(w) >> (16 * h)) & 0xFFFF for w in words for h in (0, 1)][:21]
    want = np.array([h >= dropout_threshold(0.3) for h in halves]) / 0.7
    np.testing.assert_array_equal(out.ravel(), want)


def test_dropout_is_off_at_evaluation():
    rng = np.random.default_rng(5)
    model = small_mlp(rng, activation="relu")
    ws = model.workspace(4)
    ws.x[...] = rng.normal(size=ws.x.shape)
    targets = model.loss.targets(np, np.array([0, 1, 2, 3]), np.float64)
    def evaluate():
        return model.ops.loss_forward(model.loss, model.forward(ws), targets, ws.loss_cache)

    plain = evaluate()
    model.dropout = Dropout(ops, [0.5, 0.5, 0.5], 0, np.float64)
    model.loss_and_grad(ws, targets, 0.25)  # a training step draws masks
    assert evaluate() == plain


def test_dropout_rate_zero_leaves_a_layer_alone_and_the_step_decides_the_rates():
    sizes = [784, 100, 50, 10]
    plain = build_step(parse_config("[model]\nhidden = [100, 50]\n"), (784,), 10, 100)
    model = model_of_step(plain, [100, 50], ops, 784)
    assert dropout_of(plain, model) is None
    step = build_step(parse_config("[model]\nhidden = [100, 50]\ndropout_hidden = 0.5\n"),
                      (784,), 10, 100)
    drop = dropout_of(step, model)
    assert drop.rates == [0.0, 0.5, 0.5]
    drop.draw(sizes[:-1], 3, 0)
    x = np.ones((3, 784), np.float32)
    assert drop.forward(0, x) is x and drop.dropped_input(0, x) is x


# -- max-norm -----------------------------------------------------------------------------------


def test_max_norm_scales_long_rows_to_the_limit_and_leaves_short_rows():
    w = np.array([[3.0, 4.0], [0.3, 0.4], [6.0, 8.0], [0.0, 0.0]])  # norms 5, 0.5, 10, 0
    expected = w.copy()
    c = 2.0
    for j, norm in enumerate(np.linalg.norm(w, axis=1)):
        expected[j] *= min(1.0, c / norm) if norm else 1.0  # W_j <- W_j min(1, c / |W_j|)
    MaxNorm(ops, [w], c).apply()
    np.testing.assert_allclose(w, expected, rtol=1e-15)
    np.testing.assert_allclose(np.linalg.norm(w, axis=1), [2.0, 0.5, 2.0, 0.0], rtol=1e-15)


def test_max_norm_constrains_hidden_layers_only():
    rng = np.random.default_rng(2)
    model = build_model(ModelConfig(hidden=[5, 4], max_norm=0.5), ops, 3, 4, np.float32)
    model.initialize("he_uniform", rng)
    for layer in model.layers:
        layer.weight *= 10
    out_before = np.array(model.layers[-1].weight)
    max_norm_of(SimpleNamespace(max_norm=0.5), model).apply()
    for layer in model.layers[:-1]:
        assert np.linalg.norm(layer.weight, axis=1).max() <= 0.5 * (1 + 1e-6)
        assert layer.weight.dtype == np.float32
    np.testing.assert_array_equal(model.layers[-1].weight, out_before)
    assert max_norm_of(SimpleNamespace(max_norm=0.0), model) is None


# -- label smoothing ----------------------------------------------------------------------------


def smoothed_reference(z: np.ndarray, y: np.ndarray, e: float) -> float:
    """-sum_j q_j log softmax(z)_j with q = (1 - e) onehot(y) + e / C, summed over the batch."""
    C = z.shape[1]
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    q = np.full_like(z, e / C)
    q[np.arange(len(y)), y] += 1 - e
    return float(-(q * logp).sum())


@pytest.mark.parametrize("e", [0.0, 0.1, 0.5])
def test_label_smoothing_loss_matches_the_written_formula(e):
    rng = np.random.default_rng(3)
    z, y = rng.normal(size=(7, 5)), rng.integers(0, 5, size=7)
    loss = nn.SoftmaxCrossEntropy()
    loss.smoothing = e
    total, _ = loss.forward(np, z, y, loss.new_cache(np, *z.shape, np.float64))
    assert float(total) == pytest.approx(smoothed_reference(z, y, e), rel=1e-13)


@pytest.mark.parametrize("e", [0.1, 0.3])
def test_label_smoothing_gradient_matches_finite_differences_and_formula(e):
    rng = np.random.default_rng(4)
    z, y = rng.normal(size=(6, 4)), rng.integers(0, 4, size=6)
    loss = nn.SoftmaxCrossEntropy()
    loss.smoothing = e
    cache, scale = loss.new_cache(np, *z.shape, np.float64), 1 / 6
    loss.forward(np, z, y, cache)
    grad = np.array(loss.backward(np, cache, y, scale, np.empty_like(z)))
    numeric = numeric_grad(lambda: smoothed_reference(z, y, e) * scale, z)
    assert rel_error(grad, numeric) < TOL
    q = np.full_like(z, e / 4)
    q[np.arange(6), y] += 1 - e
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(grad, (p - q) * scale, rtol=1e-12, atol=1e-15)  # dL/dz = p - q


def test_label_smoothing_is_the_steps_and_needs_softmax():
    smooth = build_model(ModelConfig(label_smoothing=0.1), ops, 4, 3, np.float64)
    plain = build_model(ModelConfig(), ops, 4, 3, np.float64)
    assert smooth.loss.smoothing == 0.1 and plain.loss.smoothing == 0.0
    with pytest.raises(ConfigError, match="label_smoothing = 0.1 needs the softmax"):
        build_model(ModelConfig(label_smoothing=0.1), ops, 4, 2, np.float64)  # sigmoid_bce
