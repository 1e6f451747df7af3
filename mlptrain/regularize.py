"""Regularisers written by hand: inverted dropout and the max-norm weight constraint.

Dropout (Srivastava et al. 2014) zeroes each input of a Linear layer with probability p while
training and scales the survivors by 1 / (1 - p), so the expected input is unchanged and
evaluation needs no rescaling: evaluation never calls it. Max-norm caps the L2 norm of each
unit's incoming weight vector (a row of W) after every optimizer step, which lets dropout nets
train with large learning rates without the weights blowing up.

Both work on buffers allocated once (per batch size for the masks), in place.
"""

from __future__ import annotations

import numpy as np


class Dropout:
    """Inverted dropout on the inputs of Linear layers, masks drawn from the counter-based
    generator (seeding.dropout_keep), so every backend draws the same masks for a step.

    rates[i] is the drop probability for the input of Linear layer i: rates[0] drops input
    features, rates[1:] drop hidden units. A rate of 0 leaves that layer's input alone.

    forward:  x~ = x * m,  m_j = [bits16_j >= round(p 2^16)] / (1 - p)   (x, m, x~: (B, I))
    backward: dL/dx = dL/dx~ * m
    The bits of element (b, j) of layer i's mask at global step t are Philox's for
    (seed, DROPOUT) at counter slot i, step t, element b I + j: a pure function of the step,
    so an exact resume needs no generator state.
    """

    def __init__(self, ops, rates: list[float], seed: int, dtype):
        self.ops, self.rates, self.seed, self.dtype = ops, list(rates), int(seed), np.dtype(dtype)
        self.frozen = False  # keep the current masks (gradient checks); False: new per batch
        self._buffers: dict[int, tuple[list, list]] = {}  # batch size -> (masks, dropped)
        self._masks: list = []
        self._dropped: list = []

    def active(self, i: int) -> bool:
        return i < len(self.rates) and self.rates[i] > 0

    def draw(self, sizes: list[int], batch_size: int, step: int) -> None:
        """The masks of global step `step` for a batch of `batch_size` rows; sizes[i] is
        Linear i's input width. Drawn on the backend's device (no host round trip)."""
        if self.frozen and self._masks:
            return
        self._masks, self._dropped = self._buffers_for(sizes, batch_size)
        for i, mask in enumerate(self._masks):
            if mask is not None:
                self.ops.dropout_mask(self.seed, i, step, self.rates[i], out=mask)

    def forward(self, i: int, x):
        """x~ (B, I) = x * m for Linear i's input; x itself when that input is not dropped."""
        if not self.active(i):
            return x
        return self.ops.xp.multiply(x, self._masks[i], out=self._dropped[i])

    def dropped_input(self, i: int, x):
        """What Linear i saw in the last forward: its weight gradient needs it."""
        return self._dropped[i] if self.active(i) else x

    def backward(self, i: int, dx) -> None:
        """dL/dx = dL/dx~ * m, in place on dx (B, I)."""
        if self.active(i):
            self.ops.xp.multiply(dx, self._masks[i], out=dx)

    def _buffers_for(self, sizes: list[int], batch_size: int):
        if batch_size not in self._buffers:
            new = lambda i, n: (self.ops.zeros((batch_size, n), self.dtype)  # noqa: E731
                                if self.active(i) else None)
            self._buffers[batch_size] = ([new(i, n) for i, n in enumerate(sizes)],
                                         [new(i, n) for i, n in enumerate(sizes)])
        return self._buffers[batch_size]


def dropout_of(step, model) -> "Dropout | None":
    """The dropout a declared step applies to this model's layer inputs (None: no dropout)."""
    if not step.has_dropout:
        return None
    return Dropout(model.ops, step.dropout_rates(len(model.layers)), step.seed, model.dtype)


class MaxNorm:
    """W_j <- W_j * min(1, c / |W_j|) for every row j (one unit's incoming weights) of every
    hidden layer's W (O, I); the output layer is left free, as in Srivastava et al."""

    def __init__(self, ops, weights: list, limit: float):
        self.ops, self.weights, self.limit = ops, weights, float(limit)
        self._norms = [ops.zeros((w.shape[0],), w.dtype) for w in weights]  # (O,) each

    def apply(self) -> None:
        ops, xp = self.ops, self.ops.xp
        for w, norms in zip(self.weights, self._norms):
            ops.row_norms_squared(w, out=norms)  # |W_j|^2
            xp.sqrt(norms, out=norms)
            xp.maximum(norms, self.limit, out=norms)  # rows inside the ball keep factor 1
            xp.divide(self.limit, norms, out=norms)  # min(1, c / |W_j|)
            if xp is np and norms.min() == 1.0:  # on the host the check costs no sync:
                continue  # every row inside the ball, and w * 1 == w (a pass over w saved)
            w *= norms[:, None]


def max_norm_of(step, model) -> MaxNorm | None:
    """The max-norm a declared step applies to this model's hidden layers (None: none, or no
    hidden layer)."""
    hidden = [layer.weight for layer in model.layers[:-1]]  # the output layer stays free
    return MaxNorm(model.ops, hidden, step.max_norm) if step.max_norm and hidden else None
