"""Layers, activations, losses and initialisers, each backward written beside its forward.

The math is written once against an array module `xp` (NumPy, or CuPy on the GPU) with `out=`
buffers, so it reads like the blog's derivation and allocates little. Shapes: B is the batch,
I a layer's inputs, O its outputs, C the number of model outputs.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np

# ---------------------------------------------------------------------------------------------
# Activations. Each derivative is read from the saved output y = f(z), so the forward pass can
# overwrite z in place and the backward pass needs nothing else.
# ---------------------------------------------------------------------------------------------


class Activation(Protocol):
    name: str

    def forward(self, xp: Any, z, out): ...

    def backward(self, xp: Any, y, dy, out): ...


class ReLU:
    name = "relu"

    def forward(self, xp, z, out):
        return xp.maximum(z, 0, out=out)  # y = max(z, 0)

    def backward(self, xp, y, dy, out):
        return xp.multiply(dy, y > 0, out=out)  # dz = dy * [z > 0], and z > 0 iff y > 0


class LeakyReLU:
    name = "leaky_relu"

    def __init__(self, slope: float = 0.01):
        self.slope = slope

    def forward(self, xp, z, out):
        return xp.maximum(z, self.slope * z, out=out)  # y = z if z > 0 else slope*z (0<slope<1)

    def backward(self, xp, y, dy, out):
        # dz = dy * (1 if z > 0 else slope); y has the sign of z
        return xp.multiply(dy, xp.where(y > 0, 1.0, self.slope).astype(dy.dtype), out=out)


class Tanh:
    name = "tanh"

    def forward(self, xp, z, out):
        return xp.tanh(z, out=out)

    def backward(self, xp, y, dy, out):
        # d tanh(z)/dz = 1 - tanh(z)^2 = 1 - y^2
        return xp.multiply(dy, 1 - y * y, out=out)


class Sigmoid:
    name = "sigmoid"

    def forward(self, xp, z, out):
        return stable_sigmoid(xp, z, out=out)

    def backward(self, xp, y, dy, out):
        # d sigma(z)/dz = sigma(z) (1 - sigma(z)) = y (1 - y)
        return xp.multiply(dy, y * (1 - y), out=out)


def stable_sigmoid(xp, z, out):
    """sigma(z) = 1 / (1 + e^-z) = (1 + tanh(z/2)) / 2: the tanh form never overflows."""
    xp.multiply(z, 0.5, out=out)
    xp.tanh(out, out=out)
    xp.add(out, 1, out=out)
    return xp.multiply(out, 0.5, out=out)


ACTIVATIONS = {cls.name: cls for cls in (ReLU, Tanh, Sigmoid, LeakyReLU)}


def make_activation(name: str, leaky_slope: float = 0.01) -> Activation:
    if name == "leaky_relu":
        return LeakyReLU(leaky_slope)
    return ACTIVATIONS[name]()


# ---------------------------------------------------------------------------------------------
# Losses, computed from the logits (the last Linear layer's output), averaged over the batch by
# the caller's `scale`. forward returns the *summed* loss and the number of correct predictions
# as device scalars, so a training loop can accumulate them without a host sync.
# ---------------------------------------------------------------------------------------------


class Loss(Protocol):
    name: str

    def outputs(self, n_classes: int) -> int: ...

    def targets(self, xp: Any, labels: np.ndarray, dtype) -> Any: ...

    def forward(self, xp: Any, logits, targets, cache): ...

    def backward(self, xp: Any, cache, targets, scale: float, out): ...

    def probabilities(self, xp: Any, logits): ...


class SoftmaxCrossEntropy:
    """-log softmax(z)[y] for C >= 2 classes, with the log-sum-exp trick.

    Label smoothing e (Szegedy et al.) trains against q = (1 - e) onehot(y) + e / C instead:
    loss = -sum_j q_j log p_j = logsumexp(z) - (1 - e) z_y - (e / C) sum_j z_j.
    """

    name = "softmax_cross_entropy"
    smoothing = 0.0  # e above; set per model from [model] label_smoothing

    def outputs(self, n_classes: int) -> int:
        return n_classes

    def targets(self, xp, labels, dtype):
        return xp.asarray(labels, dtype=xp.int64)  # (N,) class indices

    def forward(self, xp, logits, targets, cache):
        # logits (B, C), targets (B,), cache (B, C) receives softmax(logits) for backward.
        rows = xp.arange(logits.shape[0])
        m = logits.max(axis=1, keepdims=True)  # (B, 1); subtracting it keeps exp() <= 1
        xp.subtract(logits, m, out=cache)
        xp.exp(cache, out=cache)
        s = cache.sum(axis=1, keepdims=True)  # (B, 1), >= 1
        xp.divide(cache, s, out=cache)  # softmax
        # loss_b = logsumexp(z_b) - z_b[y_b] = m_b + log s_b - z_b[y_b]
        loss_sum = (m[:, 0] + xp.log(s[:, 0]) - logits[rows, targets]).sum(dtype=xp.float64)
        if self.smoothing:  # the sums over z_j and z_y are linear: move e of the weight across
            e = self.smoothing
            loss_sum += e * (logits[rows, targets].sum(dtype=xp.float64)
                             - logits.sum(dtype=xp.float64) / logits.shape[1])
        correct = (logits.argmax(axis=1) == targets).sum()
        return loss_sum, correct

    def backward(self, xp, cache, targets, scale, out):
        # dL/dz (B, C) = (softmax(z) - q) * scale, q = (1 - e) onehot(y) + e / C
        e = self.smoothing
        xp.multiply(cache, scale, out=out)
        if e:
            out -= e / out.shape[1] * scale
        out[xp.arange(out.shape[0]), targets] -= (1 - e) * scale
        return out

    def probabilities(self, xp, logits):
        e = xp.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


class SigmoidBinaryCrossEntropy:
    """Binary cross-entropy of sigma(z) against t in {0, 1}, computed from the logit z."""

    name = "sigmoid_bce"

    def outputs(self, n_classes: int) -> int:
        return 1

    def targets(self, xp, labels, dtype):
        return xp.asarray(labels.reshape(-1, 1), dtype=dtype)  # (N, 1) of 0.0 / 1.0

    def forward(self, xp, logits, targets, cache):
        # logits, targets, cache: (B, 1); cache receives sigma(z) for backward.
        # -t log s(z) - (1-t) log(1 - s(z)) = max(z, 0) - z t + log(1 + e^-|z|), finite for any z
        z = logits
        loss = xp.maximum(z, 0) - z * targets + xp.log1p(xp.exp(-xp.abs(z)))
        stable_sigmoid(xp, z, out=cache)
        correct = ((z > 0) == (targets > 0.5)).sum()
        return loss.sum(dtype=xp.float64), correct

    def backward(self, xp, cache, targets, scale, out):
        # dL/dz (B, 1) = (sigma(z) - t) * scale
        xp.subtract(cache, targets, out=out)
        return xp.multiply(out, scale, out=out)

    def probabilities(self, xp, logits):
        # (B, 2): P(class 0), P(class 1), so callers treat every loss alike
        p1 = stable_sigmoid(xp, logits, out=xp.empty_like(logits))
        return xp.concatenate([1 - p1, p1], axis=1)


LOSSES = {cls.name: cls for cls in (SoftmaxCrossEntropy, SigmoidBinaryCrossEntropy)}


def make_loss(name: str, n_classes: int) -> Loss:
    """`auto` picks sigmoid + BCE for two classes (one output), softmax otherwise."""
    if name == "auto":
        name = "sigmoid_bce" if n_classes == 2 else "softmax_cross_entropy"
    return LOSSES[name]()


# ---------------------------------------------------------------------------------------------
# Linear layer: z = x W^T + b with W of shape (O, I), the usual frameworks' layout.
# ---------------------------------------------------------------------------------------------


class Linear:
    def __init__(self, weight, bias, grad_weight, grad_bias):
        self.weight, self.bias = weight, bias  # (O, I), (O,)
        self.grad_weight, self.grad_bias = grad_weight, grad_bias  # same shapes

    @property
    def in_features(self) -> int:
        return self.weight.shape[1]

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    def forward(self, ops, x, out):
        # out (B, O) = x (B, I) @ W^T (I, O); the bias is added with the activation (fused)
        return ops.matmul(x, self.weight, out=out, trans_b=True)

    def backward(self, ops, x, dz, dx_out=None):
        # dW (O, I) = dz^T (O, B) @ x (B, I)
        ops.matmul(dz, x, out=self.grad_weight, trans_a=True)
        # db (O,) = sum over the batch of dz (B, O)
        ops.sum_rows(dz, out=self.grad_bias)
        # dx (B, I) = dz (B, O) @ W (O, I); skipped for the first layer, whose input is data
        if dx_out is not None:
            ops.matmul(dz, self.weight, out=dx_out)
        return dx_out


# ---------------------------------------------------------------------------------------------
# Weight initialisers, drawn on the host in float64 so every backend and dtype starts from the
# same numbers. fan_in = I, fan_out = O.
# ---------------------------------------------------------------------------------------------


def xavier_uniform(rng: np.random.Generator, fan_out: int, fan_in: int) -> np.ndarray:
    # Glorot & Bengio: U(-a, a), a = sqrt(6 / (fan_in + fan_out)), keeps activation variance
    a = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-a, a, size=(fan_out, fan_in))


def xavier_normal(rng: np.random.Generator, fan_out: int, fan_in: int) -> np.ndarray:
    return rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), size=(fan_out, fan_in))


def he_uniform(rng: np.random.Generator, fan_out: int, fan_in: int) -> np.ndarray:
    # He et al.: variance 2 / fan_in makes up for ReLU zeroing half its inputs
    a = math.sqrt(6.0 / fan_in)
    return rng.uniform(-a, a, size=(fan_out, fan_in))


def he_normal(rng: np.random.Generator, fan_out: int, fan_in: int) -> np.ndarray:
    return rng.normal(0.0, math.sqrt(2.0 / fan_in), size=(fan_out, fan_in))


INITIALIZERS = {
    "xavier_uniform": xavier_uniform,
    "xavier_normal": xavier_normal,
    "he_uniform": he_uniform,
    "he_normal": he_normal,
}
