"""The MLP: parameter layout, initialisation, state round trips, building from a config."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlptrain import nn
from mlptrain.backend import get_backend
from mlptrain.config import Config, ModelConfig, TrainConfig
from mlptrain.errors import ModelError
from mlptrain.model import MLP
from mlptrain.model import build_model as build_from_step
from mlptrain.step import build_step

ops = get_backend("cpu")


def build_model(model_cfg, ops, n_features, n_classes, dtype) -> MLP:
    """The model a [model] section and a dtype declare, through the step (as prepare does)."""
    config = Config(model=model_cfg, train=TrainConfig(dtype=str(np.dtype(dtype))))
    step = build_step(config, (n_features,), n_classes, train_size=1)
    return build_from_step(step, model_cfg.hidden, ops, n_features)


def make(hidden=(7, 6), n_features=5, n_classes=4, dtype=np.float64, seed=0, **model_kw):
    cfg = ModelConfig(hidden=list(hidden), **model_kw)
    model = build_model(cfg, ops, n_features, n_classes, dtype)
    model.initialize(cfg.init, np.random.default_rng(seed))
    return model


# -- layout ---------------------------------------------------------------------------------------


def test_parameter_names_and_shapes():
    model = make(hidden=(7, 6), n_features=5, n_classes=4)
    assert model.sizes == [5, 7, 6, 4]
    expected = {
        "layers.0.weight": (7, 5), "layers.0.bias": (7,),
        "layers.1.weight": (6, 7), "layers.1.bias": (6,),
        "layers.2.weight": (4, 6), "layers.2.bias": (4,),
    }
    assert list(model.params) == list(expected)  # in layer order
    assert {k: tuple(v.shape) for k, v in model.params.items()} == expected
    assert {k: tuple(v.shape) for k, v in model.grads.items()} == expected
    assert all(v.dtype == np.float64 for v in model.params.values())
    assert len(model.layers) == 3
    # the layers see the very arrays in params/grads (no copies)
    for i, layer in enumerate(model.layers):
        assert layer.weight is model.params[f"layers.{i}.weight"]
        assert layer.bias is model.params[f"layers.{i}.bias"]
        assert layer.grad_weight is model.grads[f"layers.{i}.weight"]
        assert layer.grad_bias is model.grads[f"layers.{i}.bias"]


def test_parameters_are_views_of_one_flat_buffer():
    model = make(hidden=(7, 6), n_features=5, n_classes=4)
    for params in (model.params, model.grads):
        assert params.flat.ndim == 1
        for name, p in params.items():
            assert np.shares_memory(p, params.flat), name
            if name.endswith("weight"):  # stored column-major: W^T (I, O) is C-contiguous
                assert p.T.flags.c_contiguous
    model.params.flat[...] = 0.0  # writing the buffer writes every parameter
    assert all(not np.any(p) for p in model.params.values())


def test_state_dict_is_c_ordered_and_matches_the_layout():
    model = make(hidden=(7,), n_features=5, n_classes=4)
    state = model.state_dict()
    for name, value in state.items():
        assert value.flags.c_contiguous and value.shape == model.params[name].shape
        np.testing.assert_array_equal(value, model.params[name])
    w = state["layers.0.weight"]  # z = x W^T + b, with W (O, I) as the frameworks save it
    x = np.random.default_rng(3).normal(size=(2, 5))
    ws = model.workspace(2)
    ws.x[...] = x
    model.forward(ws)
    np.testing.assert_allclose(ws.acts[1], np.maximum(x @ w.T + state["layers.0.bias"], 0))


def test_parameter_count():
    model = make(hidden=(7, 6), n_features=5, n_classes=4)
    assert model.parameter_count == 5 * 7 + 7 + 7 * 6 + 6 + 6 * 4 + 4 == 118
    mnist_like = build_model(ModelConfig(hidden=[128]), ops, 784, 10, np.float32)
    assert mnist_like.parameter_count == 784 * 128 + 128 + 128 * 10 + 10


def test_describe_lists_every_layer():
    model = make(hidden=(7, 6), activation="tanh")
    lines = model.describe()
    assert len(lines) == 3
    assert "layers.0" in lines[0] and "5 -> 7" in lines[0] and "tanh" in lines[0]
    assert "softmax_cross_entropy" in lines[2]
    assert model.describe_sizes() == "5-7-6-4"


def test_mlp_rejects_degenerate_sizes():
    act, loss = nn.make_activation("relu"), nn.make_loss("auto", 3)
    with pytest.raises(ModelError):
        MLP(ops, [5], act, loss, np.float64)
    with pytest.raises(ModelError):
        MLP(ops, [5, 0, 3], act, loss, np.float64)


# -- initialisation -------------------------------------------------------------------------------

FAN_IN, FAN_OUT = 600, 400  # a large layer: 240,000 draws make the statistics tight


def init_layer(scheme: str, seed: int = 0) -> np.ndarray:
    model = MLP(ops, [FAN_IN, FAN_OUT], nn.make_activation("relu"),
                nn.make_loss("softmax_cross_entropy", FAN_OUT), np.float64)
    model.initialize(scheme, np.random.default_rng(seed))
    assert np.all(model.params["layers.0.bias"] == 0)
    return model.params["layers.0.weight"]


def test_xavier_uniform_statistics():
    w = init_layer("xavier_uniform")
    bound = math.sqrt(6 / (FAN_IN + FAN_OUT))
    assert w.shape == (FAN_OUT, FAN_IN)
    assert np.abs(w).max() <= bound
    assert np.abs(w).max() > 0.999 * bound  # fills the interval
    assert abs(w.mean()) < 0.01 * bound
    assert w.std() == pytest.approx(bound / math.sqrt(3), rel=0.01)  # std of U(-a, a)


def test_he_uniform_statistics():
    w = init_layer("he_uniform")
    bound = math.sqrt(6 / FAN_IN)
    assert np.abs(w).max() <= bound
    assert np.abs(w).max() > 0.999 * bound
    assert w.std() == pytest.approx(bound / math.sqrt(3), rel=0.01)


def test_he_normal_statistics():
    w = init_layer("he_normal")
    std = math.sqrt(2 / FAN_IN)
    assert abs(w.mean()) < 0.01 * std
    assert w.std() == pytest.approx(std, rel=0.01)
    assert np.abs(w).max() > 3 * std  # a normal's tails, not a bounded uniform


def test_xavier_normal_statistics():
    w = init_layer("xavier_normal")
    std = math.sqrt(2 / (FAN_IN + FAN_OUT))
    assert abs(w.mean()) < 0.01 * std
    assert w.std() == pytest.approx(std, rel=0.01)


@pytest.mark.parametrize("scheme", sorted(nn.INITIALIZERS))
def test_initializers_shape_and_seed(scheme):
    init = nn.INITIALIZERS[scheme]
    a = init(np.random.default_rng(5), 3, 4)
    b = init(np.random.default_rng(5), 3, 4)
    c = init(np.random.default_rng(6), 3, 4)
    assert a.shape == (3, 4)  # (fan_out, fan_in)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("scheme", sorted(nn.INITIALIZERS))
def test_same_seed_same_weights(scheme):
    a = make(init=scheme, seed=3)
    b = make(init=scheme, seed=3)
    c = make(init=scheme, seed=4)
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
    assert not np.array_equal(a.params["layers.0.weight"], c.params["layers.0.weight"])


@pytest.mark.parametrize("scheme", sorted(nn.INITIALIZERS))
def test_float32_starts_from_the_float64_numbers(scheme):
    m64 = make(init=scheme, seed=7, dtype=np.float64)
    m32 = make(init=scheme, seed=7, dtype=np.float32)
    for name, p in m32.params.items():
        assert p.dtype == np.float32
        np.testing.assert_array_equal(p, m64.params[name].astype(np.float32))


def test_initialize_resets_biases():
    model = make()
    for p in model.params.values():
        p[...] = 1.0
    model.initialize("xavier_uniform", np.random.default_rng(0))
    for i in range(len(model.layers)):
        assert np.all(model.params[f"layers.{i}.bias"] == 0)


# -- state round trip -------------------------------------------------------------------------------


def test_state_dict_round_trip():
    a = make(seed=1)
    b = make(seed=2)
    state = a.state_dict()
    assert set(state) == set(a.params)
    assert all(isinstance(v, np.ndarray) for v in state.values())
    b.load_state_dict(state)
    for name in a.params:
        np.testing.assert_array_equal(b.params[name], a.params[name])
    # the layers use the loaded values (loading writes into the arrays, not new ones)
    assert b.layers[0].weight is b.params["layers.0.weight"]
    np.testing.assert_array_equal(b.layers[0].weight, a.params["layers.0.weight"])


def test_state_dict_is_a_copy():
    model = make()
    state = model.state_dict()
    before = model.params["layers.0.weight"].copy()
    state["layers.0.weight"][...] = 123.0
    np.testing.assert_array_equal(model.params["layers.0.weight"], before)
    model.params["layers.1.bias"][...] = 9.0
    assert not np.any(state["layers.1.bias"] == 9.0)


def test_state_dict_round_trip_across_dtypes():
    m64 = make(seed=1, dtype=np.float64)
    m32 = make(seed=2, dtype=np.float32)
    m32.load_state_dict(m64.state_dict())
    for name, p in m32.params.items():
        assert p.dtype == np.float32
        np.testing.assert_array_equal(p, m64.params[name].astype(np.float32))


def test_load_state_dict_missing_key_names_it():
    model = make()
    state = make(seed=1).state_dict()
    del state["layers.1.bias"]
    with pytest.raises(ModelError, match=r"layers\.1\.bias") as info:
        model.load_state_dict(state, source="weights.npz")
    assert "missing" in str(info.value)
    assert "weights.npz" in str(info.value)
    assert "5-7-6-4" in str(info.value)


def test_load_state_dict_extra_key_names_it():
    model = make()
    state = make(seed=1).state_dict()
    state["layers.3.weight"] = np.zeros((2, 4))
    with pytest.raises(ModelError, match=r"layers\.3\.weight") as info:
        model.load_state_dict(state)
    assert "unexpected" in str(info.value)


def test_load_state_dict_wrong_shape_names_layer_and_shapes():
    model = make()
    state = make(seed=1).state_dict()
    state["layers.1.weight"] = np.zeros((6, 8))
    with pytest.raises(ModelError) as info:
        model.load_state_dict(state, source="old.npz")
    message = str(info.value)
    assert "layers.1" in message
    assert "weight" in message
    assert "(6, 8)" in message  # what the file has
    assert "(6, 7)" in message  # what the model expects
    assert "old.npz" in message


def test_load_state_dict_from_a_different_architecture():
    model = make(hidden=(7, 6))
    other = make(hidden=(7,))  # one hidden layer: layers.2 missing, layers.1 a different shape
    with pytest.raises(ModelError, match=r"layers\.2"):
        model.load_state_dict(other.state_dict())


def test_failed_load_leaves_the_model_unchanged():
    model = make(seed=0)
    before = model.state_dict()
    state = make(seed=1).state_dict()
    state["layers.1.weight"] = np.zeros((6, 8))
    with pytest.raises(ModelError):
        model.load_state_dict(state)
    for name, value in before.items():
        np.testing.assert_array_equal(model.params[name], value, err_msg=name)


# -- building from a config ---------------------------------------------------------------------------


def test_build_model_sigmoid_bce_has_one_output():
    model = build_model(ModelConfig(hidden=[4], loss="sigmoid_bce"), ops, 3, 2, np.float64)
    assert model.sizes == [3, 4, 1]
    assert model.loss.name == "sigmoid_bce"
    assert model.params["layers.1.weight"].shape == (1, 4)


def test_build_model_auto_loss():
    binary = build_model(ModelConfig(hidden=[4], loss="auto"), ops, 3, 2, np.float64)
    assert binary.loss.name == "sigmoid_bce"
    assert binary.sizes[-1] == 1
    multi = build_model(ModelConfig(hidden=[4], loss="auto"), ops, 3, 10, np.float64)
    assert multi.loss.name == "softmax_cross_entropy"
    assert multi.sizes[-1] == 10


def test_build_model_softmax_for_two_classes_when_asked():
    model = build_model(ModelConfig(hidden=[4], loss="softmax_cross_entropy"), ops, 3, 2,
                        np.float64)
    assert model.sizes == [3, 4, 2]


def test_build_model_activation_and_slope():
    model = build_model(ModelConfig(hidden=[4], activation="leaky_relu", leaky_slope=0.2),
                        ops, 3, 3, np.float64)
    assert model.activation.name == "leaky_relu"
    assert model.activation.slope == 0.2
    assert make(activation="tanh").activation.name == "tanh"


def test_build_model_starts_with_zero_weights():
    model = build_model(ModelConfig(hidden=[4]), ops, 3, 3, np.float32)
    assert all(np.all(p == 0) for p in model.params.values())
    assert all(p.dtype == np.float32 for p in model.params.values())


def test_build_model_from_Config(name="run"):
    cfg = Config(name="run")
    model = build_model(cfg.model, ops, 784, 10, cfg.train.dtype)
    assert model.sizes == [784, *cfg.model.hidden, 10]
    assert model.dtype == np.dtype(cfg.train.dtype)


# -- workspace and precision ------------------------------------------------------------------------


def test_workspace_is_reused_per_batch_size():
    model = make()
    ws = model.workspace(8)
    assert model.workspace(8) is ws
    other = model.workspace(3)
    assert other is not ws
    assert model.workspace(8) is ws
    assert ws.batch_size == 8 and other.batch_size == 3
    assert [a.shape for a in ws.acts] == [(8, 5), (8, 7), (8, 6), (8, 4)]
    assert ws.x is ws.acts[0]
    assert ws.dlogits.shape == ws.loss_cache.probs.shape == (8, 4)
    assert ws.deltas[0] is None
    assert [d.shape for d in ws.deltas[1:]] == [(8, 7), (8, 6)]


def _batch(model, rng, batch, n_classes):
    x = rng.normal(size=(batch, model.sizes[0]))
    labels = rng.integers(0, n_classes, size=batch)
    return x, labels


def test_loss_and_grad_twice_gives_the_same_result():
    model = make(activation="tanh")
    rng = np.random.default_rng(0)
    x, labels = _batch(model, rng, 8, 4)
    ws = model.workspace(8)
    ws.x[...] = x
    targets = model.loss.targets(np, labels, model.dtype)
    first, _ = model.loss_and_grad(ws, targets, 1 / 8)
    g1 = {k: v.copy() for k, v in model.grads.items()}
    second, _ = model.loss_and_grad(ws, targets, 1 / 8)
    assert float(first) == float(second)
    for k in g1:
        np.testing.assert_array_equal(model.grads[k], g1[k])
    evaluated, _ = model.ops.loss_forward(model.loss, model.forward(ws), targets, ws.loss_cache)
    assert float(evaluated) == float(first)


@pytest.mark.parametrize("loss,n_classes", [("softmax_cross_entropy", 4), ("sigmoid_bce", 2)])
@pytest.mark.parametrize("activation", sorted(nn.ACTIVATIONS))
def test_float32_loss_and_grad_matches_float64(activation, loss, n_classes):
    m64 = make(activation=activation, loss=loss, n_classes=n_classes, seed=5, dtype=np.float64)
    m32 = make(activation=activation, loss=loss, n_classes=n_classes, seed=5, dtype=np.float32)
    rng = np.random.default_rng(6)
    for m in (m64, m32):  # the same non-zero biases in both
        for i, layer in enumerate(m.layers):
            layer.bias[...] = np.random.default_rng(100 + i).normal(scale=0.1,
                                                                    size=layer.bias.shape)
    batch = 16
    x, labels = _batch(m64, rng, batch, n_classes)
    results = {}
    for m in (m64, m32):
        ws = m.workspace(batch)
        ws.x[...] = x
        targets = m.loss.targets(np, labels, m.dtype)
        loss_sum, correct = m.loss_and_grad(ws, targets, 1.0 / batch)
        assert ws.dlogits.dtype == m.dtype
        results[m.dtype] = (float(loss_sum), int(correct),
                            {k: np.array(v, dtype=np.float64) for k, v in m.grads.items()})
    (l64, c64, g64), (l32, c32, g32) = results[np.dtype(np.float64)], results[np.dtype(np.float32)]
    assert l32 == pytest.approx(l64, rel=1e-5)
    assert c32 == c64
    for name in g64:
        assert m32.grads[name].dtype == np.float32
        err = np.linalg.norm(g32[name] - g64[name]) / max(np.linalg.norm(g64[name]), 1e-30)
        assert err < 1e-4, f"{name}: float32 vs float64 relative error {err:.1e}"


def test_forward_reads_a_given_input_without_copying_it():
    model = make(activation="tanh")
    rng = np.random.default_rng(7)
    x, labels = _batch(model, rng, 8, 4)
    targets = model.loss.targets(np, labels, model.dtype)
    ws = model.workspace(8)
    ws.x[...] = x
    def evaluate(x=None):
        return model.ops.loss_forward(model.loss, model.forward(ws, x), targets, ws.loss_cache)

    expected = evaluate()
    ws.x[...] = 0.0  # a view of the data is read instead of the workspace's input buffer
    got = evaluate(x)
    assert float(got[0]) == float(expected[0]) and int(got[1]) == int(expected[1])
    assert not np.any(ws.x)
