"""What every backend is: the primitive names of the protocol (see backend/__init__.py), a base
class that turns a missing one into a clear BackendError, and the reference implementation of
each math primitive.

A backend subclasses `Backend`. Asking it for a protocol name it does not define raises
BackendError naming the backend and the primitive, never a bare AttributeError deep inside the
model's math. The math primitives are written here once, as the textbook formula against the
backend's array module `xp` (NumPy or CuPy): NumPy inherits most of them; CuPy overrides a kind
with its kernel where it has one (cuda/dispatch.py) and falls back to these otherwise; an update
a backend does not override (rmsprop) runs this formula on any device. `graph_blockers` is the
backend's half of the path decision (`epoch_path`).
"""

from __future__ import annotations

import math

from mlptrain import nn
from mlptrain.errors import BackendError

PRIMITIVES = (
    "asarray", "to_host", "to_float", "empty", "zeros", "take_rows", "matmul", "sum_rows",
    "row_norms_squared",
)
# asked for only when graph_blockers(step) is empty: a backend without a graph never needs it
CAPABILITIES = ("epoch_runner",)


class Backend:
    name = "backend"
    device = "none"

    def graph_blockers(self, step) -> list[str]:
        """The reasons this backend cannot replay `step`'s epochs as one captured graph; empty
        when it can. A backend without an epoch graph runs eagerly and says where."""
        return [self.device]

    capture_failure: str | None = None  # why the last capture() returned None, where it tried

    def capture(self, launch, prepare=None):
        """A callable that replays what `launch()` enqueues on the device (a captured graph),
        or None when this backend cannot capture: then the caller runs launch itself. What
        launch touches must stay allocated, in place, between replays. `prepare()`, called
        only when a capture will be tried, runs first (and eagerly): it makes what the
        launches need exist, and undoes what it changed."""
        return None

    def choose_threads(self, trial, recorded, fresh: bool) -> dict | None:
        """Sets the thread count an eager run's steps use, where the backend has one to choose
        (the CPU's BLAS: NumpyBackend); returns what the run must record, or None."""
        return None

    def restore_threads(self) -> None:
        """Undoes choose_threads after the run."""

    xp = None  # the array module of the backend's arrays (numpy, cupy)

    def scratch(self, shape: tuple[int, ...], dtype, tag: str = ""):
        """A buffer whose contents are garbage to the caller (a backend may keep and reuse it
        per shape, dtype and tag, as NumPy's does)."""
        return self.xp.empty(shape, dtype=dtype)

    # -- the math primitives, as their formulas (B batch, O outputs, C classes) ---------------

    def bias_activation(self, z, bias, activation, out):
        """z (B, O) += bias (O,); out = f(z); out may be z (a group's z (G, B, O), bias
        (G, 1, O))."""
        self.xp.add(z, bias, out=z)
        return activation.forward(self.xp, z, out=out)

    def add_bias(self, z, bias):
        return self.xp.add(z, bias, out=z)

    def activation_backward(self, activation, y, dy, out, z=None):
        """out = dy * f'(z), from the saved output y = f(z), and the input z where the
        activation reads it (activation.reads_input); out may be dy."""
        scratch = self.scratch(y.shape, activation.scratch_dtype or y.dtype, tag="activation")
        return activation.backward(self.xp, y, dy, out=out, scratch=scratch, z=z)

    def loss_forward(self, loss, logits, targets, cache, weights=None):
        """(summed loss in float64, *the loss's tallies: correct predictions, or a real
        target's errors) of the batch logits (..., B, C), as device scalars (per member for a
        group); cache (loss.new_cache) keeps what backward needs, e.g. the softmax. `weights`
        (B,): each row's loss counts w_b times."""
        return loss.forward(self.xp, logits, targets, cache, weights)

    def loss_backward(self, loss, cache, targets, scale: float, out):
        """out (..., B, C) = dL_sum/dlogits * scale."""
        return loss.backward(self.xp, cache, targets, scale, out=out)

    def loss_and_grad(self, loss, logits, targets, cache, scale: float, out, sums=None,
                      weights=None):
        """The loss's forward and its gradient dL/dlogits * scale into `out`, as loss_forward and
        loss_backward compute them; returns (summed loss, *tallies), or with `sums` (..., 1 +
        tallies) float64 adds them there (add_sums: the running sums, per member). A backend
        overrides it where one kernel does both. `weights` (B,), a batch's sample weights: each
        row's loss and its gradient are weighed by nn.batch_weights (w_b B / sum(w)), so that the
        summed loss is B times the batch's weighted mean, and with scale = 1/B row b's gradient is
        w_b / sum(w) of its own; None: the plain step, operation for operation."""
        rows = None if weights is None else nn.batch_weights(self.xp, weights, out.dtype)
        found = self.loss_forward(loss, logits, targets, cache, rows)
        self.loss_backward(loss, cache, targets, scale, out=out)
        if rows is not None:
            self.xp.multiply(out, rows[..., None], out=out)  # dL/dz (B, C): row b times its weight
        if sums is None:
            return found
        self.add_sums(sums, found)
        return None

    def add_sums(self, sums, found) -> None:
        """sums (..., 1 + tallies) float64 += a batch's (summed loss, *tallies), per member."""
        for i, total in enumerate(found):
            self.xp.add(sums[..., i], total, out=sums[..., i])

    # -- plain SGD folded into the products of the gradients (nn.Linear.backward with a rate):
    # p <- p - lr g with g never written. A backend whose products add into their output
    # (BLAS's beta) sets folds_sgd, and an eager step of plain SGD then runs these instead of
    # the gradients' products and sgd_update; the formulas below serve any other caller

    folds_sgd = False

    def matmul_descend(self, a, b, out, lr: float, trans_a: bool = False,
                       trans_b: bool = False):
        """out -= lr op(a) @ op(b): a weight's gradient product and its step in one."""
        xp = self.xp
        out -= lr * xp.matmul(a.T if trans_a else a, b.T if trans_b else b)
        return out

    def sum_rows_descend(self, a, out, lr: float):
        """out[j] -= lr sum_i a[i, j]: a bias's gradient and its step in one."""
        out -= lr * a.sum(axis=-2)
        return out

    # -- optimizer updates, in place on same-shaped arrays (a model's whole flat buffer); the
    # gradient is scratch and is overwritten

    def sgd_update(self, param, grad, velocity, lr, momentum: float, nesterov: bool,
                   weight_decay) -> None:
        """g' = g + wd p;  v <- mu v + g';  p <- p - lr v   (Nesterov: p <- p - lr (g' + mu v)).
        With mu = 0 the velocity is unused (may be None): p <- p - lr g'. lr and weight_decay
        may be (G,): a group's arrays (G, ...), each member's own."""
        lr, wd = each_member(param, lr, weight_decay)
        g = grad
        if decays(wd):
            g += param * wd
        if momentum:
            velocity *= momentum
            velocity += g
            if nesterov:
                g += velocity * momentum
            else:
                g = velocity
        param -= g * lr

    def adam_update(self, param, grad, m, v, step: int, lr, beta1: float, beta2: float,
                    eps: float, weight_decay, decoupled: bool) -> None:
        """Adam's step t = `step` (1-based), with bias correction; AdamW if `decoupled`.

        g' = g + wd p (decoupled: p <- p (1 - lr wd) instead)
        m <- b1 m + (1 - b1) g';  v <- b2 v + (1 - b2) g'^2
        p <- p - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

        lr and weight_decay may be (G,), as in sgd_update; the members share t.
        """
        lr, weight_decay = each_member(param, lr, weight_decay)
        xp, g, tmp = self.xp, grad, self.scratch(grad.shape, grad.dtype, "update")
        if decays(weight_decay) and decoupled:
            param *= 1 - lr * weight_decay  # AdamW: shrink p, apart from the gradient
        elif decays(weight_decay):
            g += xp.multiply(param, weight_decay, out=tmp)  # L2: the gradient of wd/2 |p|^2
        m *= beta1
        m += xp.multiply(g, 1 - beta1, out=tmp)
        v *= beta2
        xp.multiply(g, g, out=tmp)
        v += xp.multiply(tmp, 1 - beta2, out=tmp)
        # the step, built in g (no longer needed): lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 -
        # b2^t) + eps), which is the formula above with the corrections taken out of the arrays
        xp.sqrt(v, out=g)
        g *= 1 / math.sqrt(1 - beta2**step)
        g += eps
        xp.divide(m, g, out=g)
        g *= lr / (1 - beta1**step)
        param -= g

    def rmsprop_update(self, param, grad, v, lr, rho: float, eps: float, weight_decay) -> None:
        """g' = g + wd p;  v <- rho v + (1 - rho) g'^2;  p <- p - lr g' / (sqrt(v) + eps).
        lr and weight_decay may be (G,), as in sgd_update."""
        lr, weight_decay = each_member(param, lr, weight_decay)
        xp, g, tmp = self.xp, grad, self.scratch(grad.shape, grad.dtype, "update")
        if decays(weight_decay):
            g += xp.multiply(param, weight_decay, out=tmp)
        v *= rho
        xp.multiply(g, g, out=tmp)
        v += xp.multiply(tmp, 1 - rho, out=tmp)
        xp.sqrt(v, out=tmp)
        tmp += eps
        xp.divide(g, tmp, out=g)
        g *= lr
        param -= g

    def __getattr__(self, name: str):
        # only reached when normal lookup fails: a primitive this backend does not implement
        if name in PRIMITIVES or name in CAPABILITIES:
            raise BackendError(f"the {self.name} backend ({self.device}) has no {name!r} "
                               "primitive, which this training step needs. Choose another "
                               "train.device, or implement it in the backend.")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


def each_member(param, *values) -> tuple:
    """A group's (G,) values viewed (G, 1, ...) to broadcast over its arrays param (G, ...),
    each member its own; a float as it is."""
    member = (-1, *(1,) * (param.ndim - 1))
    return tuple(a.reshape(member) if getattr(a, "ndim", 0) else a for a in values)


def decays(weight_decay) -> bool:
    """Whether a weight decay applies: a float's, or a group's array (made only where some
    member decays)."""
    return bool(getattr(weight_decay, "ndim", 0) or weight_decay)
