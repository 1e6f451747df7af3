"""Layers, activations, losses and initialisers, each backward written beside its forward.

The math is written once against an array module `xp` (NumPy, or CuPy on the GPU) with `out=`
buffers, so it reads like the blog's derivation and allocates little. Shapes: B is the batch,
I a layer's inputs, O its outputs, C the number of model outputs.
"""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace
from typing import Any, Protocol

import numpy as np

# ---------------------------------------------------------------------------------------------
# Activations. Most derivatives are read from the saved output y = f(z), so the forward pass
# can overwrite z in place and the backward pass needs nothing else; an activation whose
# derivative needs z itself says so (reads_input), and the model keeps z for it.
# ---------------------------------------------------------------------------------------------


class Activation(Protocol):
    name: str
    reads_input: bool  # backward reads z: the model keeps each hidden layer's z beside y

    def forward(self, xp: Any, z, out): ...

    # backward may overwrite `scratch`, a buffer shaped like y of dtype scratch_dtype (None:
    # y's dtype); without one it allocates
    scratch_dtype: Any

    def backward(self, xp: Any, y, dy, out, scratch=None, z=None): ...


def _scratch(xp, activation, y, scratch):
    return xp.empty_like(y, dtype=activation.scratch_dtype) if scratch is None else scratch


class ReLU:
    name = "relu"
    reads_input = False
    scratch_dtype = bool  # a mask is the cheapest thing to write

    def forward(self, xp, z, out):
        return xp.maximum(z, 0, out=out)  # y = max(z, 0)

    def backward(self, xp, y, dy, out, scratch=None, z=None):
        # dz = dy * [z > 0], and z > 0 iff y > 0
        mask = xp.greater(y, 0, out=_scratch(xp, self, y, scratch))
        return xp.multiply(dy, mask, out=out)


class LeakyReLU:
    name = "leaky_relu"
    reads_input = False
    scratch_dtype = None

    def __init__(self, slope: float = 0.01):
        self.slope = slope

    def forward(self, xp, z, out):
        return xp.maximum(z, self.slope * z, out=out)  # y = z if z > 0 else slope*z (0<slope<1)

    def backward(self, xp, y, dy, out, scratch=None, z=None):
        # dz = dy * (1 if z > 0 else slope) = dy * ([z > 0] (1 - slope) + slope); y has z's sign
        d = xp.greater(y, 0, out=_scratch(xp, self, y, scratch))
        xp.multiply(d, 1 - self.slope, out=d)
        xp.add(d, self.slope, out=d)
        return xp.multiply(dy, d, out=out)


class Tanh:
    name = "tanh"
    reads_input = False
    scratch_dtype = None

    def forward(self, xp, z, out):
        return xp.tanh(z, out=out)

    def backward(self, xp, y, dy, out, scratch=None, z=None):
        # d tanh(z)/dz = 1 - tanh(z)^2 = 1 - y^2
        d = xp.multiply(y, y, out=_scratch(xp, self, y, scratch))
        xp.subtract(1, d, out=d)
        return xp.multiply(dy, d, out=out)


class Sigmoid:
    name = "sigmoid"
    reads_input = False
    scratch_dtype = None

    def forward(self, xp, z, out):
        return stable_sigmoid(xp, z, out=out)

    def backward(self, xp, y, dy, out, scratch=None, z=None):
        # d sigma(z)/dz = sigma(z) (1 - sigma(z)) = y (1 - y)
        d = xp.subtract(1, y, out=_scratch(xp, self, y, scratch))
        xp.multiply(d, y, out=d)
        return xp.multiply(dy, d, out=out)


class GELU:
    """GELU(z) = z Phi(z) (Hendrycks & Gimpel), in its tanh form, the one GPT-2 and BERT train
    with and torch's gelu(approximate="tanh") computes: y = 0.5 z (1 + tanh(u)) with
    u = sqrt(2/pi) (z + 0.044715 z^3); within 1e-3 of the erf form everywhere (NumPy has no
    erf). It is not monotonic, so y does not give z back: its backward reads z."""

    name = "gelu"
    reads_input = True
    scratch_dtype = None
    C, A = math.sqrt(2 / math.pi), 0.044715

    def _u(self, xp, z, out):
        xp.multiply(z, z, out=out)
        out *= self.A
        out += 1
        out *= z
        out *= self.C  # u = C z (1 + A z^2)
        return out

    def forward(self, xp, z, out):  # out is not z (the model keeps z for backward)
        xp.tanh(self._u(xp, z, out), out=out)
        out += 1
        out *= z
        out *= 0.5  # y = 0.5 z (1 + t)
        return out

    def backward(self, xp, y, dy, out, scratch=None, z=None):
        # dy/dz = 0.5 (1 + t) + 0.5 z (1 - t^2) du/dz, t = tanh(u), du/dz = C (1 + 3 A z^2);
        # written plainly (temporaries): the GPU runs kernels.cu's act_backward instead
        t = self._u(xp, z, _scratch(xp, self, y, scratch))
        xp.tanh(t, out=t)
        du = self.C * (1 + 3 * self.A * z * z)
        return xp.multiply(dy, 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * du, out=out)


def stable_sigmoid(xp, z, out):
    """sigma(z) = 1 / (1 + e^-z) = (1 + tanh(z/2)) / 2: the tanh form never overflows."""
    xp.multiply(z, 0.5, out=out)
    xp.tanh(out, out=out)
    xp.add(out, 1, out=out)
    return xp.multiply(out, 0.5, out=out)


ACTIVATIONS = {cls.name: cls for cls in (ReLU, Tanh, Sigmoid, LeakyReLU, GELU)}


def make_activation(name: str, leaky_slope: float = 0.01) -> Activation:
    if name == "leaky_relu":
        return LeakyReLU(leaky_slope)
    return ACTIVATIONS[name]()


# ---------------------------------------------------------------------------------------------
# Losses, computed from the logits (the last Linear layer's output), averaged over the batch by
# the caller's `scale`. forward returns the *summed* loss and its tallies (the number of correct
# predictions; a real target's errors) as device scalars, so a training loop can accumulate
# them without a host sync. Every array may carry leading axes, (..., B, C): a group's G
# members (G, B, C) each get their own sums (G,). forward's `weights` (..., B), when given,
# weigh each row's loss in the sum (the tallies stay unweighted); backward knows nothing of
# them: the backend multiplies dL/dz's rows by them (protocol.Backend.loss_and_grad), so a
# weighted step is the plain one plus two multiplications, and weights = None runs exactly the
# plain one.
# ---------------------------------------------------------------------------------------------


def summed(xp, rows, weights=None):
    """sum_b rows_b (..., B) -> (...,) in float64; with weights (..., B): sum_b w_b rows_b."""
    if weights is None:
        return xp.add.reduce(rows, axis=-1, dtype=xp.float64)
    return xp.add.reduce(rows * weights, axis=-1, dtype=xp.float64)


def count_rows(xp, hits):
    """sum_b hits_b (..., B) -> (...,): the true rows, per member. One network's count takes
    count_nonzero without an axis, a single C call (with one it runs Python: ~2 us a step)."""
    return xp.count_nonzero(hits, axis=-1) if hits.ndim > 1 else xp.count_nonzero(hits)


def batch_weights(xp, weights, dtype):
    """Sample weights w (..., B) as the rows of one batch's loss weigh them: w_b B / sum(w),
    in `dtype`. The summed loss is then B times the weighted mean sum_b w_b l_b / sum_b w_b,
    and dL/dz's row b, scaled by 1/B as every batch's is, by w_b / sum(w): the loss is
    normalised by the weights' sum (as scikit-learn does, #30155), so weights all c > 0 train
    as no weights do, and a batch whose weights are all 0 contributes nothing (0, not 0/0)."""
    total = xp.add.reduce(weights, axis=-1, dtype=xp.float64)[..., None]  # (..., 1)
    mean = xp.maximum(total, np.finfo(np.float64).tiny) / weights.shape[-1]
    return (weights / mean).astype(dtype, copy=False)


class Loss(Protocol):
    name: str
    task: str  # what it fits: class labels ("classification") or real values ("regression")
    smooths: bool  # whether it takes a label smoothing
    groups: bool  # whether a group's batched step (G > 1 members) computes it
    smoothing: float  # the label smoothing it trains with (0 = none)
    metric: str  # the metric a run is judged and shown by: "accuracy", or "rmse"
    # what forward sums after the loss, one device scalar each ((G,) for a group): a
    # classifier's correct predictions; a real target's squared and absolute errors
    tallies: tuple[str, ...]
    tally_type: type  # their type where a checkpoint keeps them: a count, or a real

    # the tallies' means per sample (G, len(tallies)) on the host -> {metric: (G,) values}
    # per epoch, `metric` first
    def metric_values(self, means) -> dict: ...

    def outputs(self, n_classes: int) -> int: ...

    def targets(self, xp: Any, labels: np.ndarray, dtype) -> Any: ...

    # the buffers forward and backward work in, for batches of (*lead, batch, outputs) logits
    def new_cache(self, xp: Any, batch: int, outputs: int, dtype, lead: tuple = ()) -> Any: ...

    # (summed loss, *tallies), the loss's rows weighted by `weights` (..., B) when given
    def forward(self, xp: Any, logits, targets, cache, weights=None): ...

    def backward(self, xp: Any, cache, targets, scale: float, out): ...

    def probabilities(self, xp: Any, logits): ...

    # the loss of a group whose members' own losses are these (model.stack_members)
    def of_members(self, losses: list) -> Any: ...


class _ClassLabels:
    """What the losses of class labels share: forward's tally counts the correct predictions
    (its share is the accuracy), and a group's members have nothing of their own
    (those that share a step share its smoothing: step.shared_part)."""

    task = "classification"
    metric = "accuracy"
    tallies = ("correct",)
    tally_type = np.int64  # a count
    groups = True  # a group's batched step computes it per member

    def metric_values(self, means):
        return {"accuracy": means[:, 0]}  # the share of correct predictions

    def of_members(self, losses):
        return self


class SoftmaxCrossEntropy(_ClassLabels):
    """-log softmax(z)[y] for C >= 2 classes, with the log-sum-exp trick.

    Label smoothing e (Szegedy et al.) trains against q = (1 - e) onehot(y) + e / C instead:
    loss = -sum_j q_j log p_j = logsumexp(z) - (1 - e) z_y - (e / C) sum_j z_j.
    """

    name = "softmax_cross_entropy"
    smooths = True  # takes a label smoothing e

    def __init__(self, smoothing: float = 0.0):
        self.smoothing = smoothing  # e above; the declared step's (step.py)

    def outputs(self, n_classes: int) -> int:
        return n_classes

    def targets(self, xp, labels, dtype):
        return xp.asarray(labels, dtype=xp.int64)  # (N,) class indices

    def new_cache(self, xp, batch, outputs, dtype, lead=()):
        c, rows = outputs, (*lead, batch)
        return SimpleNamespace(
            probs=xp.empty((*rows, c), dtype=dtype),  # softmax(z), kept for backward
            m=xp.empty((*rows, 1), dtype=dtype),  # max_c z_bc
            s=xp.empty((*rows, 1), dtype=dtype),  # sum_c exp(z_bc - m_b)
            transposed=xp.empty((*lead, c, batch), dtype=dtype),  # z^T, for the row max
            ones=xp.ones(c, dtype=dtype),  # sums rows as a product
            picked=xp.empty(rows, dtype=dtype),  # z_b[y_b], then reused by backward
            # where row b starts in the flattened logits (of every member, one after another)
            row_starts=xp.arange(math.prod(rows), dtype=xp.int64).reshape(rows) * c,
            index=xp.empty(rows, dtype=xp.int64),  # b C + y_b: the flat index of z_b[y_b]
            predicted=xp.empty(rows, dtype=xp.int64),  # argmax_c z_bc
            hits=xp.empty(rows, dtype=bool),  # predicted == y
        )

    def forward(self, xp, logits, targets, cache, weights=None):
        # logits (..., B, C), targets (..., B); cache.probs (..., B, C) receives softmax(logits)
        m, s, p = cache.m, cache.s, cache.probs
        # Row reductions over C ~ 10 columns are slow in NumPy (a short loop per row), so the
        # max runs down the columns of a transposed copy and the sum is a product with ones:
        # 3-10x faster. (ndarray methods and ufunc.reduce also skip np.max's wrappers.)
        xp.copyto(cache.transposed, logits.swapaxes(-1, -2))
        xp.maximum.reduce(cache.transposed, axis=-2, out=m[..., 0])  # (..., B); exp() <= 1
        xp.subtract(logits, m, out=p)
        xp.exp(p, out=p)
        xp.matmul(p, cache.ones, out=s[..., 0])  # (..., B): sum_c exp(z_bc - m_b) >= 1
        xp.divide(p, s, out=p)  # softmax
        # loss_b = logsumexp(z_b) - z_b[y_b] = m_b + log s_b - z_b[y_b]
        xp.add(cache.row_starts, targets, out=cache.index)
        # z_b[y_b], from the flattened logits; mode="clip" spares NumPy a defensive copy of out
        logits.take(cache.index, out=cache.picked, mode="clip")
        row_loss = xp.log(s, out=s)[..., 0]
        xp.add(row_loss, m[..., 0], out=row_loss)
        xp.subtract(row_loss, cache.picked, out=row_loss)
        loss_sum = summed(xp, row_loss, weights)  # (...,): per member
        if self.smoothing:  # the sums over z_j and z_y are linear: move e of the weight across
            e, C = self.smoothing, logits.shape[-1]
            if weights is None:
                loss_sum += e * (xp.add.reduce(cache.picked, axis=-1, dtype=xp.float64)
                                 - logits.sum(axis=(-2, -1), dtype=xp.float64) / C)
            else:  # row b's share, e (z_b[y_b] - sum_j z_bj / C), weighed as its row
                loss_sum += e * summed(xp, cache.picked - logits.sum(axis=-1) / C, weights)
        logits.argmax(axis=-1, out=cache.predicted)
        return loss_sum, count_rows(xp, xp.equal(cache.predicted, targets, out=cache.hits))

    def backward(self, xp, cache, targets, scale, out):
        # dL/dz (..., B, C) = (softmax(z) - q) * scale, q = (1 - e) onehot(y) + e / C; the
        # one-hot only touches z_b[y_b], the e / C term every entry
        e, C = self.smoothing, out.shape[-1]
        picked = cache.probs.take(cache.index, out=cache.picked, mode="clip")  # p_b[y_b]
        xp.subtract(picked, 1 - e + e / C, out=picked)
        xp.multiply(picked, scale, out=picked)
        xp.multiply(cache.probs, scale, out=out)
        if e:
            xp.subtract(out, e / C * scale, out=out)
        out.put(cache.index, picked, mode="clip")
        return out

    def probabilities(self, xp, logits):
        e = xp.exp(logits - logits.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)


class SigmoidBinaryCrossEntropy(_ClassLabels):
    """Binary cross-entropy of sigma(z) against t in {0, 1}, computed from the logit z."""

    name = "sigmoid_bce"
    smooths = False
    smoothing = 0.0  # always: one logit has no classes to spread a target over

    def outputs(self, n_classes: int) -> int:
        return 1

    def targets(self, xp, labels, dtype):
        return xp.asarray(labels[..., None], dtype=dtype)  # (..., N, 1) of 0.0 / 1.0

    def new_cache(self, xp, batch, outputs, dtype, lead=()):
        column = (*lead, batch, 1)
        return SimpleNamespace(
            probs=xp.empty(column, dtype=dtype),  # sigma(z), kept for backward
            a=xp.empty(column, dtype=dtype),  # per-row loss terms
            b=xp.empty(column, dtype=dtype),
            said=xp.empty(column, dtype=bool),  # z > 0: the model says class 1
            truth=xp.empty(column, dtype=bool),  # t = 1
        )

    def forward(self, xp, logits, targets, cache, weights=None):
        # logits, targets: (..., B, 1); cache.probs receives sigma(z) for backward.
        # -t log s(z) - (1-t) log(1 - s(z)) = max(z, 0) - z t + log(1 + e^-|z|), finite for any z
        z, a, b = logits, cache.a, cache.b
        xp.abs(z, out=a)
        xp.negative(a, out=a)
        xp.exp(a, out=a)
        xp.log1p(a, out=a)  # log(1 + e^-|z|)
        xp.subtract(a, xp.multiply(z, targets, out=b), out=a)
        xp.add(a, xp.maximum(z, 0, out=b), out=a)
        stable_sigmoid(xp, z, out=cache.probs)
        xp.greater(z, 0, out=cache.said)
        xp.greater(targets, 0.5, out=cache.truth)
        correct = count_rows(xp, xp.equal(cache.said, cache.truth, out=cache.said)[..., 0])
        return summed(xp, a[..., 0], weights), correct

    def backward(self, xp, cache, targets, scale, out):
        # dL/dz (..., B, 1) = (sigma(z) - t) * scale
        xp.subtract(cache.probs, targets, out=out)
        return xp.multiply(out, scale, out=out)

    def probabilities(self, xp, logits):
        # (..., B, 2): P(class 0), P(class 1), so callers treat every loss alike
        p1 = stable_sigmoid(xp, logits, out=xp.empty_like(logits))
        return xp.concatenate([1 - p1, p1], axis=-1)


class _RealTarget:
    """What the losses of a real-valued target share: one linear output z (the prediction, or
    its log for Poisson) against targets t (..., B, 1). forward's tallies are the summed
    squared and absolute errors of the prediction, from which the loop's RMSE, R^2 and MAE
    follow, as a classifier's accuracy follows from its count of correct predictions.

    A standardized target (data.standardize_target) trains as t = (y - mean) / std: the loss
    holds the training split's mean and std, so that everything it hands out (probabilities:
    the prediction; metric_values: RMSE and MAE) is in the target's own units again, and the
    data keep their values everywhere else."""

    task = "regression"
    smooths = False
    groups = True  # a group's batched step computes it, each member on its own statistics
    smoothing = 0.0
    metric = "rmse"  # root mean squared error, in the target's units
    tallies = ("squared_error", "absolute_error")
    tally_type = np.float64
    scales_target = True  # may train on a standardized target (not Poisson's counts)

    def __init__(self, target_mean: float = 0.0, target_std: float = 1.0):
        self.target_mean, self.target_std = target_mean, target_std

    def outputs(self, n_classes: int) -> int:
        return 1

    def metric_values(self, means):
        # means (G, 2) on the host: of the standardized target's squared and absolute errors
        std = np.reshape(self.target_std, -1)
        return {"rmse": np.sqrt(means[:, 0]) * std, "mae": means[:, 1] * std}

    def of_members(self, losses):
        """A group's loss: each member's target statistics along its leading axis (G, 1, 1),
        since each member's training split (its seed's) standardizes its own target."""
        group = copy.copy(self)
        group.target_mean, group.target_std = (
            np.array([getattr(one, key) for one in losses], np.float64)[:, None, None]
            for key in ("target_mean", "target_std"))
        return group

    def targets(self, xp, values, dtype):
        # (..., N, 1) real values, standardized as the loss trains them (exact for 0 and 1)
        t = (xp.asarray(values, dtype=xp.float64) - self.target_mean) / self.target_std
        return xp.asarray(t[..., None], dtype=dtype)

    def new_cache(self, xp, batch, outputs, dtype, lead=()):
        column = (*lead, batch, 1)
        return SimpleNamespace(r=xp.empty(column, dtype=dtype),  # residual, kept for backward
                               a=xp.empty(column, dtype=dtype),  # per-row terms
                               p=xp.empty(column, dtype=dtype))  # the prediction, or |r|

    def prediction(self, xp, logits, out=None):
        return logits  # the identity link: the output is the prediction (out: not needed)

    def forward(self, xp, logits, targets, cache, weights=None):
        # logits, targets (..., B, 1) -> (summed loss, squared error, absolute error), each
        # (...,); the errors (RMSE's, MAE's) stay unweighted, as a classifier's count does
        r = xp.subtract(self.prediction(xp, logits, out=cache.p), targets, out=cache.r)
        sq = xp.add.reduce(xp.multiply(r, r, out=cache.a)[..., 0], axis=-1, dtype=xp.float64)
        loss_sum = self._loss_sum(xp, logits, targets, cache, weights)
        ab = xp.add.reduce(xp.abs(r, out=cache.a)[..., 0], axis=-1, dtype=xp.float64)
        return loss_sum, sq, ab

    def probabilities(self, xp, logits):
        # (..., B, 1): what the model predicts, in the target's units
        std, mean = self.target_std, self.target_mean
        if isinstance(std, np.ndarray):  # a group's (G, 1, 1), on the logits' device
            std, mean = xp.asarray(std), xp.asarray(mean)
        return self.prediction(xp, logits) * std + mean


class MeanSquaredError(_RealTarget):
    """(z - t)^2 per sample: its mean is the MSE itself."""

    name = "mse"

    def _loss_sum(self, xp, z, t, cache, weights):
        return summed(xp, cache.a[..., 0], weights)  # r^2, from forward

    def backward(self, xp, cache, targets, scale, out):
        # dL/dz (..., B, 1) = 2 (z - t) * scale
        return xp.multiply(cache.r, 2 * scale, out=out)


class Huber(_RealTarget):
    """r^2 / 2 where |r| <= delta, delta (|r| - delta / 2) beyond (r = z - t): squared error
    near the target, absolute error far from it, so outliers pull with a bounded force."""

    name = "huber"

    def __init__(self, delta: float = 1.0, target_mean: float = 0.0, target_std: float = 1.0):
        super().__init__(target_mean, target_std)
        self.delta = delta  # in the units the loss trains in (the standardized target's)

    def _loss_sum(self, xp, z, t, cache, weights):
        size, m = xp.abs(cache.r, out=cache.p), cache.a  # |r|, once
        xp.minimum(size, self.delta, out=m)  # m = min(|r|, delta): the loss is m (|r| - m / 2)
        size -= 0.5 * m
        size *= m
        return summed(xp, size[..., 0], weights)

    def backward(self, xp, cache, targets, scale, out):
        # dL/dz (..., B, 1) = clip(r, -delta, delta) * scale
        xp.clip(cache.r, -self.delta, self.delta, out=out)
        return xp.multiply(out, scale, out=out)


class Poisson(_RealTarget):
    """Poisson deviance with the log link, for counts t >= 0: the output z is log(mu) and the
    loss e^z - t z (the negative log-likelihood less log t!, which does not depend on z)."""

    name = "poisson"
    scales_target = False  # its targets are counts >= 0, and e^z > 0 cannot be standardized

    def prediction(self, xp, logits, out=None):
        return xp.exp(logits, out=out)  # mu = e^z

    def _loss_sum(self, xp, z, t, cache, weights):
        rows = cache.p - t * z  # e^z, as forward computed it
        return summed(xp, rows[..., 0], weights)

    def backward(self, xp, cache, targets, scale, out):
        # dL/dz (..., B, 1) = (e^z - t) * scale, and e^z - t is the residual forward kept
        return xp.multiply(cache.r, scale, out=out)


# every loss by its config name: the config's allowed values come from here; each proven by
# central differences (tests/test_gradients.py)
LOSSES = {cls.name: cls for cls in (SoftmaxCrossEntropy, SigmoidBinaryCrossEntropy,
                                    MeanSquaredError, Huber, Poisson)}
REGRESSION_LOSSES = {name: loss for name, loss in LOSSES.items() if loss.task == "regression"}


def resolve_loss(name: str, n_classes: int, task: str = "classification") -> str:
    """`auto` picks mse for a real-valued target; for classes, sigmoid + BCE for two (one
    output), softmax otherwise."""
    if name != "auto":
        return name
    if task == "regression":
        return "mse"
    return "sigmoid_bce" if n_classes == 2 else "softmax_cross_entropy"


def make_loss(name: str, n_classes: int, smoothing: float = 0.0, task: str = "classification",
              huber_delta: float = 1.0, target: tuple[float, float] = (0.0, 1.0)) -> Loss:
    """The loss `name` (or auto's pick); `smoothing` only for a loss that `smooths`;
    `huber_delta` for huber; `target`: the (mean, std) a regression loss standardizes its
    target with."""
    loss = LOSSES[resolve_loss(name, n_classes, task)]
    if loss.task == "regression":
        return loss(huber_delta, *target) if loss is Huber else loss(*target)
    return loss(smoothing) if smoothing else loss()


# ---------------------------------------------------------------------------------------------
# Linear layer: z = x W^T + b with W of shape (O, I), the usual frameworks' layout. The model
# stores W column-major (W^T (I, O) is C-contiguous): then x W^T and dW^T = x^T dz are the
# forms BLAS runs fastest at small batches (measured ~20% faster at B=64; equal at B=1024).
# Any layout works here; the transposes are views, never copies.
# ---------------------------------------------------------------------------------------------


class Linear:
    """Shapes with a group's leading members axis G too: W (G, O, I), b (G, O), x (G, B, I)."""

    def __init__(self, weight, bias, grad_weight, grad_bias):
        self.weight, self.bias = weight, bias  # (O, I), (O,)
        self.grad_weight, self.grad_bias = grad_weight, grad_bias  # same shapes
        self.weight_t = weight.swapaxes(-1, -2)  # W^T (I, O): as the flat buffer holds it
        # the bias as a row that broadcasts over the batch: (O,), or (G, 1, O) for a group
        self.bias_rows = bias if bias.ndim == 1 else bias[..., None, :]
        self.grad_bias_rows = grad_bias if bias.ndim == 1 else grad_bias[..., None, :]

    @property
    def in_features(self) -> int:
        return self.weight.shape[-1]

    @property
    def out_features(self) -> int:
        return self.weight.shape[-2]

    def forward(self, ops, x, out):
        # out (B, O) = x (B, I) @ W^T (I, O); the bias is added with the activation (fused)
        return ops.matmul(x, self.weight, out=out, trans_b=True)

    def backward(self, ops, x, dz, dx_out=None, sgd_lr=None):
        """The gradients into grad_weight and grad_bias; or, given `sgd_lr`, plain SGD's step
        taken inside their products, W <- W - lr dW and b <- b - lr db, gradients unwritten."""
        # dx (B, I) = dz (B, O) @ W (O, I), with this step's W; skipped for the first layer,
        # whose input is data
        if dx_out is not None:
            ops.matmul(dz, self.weight, out=dx_out)
        if sgd_lr is not None:  # the same products, added into W^T (I, O) and b
            ops.matmul_descend(x, dz, self.weight_t, sgd_lr, trans_a=True)
            ops.sum_rows_descend(dz, self.bias_rows, sgd_lr)
            return dx_out
        # dW (O, I) = dz^T (O, B) @ x (B, I), written as its transpose dW^T = x^T dz (I, O)
        ops.matmul(x, dz, out=self.grad_weight.swapaxes(-1, -2), trans_a=True)
        # db (O,) = sum over the batch of dz (B, O)
        ops.sum_rows(dz, out=self.grad_bias_rows)
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
