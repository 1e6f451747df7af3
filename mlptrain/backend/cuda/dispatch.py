"""Which CUDA kernel runs each kind the config names, and whether a step can be a graph at all.

Read without CuPy (the tables are plain data, the constants parsed from kernels.cu), so a machine
without a GPU can check them and `fit --dry-run` can explain the path anywhere. Every kind the
config can name, an activation, a loss or an optimizer, is looked up here: a kind listed has its
kernel; a kind not listed has none, and `graph_blockers` sends its steps down the eager path
with that reason (the eager path computes it with nn.py's and optim.py's formulas), so no kind
ever runs another kind's kernel.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from mlptrain import nn
from mlptrain.optim import OptimizerKind

SOURCE = Path(__file__).with_name("kernels.cu")


def _defines(text: str) -> dict[str, int]:
    """Every `#define NAME <integer>` of the source: the constants Python shares with it."""
    found = re.findall(r"^#define\s+(\w+)\s+(0x[0-9A-Fa-f]+|\d+)u?\b", text, flags=re.M)
    return {name: int(value, 0) for name, value in found}


TEXT = SOURCE.read_text()
CONSTANTS = _defines(TEXT)
AUG_MAX_PIXELS = CONSTANTS["AUG_MAX_PIXELS"]  # largest image the elastic kernel stages

# activation (config name) -> the id the kernels' epilogues switch on
ACT_IDS = {None: CONSTANTS["ACT_IDENTITY"], "identity": CONSTANTS["ACT_IDENTITY"],
           "relu": CONSTANTS["ACT_RELU"], "leaky_relu": CONSTANTS["ACT_LEAKY"],
           "tanh": CONSTANTS["ACT_TANH"], "sigmoid": CONSTANTS["ACT_SIGMOID"],
           "gelu": CONSTANTS["ACT_GELU"]}
# loss (config name) -> its kernel: the loss, its tallies (a correct count; a real target's
# squared and absolute errors) and dL/dz in one launch
LOSS_KERNELS = {"softmax_cross_entropy": "softmax_xent", "sigmoid_bce": "sigmoid_bce",
                "mse": "real_target", "huber": "real_target", "poisson": "real_target"}
# a real target's loss -> the id its kernel (real_target) switches on
REAL_TARGET_IDS = {"mse": CONSTANTS["LOSS_MSE"], "huber": CONSTANTS["LOSS_HUBER"],
                   "poisson": CONSTANTS["LOSS_POISSON"]}
# optimizer kind -> the kernel that updates the whole flat parameter buffer in one launch
UPDATE_KERNELS = {OptimizerKind.SGD: "sgd_update", OptimizerKind.ADAM: "adam_update",
                  OptimizerKind.ADAMW: "adam_update"}


def graph_blockers(step, graph_enabled: bool = True) -> list[str]:
    """Why the epoch graph cannot run this declared step: short reasons, [] when it can."""
    reasons = [] if graph_enabled else ["MLPTRAIN_CUDA_GRAPH=0"]
    if step.loss not in LOSS_KERNELS:
        reasons.append(f"no kernel for the {step.loss} loss")
    if step.weighted:  # the eager path weighs the loss's rows (protocol.Backend.loss_and_grad)
        reasons.append("sample weights: no kernel")
    if ACT_IDS.get(step.activation) is None:
        reasons.append(f"no kernel for the {step.activation} activation")
    if step.optimizer.kind not in UPDATE_KERNELS:
        reasons.append(f"no kernel for the {step.optimizer.kind.value} optimizer")
    if np.dtype(step.dtype) not in (np.float32, np.float64):
        reasons.append(f"{step.dtype} (kernels are float32 and float64)")
    if step.augment is not None and math.prod(step.augment.shape) > AUG_MAX_PIXELS:
        reasons.append(f"images of {math.prod(step.augment.shape)} pixels are too large for "
                       f"the elastic kernel ({AUG_MAX_PIXELS})")
    if step.augment is not None and step.augment.narrow_classes and \
            step.loss != "softmax_cross_entropy":
        reasons.append("per-class augmentation limits read class labels, which only the "
                       "softmax loss keeps")
    return reasons


def ctype(dtype) -> str:
    return {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}[np.dtype(dtype)]


def typed(name: str, dtype) -> str:
    """The instantiation's name for a template kernel: `dropout<float>`."""
    return f"{name}<{ctype(dtype)}>"


def kernel_names(step, dtype) -> list[str]:
    """The element-wise kernels a graph for this step launches (the products are gemm.py's)."""
    names = [typed(k, dtype) for k in ("splitk_reduce", UPDATE_KERNELS[step.optimizer.kind],
                                       LOSS_KERNELS[step.loss])]
    if nn.ACTIVATIONS[step.activation].reads_input:  # its product keeps z; y is a launch
        names.append(typed("activation_forward", dtype))
    if step.dropout_input or step.dropout_hidden:
        names.append(typed("dropout", dtype))
    if step.max_norm:
        names.append(typed("max_norm", dtype))
    if step.augment is not None:
        names.append(typed("augment", dtype))
        if step.augment.elastic:
            names.append(typed("elastic_field", dtype))
    return names + ["sum_parts"]
