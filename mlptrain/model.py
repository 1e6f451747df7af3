"""The multilayer perceptron: Linear layers with an activation between them and a loss on top.

Parameters are a flat dictionary of named arrays, `layers.{i}.weight` (O, I) and
`layers.{i}.bias` (O,), i counting the Linear layers from 0, which maps one-to-one onto the usual
frameworks' layout. Every one of them is a view into a single flat buffer (`Parameters.flat`),
and so are the gradients, so an optimizer updates the whole model in one call. Weights are
stored column-major (see nn.Linear for why); saved weights are plain C-ordered (O, I) arrays.
Activations live in buffers allocated once per batch size (a Workspace).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from mlptrain import nn
from mlptrain.errors import ModelError

ALIGN = 16  # elements: each parameter starts at a multiple of 16 from the flat buffer's start


class Parameters(dict):
    """Named arrays that are views into one flat buffer, `flat`, in the order of `layout`.

    layout: (name, start, shape) per array; weights (O, I) are column-major views of the
    segment [start, start + O*I), i.e. the segment holds W^T (I, O) row by row. The gaps
    between aligned segments are zeros and stay zero under every optimizer.
    """

    def __init__(self, flat, layout: list[tuple[str, int, tuple[int, ...]]]):
        super().__init__()
        self.flat, self.layout = flat, layout
        for name, start, shape in layout:
            segment = flat[start:start + math.prod(shape)]
            if len(shape) == 2:  # a weight (O, I): stored as W^T (I, O), C-contiguous
                self[name] = segment.reshape(shape[::-1]).T
            else:
                self[name] = segment.reshape(shape)

    @classmethod
    def zeros(cls, ops, shapes: dict[str, tuple[int, ...]], dtype) -> Parameters:
        layout, size = [], 0
        for name, shape in shapes.items():
            layout.append((name, size, tuple(shape)))
            size += -(-math.prod(shape) // ALIGN) * ALIGN  # rounded up to ALIGN
        return cls(ops.zeros((size,), dtype), layout)

    def zeros_like(self, ops) -> Parameters:
        """A zeroed set with the same names, shapes and layout (gradients, optimizer state)."""
        return Parameters(ops.zeros(self.flat.shape, self.flat.dtype), self.layout)


@dataclass
class Workspace:
    """Buffers for one batch size B. acts[0] is the input batch, acts[-1] the logits."""

    acts: list  # acts[i] (B, sizes[i]); hidden ones hold post-activation values
    deltas: list  # deltas[i] (B, sizes[i]) for hidden layers i = 1..L-1, dL/d(acts[i])
    dlogits: object  # (B, C) dL/dz of the output layer
    loss_cache: object  # the loss's buffers (loss.new_cache), e.g. .probs (B, C) the softmax

    @property
    def x(self):
        return self.acts[0]

    @property
    def batch_size(self) -> int:
        return self.acts[0].shape[0]


class MLP:
    def __init__(self, ops, sizes: list[int], activation: nn.Activation, loss: nn.Loss, dtype):
        if len(sizes) < 2 or min(sizes) < 1:
            raise ModelError(f"an MLP needs at least input and output sizes >= 1, got {sizes}.")
        self.ops, self.sizes, self.dtype = ops, list(sizes), np.dtype(dtype)
        self.activation, self.loss = activation, loss
        shapes = {}
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
            shapes[f"layers.{i}.weight"], shapes[f"layers.{i}.bias"] = (fan_out, fan_in), (fan_out,)
        self.params = Parameters.zeros(ops, shapes, self.dtype)
        self.grads = self.params.zeros_like(ops)
        p, g = self.params, self.grads
        self.layers = [nn.Linear(p[f"layers.{i}.weight"], p[f"layers.{i}.bias"],
                                 g[f"layers.{i}.weight"], g[f"layers.{i}.bias"])
                       for i in range(len(sizes) - 1)]
        self._workspaces: dict[int, Workspace] = {}
        self.dropout = None  # a regularize.Dropout, applied in training steps only

    # -- set-up ---------------------------------------------------------------------------------

    def initialize(self, scheme: str, rng: np.random.Generator) -> None:
        """Draw every weight from INITIALIZERS[scheme] (on the host, in float64); biases 0."""
        init = nn.INITIALIZERS[scheme]
        for layer in self.layers:
            host = init(rng, layer.out_features, layer.in_features)
            layer.weight[...] = self.ops.asarray(host, self.dtype)
            layer.bias[...] = 0

    def workspace(self, batch_size: int) -> Workspace:
        """The buffers for this batch size, made on first use and kept (one per distinct size)."""
        ws = self._workspaces.get(batch_size)
        if ws is None:
            new = lambda n: self.ops.zeros((batch_size, n), self.dtype)  # noqa: E731
            ws = Workspace(
                acts=[new(n) for n in self.sizes],
                deltas=[None] + [new(n) for n in self.sizes[1:-1]],
                dlogits=new(self.sizes[-1]),
                loss_cache=self.loss.new_cache(self.ops.xp, batch_size, self.sizes[-1],
                                               self.dtype),
            )
            self._workspaces[batch_size] = ws
        return ws

    # -- the math -------------------------------------------------------------------------------

    def forward(self, ws: Workspace, x=None, training: bool = False):
        """acts[i+1] = f(acts[i] W_i^T + b_i) for hidden layers; the last is left linear.

        The input is ws.x, or `x` (B, I) when given: evaluation passes a view of the data,
        so nothing is copied. training: each layer's input passes through dropout (if any).
        """
        ops, last = self.ops, len(self.layers) - 1
        drop = self.dropout if training else None
        for i, layer in enumerate(self.layers):
            inputs = x if i == 0 and x is not None else ws.acts[i]  # (B, I)
            if drop is not None:
                inputs = drop.forward(i, inputs)
            z = layer.forward(ops, inputs, out=ws.acts[i + 1])  # (B, O)
            if i < last:
                ops.bias_activation(z, layer.bias, self.activation, out=z)  # in place: z -> y
            else:
                ops.add_bias(z, layer.bias)
        return ws.acts[-1]

    def backward(self, ws: Workspace) -> None:
        """Fills self.grads from ws.dlogits, walking the layers in reverse."""
        ops, dz = self.ops, ws.dlogits  # (B, C)
        for i in reversed(range(len(self.layers))):
            dx = ws.deltas[i] if i > 0 else None  # (B, sizes[i]) = dL/d acts[i]
            x = ws.acts[i] if self.dropout is None else self.dropout.dropped_input(i, ws.acts[i])
            self.layers[i].backward(ops, x, dz, dx_out=dx)
            if dx is not None:
                if self.dropout is not None:
                    self.dropout.backward(i, dx)  # dL/dy = dL/dy~ * mask
                # dL/dz_{i} = dL/dy_{i} * f'(z_{i}), with f' read from the saved y = acts[i]
                ops.activation_backward(self.activation, ws.acts[i], dx, out=dx)
            dz = dx

    def loss_and_grad(self, ws: Workspace, targets, scale: float, step: int = 0):
        """Forward, loss, backward for the batch in ws.x; returns (summed loss, correct).

        `scale` multiplies dL/dlogits: 1/B gives the gradient of the batch-mean loss. `step`,
        the global optimizer step, picks the dropout masks (a pure function of it).
        """
        if self.dropout is not None:
            self.dropout.draw(self.sizes[:-1], ws.batch_size, step)  # this step's masks
        logits = self.forward(ws, training=True)
        loss_sum, correct = self.ops.loss_forward(self.loss, logits, targets, ws.loss_cache)
        self.ops.loss_backward(self.loss, ws.loss_cache, targets, scale, out=ws.dlogits)
        self.backward(ws)
        return loss_sum, correct

    def forward_batches(self, X, batch_size: int):
        """Yields (start, stop, ws, logits (b, C)) for X (N, D) in batches of `batch_size`: the
        one batched evaluation pass (metrics, figures, predictions all use it). X may live on
        the host or the device; a batch already there in the model's dtype is used as a view,
        nothing copied. The workspace is reused by the next batch: take what you need first."""
        for start in range(0, X.shape[0], batch_size):
            stop = min(start + batch_size, X.shape[0])
            ws = self.workspace(stop - start)
            yield start, stop, ws, self.forward(ws, self.ops.asarray(X[start:stop], self.dtype))

    def evaluate_batch(self, ws: Workspace, targets, x=None):
        """(summed loss, correct) for the batch in ws.x (or `x`), without gradients."""
        logits = self.forward(ws, x)
        return self.ops.loss_forward(self.loss, logits, targets, ws.loss_cache)

    # -- state ----------------------------------------------------------------------------------

    @property
    def parameter_count(self) -> int:
        return sum(int(np.prod(p.shape)) for p in self.params.values())

    def state_dict(self) -> dict[str, np.ndarray]:
        """Host copies of the parameters, keyed by name, each C-ordered."""
        return {name: np.array(self.ops.to_host(p), order="C") for name, p in self.params.items()}

    def load_state_dict(self, state: dict[str, np.ndarray], source: str = "weights") -> None:
        """Copies `state` into the parameters after checking every name and shape."""
        missing = [name for name in self.params if name not in state]
        unexpected = [name for name in state if name not in self.params]
        if missing or unexpected:
            raise ModelError(
                f"{source} does not fit this model ({self.describe_sizes()}): "
                f"missing {missing or 'nothing'}, unexpected {unexpected or 'nothing'}. "
                "Check model.hidden against the network that wrote the file."
            )
        for name, p in self.params.items():  # every shape first: a failed load changes nothing
            value = np.asarray(state[name])
            if value.shape != tuple(p.shape):
                raise ModelError(
                    f"{source}: {name.rsplit('.', 1)[0]} has {name.rsplit('.', 1)[1]} of shape "
                    f"{value.shape}, but this model ({self.describe_sizes()}) expects "
                    f"{tuple(p.shape)}. Check model.hidden against the network that wrote it."
                )
        for name, p in self.params.items():
            p[...] = self.ops.asarray(state[name], self.dtype)

    def describe_sizes(self) -> str:
        return "-".join(str(n) for n in self.sizes)

    def describe(self) -> list[str]:
        """One line per layer, for a user: what it is and how many parameters it has."""
        lines = []
        for i, layer in enumerate(self.layers):
            act = self.activation.name if i < len(self.layers) - 1 else self.loss.name
            n = layer.in_features * layer.out_features + layer.out_features
            lines.append(f"layers.{i}: Linear({layer.in_features} -> {layer.out_features}) "
                         f"+ {act}  [{n:,} parameters]")
        return lines


def build_model(step, hidden: list[int], ops, n_features: int) -> MLP:
    """The MLP of a declared step (its activation, loss and dtype) with these hidden widths,
    with zero weights (call initialize)."""
    return MLP(ops, [n_features, *hidden, step.outputs], step.activation_fn(), step.loss_fn(),
               np.dtype(step.dtype))
