"""One-off lookups of a [schedule] section's rate and momentum at a global step, for tests."""

from mlptrain.schedules import build_schedule


def learning_rate(cfg, base_lr: float, step: int, steps_per_epoch: int, epochs: int) -> float:
    return build_schedule(cfg, base_lr, 0.0, steps_per_epoch, epochs).lr(step)


def momentum(cfg, base_momentum: float, step: int, steps_per_epoch: int, epochs: int) -> float:
    return build_schedule(cfg, 1.0, base_momentum, steps_per_epoch, epochs).momentum(step)
