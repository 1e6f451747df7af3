"""The CPU backend: NumPy primitives that write into preallocated buffers."""

from __future__ import annotations

import numpy as np

from mlptrain import nn


class NumpyBackend:
    """Executes the model's primitives with NumPy on the host.

    Every primitive writes into an `out` buffer that the caller allocated once per batch
    shape, so a training step allocates (almost) nothing. Arrays are C-contiguous.
    """

    name = "numpy"
    device = "cpu"
    xp = np  # the array module; nn's readable math is written against it

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

    # -- the primitives -------------------------------------------------------------------------

    def take_rows(self, source: np.ndarray, index: np.ndarray, out: np.ndarray) -> np.ndarray:
        """out[i] = source[index[i]]: gathers a mini-batch without a fresh allocation."""
        return np.take(source, index, axis=0, out=out)

    def matmul(
        self, a: np.ndarray, b: np.ndarray, out: np.ndarray,
        trans_a: bool = False, trans_b: bool = False,
    ) -> np.ndarray:
        """out = op(a) @ op(b), op transposing when asked (a view, no copy)."""
        return np.matmul(a.T if trans_a else a, b.T if trans_b else b, out=out)

    def sum_rows(self, a: np.ndarray, out: np.ndarray) -> np.ndarray:
        """out[j] = sum_i a[i, j]: the bias gradient, summed over the batch."""
        return np.sum(a, axis=0, out=out)

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
        return activation.backward(np, y, dy, out=out)

    def loss_forward(self, loss: nn.Loss, logits, targets, cache):
        """(summed loss, correct predictions) of a batch, as device scalars."""
        return loss.forward(np, logits, targets, cache)

    def loss_backward(self, loss: nn.Loss, cache, targets, scale: float, out):
        return loss.backward(np, cache, targets, scale, out=out)
