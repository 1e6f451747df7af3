"""The CPU backend: NumPy primitives that write into preallocated buffers."""

from __future__ import annotations

import math

import numpy as np

from mlptrain import nn, seeding
from mlptrain.backend.protocol import Backend


class NumpyBackend(Backend):
    """Executes the model's primitives with NumPy on the host.

    Every primitive writes into an `out` buffer that the caller allocated once per batch
    shape; the few temporaries a primitive needs come from scratch buffers kept here, one per
    shape and dtype, so a steady-state training step allocates no array memory.
    """

    name = "numpy"
    device = "cpu"
    xp = np  # the array module; nn's readable math is written against it

    def __init__(self):
        self._scratch: dict[tuple, np.ndarray] = {}
        self._ones: dict[tuple, np.ndarray] = {}  # (n, dtype) -> ones(n), never written

    def scratch(self, shape: tuple[int, ...], dtype, tag: str = "") -> np.ndarray:
        """A buffer of this shape and dtype, made on first use and reused: its contents are
        garbage to the caller. `tag` separates buffers that must not alias each other."""
        key = (tuple(shape), np.dtype(dtype), tag)
        buf = self._scratch.get(key)
        if buf is None:
            buf = self._scratch[key] = np.empty(shape, dtype=dtype)
        return buf

    # -- moving data across the host/device boundary (no-ops on the CPU) ----------------------

    def asarray(self, host: np.ndarray, dtype: np.dtype | type | None = None) -> np.ndarray:
        return np.ascontiguousarray(host, dtype=dtype)

    def to_host(self, array: np.ndarray) -> np.ndarray:
        return np.asarray(array)

    def to_float(self, scalar) -> float:
        return float(scalar)  # on a device backend this is a sync point

    def empty(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        return np.empty(shape, dtype=dtype)

    def zeros(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        return np.zeros(shape, dtype=dtype)

    # -- the primitives (see mlptrain/backend/__init__.py for the protocol) ----------------------

    def take_rows(self, source: np.ndarray, index: np.ndarray, out: np.ndarray) -> np.ndarray:
        """out[i] = source[index[i]]: gathers a mini-batch without a fresh allocation.

        mode="clip" because the default ("raise") makes np.take buffer `out` (a copy per call);
        the indices come from a permutation, so clipping never changes them.
        """
        return source.take(index, axis=0, out=out, mode="clip")

    def matmul(
        self, a: np.ndarray, b: np.ndarray, out: np.ndarray,
        trans_a: bool = False, trans_b: bool = False,
    ) -> np.ndarray:
        """out = op(a) @ op(b), op transposing when asked (a view, no copy: BLAS's trans flag)."""
        return np.matmul(a.T if trans_a else a, b.T if trans_b else b, out=out)

    def row_norms_squared(self, w: np.ndarray, out: np.ndarray) -> np.ndarray:
        """out[j] = sum_i w[j, i]^2, without a (O, I) temporary (max-norm)."""
        return np.einsum("oi,oi->o", w, w, out=out)

    def sum_rows(self, a: np.ndarray, out: np.ndarray) -> np.ndarray:
        """out[j] = sum_i a[i, j]: the bias gradient, summed over the batch.

        Computed as the product 1^T a (a GEMV): about twice as fast as np.sum's pairwise
        reduction over axis 0, and no less accurate for the batch sizes used here.
        """
        ones = self._ones.get((a.shape[0], a.dtype))
        if ones is None:
            ones = self._ones[a.shape[0], a.dtype] = np.ones(a.shape[0], a.dtype)
        return np.matmul(ones, a, out=out)

    def bias_activation(
        self, z: np.ndarray, bias: np.ndarray, activation: nn.Activation, out: np.ndarray
    ) -> np.ndarray:
        """out = activation(z + bias); z is overwritten with z + bias."""
        np.add(z, bias, out=z)
        return activation.forward(np, z, out=out)

    def add_bias(self, z: np.ndarray, bias: np.ndarray) -> np.ndarray:
        return np.add(z, bias, out=z)

    def activation_backward(
        self, activation: nn.Activation, y: np.ndarray, dy: np.ndarray, out: np.ndarray
    ) -> np.ndarray:
        """out = dy * activation'(z), with the derivative read from the saved output y."""
        dtype = activation.scratch_dtype or y.dtype
        scratch = self.scratch(y.shape, dtype, tag="activation")
        return activation.backward(np, y, dy, out=out, scratch=scratch)

    def loss_forward(self, loss: nn.Loss, logits, targets, cache):
        """(summed loss, correct predictions) of a batch, as device scalars."""
        return loss.forward(np, logits, targets, cache)

    def loss_backward(self, loss: nn.Loss, cache, targets, scale: float, out):
        return loss.backward(np, cache, targets, scale, out=out)

    def dropout_mask(self, seed: int, slot: int, step: int, rate: float, out: np.ndarray):
        """out (B, I) = keep / (1 - rate), keep from seeding.dropout_keep (the kernels' bits)."""
        keep = seeding.dropout_keep(seed, slot, step, out.size, rate).reshape(out.shape)
        return np.multiply(keep, out.dtype.type(1.0 / (1.0 - rate)), out=out)

    # -- optimizer updates, in place; `grad` is scratch and is overwritten ---------------------

    def sgd_update(self, param, grad, velocity, lr: float, momentum: float, nesterov: bool,
                   weight_decay: float) -> None:
        """v <- mu v + (g + wd p);  p <- p - lr v   (Nesterov: p <- p - lr (g + wd p + mu v)).

        With mu = 0 the velocity is unused (may be None): p <- p - lr (g + wd p).
        """
        g = grad
        if weight_decay:
            g += np.multiply(param, weight_decay, out=self.scratch(g.shape, g.dtype, "update"))
        if momentum:
            velocity *= momentum
            velocity += g  # v <- mu v + g
            if not nesterov:
                param -= np.multiply(velocity, lr, out=g)  # p <- p - lr v
                return
            g += np.multiply(velocity, momentum, out=self.scratch(g.shape, g.dtype, "update"))
        g *= lr
        param -= g

    def adam_update(self, param, grad, m, v, step: int, lr: float, beta1: float, beta2: float,
                    eps: float, weight_decay: float, decoupled: bool) -> None:
        """Adam's step t = `step` (1-based), with bias correction; AdamW if `decoupled`.

        m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
        p <- p - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
        """
        g, tmp = grad, self.scratch(grad.shape, grad.dtype, "update")
        if weight_decay and decoupled:
            param *= 1 - lr * weight_decay  # AdamW: shrink p, apart from the gradient
        elif weight_decay:
            g += np.multiply(param, weight_decay, out=tmp)  # L2: the gradient of wd/2 |p|^2
        m *= beta1
        m += np.multiply(g, 1 - beta1, out=tmp)
        v *= beta2
        np.multiply(g, g, out=tmp)
        v += np.multiply(tmp, 1 - beta2, out=tmp)
        # the step, built in g (no longer needed): lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 -
        # b2^t) + eps), which is the formula above with the corrections taken out of the arrays
        np.sqrt(v, out=g)
        g *= 1 / math.sqrt(1 - beta2**step)
        g += eps
        np.divide(m, g, out=g)
        g *= lr / (1 - beta1**step)
        param -= g
