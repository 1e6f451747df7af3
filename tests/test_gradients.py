"""Every backward pass against central finite differences, in float64.

The relative error of an analytic value a against a numeric one n is
|a - n| / max(|a| + |n|, TINY), taken element by element; the floor TINY keeps gradients that
are (nearly) zero from turning round-off into a large ratio.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlptrain import nn
from mlptrain.backend import get_backend
from mlptrain.model import MLP
from mlptrain.optim import SGD

EPS = 1e-6  # central-difference step
TINY = 1e-8  # floor of the relative-error denominator
TOL = 1e-6  # relative-error tolerance for float64 gradients
# A whole network's loss passes through several layers and a batch sum, so a central difference
# of it carries round-off of a few 1e-16 / eps absolute (~3e-10 at eps = 1e-6). For the MLP we
# use eps = 1e-5 (truncation error ~eps^2 stays ~1e-11) and a floor of 1e-4: an element below
# the floor is held to TOL * 1e-4 = 1e-10 absolute, one above it to TOL relative.
MLP_EPS = 1e-5
MLP_TINY = 1e-4

ops = get_backend("cpu")


def rel_error(analytic, numeric, tiny: float = TINY) -> float:
    a = np.asarray(analytic, dtype=np.float64)
    n = np.asarray(numeric, dtype=np.float64)
    assert a.shape == n.shape, (a.shape, n.shape)
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - n) / np.maximum(np.abs(a) + np.abs(n), tiny)))


def numeric_grad(f, x: np.ndarray, eps: float = EPS) -> np.ndarray:
    """d f / d x by central differences, perturbing x in place one element at a time."""
    grad = np.zeros_like(x, dtype=np.float64)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        idx = it.multi_index
        old = x[idx]
        x[idx] = old + eps
        f_plus = f()
        x[idx] = old - eps
        f_minus = f()
        x[idx] = old
        grad[idx] = (f_plus - f_minus) / (2 * eps)
    return grad


def away_from_zero(rng, shape, low=1e-3, high=3.0) -> np.ndarray:
    """Uniform magnitudes in [low, high] with random signs: keeps clear of kinks at 0."""
    mag = rng.uniform(low, high, size=shape)
    return mag * rng.choice([-1.0, 1.0], size=shape)


# ---------------------------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------------------------

# Textbook formulas, written without the library. A new activation in nn.ACTIVATIONS needs an
# entry here (the forward test says so); its backward is checked numerically automatically.
REFERENCE_ACTIVATIONS = {
    "relu": lambda z: np.maximum(z, 0.0),
    "tanh": np.tanh,
    "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
    "leaky_relu": lambda z: np.where(z > 0, z, 0.01 * z),  # default slope 0.01
    "gelu": lambda z: 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3))),
}

ACTIVATION_NAMES = sorted(nn.ACTIVATIONS)


def act_forward(act, z: np.ndarray) -> np.ndarray:
    """f(z) without touching z."""
    return act.forward(np, z.copy(), out=np.empty_like(z))


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_activation_forward_matches_textbook_formula(name):
    assert name in REFERENCE_ACTIVATIONS, f"add a reference formula for activation {name!r}"
    act = nn.make_activation(name)
    rng = np.random.default_rng(1)
    z = np.concatenate([away_from_zero(rng, (40,), high=6.0), [0.0, -20.0, 20.0, 1e-3, -1e-3]])
    y = act_forward(act, z)
    np.testing.assert_allclose(y, REFERENCE_ACTIVATIONS[name](z), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_activation_forward_works_in_place(name):
    act = nn.make_activation(name)
    if act.reads_input:
        pytest.skip(f"{name}'s backward reads z, which the model keeps: never computed in place")
    rng = np.random.default_rng(2)
    z = away_from_zero(rng, (4, 5))
    expected = act_forward(act, z)
    buf = z.copy()
    result = act.forward(np, buf, out=buf)
    np.testing.assert_array_equal(buf, expected)
    assert result is buf or np.shares_memory(result, buf)


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_activation_backward_matches_finite_differences(name):
    act = nn.make_activation(name)
    rng = np.random.default_rng(3)
    z = away_from_zero(rng, (4, 5))  # >= 1e-3 from the kink of relu / leaky_relu
    dy = rng.normal(size=z.shape)
    y = act_forward(act, z)
    dz = act.backward(np, y, dy, out=np.empty_like(z), z=z.copy())
    numeric = numeric_grad(lambda: float(np.sum(dy * act_forward(act, z))), z)
    assert rel_error(dz, numeric) < TOL


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_activation_backward_works_in_place_on_dy(name):
    act = nn.make_activation(name)
    rng = np.random.default_rng(4)
    z = away_from_zero(rng, (3, 6))
    dy = rng.normal(size=z.shape)
    y = act_forward(act, z)
    expected = act.backward(np, y, dy, out=np.empty_like(z), z=z)
    buf = dy.copy()
    act.backward(np, y, buf, out=buf, z=z)  # how the model calls it: dx is both dy and out
    np.testing.assert_array_equal(buf, expected)


def test_leaky_relu_slope_is_used():
    act = nn.make_activation("leaky_relu", leaky_slope=0.2)
    z = np.array([-2.0, -0.5, 0.5, 2.0])
    y = act_forward(act, z)
    np.testing.assert_allclose(y, [-0.4, -0.1, 0.5, 2.0])
    dz = act.backward(np, y, np.ones(4), out=np.empty(4))
    np.testing.assert_allclose(dz, [0.2, 0.2, 1.0, 1.0])


def test_sigmoid_is_finite_at_huge_inputs():
    act = nn.make_activation("sigmoid")
    z = np.array([-1e4, -800.0, 800.0, 1e4])
    with np.errstate(all="raise"):
        y = act_forward(act, z)
    np.testing.assert_array_equal(y, [0.0, 0.0, 1.0, 1.0])


# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------

# the losses of class labels (those of real values are proven below, on real targets)
LOSS_NAMES = sorted(name for name, loss in nn.LOSSES.items() if loss.task == "classification")
N_CLASSES = 4  # for softmax; sigmoid_bce always has one output


def naive_loss_sum(name: str, logits: np.ndarray, targets: np.ndarray) -> float:
    """The summed loss straight from its definition (no stabilising tricks)."""
    if name == "softmax_cross_entropy":
        total = 0.0
        for row, y in zip(logits, targets):
            exps = [math.exp(v) for v in row]
            total += -math.log(exps[int(y)] / sum(exps))
        return total
    if name == "sigmoid_bce":
        total = 0.0
        for z, t in zip(logits[:, 0], targets[:, 0]):
            s = 1.0 / (1.0 + math.exp(-z))
            total += -t * math.log(s) - (1 - t) * math.log(1 - s)
        return total
    raise AssertionError(f"add a naive formula for loss {name!r}")


def naive_regression_loss_sum(name: str, z: np.ndarray, t: np.ndarray) -> float:
    total = 0.0
    for zi, ti in zip(z[:, 0], t[:, 0]):
        r = zi - ti
        total += {"mse": lambda: r * r,
                  "huber": lambda: 0.5 * r * r if abs(r) <= 1 else abs(r) - 0.5,
                  "poisson": lambda: math.exp(zi) - ti * zi}[name]()
    return total


def make_regression_batch(name: str, rng, batch: int = 8):
    loss = nn.REGRESSION_LOSSES[name]()
    z = rng.normal(scale=1.5, size=(batch, 1))
    # counts for Poisson; real values elsewhere, some within Huber's delta of z and some not
    t = rng.poisson(2.0, size=batch).astype(float) if name == "poisson" else \
        z[:, 0] + rng.choice([-3.0, -0.4, 0.3, 2.5], size=batch)
    return loss, z, loss.targets(np, t, np.float64)


@pytest.mark.parametrize("name", sorted(nn.REGRESSION_LOSSES))
def test_regression_loss_forward_matches_its_definition(name):
    loss, z, t = make_regression_batch(name, np.random.default_rng(20))
    total, (squared, absolute), _ = loss_forward(loss, z, t, squared=True)
    assert total == pytest.approx(naive_regression_loss_sum(name, z, t), rel=1e-12)
    prediction = np.exp(z) if name == "poisson" else z
    assert squared == pytest.approx(float(((prediction - t) ** 2).sum()), rel=1e-12)
    assert absolute == pytest.approx(float(np.abs(prediction - t).sum()), rel=1e-12)


@pytest.mark.parametrize("name", sorted(nn.REGRESSION_LOSSES))
def test_regression_loss_backward_matches_finite_differences(name):
    loss, z, t = make_regression_batch(name, np.random.default_rng(21))
    _, _, cache = loss_forward(loss, z, t)
    grad = loss.backward(np, cache, t, 1.0 / len(z), out=np.empty_like(z))
    numeric = numeric_grad(lambda: loss_forward(loss, z, t)[0] / len(z), z)
    assert rel_error(grad, numeric) < TOL


@pytest.mark.parametrize("name", sorted(nn.REGRESSION_LOSSES))
def test_regression_losses_keep_a_groups_members_apart(name):
    """Over leading axes (G, B, 1) each member gets its own sums and gradient."""
    rng = np.random.default_rng(22)
    batches = [make_regression_batch(name, rng) for _ in range(3)]
    loss = batches[0][0]
    z, t = np.stack([b[1] for b in batches]), np.stack([b[2] for b in batches])
    cache = loss.new_cache(np, 8, 1, np.float64, lead=(3,))
    total, *errors = loss.forward(np, z, t, cache)
    grad = loss.backward(np, cache, t, 0.5, out=np.empty_like(z))
    for g, (_, zg, tg) in enumerate(batches):
        one, one_errors, one_cache = loss_forward(loss, zg, tg, squared=True)
        assert total[g] == pytest.approx(one, rel=1e-12)
        assert [e[g] for e in errors] == pytest.approx(one_errors, rel=1e-12)
        np.testing.assert_allclose(grad[g], loss.backward(np, one_cache, tg, 0.5,
                                                          out=np.empty_like(zg)), rtol=1e-14)


def make_loss_batch(name: str, rng, batch: int = 6):
    loss = nn.LOSSES[name]()
    c = loss.outputs(N_CLASSES)
    logits = rng.normal(scale=2.0, size=(batch, c))
    n_labels = N_CLASSES if c > 1 else 2
    labels = rng.integers(0, n_labels, size=batch)
    labels[:n_labels] = np.arange(n_labels)  # every class appears
    targets = loss.targets(np, labels, np.float64)
    return loss, logits, targets, labels


def loss_forward(loss, logits, targets, squared=False):
    """(summed loss, tally, cache): a classifier's count of correct predictions, or a
    regression loss's summed (squared, absolute) errors (`squared`)."""
    cache = loss.new_cache(np, logits.shape[0], logits.shape[1], logits.dtype)
    total, *tallies = loss.forward(np, logits, targets, cache)
    assert len(tallies) == len(loss.tallies)
    return float(total), tuple(map(float, tallies)) if squared else int(tallies[0]), cache


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_loss_forward_matches_naive_formula(name):
    loss, logits, targets, _ = make_loss_batch(name, np.random.default_rng(10))
    total, _, _ = loss_forward(loss, logits, targets)
    assert total == pytest.approx(naive_loss_sum(name, logits, targets), rel=1e-12)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_loss_backward_matches_finite_differences(name):
    rng = np.random.default_rng(11)
    loss, logits, targets, _ = make_loss_batch(name, rng)
    batch = logits.shape[0]
    _, _, cache = loss_forward(loss, logits, targets)
    grad = loss.backward(np, cache, targets, 1.0 / batch, out=np.empty_like(logits))
    numeric = numeric_grad(lambda: loss_forward(loss, logits, targets)[0] / batch, logits)
    assert rel_error(grad, numeric) < TOL


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_loss_backward_scale_is_linear(name):
    loss, logits, targets, _ = make_loss_batch(name, np.random.default_rng(12))
    _, _, cache = loss_forward(loss, logits, targets)
    g1 = loss.backward(np, cache, targets, 1.0, out=np.empty_like(logits))
    g3 = loss.backward(np, cache, targets, 0.25, out=np.empty_like(logits))
    np.testing.assert_allclose(g3, 0.25 * g1, rtol=1e-14, atol=1e-16)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_loss_correct_counts_predictions(name):
    loss, logits, targets, labels = make_loss_batch(name, np.random.default_rng(13), batch=40)
    _, correct, _ = loss_forward(loss, logits, targets)
    if logits.shape[1] > 1:
        predicted = np.argmax(logits, axis=1)
    else:
        predicted = (logits[:, 0] > 0).astype(int)
    assert correct == int(np.sum(predicted == labels))
    assert 0 < correct < 40  # a meaningful check: some right, some wrong


def test_softmax_huge_logits_are_stable():
    loss = nn.make_loss("softmax_cross_entropy", 3)
    logits = np.array([
        [1e4, 0.0, -1e4],
        [1e4, 0.0, -1e4],
        [1e30, -1e30, 0.0],
        [-1e4, -1e4, -1e4 + 1.0],
    ])
    targets = np.array([0, 2, 1, 2])
    with np.errstate(over="raise", invalid="raise"):
        total, correct, cache = loss_forward(loss, logits, targets)
        grad = loss.backward(np, cache, targets, 1.0, out=np.empty_like(logits))
    # per row: 0 (confident and right), 2e4 (confident, wrong by 2e4), 2e30, and the last row
    # is -log(e / (2 + e)) = log(1 + 2/e) with the shift-invariance of softmax
    expected = 0.0 + 2e4 + 2e30 + math.log(1 + 2 / math.e)
    assert math.isfinite(total)
    assert total == pytest.approx(expected, rel=1e-12)
    assert correct == 2  # rows 0 and 3
    assert np.all(np.isfinite(grad))
    p_last = np.array([1.0, 1.0, math.e]) / (2 + math.e)
    expected_grad = np.array([
        [0.0, 0.0, 0.0],   # softmax = onehot(0), target 0
        [1.0, 0.0, -1.0],  # softmax = onehot(0), target 2
        [1.0, -1.0, 0.0],  # softmax = onehot(0), target 1
        p_last - np.array([0.0, 0.0, 1.0]),
    ])
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-12, atol=1e-300)


def test_bce_huge_logits_are_stable():
    loss = nn.make_loss("sigmoid_bce", 2)
    logits = np.array([[1e4], [1e4], [-1e4], [-1e4], [1e30], [-1e30]])
    targets = np.array([[1.0], [0.0], [0.0], [1.0], [0.0], [0.0]])
    with np.errstate(over="raise", invalid="raise"):
        total, correct, cache = loss_forward(loss, logits, targets)
        grad = loss.backward(np, cache, targets, 1.0, out=np.empty_like(logits))
    # limits: right and confident -> 0; wrong by |z| -> |z|
    assert math.isfinite(total)
    assert total == pytest.approx(0.0 + 1e4 + 0.0 + 1e4 + 1e30 + 0.0, rel=1e-12)
    assert correct == 3  # rows 0, 2 and 5
    np.testing.assert_array_equal(grad, [[0.0], [1.0], [0.0], [-1.0], [1.0], [0.0]])


def test_probabilities_sum_to_one():
    rng = np.random.default_rng(14)
    for name in LOSS_NAMES:
        loss, logits, _, _ = make_loss_batch(name, rng)
        p = loss.probabilities(np, logits)
        assert p.shape[0] == logits.shape[0]
        np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# Linear
# ---------------------------------------------------------------------------------------------


def test_linear_backward_matches_finite_differences():
    rng = np.random.default_rng(20)
    batch, n_in, n_out = 5, 4, 3
    w, b = rng.normal(size=(n_out, n_in)), rng.normal(size=n_out)
    x = rng.normal(size=(batch, n_in))
    g = rng.normal(size=(batch, n_out))  # upstream gradient dL/dz
    layer = nn.Linear(w, b, np.empty_like(w), np.empty_like(b))

    def objective() -> float:  # sum(G * (x W^T + b)), with the bias added as the model does
        z = layer.forward(ops, x, out=np.empty((batch, n_out)))
        return float(np.sum(g * (z + b)))

    # forward is x W^T (the bias is fused into the activation later)
    np.testing.assert_allclose(layer.forward(ops, x, out=np.empty((batch, n_out))), x @ w.T)

    dx = layer.backward(ops, x, g, dx_out=np.empty_like(x))
    assert rel_error(layer.grad_weight, numeric_grad(objective, w)) < TOL
    assert rel_error(layer.grad_bias, numeric_grad(objective, b)) < TOL
    assert rel_error(dx, numeric_grad(objective, x)) < TOL
    assert layer.in_features == n_in and layer.out_features == n_out


def test_linear_backward_without_dx():
    rng = np.random.default_rng(21)
    w, b = rng.normal(size=(3, 2)), rng.normal(size=3)
    layer = nn.Linear(w, b, np.empty_like(w), np.empty_like(b))
    x, g = rng.normal(size=(4, 2)), rng.normal(size=(4, 3))
    assert layer.backward(ops, x, g) is None
    np.testing.assert_allclose(layer.grad_weight, g.T @ x)
    np.testing.assert_allclose(layer.grad_bias, g.sum(axis=0))


# ---------------------------------------------------------------------------------------------
# The whole MLP
# ---------------------------------------------------------------------------------------------

INIT_NAMES = sorted(nn.INITIALIZERS)
MODEL_CASES = {
    "softmax_cross_entropy": ([5, 7, 6, 4], 4),  # sizes, n_classes
    "sigmoid_bce": ([3, 5, 4, 1], 2),
}


def pre_activations(model: MLP, x: np.ndarray) -> list[np.ndarray]:
    """The hidden layers' z = a W^T + b, recomputed plainly (to check for kinks)."""
    zs, a = [], x
    for layer in model.layers[:-1]:
        z = a @ layer.weight.T + layer.bias
        zs.append(z)
        a = act_forward(model.activation, z)
    return zs


@pytest.mark.parametrize("loss_name", sorted(MODEL_CASES))
@pytest.mark.parametrize("init", INIT_NAMES)
@pytest.mark.parametrize("act_name", ACTIVATION_NAMES)
def test_mlp_gradients_match_finite_differences(act_name, init, loss_name):
    sizes, n_classes = MODEL_CASES[loss_name]
    seed = 100 + 10 * ACTIVATION_NAMES.index(act_name) + INIT_NAMES.index(init)
    rng = np.random.default_rng(seed)
    model = MLP(ops, sizes, nn.make_activation(act_name), nn.make_loss(loss_name, n_classes),
                np.float64)
    model.initialize(init, rng)
    for layer in model.layers:  # non-zero biases, so their role in the forward pass is checked
        layer.bias[...] = rng.normal(scale=0.3, size=layer.bias.shape)

    batch = 6
    ws = model.workspace(batch)
    x = rng.normal(size=(batch, sizes[0]))
    ws.x[...] = x
    labels = rng.integers(0, n_classes, size=batch)
    targets = model.loss.targets(np, labels, np.float64)

    # finite differences are only valid away from the kink of relu / leaky_relu
    if act_name in ("relu", "leaky_relu"):
        closest = min(float(np.min(np.abs(z))) for z in pre_activations(model, x))
        assert closest > 1e-4, "pick another seed: a pre-activation sits on the kink"

    loss_sum, _ = model.loss_and_grad(ws, targets, 1.0 / batch)
    grads = {name: np.array(g) for name, g in model.grads.items()}

    def mean_loss() -> float:
        total, _ = model.ops.loss_forward(model.loss, model.forward(ws), targets, ws.loss_cache)
        return float(total) / batch

    assert float(loss_sum) / batch == pytest.approx(mean_loss(), rel=1e-14)
    assert set(grads) == set(model.params)
    for name, p in model.params.items():
        numeric = numeric_grad(mean_loss, p, eps=MLP_EPS)
        err = rel_error(grads[name], numeric, tiny=MLP_TINY)
        assert err < TOL, f"{name}: relative error {err:.2e}"


# ---------------------------------------------------------------------------------------------
# One step worked by hand
# ---------------------------------------------------------------------------------------------


def test_hand_worked_single_sgd_step():
    """A 2-2-1 tanh network with sigmoid + BCE, one input x = (1, 2) with label t = 1,
    one SGD step with lr = 0.5, every number worked out with plain floats."""
    model = MLP(ops, [2, 2, 1], nn.make_activation("tanh"), nn.make_loss("sigmoid_bce", 2),
                np.float64)
    W0 = [[0.5, -0.3], [0.2, 0.4]]
    b0 = [0.3, -0.2]
    W1 = [0.7, -0.6]
    b1 = 0.05
    x = [1.0, 2.0]
    t = 1.0
    lr = 0.5
    model.params["layers.0.weight"][...] = W0
    model.params["layers.0.bias"][...] = b0
    model.params["layers.1.weight"][...] = [W1]
    model.params["layers.1.bias"][...] = [b1]

    # -- forward --
    # z0_0 = 0.5*1 + (-0.3)*2 + 0.3 = 0.5 - 0.6 + 0.3 = 0.2
    # z0_1 = 0.2*1 + 0.4*2 - 0.2 = 0.2 + 0.8 - 0.2 = 0.8
    z0 = [W0[j][0] * x[0] + W0[j][1] * x[1] + b0[j] for j in range(2)]
    assert z0 == pytest.approx([0.2, 0.8], abs=1e-15)
    # h = tanh(z0) = (tanh 0.2, tanh 0.8) = (0.197375320224904, 0.664036770267849)
    h = [math.tanh(v) for v in z0]
    assert h == pytest.approx([0.197375320224904, 0.664036770267849], abs=1e-15)
    # z = 0.7*h_0 - 0.6*h_1 + 0.05 = 0.138162724157433 - 0.398422062160709 + 0.05
    #   = -0.210259338003277
    z = W1[0] * h[0] + W1[1] * h[1] + b1
    assert z == pytest.approx(-0.210259338003277, abs=1e-14)
    # s = 1 / (1 + e^{-z}) = 1 / (1 + e^{0.210259338}) = 1 / (1 + 1.234003...) = 0.447627966374309
    s = 1.0 / (1.0 + math.exp(-z))
    assert s == pytest.approx(0.447627966374309, abs=1e-14)
    # loss = -t log s - (1 - t) log(1 - s) = -log(0.447627966374309) = 0.803792823767186
    loss = -t * math.log(s) - (1 - t) * math.log(1 - s)
    assert loss == pytest.approx(0.803792823767186, abs=1e-14)

    # -- backward (batch of one, so the mean is the single loss) --
    # dL/dz = s - t = 0.447627966374309 - 1 = -0.552372033625691
    dz = s - t
    # dL/dW1 = dz * h = (-0.552372 * 0.197375, -0.552372 * 0.664037)
    #        = (-0.109024607020152, -0.366795341195087);  dL/db1 = dz
    dW1 = [dz * h[0], dz * h[1]]
    assert dW1 == pytest.approx([-0.109024607020152, -0.366795341195087], abs=1e-14)
    db1 = dz
    # dL/dh = dz * W1 = (-0.552372 * 0.7, -0.552372 * -0.6) = (-0.386660423537983, 0.331423220175414)
    dh = [dz * W1[0], dz * W1[1]]
    # tanh' = 1 - h^2 = (1 - 0.038956..., 1 - 0.440944...) = (0.961042982966117, 0.559055167732244)
    # dL/dz0 = dh * (1 - h^2) = (-0.371597286831886, 0.185283863945527)
    dz0 = [dh[j] * (1 - h[j] ** 2) for j in range(2)]
    assert dz0 == pytest.approx([-0.371597286831886, 0.185283863945527], abs=1e-14)
    # dL/dW0[j][i] = dz0_j * x_i:  [[-0.371597, -0.743195], [0.185284, 0.370568]]
    dW0 = [[dz0[j] * x[i] for i in range(2)] for j in range(2)]
    db0 = dz0

    # -- SGD update p <- p - lr * g, lr = 0.5 --
    # W0 <- [[0.5 + 0.5*0.371597, -0.3 + 0.5*0.743195], [0.2 - 0.5*0.185284, 0.4 - 0.5*0.370568]]
    #     = [[0.685798643415943, 0.071597286831886], [0.107358068027237, 0.214716136054473]]
    # b0 <- (0.3 + 0.5*0.371597, -0.2 - 0.5*0.185284) = (0.485798643415943, -0.292641931972763)
    # W1 <- (0.7 + 0.5*0.109025, -0.6 + 0.5*0.366795) = (0.754512303510076, -0.416602329402456)
    # b1 <- 0.05 + 0.5*0.552372 = 0.326186016812845
    new_W0 = [[W0[j][i] - lr * dW0[j][i] for i in range(2)] for j in range(2)]
    new_b0 = [b0[j] - lr * db0[j] for j in range(2)]
    new_W1 = [W1[i] - lr * dW1[i] for i in range(2)]
    new_b1 = b1 - lr * db1
    assert new_W0[0] == pytest.approx([0.685798643415943, 0.071597286831886], abs=1e-14)
    assert new_W0[1] == pytest.approx([0.107358068027237, 0.214716136054473], abs=1e-14)
    assert new_b0 == pytest.approx([0.485798643415943, -0.292641931972763], abs=1e-14)
    assert new_W1 == pytest.approx([0.754512303510076, -0.416602329402456], abs=1e-14)
    assert new_b1 == pytest.approx(0.326186016812845, abs=1e-14)

    # -- the library does the same --
    ws = model.workspace(1)
    ws.x[...] = [x]
    targets = model.loss.targets(np, np.array([1]), np.float64)
    loss_sum, correct = model.loss_and_grad(ws, targets, 1.0)
    assert float(loss_sum) == pytest.approx(loss, rel=1e-13)
    assert int(correct) == 0  # z < 0 predicts class 0, the label is 1
    np.testing.assert_allclose(ws.acts[1], [h], rtol=1e-13)
    np.testing.assert_allclose(ws.acts[2], [[z]], rtol=1e-13)
    np.testing.assert_allclose(model.grads["layers.0.weight"], dW0, rtol=1e-13)
    np.testing.assert_allclose(model.grads["layers.0.bias"], db0, rtol=1e-13)
    np.testing.assert_allclose(model.grads["layers.1.weight"], [dW1], rtol=1e-13)
    np.testing.assert_allclose(model.grads["layers.1.bias"], [db1], rtol=1e-13)

    SGD(ops, model.params).step(model.params, model.grads, lr)
    np.testing.assert_allclose(model.params["layers.0.weight"], new_W0, rtol=1e-13)
    np.testing.assert_allclose(model.params["layers.0.bias"], new_b0, rtol=1e-13)
    np.testing.assert_allclose(model.params["layers.1.weight"], [new_W1], rtol=1e-13)
    np.testing.assert_allclose(model.params["layers.1.bias"], [new_b1], rtol=1e-13)
