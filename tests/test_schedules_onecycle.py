"""The one-cycle learning-rate schedule and its mirrored momentum, against their formulas, and
the loop's use of them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlptrain import loop
from mlptrain.config import ScheduleConfig, parse_config
from mlptrain.experiment import prepare
from mlptrain.optim import SGD, build_optimizer
from schedule_rates import learning_rate, momentum

BASE = 0.4
SPE, EPOCHS = 10, 6  # steps per epoch, epochs: 60 steps


def one_cycle_reference(step, warmup, total, base, start, end_lr):
    """Written out: half a cosine from base * start up to base over `warmup` steps, then half a
    cosine from base down to end_lr, reaching it at the last step (total - 1)."""
    if step < warmup:
        lo = base * start
        return lo + (base - lo) * (1 - math.cos(math.pi * step / warmup)) / 2
    t = min((step - warmup) / (total - warmup - 1), 1.0)
    return end_lr + (base - end_lr) * (1 + math.cos(math.pi * t)) / 2


@pytest.mark.parametrize("warmup_epochs,min_lr,start", [(1.5, 0.0, 0.04), (2.0, 0.01, 0.1),
                                                         (0.0, 0.002, 0.5)])
def test_onecycle_values_follow_the_formula(warmup_epochs, min_lr, start):
    cfg = ScheduleConfig(name="onecycle", warmup_epochs=warmup_epochs, min_lr=min_lr,
                         start_factor=start)
    warmup = round(warmup_epochs * SPE)
    for step in range(SPE * EPOCHS):
        expected = one_cycle_reference(step, warmup, SPE * EPOCHS, BASE, start, min_lr)
        assert learning_rate(cfg, BASE, step, SPE, EPOCHS) == pytest.approx(expected, rel=1e-12)


def test_onecycle_landmarks():
    cfg = ScheduleConfig(name="onecycle", warmup_epochs=2.0, min_lr=0.001, start_factor=0.04)
    lr = [learning_rate(cfg, BASE, s, SPE, EPOCHS) for s in range(SPE * EPOCHS)]
    assert lr[0] == pytest.approx(BASE * 0.04)  # starts low
    assert lr[20] == pytest.approx(BASE)  # the peak, at the end of the warmup
    assert lr[10] == pytest.approx(BASE * (0.04 + 0.96 * 0.5))  # halfway up: cos(pi/2) = 0
    assert lr[-1] == pytest.approx(0.001)  # the last step reaches min_lr
    assert all(a < b for a, b in zip(lr[:20], lr[1:21]))
    assert all(a > b for a, b in zip(lr[20:], lr[21:]))


def test_momentum_mirrors_the_rate_under_onecycle():
    cfg = ScheduleConfig(name="onecycle", warmup_epochs=2.0, momentum_low=0.85)
    mu = [momentum(cfg, 0.95, s, SPE, EPOCHS) for s in range(SPE * EPOCHS)]
    assert mu[0] == pytest.approx(0.95)
    assert mu[20] == pytest.approx(0.85)  # lowest momentum at the highest rate
    assert mu[-1] == pytest.approx(0.95)
    assert mu[10] == pytest.approx(0.95 - 0.10 * 0.5)
    for s in range(SPE * EPOCHS):  # mu = base - (base - low) * (lr - lr_end) / (peak - lr_end)
        rise = learning_rate(ScheduleConfig(name="onecycle", warmup_epochs=2.0,
                                            start_factor=1e-300), 1.0, s, SPE, EPOCHS)
        assert mu[s] == pytest.approx(0.95 - 0.10 * rise, abs=1e-12)


@pytest.mark.parametrize("cfg", [ScheduleConfig(name="onecycle"),  # momentum_low = 0: fixed
                                 ScheduleConfig(name="cosine", momentum_low=0.8)])
def test_momentum_is_fixed_otherwise(cfg):
    assert {momentum(cfg, 0.9, s, SPE, EPOCHS) for s in range(60)} == {0.9}


def test_onecycle_is_a_config_choice():
    cfg = parse_config('[schedule]\nname = "onecycle"\nwarmup_epochs = 3\nmomentum_low = 0.85\n')
    assert cfg.schedule.name == "onecycle" and cfg.schedule.start_factor == 0.04


def test_the_loop_moves_sgd_momentum_step_by_step(monkeypatch):
    text = """
    [data]
    dataset = "xor"
    samples = 200
    [optimizer]
    momentum = 0.95
    nesterov = true
    [schedule]
    name = "onecycle"
    warmup_epochs = 1
    momentum_low = 0.85
    [train]
    epochs = 3
    batch_size = 16
    """
    config = parse_config(text.replace("\n    ", "\n"))
    p = prepare(config)
    opt = build_optimizer(p.step.optimizer, p.model.ops, p.model.params)
    seen = []
    step = SGD.step

    def recording_step(self, params, grads, lr):
        seen.append((self.momentum, lr))
        return step(self, params, grads, lr)

    monkeypatch.setattr(SGD, "step", recording_step)
    train = loop.to_device(p.model.ops, p.model, *p.dataset.split("train"))
    eager = loop.EagerStep(p.step, p.model, opt)
    ledger = loop.Member(loop.TrainState(), np.random.default_rng(0), p.step.schedule)
    loop.train_members(eager, train, None, [ledger])
    steps = math.ceil(train.size / 16)
    assert len(seen) == 3 * steps
    for s, (mu, lr) in enumerate(seen):
        assert mu == pytest.approx(momentum(config.schedule, 0.95, s, steps, 3))
        assert lr == pytest.approx(learning_rate(config.schedule, 0.1, s, steps, 3))
    assert min(mu for mu, _ in seen) == pytest.approx(0.85, abs=1e-3)
