"""Warnings about a finished run that its status alone would hide, decided from its history.

A run whose weights blew up still completes every epoch (the loss stays finite, only huge), so
`completed` must come with a warning. The rule needs no data beyond the per-epoch train loss:
a network that outputs equal probabilities for C classes has a mean loss of log C (softmax cross
entropy, with or without label smoothing, and log 2 for the sigmoid's two classes), so a final
train loss far above that is worse than guessing; and a final loss well above the first epoch's
means training went backwards.
"""

from __future__ import annotations

import math
from typing import Any

CHANCE_FACTOR = 3.0  # final train loss above this many times log C: worse than guessing
RISE_FACTOR = 1.5  # final train loss above this many times the first epoch's: it went up


def training_warnings(history: list[dict[str, Any]], n_classes: int) -> list[str]:
    """Short sentences, each starting with its kind (`diverged: ...`); [] for a healthy run."""
    losses = [r.get("train_loss") for r in history]
    if not losses or losses[-1] is None:
        return []
    first, final = losses[0], float(losses[-1])
    chance = math.log(max(n_classes, 2))
    advice = "lower optimizer.lr (or add a warm-up) and train again"
    if not math.isfinite(final):
        return [f"diverged: the final train loss is {final}; {advice}"]
    if final > CHANCE_FACTOR * chance:
        return [f"diverged: the final train loss {final:.3g} is {final / chance:.3g} times the "
                f"loss of guessing uniformly among {max(n_classes, 2)} classes "
                f"(log {max(n_classes, 2)} = {chance:.3g}); {advice}"]
    if len(losses) > 1 and first is not None and final > RISE_FACTOR * float(first):
        return [f"diverged: the train loss rose from {float(first):.3g} (epoch 1) to "
                f"{final:.3g} (epoch {len(losses)}); {advice}"]
    return []
