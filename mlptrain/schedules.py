"""Learning-rate and momentum schedules: the value for a global step, as a pure function of it.

A schedule is not an optimizer: it is part of the declared step (step.py), fixed once from the
[schedule] and [optimizer] config sections and the epoch's length. The eager loop asks it for
one step's values; a device graph asks for a whole epoch's as host arrays (`lrs`, `momenta`),
which it uploads once per epoch. Both get the same float64 numbers.

    warmup:   lr = base * (step + 1) / warmup_steps          while step < warmup_steps
    constant: lr = base
    step:     lr = base * gamma ** floor(epoch / step_epochs)
    cosine:   lr = min_lr + (base - min_lr) (1 + cos(pi t)) / 2, t going 0 -> 1 after warmup
    onecycle: lr = base * one_cycle(step), rising from base * start_factor to base over the
              warmup, then falling to min_lr (see one_cycle)
    momentum: fixed, except under onecycle with momentum_low > 0 (SGD with momentum only),
              where it mirrors the rate (Smith & Topal): base -> momentum_low while the rate
              rises, back to base while it falls, so the step lr / (1 - mu) grows more gently
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SCHEDULES = ("constant", "step", "cosine", "onecycle")


@dataclass(frozen=True)
class Schedule:
    """The learning rate and SGD momentum of every global step (0-based) of a run."""

    name: str  # one of SCHEDULES
    base_lr: float
    steps_per_epoch: int
    epochs: int
    warmup_epochs: float = 0.0
    step_epochs: int = 10
    gamma: float = 0.1
    min_lr: float = 0.0
    start_factor: float = 0.04
    base_momentum: float = 0.0  # SGD's momentum (0 for Adam: nothing to cycle)
    momentum_low: float = 0.0

    @property
    def warmup_steps(self) -> int:
        return round(self.warmup_epochs * self.steps_per_epoch)

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def cycles_momentum(self) -> bool:
        """True when the momentum changes from step to step (onecycle with momentum_low)."""
        return self.name == "onecycle" and bool(self.momentum_low) and bool(self.base_momentum)

    def lr(self, step: int) -> float:
        base, warmup = self.base_lr, self.warmup_steps
        if self.name == "onecycle":
            return base * one_cycle(step, warmup, self.total_steps, self.start_factor,
                                    self.min_lr / base)
        if step < warmup:
            return base * (step + 1) / warmup
        if self.name == "step":
            return base * self.gamma ** (step // self.steps_per_epoch // self.step_epochs)
        if self.name == "cosine":
            last = max(self.total_steps - warmup - 1, 1)  # t = 1 at the last step
            t = min((step - warmup) / last, 1.0)
            return self.min_lr + (base - self.min_lr) * 0.5 * (1 + math.cos(math.pi * t))
        return base

    def momentum(self, step: int) -> float:
        if not self.cycles_momentum:
            return self.base_momentum
        # one_cycle goes 0 -> 1 -> 0 between its ends here; mu follows base -> low -> base
        rise = one_cycle(step, self.warmup_steps, self.total_steps, 0.0, 0.0)
        return self.base_momentum - (self.base_momentum - self.momentum_low) * rise

    def lrs(self, first: int, count: int) -> np.ndarray:
        """(count,) float64: the rates of global steps first, ..., first + count - 1."""
        return np.array([self.lr(s) for s in range(first, first + count)], dtype=np.float64)

    def momenta(self, first: int, count: int) -> np.ndarray:
        """(count,) float64: the SGD momentum of the same steps."""
        return np.array([self.momentum(s) for s in range(first, first + count)],
                        dtype=np.float64)


def one_cycle(step: int, warmup_steps: int, total_steps: int, start: float,
              end: float) -> float:
    """A factor that follows half a cosine from `start` up to 1 over the first warmup_steps,
    then half a cosine from 1 down to `end` at the last step (Smith's one-cycle policy):

    rising:  f = start + (1 - start) (1 - cos(pi t)) / 2,  t = step / warmup_steps
    falling: f = end + (1 - end) (1 + cos(pi t)) / 2,      t = (step - warmup) / (last - warmup)
    """
    if step < warmup_steps:
        t = step / warmup_steps
        return start + (1 - start) * 0.5 * (1 - math.cos(math.pi * t))
    last = max(total_steps - warmup_steps - 1, 1)
    t = min((step - warmup_steps) / last, 1.0)
    return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * t))


def build_schedule(schedule_cfg, base_lr: float, base_momentum: float, steps_per_epoch: int,
                   epochs: int) -> Schedule:
    """The Schedule a [schedule] section describes, for a run of epochs x steps_per_epoch."""
    c = schedule_cfg
    return Schedule(c.name, base_lr, steps_per_epoch, epochs, c.warmup_epochs, c.step_epochs,
                    c.gamma, c.min_lr, c.start_factor, base_momentum, c.momentum_low)
