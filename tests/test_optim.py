"""Optimizer steps against their written formulas, their state, and learning-rate schedules."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest

from mlptrain.backend import get_backend
from mlptrain.config import OptimizerConfig, ScheduleConfig
from mlptrain.errors import ConfigError, TrainingError
from mlptrain.model import Parameters
from mlptrain.backend.protocol import Backend
from mlptrain.optim import SGD, Adam, OptimizerKind, OptimizerSpec, RMSprop, build_optimizer
from schedule_rates import learning_rate

ops = get_backend("cpu")

SHAPES = {"layers.0.weight": (4, 3), "layers.0.bias": (4,), "layers.1.weight": (2, 4),
          "layers.1.bias": (2,)}
N_STEPS = 5
LR = 0.05


def random_params(rng) -> dict[str, np.ndarray]:
    return {name: rng.normal(size=shape) for name, shape in SHAPES.items()}


def gradient_sequence(rng, n: int = N_STEPS) -> list[dict[str, np.ndarray]]:
    return [{name: rng.normal(size=shape) for name, shape in SHAPES.items()} for _ in range(n)]


def run_library(opt_factory, params0, grad_seq, lr=LR):
    """Steps the library's optimizer on a copy of params0; returns params after each step."""
    params = {k: v.copy() for k, v in params0.items()}
    opt = opt_factory(params)
    history = []
    for grads in grad_seq:
        opt.step(params, {k: g.copy() for k, g in grads.items()}, lr)  # grads are scratch
        history.append({k: v.copy() for k, v in params.items()})
    return history


def assert_histories_close(got, expected, rtol=1e-12, atol=1e-14):
    assert len(got) == len(expected)
    for step, (g, e) in enumerate(zip(got, expected)):
        assert set(g) == set(e)
        for name in e:
            np.testing.assert_allclose(g[name], e[name], rtol=rtol, atol=atol,
                                       err_msg=f"step {step + 1}, {name}")


# -- reference implementations, one parameter at a time ----------------------------------------


def ref_sgd(params0, grad_seq, lr=LR, momentum=0.0, nesterov=False, weight_decay=0.0):
    params = {k: v.copy() for k, v in params0.items()}
    velocity = {k: np.zeros_like(v) for k, v in params0.items()}
    history = []
    for grads in grad_seq:
        for name in params:
            g = grads[name] + weight_decay * params[name]  # L2: gradient of wd/2 |p|^2
            if momentum:
                velocity[name] = momentum * velocity[name] + g
                direction = g + momentum * velocity[name] if nesterov else velocity[name]
            else:
                direction = g
            params[name] = params[name] - lr * direction
        history.append({k: v.copy() for k, v in params.items()})
    return history


def ref_adam(params0, grad_seq, lr=LR, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
             decoupled=False):
    params = {k: v.copy() for k, v in params0.items()}
    m = {k: np.zeros_like(v) for k, v in params0.items()}
    v = {k: np.zeros_like(p) for k, p in params0.items()}
    history = []
    for t, grads in enumerate(grad_seq, start=1):
        for name in params:
            p, g = params[name], grads[name]
            if decoupled:
                p = p * (1 - lr * weight_decay)  # AdamW: decay the weights themselves
            else:
                g = g + weight_decay * p  # Adam with L2 on the gradient
            m[name] = beta1 * m[name] + (1 - beta1) * g
            v[name] = beta2 * v[name] + (1 - beta2) * g * g
            m_hat = m[name] / (1 - beta1**t)
            v_hat = v[name] / (1 - beta2**t)
            params[name] = p - lr * m_hat / (np.sqrt(v_hat) + eps)
        history.append({k: val.copy() for k, val in params.items()})
    return history


def ref_rmsprop(params0, grad_seq, lr=LR, rho=0.99, eps=1e-8, weight_decay=0.0):
    params = {k: v.copy() for k, v in params0.items()}
    v = {k: np.zeros_like(p) for k, p in params0.items()}
    history = []
    for grads in grad_seq:
        for name in params:
            g = grads[name] + weight_decay * params[name]
            v[name] = rho * v[name] + (1 - rho) * g * g
            params[name] = params[name] - lr * g / (np.sqrt(v[name]) + eps)
        history.append({k: val.copy() for k, val in params.items()})
    return history


# -- SGD ----------------------------------------------------------------------------------------


def test_sgd_plain_is_p_minus_lr_g():
    rng = np.random.default_rng(0)
    params0, grad_seq = random_params(rng), gradient_sequence(rng)
    got = run_library(lambda p: SGD(ops, p), params0, grad_seq)
    # written out for the first step: p1 = p0 - lr g0
    for name in SHAPES:
        np.testing.assert_allclose(got[0][name], params0[name] - LR * grad_seq[0][name],
                                   rtol=1e-14, atol=1e-15)
    assert_histories_close(got, ref_sgd(params0, grad_seq))


def test_sgd_momentum():
    rng = np.random.default_rng(1)
    params0, grad_seq = random_params(rng), gradient_sequence(rng)
    got = run_library(lambda p: SGD(ops, p, momentum=0.9), params0, grad_seq)
    assert_histories_close(got, ref_sgd(params0, grad_seq, momentum=0.9))
    # second step by hand: v1 = g0, v2 = 0.9 g0 + g1, p2 = p0 - lr g0 - lr (0.9 g0 + g1)
    name = "layers.0.weight"
    g0, g1 = grad_seq[0][name], grad_seq[1][name]
    np.testing.assert_allclose(got[1][name], params0[name] - LR * g0 - LR * (0.9 * g0 + g1),
                               rtol=1e-13)


def test_sgd_nesterov():
    rng = np.random.default_rng(2)
    params0, grad_seq = random_params(rng), gradient_sequence(rng)
    got = run_library(lambda p: SGD(ops, p, momentum=0.8, nesterov=True), params0, grad_seq)
    assert_histories_close(got, ref_sgd(params0, grad_seq, momentum=0.8, nesterov=True))
    # first step by hand: v1 = g0, p1 = p0 - lr (g0 + 0.8 g0)
    name = "layers.1.bias"
    np.testing.assert_allclose(got[0][name], params0[name] - LR * 1.8 * grad_seq[0][name],
                               rtol=1e-13)
    # and it differs from classical momentum from the first step on
    classic = ref_sgd(params0, grad_seq, momentum=0.8)
    assert not np.allclose(got[0][name], classic[0][name])


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_weight_decay_adds_l2_gradient(momentum):
    rng = np.random.default_rng(3)
    params0, grad_seq = random_params(rng), gradient_sequence(rng)
    got = run_library(lambda p: SGD(ops, p, momentum=momentum, weight_decay=0.1),
                      params0, grad_seq)
    assert_histories_close(got, ref_sgd(params0, grad_seq, momentum=momentum, weight_decay=0.1))
    if momentum == 0.0:  # p1 = p0 - lr (g0 + wd p0)
        name = "layers.0.bias"
        np.testing.assert_allclose(
            got[0][name], params0[name] - LR * (grad_seq[0][name] + 0.1 * params0[name]),
            rtol=1e-14)


def test_sgd_zero_gradient_with_weight_decay_shrinks_weights():
    params = {"w": np.array([2.0, -4.0])}
    SGD(ops, params, weight_decay=0.5).step(params, {"w": np.zeros(2)}, 0.1)
    np.testing.assert_allclose(params["w"], [2.0 * 0.95, -4.0 * 0.95])


# -- Adam / AdamW -------------------------------------------------------------------------------


def test_adam_bias_corrected():
    rng = np.random.default_rng(4)
    params0, grad_seq = random_params(rng), gradient_sequence(rng)
    got = run_library(lambda p: Adam(ops, p), params0, grad_seq)
    assert_histories_close(got, ref_adam(params0, grad_seq))
    # with bias correction the first step moves every element by ~lr * sign(g)
    name = "layers.0.weight"
    step1 = params0[name] - got[0][name]
    g0 = grad_seq[0][name]
    np.testing.assert_allclose(step1, LR * g0 / (np.abs(g0) + 1e-8), rtol=1e-12)


def test_adam_custom_betas_and_l2_weight_decay():
    rng = np.random.default_rng(5)
    params0, grad_seq = random_params(rng), gradient_sequence(rng)
    got = run_library(lambda p: Adam(ops, p, beta1=0.5, beta2=0.9, eps=1e-3, weight_decay=0.2),
                      params0, grad_seq)
    assert_histories_close(got, ref_adam(params0, grad_seq, beta1=0.5, beta2=0.9, eps=1e-3,
                                         weight_decay=0.2))


def test_adamw_decoupled_weight_decay():
    rng = np.random.default_rng(6)
    params0, grad_seq = random_params(rng), gradient_sequence(rng)
    got = run_library(lambda p: Adam(ops, p, weight_decay=0.3, decoupled=True),
                      params0, grad_seq)
    expected = ref_adam(params0, grad_seq, weight_decay=0.3, decoupled=True)
    assert_histories_close(got, expected)
    # decoupled differs from the L2 form
    coupled = ref_adam(params0, grad_seq, weight_decay=0.3)
    assert not np.allclose(got[-1]["layers.0.weight"], coupled[-1]["layers.0.weight"])


def test_adamw_from_config_and_adam_from_config():
    rng = np.random.default_rng(7)
    params0, grad_seq = random_params(rng), gradient_sequence(rng)
    cfg = OptimizerConfig(name="adamw", beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.1)
    got = run_library(lambda p: build_optimizer(OptimizerSpec.from_config(cfg), ops, p), params0, grad_seq)
    assert_histories_close(got, ref_adam(params0, grad_seq, beta1=0.8, beta2=0.99, eps=1e-6,
                                         weight_decay=0.1, decoupled=True))
    cfg = OptimizerConfig(name="adam", weight_decay=0.1)
    got = run_library(lambda p: build_optimizer(OptimizerSpec.from_config(cfg), ops, p), params0, grad_seq)
    assert_histories_close(got, ref_adam(params0, grad_seq, weight_decay=0.1))


def test_rmsprop_divides_by_the_root_mean_square():
    rng = np.random.default_rng(14)
    params0, grad_seq = random_params(rng), gradient_sequence(rng)
    got = run_library(lambda p: RMSprop(ops, p), params0, grad_seq)
    assert_histories_close(got, ref_rmsprop(params0, grad_seq))
    # the first step by hand: v1 = (1 - rho) g0^2, so p1 = p0 - lr g0 / (0.1 |g0| + eps)
    name = "layers.0.weight"
    g0 = grad_seq[0][name]
    np.testing.assert_allclose(got[0][name], params0[name] - LR * g0 / (0.1 * np.abs(g0) + 1e-8),
                               rtol=1e-12)


def test_rmsprop_from_config_with_its_rho_and_l2_weight_decay():
    rng = np.random.default_rng(15)
    params0, grad_seq = random_params(rng), gradient_sequence(rng)
    cfg = OptimizerConfig(name="rmsprop", rho=0.9, eps=1e-4, weight_decay=0.05)
    got = run_library(lambda p: build_optimizer(OptimizerSpec.from_config(cfg), ops, p),
                      params0, grad_seq)
    assert_histories_close(got, ref_rmsprop(params0, grad_seq, rho=0.9, eps=1e-4,
                                            weight_decay=0.05))


@pytest.mark.parametrize("make,reference", [
    (lambda p, wd: Adam(ops, p, weight_decay=wd), ref_adam),
    (lambda p, wd: Adam(ops, p, weight_decay=wd, decoupled=True),
     lambda *a, **k: ref_adam(*a, **k, decoupled=True)),
    (lambda p, wd: RMSprop(ops, p, weight_decay=wd), ref_rmsprop)], ids=["adam", "adamw",
                                                                         "rmsprop"])
def test_a_groups_rates_and_decays_step_each_member_by_its_formula(make, reference):
    """A group's arrays (G, ...) with a rate and a decay per member (G,): each member moves
    as its formula moves it alone (the members share Adam's step count)."""
    rng = np.random.default_rng(17)
    lrs, decays = np.array([0.05, 0.01, 0.2]), np.array([0.0, 0.1, 0.3])
    params0 = {name: rng.normal(size=(3, *shape)) for name, shape in SHAPES.items()}
    grad_seq = [{name: rng.normal(size=(3, *shape)) for name, shape in SHAPES.items()}
                for _ in range(N_STEPS)]
    got = run_library(lambda p: make(p, decays), params0, grad_seq, lr=lrs)
    for g in range(3):
        member = lambda arrays: {name: a[g] for name, a in arrays.items()}  # noqa: E731
        expected = reference(member(params0), [member(grads) for grads in grad_seq],
                             lr=lrs[g], weight_decay=decays[g])
        assert_histories_close([member(h) for h in got], expected)


def test_a_group_resumes_adam_members_only_at_one_step_count():
    """A group's members share t: their checkpoints must agree on it (a group resumes them
    from one epoch end, so they do)."""
    adam = Adam(ops, random_params(np.random.default_rng(18)))
    with pytest.raises(TrainingError, match=r"step counts differ \(\[10, 12\]\)"):
        adam.load_members({0: {"t": np.array(10)}, 2: {"t": np.array(12)}}, [])


@pytest.mark.parametrize("momentum,nesterov,decay", [(0.0, False, 0.0), (0.9, False, 0.01),
                                                     (0.8, True, 0.02)])
def test_the_numpy_sgd_passes_compute_the_reference_formula(momentum, nesterov, decay):
    """NumPy's blocked BLAS passes (a flat buffer, and a group's per-member rates and decays)
    against protocol.Backend's formula, which CuPy's kernel also states."""
    rng = np.random.default_rng(16)
    reference = type("Reference", (Backend,), {"xp": np})()
    for shape, lr, wd in [((100_003,), 0.05, decay),
                          ((3, 40, 7), np.array([0.1, 0.01, 0.3]), np.array([0.0, decay, 0.1]))]:
        p, g, v = (rng.normal(size=shape) for _ in range(3))
        arrays = [[a.copy() for a in (p, g, v)] for _ in range(2)]
        for backend, (pp, gg, vv) in zip((ops, reference), arrays):
            backend.sgd_update(pp, gg, vv if momentum else None, lr, momentum, nesterov, wd)
        np.testing.assert_allclose(arrays[0][0], arrays[1][0], rtol=1e-13, atol=1e-15)
        if momentum:
            np.testing.assert_allclose(arrays[0][2], arrays[1][2], rtol=1e-13, atol=1e-15)


def test_sgd_from_config():
    rng = np.random.default_rng(8)
    params0, grad_seq = random_params(rng), gradient_sequence(rng)
    cfg = OptimizerConfig(name="sgd", momentum=0.5, nesterov=True, weight_decay=0.01)
    got = run_library(lambda p: build_optimizer(OptimizerSpec.from_config(cfg), ops, p), params0, grad_seq)
    assert_histories_close(got, ref_sgd(params0, grad_seq, momentum=0.5, nesterov=True,
                                        weight_decay=0.01))


def test_float32_params_stay_float32():
    rng = np.random.default_rng(9)
    for factory in (lambda p: SGD(ops, p, momentum=0.9),
                    lambda p: Adam(ops, p, weight_decay=0.1, decoupled=True)):
        params = {k: v.astype(np.float32) for k, v in random_params(rng).items()}
        opt = factory(params)
        grads = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()}
        opt.step(params, grads, 0.01)
        assert all(p.dtype == np.float32 for p in params.values())


# -- state ----------------------------------------------------------------------------------------

STATE_CASES = {
    "sgd_momentum": lambda p: SGD(ops, p, momentum=0.9, weight_decay=0.01),
    "sgd_nesterov": lambda p: SGD(ops, p, momentum=0.7, nesterov=True),
    "adam": lambda p: Adam(ops, p, weight_decay=0.01),
    "adamw": lambda p: Adam(ops, p, weight_decay=0.01, decoupled=True),
    "rmsprop": lambda p: RMSprop(ops, p, rho=0.9, weight_decay=0.01),
}


@pytest.mark.parametrize("case", sorted(STATE_CASES))
def test_state_dict_round_trip_continues_identically(case):
    factory = STATE_CASES[case]
    rng = np.random.default_rng(10)
    params0, grad_seq = random_params(rng), gradient_sequence(rng, 6)

    # uninterrupted: 6 steps
    straight = run_library(factory, params0, grad_seq)

    # interrupted: 3 steps, save, a fresh optimizer loads the state and does 3 more
    params = {k: v.copy() for k, v in params0.items()}
    first = factory(params)
    for grads in grad_seq[:3]:
        first.step(params, {k: g.copy() for k, g in grads.items()}, LR)
    state = first.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    saved = {k: np.array(v) for k, v in state.items()}
    np.savez(io.BytesIO(), **state)  # storable as .npz
    # the saved state is a copy: stepping the old optimizer does not change it
    first.step({k: v.copy() for k, v in params.items()},
               {k: g.copy() for k, g in grad_seq[3].items()}, LR)
    for k in saved:
        np.testing.assert_array_equal(state[k], saved[k])

    second = factory(params)
    second.load_state_dict(state)
    for grads in grad_seq[3:]:
        second.step(params, {k: g.copy() for k, g in grads.items()}, LR)
    for name in SHAPES:
        np.testing.assert_array_equal(params[name], straight[-1][name])


def test_adam_state_counts_steps():
    rng = np.random.default_rng(11)
    params = random_params(rng)
    opt = Adam(ops, params)
    for grads in gradient_sequence(rng, 3):
        opt.step(params, grads, LR)
    state = opt.state_dict()
    assert int(state["t"]) == 3
    assert set(state) == {"t"} | {f"m.{n}" for n in SHAPES} | {f"v.{n}" for n in SHAPES}


# -- bad hyperparameters ------------------------------------------------------------------------

BAD_CONFIGS = {
    "sgd_momentum_1": OptimizerConfig(name="sgd", momentum=1.0),
    "sgd_momentum_negative": OptimizerConfig(name="sgd", momentum=-0.1),
    "sgd_nesterov_without_momentum": OptimizerConfig(name="sgd", nesterov=True),
    "sgd_negative_weight_decay": OptimizerConfig(name="sgd", weight_decay=-0.01),
    "adam_beta1_1": OptimizerConfig(name="adam", beta1=1.0),
    "adam_beta2_1": OptimizerConfig(name="adam", beta2=1.0),
    "adam_eps_0": OptimizerConfig(name="adam", eps=0.0),
    "adam_negative_weight_decay": OptimizerConfig(name="adam", weight_decay=-1.0),
    "adamw_beta1_1": OptimizerConfig(name="adamw", beta1=1.0),
    "adamw_eps_0": OptimizerConfig(name="adamw", eps=0.0),
    "rmsprop_eps_0": OptimizerConfig(name="rmsprop", eps=0.0),
    "rmsprop_negative_weight_decay": OptimizerConfig(name="rmsprop", weight_decay=-1.0),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_hyperparameters_raise_config_error(case):
    params = random_params(np.random.default_rng(12))
    with pytest.raises(ConfigError):
        build_optimizer(OptimizerSpec.from_config(BAD_CONFIGS[case]), ops, params)


def test_bad_hyperparameter_messages_name_the_parameter():
    params = random_params(np.random.default_rng(13))
    with pytest.raises(ConfigError, match="momentum"):
        SGD(ops, params, momentum=1.0)
    with pytest.raises(ConfigError, match="nesterov"):
        SGD(ops, params, nesterov=True)
    with pytest.raises(ConfigError, match="beta1"):
        Adam(ops, params, beta1=1.0)


def test_optimizers_declare_their_kind_and_state_buffers():
    """A device graph picks the update kernel from `kind` and its arguments from `buffers()`,
    never by probing attributes."""
    from mlptrain.model import Parameters as P

    flat = P.zeros(ops, SHAPES, np.float64)
    sgd = build_optimizer(OptimizerSpec(OptimizerKind.SGD, momentum=0.9), ops, flat)
    assert sgd.kind is OptimizerKind.SGD and sgd.buffers() == (sgd.velocity,)
    for kind in (OptimizerKind.ADAM, OptimizerKind.ADAMW):
        adam = build_optimizer(OptimizerSpec(kind), ops, flat)
        assert adam.kind is kind and adam.decoupled == (kind is OptimizerKind.ADAMW)
        assert adam.buffers() == (adam.m, adam.v)
        assert all(b.layout is flat.layout for b in adam.buffers())  # the fused update's layout
    rmsprop = build_optimizer(OptimizerSpec(OptimizerKind.RMSPROP), ops, flat)
    assert rmsprop.kind is OptimizerKind.RMSPROP and rmsprop.buffers() == (rmsprop.v,)
    assert {k.value for k in OptimizerKind} == {"sgd", "adam", "adamw", "rmsprop"}


# -- learning-rate schedules ----------------------------------------------------------------------

BASE = 0.4


def schedule(cfg, steps_per_epoch, epochs):
    return [learning_rate(cfg, BASE, s, steps_per_epoch, epochs)
            for s in range(steps_per_epoch * epochs)]


def test_constant_schedule():
    lrs = schedule(ScheduleConfig(name="constant"), 7, 3)
    assert lrs == [BASE] * 21


def test_step_schedule_multiplies_by_gamma_every_step_epochs():
    spe, epochs = 4, 10
    lrs = schedule(ScheduleConfig(name="step", step_epochs=3, gamma=0.5), spe, epochs)
    for s, lr in enumerate(lrs):
        epoch = s // spe
        assert lr == pytest.approx(BASE * 0.5 ** (epoch // 3), rel=1e-15), s
    # epochs 0-2 at base, 3-5 at base/2, 6-8 at base/4, 9 at base/8
    assert lrs[0] == lrs[3 * spe - 1] == BASE
    assert lrs[3 * spe] == pytest.approx(BASE / 2)
    assert lrs[-1] == pytest.approx(BASE / 8)


def test_cosine_starts_at_base_and_decreases_monotonically():
    spe, epochs = 5, 4
    cfg = ScheduleConfig(name="cosine", min_lr=0.01)
    lrs = schedule(cfg, spe, epochs)
    assert lrs[0] == pytest.approx(BASE, rel=1e-15)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert all(0.01 <= lr <= BASE for lr in lrs)
    # midway it is about halfway between base and min_lr (the cosine's centre, cos(pi/2) = 0)
    mid = learning_rate(cfg, BASE, spe * epochs // 2, spe, epochs)
    assert mid == pytest.approx((BASE + 0.01) / 2, rel=0.1)
    # a cosine, not a step: strictly between the two ends after the first step
    assert lrs[-1] < lrs[-2] < lrs[1] < BASE


def test_cosine_ends_at_min_lr_at_the_last_step():
    spe, epochs = 5, 4
    cfg = ScheduleConfig(name="cosine", min_lr=0.01)
    last = spe * epochs - 1
    assert learning_rate(cfg, BASE, last, spe, epochs) == pytest.approx(0.01, rel=1e-12)


def test_cosine_with_warmup_ends_at_min_lr():
    spe, epochs = 4, 5
    cfg = ScheduleConfig(name="cosine", warmup_epochs=1.0, min_lr=0.0)
    assert learning_rate(cfg, BASE, spe * epochs - 1, spe, epochs) == pytest.approx(0.0, abs=1e-12)


def test_cosine_after_warmup_starts_at_base_and_decreases():
    spe, epochs = 4, 5
    cfg = ScheduleConfig(name="cosine", warmup_epochs=1.0, min_lr=0.02)
    lrs = schedule(cfg, spe, epochs)
    warmup = spe
    assert lrs[warmup] == pytest.approx(BASE, rel=1e-15)
    after = lrs[warmup:]
    assert all(a >= b for a, b in zip(after, after[1:]))
    assert all(0.02 <= lr <= BASE for lr in after)


@pytest.mark.parametrize("name", ["constant", "step", "cosine"])
def test_warmup_is_a_linear_ramp(name):
    spe, epochs = 10, 6
    cfg = ScheduleConfig(name=name, warmup_epochs=1.5, step_epochs=2, gamma=0.5)
    warmup_steps = 15  # round(1.5 * 10)
    lrs = schedule(cfg, spe, epochs)
    for s in range(warmup_steps):
        assert lrs[s] == pytest.approx((s + 1) / warmup_steps * BASE, rel=1e-15), s
    assert lrs[0] == pytest.approx(BASE / 15)
    assert lrs[warmup_steps - 1] == pytest.approx(BASE)
    assert all(a < b for a, b in zip(lrs[:warmup_steps], lrs[1:warmup_steps]))


def test_warmup_then_constant():
    lrs = schedule(ScheduleConfig(name="constant", warmup_epochs=0.5), 8, 2)
    assert lrs[:4] == pytest.approx([0.1, 0.2, 0.3, 0.4])  # (s + 1) / 4 * 0.4
    assert lrs[4:] == [BASE] * 12


def test_schedules_are_pure_functions_of_the_step():
    cfg = ScheduleConfig(name="cosine", warmup_epochs=0.5, min_lr=0.001)
    first = schedule(cfg, 6, 3)
    backwards = [learning_rate(cfg, BASE, s, 6, 3) for s in reversed(range(18))][::-1]
    assert first == backwards


# -- the fused path: a model's flat Parameters updated in one call ------------------------------


def flat_params(rng):
    """A Parameters set shaped like SHAPES (views of one flat buffer), filled with normals."""
    params = Parameters.zeros(ops, SHAPES, np.float64)
    for p in params.values():
        p[...] = rng.normal(size=p.shape)
    return params


@pytest.mark.parametrize("make_opt", [
    lambda p: SGD(ops, p),
    lambda p: SGD(ops, p, momentum=0.9, weight_decay=0.01),
    lambda p: SGD(ops, p, momentum=0.8, nesterov=True),
    lambda p: Adam(ops, p, weight_decay=0.01),
    lambda p: Adam(ops, p, weight_decay=0.01, decoupled=True),
    lambda p: RMSprop(ops, p, weight_decay=0.01),
], ids=["sgd", "momentum+wd", "nesterov", "adam+l2", "adamw", "rmsprop"])
def test_flat_update_equals_name_by_name(make_opt):
    rng = np.random.default_rng(30)
    params = flat_params(rng)
    plain = {k: np.array(v) for k, v in params.items()}
    fused_opt, plain_opt = make_opt(params), make_opt(plain)
    assert isinstance(fused_opt.state_dict(), dict)
    for grads in gradient_sequence(rng):
        flat_grads = params.zeros_like(ops)
        for k, g in grads.items():
            flat_grads[k][...] = g
        fused_opt.step(params, flat_grads, LR)
        plain_opt.step(plain, {k: g.copy() for k, g in grads.items()}, LR)
    for k in SHAPES:
        np.testing.assert_allclose(params[k], plain[k], rtol=1e-14, atol=1e-15, err_msg=k)
    for k, v in fused_opt.state_dict().items():
        np.testing.assert_allclose(v, plain_opt.state_dict()[k], rtol=1e-14, atol=1e-15)
    # the padding between aligned parameters stays zero
    used = np.zeros(params.flat.shape, bool)
    for _, start, shape in params.layout:
        used[start:start + math.prod(shape)] = True
    assert not np.any(params.flat[~used])


def test_optimizer_state_shares_the_model_layout():
    params = flat_params(np.random.default_rng(31))
    opt = Adam(ops, params)
    assert opt.m.layout is params.layout and opt.m.flat.shape == params.flat.shape
    for name, p in params.items():
        assert opt.m[name].shape == p.shape and opt.m[name].strides == p.strides
