"""Warnings about a finished run that its status alone would hide, decided from its history.

A run whose weights blew up still completes every epoch (the loss stays finite, only huge), so
`completed` must come with a warning. The rule needs no data beyond the per-epoch train loss:
a network that outputs equal probabilities for C classes has a mean loss of log C (softmax cross
entropy, with or without label smoothing, and log 2 for the sigmoid's two classes), so a final
train loss far above that is worse than guessing; and a final loss well above the first epoch's
means training went backwards.

A run whose loss looks sane may still score worse than a model that ignores its inputs: raw
features on scales of 1e3-1e5 gave 14% test accuracy on three classes (issue 29). The bar is
the majority-class rate, the accuracy of always answering the training split's most common
class, measured on the split that scored the run: the best a model blind to its inputs can
expect, never below 1/C on balanced data and higher on skewed data, where 1/C would let a
useless model pass (90% of one class: 50% "beats" 1/2 yet is worse than answering that class).
Only a shortfall beyond the noise of a rate measured on that many samples counts (NOISE
standard errors), so a run level with chance on a small test set is not flagged by luck.
A regression run has no classes: it is held to always answering the mean (an R^2 below 0), and
its loss, on the target's own scale, to no guessing loss.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mlptrain.data import STANDARDIZED_SOURCES
from mlptrain.data.csv import input_names

CHANCE_FACTOR = 3.0  # final train loss above this many times log C: worse than guessing
RISE_FACTOR = 1.5  # final train loss above this many times the first epoch's: it went up
NOISE = 2.0  # standard errors of the majority-class rate an accuracy must fall below to warn
UNSCALED = 1e3  # a raw input or target beyond this blows a loss up at the usual rates (README)


def training_warnings(history: list[dict[str, Any]], n_classes: int,
                      task: str = "classification") -> list[str]:
    """Short sentences, each starting with its kind (`diverged: ...`); [] for a healthy run.
    A regression loss has no loss of guessing (its scale is the target's): only the rise
    counts there."""
    losses = [r.get("train_loss") for r in history]
    if not losses or losses[-1] is None:
        return []
    first, final = losses[0], float(losses[-1])
    chance = math.log(max(n_classes, 2))
    advice = "lower optimizer.lr (or add a warm-up) and train again"
    if not math.isfinite(final):
        return [f"diverged: the final train loss is {final}; {advice}"]
    if task == "classification" and final > CHANCE_FACTOR * chance:
        return [f"diverged: the final train loss {final:.3g} is {final / chance:.3g} times the "
                f"loss of guessing uniformly among {max(n_classes, 2)} classes "
                f"(log {max(n_classes, 2)} = {chance:.3g}); {advice}"]
    if len(losses) > 1 and first is not None and final > RISE_FACTOR * float(first):
        return [f"diverged: the train loss rose from {float(first):.3g} (epoch 1) to "
                f"{final:.3g} (epoch {len(losses)}); {advice}"]
    return []


def run_warnings(history: list[dict[str, Any]], final: dict[str, Any], dataset) -> list[str]:
    """A completed run's warnings: training_warnings from its loss, else below_chance from its
    final accuracy (a run whose loss diverged needs no second line saying it scores badly)."""
    found = training_warnings(history, dataset.n_classes, dataset.task) or (
        below_mean(final) if dataset.task == "regression" else below_chance(final, dataset))
    if dataset.name in STANDARDIZED_SOURCES and dataset.scaler is None:
        found = [f"{w}; the features were not standardized, and features on scales far from 1 "
                 "train so: set [data] standardize = true" for w in found]
    return found


def unscaled_data(dataset) -> str:
    """What of a user's data is left on a scale far from 1, in a sentence ("": nothing): a
    feature not standardized (data.standardize = false), or a regression target kept as given
    (standardize_target = false, or Poisson's counts), reaching beyond UNSCALED. Gradients
    grow with it: a feature of 1e6 blows the loss up at any usable rate, or kills every ReLU
    in the first step and leaves a network that answers one class. fit notes it, and a
    diverged run names it as the likelier cause than its learning rate."""
    if dataset.name not in STANDARDIZED_SOURCES:
        return ""
    X, y = dataset.split("train")
    if dataset.scaler is None and X.size and np.abs(X).max() > UNSCALED:
        i = int(np.abs(X).max(axis=0).argmax())
        name = input_names(dataset.encoding)[i] if dataset.encoding else f"feature {i}"
        return (f"{name!r} reaches {np.abs(X[:, i]).max():.3g} and the features are not "
                "standardized, so the loss may blow up; set [data] standardize = true")
    if dataset.task == "regression" and dataset.target_scale is None and y.size \
            and np.abs(y).max() > UNSCALED:
        return (f"the target reaches {np.abs(y).max():.3g} and is not standardized, so the "
                "loss may blow up; set [data] standardize_target = true (the poisson loss "
                "ignores it), or divide the target by a power of ten in the file")
    return ""


def below_chance(final: dict[str, Any], dataset) -> list[str]:
    """A warning when the final test accuracy (the validation accuracy where there is no test
    set) is below the majority-class rate on that split; [] otherwise."""
    split = next((s for s in ("test", "val") if final.get(f"{s}_accuracy") is not None), None)
    y_train = dataset.targets("train")
    if split is None or not len(y_train):
        return []
    y = dataset.targets(split)
    common = int(np.bincount(y_train).argmax())
    baseline, accuracy = float(np.mean(y == common)), float(final[f"{split}_accuracy"])
    if accuracy >= baseline - NOISE * math.sqrt(baseline * (1 - baseline) / len(y)):
        return []
    return [f"below chance: the {split} accuracy {100 * accuracy:.2f}% is below the "
            f"{100 * baseline:.2f}% of always answering class {common}, the training split's "
            "most common; a learning rate too high or too few epochs are the usual causes"]


def below_mean(final: dict[str, Any]) -> list[str]:
    """A regression run's below_chance: a warning when its test R^2 (the validation R^2 where
    there is no test set) is below 0, worse than always answering that split's mean."""
    split = next((s for s in ("test", "val") if final.get(f"{s}_r2") is not None), None)
    if split is None or final[f"{split}_r2"] >= 0:
        return []
    return [f"below the mean: the {split} R^2 {final[f'{split}_r2']:.3f} is below 0, worse than "
            "always answering the mean; a learning rate too high or too few epochs are the "
            "usual causes"]
