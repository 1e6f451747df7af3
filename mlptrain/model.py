"""The multilayer perceptron: Linear layers with an activation between them and a loss on top.

Parameters are a flat dictionary of named arrays, `layers.{i}.weight` (O, I) and
`layers.{i}.bias` (O,), i counting the Linear layers from 0, which maps one-to-one onto the usual
frameworks' layout. Every one of them is a view into a single flat buffer (`Parameters.flat`),
and so are the gradients, so an optimizer updates the whole model in one call. Weights are
stored column-major (see nn.Linear for why); saved weights are plain C-ordered (O, I) arrays.
Activations live in buffers allocated once per batch size (a Workspace).

Members. One MLP object can also be G networks of one depth that train in lockstep, a group
of a sweep (`members`: each one's widths): every array then gains a leading members axis,
weights (G, O, I), biases (G, O), activations (G, B, n), and every product is one product per
member. The math below is the same for both: it reads the arrays' last axes only. A group is
as wide as its widest member, and member g's layer is the top-left (O_g, I_g) corner of its
slice, the rest zero. Padding changes no number: a padded unit gets zero weights and bias, so
its pre-activation is 0 and its output f(0), which is 0 for relu and tanh and is multiplied by
the unit mask (0) where f(0) != 0 (sigmoid); the next layer's weights from it are zero too. So
every gradient of a padded weight is exactly 0 (its input or its delta is), weight decay of a
zero weight is 0, and the padding stays zero for the whole run.
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
    segment [start, start + O*I), i.e. the segment holds W^T (I, O) row by row (a group's
    (G, O, I) holds each member's W^T after the other). The gaps between aligned segments are
    zeros and stay zero under every optimizer.
    """

    def __init__(self, flat, layout: list[tuple[str, int, tuple[int, ...]]]):
        super().__init__()
        self.flat, self.layout = flat, layout
        for name, start, shape in layout:
            segment = flat[start:start + math.prod(shape)]
            if name.endswith(".weight"):  # (..., O, I): stored as W^T (..., I, O), C-contiguous
                self[name] = segment.reshape(*shape[:-2], shape[-1], shape[-2]).swapaxes(-1, -2)
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

    def member(self, ops, g: int, sizes: list[int]) -> dict[str, np.ndarray]:
        """Member g's arrays of a group's set (host copies, C-ordered), cut to its own widths
        `sizes` (its layer sizes), named and shaped as a single network's."""
        return {name: np.array(ops.to_host(array[g][_corner(name, sizes)]), order="C")
                for name, array in self.items()}

    def load_member(self, ops, g: int, sizes: list[int], state: dict[str, np.ndarray]) -> None:
        """Member g's arrays from `state` (a single network's names and shapes)."""
        for name, array in self.items():
            array[g][_corner(name, sizes)] = ops.asarray(state[name], array.dtype)


def _corner(name: str, sizes: list[int]) -> tuple[slice, ...]:
    """Where a member of these layer sizes sits in a padded array of the group: the top-left
    (O, I) corner of layer i's weight, the first O entries of its bias."""
    i = int(name.split(".")[1])
    fan_in, fan_out = sizes[i], sizes[i + 1]
    return (slice(fan_out), slice(fan_in)) if name.endswith(".weight") else (slice(fan_out),)


@dataclass
class Workspace:
    """Buffers for one batch size B. acts[0] is the input batch, acts[-1] the logits. A group's
    arrays have the members axis first: (G, B, n)."""

    acts: list  # acts[i] (B, sizes[i]); hidden ones hold post-activation values
    inputs: list  # inputs[i] (B, sizes[i]): hidden layer i's z, kept only for an activation
    # whose backward reads it (nn.Activation.reads_input); else None and z becomes y in place
    deltas: list  # deltas[i] (B, sizes[i]) for hidden layers i = 1..L-1, dL/d(acts[i])
    dlogits: object  # (B, C) dL/dz of the output layer
    loss_cache: object  # the loss's buffers (loss.new_cache), e.g. .probs (B, C) the softmax

    @property
    def x(self):
        return self.acts[0]

    @property
    def batch_size(self) -> int:
        return self.acts[0].shape[-2]


class MLP:
    def __init__(self, ops, sizes: list[int], activation: nn.Activation, loss: nn.Loss, dtype,
                 members: list[list[int]] | None = None):
        """sizes: the layer widths, inputs first. members: each member's own layer sizes when
        this is a group of networks (see the module's docstring; `sizes` then is the widest of
        each layer), None for one network."""
        if len(sizes) < 2 or min(sizes) < 1:
            raise ModelError(f"an MLP needs at least input and output sizes >= 1, got {sizes}.")
        self.ops, self.sizes, self.dtype = ops, list(sizes), np.dtype(dtype)
        self.activation, self.loss = activation, loss
        self.member_sizes = [list(m) for m in members] if members is not None else [self.sizes]
        self.lead = (len(self.member_sizes),) if members is not None else ()  # (G,) or ()
        shapes = {}
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
            shapes[f"layers.{i}.weight"] = (*self.lead, fan_out, fan_in)
            shapes[f"layers.{i}.bias"] = (*self.lead, fan_out)
        self.params = Parameters.zeros(ops, shapes, self.dtype)
        self.grads = self.params.zeros_like(ops)
        p, g = self.params, self.grads
        self.layers = [nn.Linear(p[f"layers.{i}.weight"], p[f"layers.{i}.bias"],
                                 g[f"layers.{i}.weight"], g[f"layers.{i}.bias"])
                       for i in range(len(sizes) - 1)]
        self.unit_masks = self._unit_masks()
        self._workspaces: dict[int, Workspace] = {}
        self.dropout = None  # a regularize.Dropout, applied in training steps only

    @property
    def members(self) -> int:
        """G: the networks this model trains at once (1 for a single network)."""
        return len(self.member_sizes)

    def _unit_masks(self) -> list | None:
        """(G, 1, O) per hidden layer, 1 for a member's own units, where padding needs one: only
        where f(0) != 0 (with relu, tanh, ... a padded unit's output is already 0)."""
        padded = any(m != self.sizes for m in self.member_sizes)
        zero = np.zeros(1, self.dtype)
        if not padded or not self.activation.forward(np, zero, out=zero.copy()).any():
            return None
        masks = []
        for i in range(1, len(self.sizes) - 1):
            mask = np.zeros((self.members, 1, self.sizes[i]), self.dtype)
            for g, sizes in enumerate(self.member_sizes):
                mask[g, 0, :sizes[i]] = 1
            masks.append(self.ops.asarray(mask, self.dtype))
        return masks

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
            new = lambda n: self.ops.zeros((*self.lead, batch_size, n), self.dtype)  # noqa: E731
            ws = Workspace(
                acts=[new(n) for n in self.sizes],
                inputs=[new(n) if 0 < i < len(self.sizes) - 1 and self.activation.reads_input
                        else None for i, n in enumerate(self.sizes)],
                deltas=[None] + [new(n) for n in self.sizes[1:-1]],
                dlogits=new(self.sizes[-1]),
                loss_cache=self.loss.new_cache(self.ops.xp, batch_size, self.sizes[-1],
                                               self.dtype, self.lead),
            )
            self._workspaces[batch_size] = ws
        return ws

    # -- the math -------------------------------------------------------------------------------

    def forward(self, ws: Workspace, x=None, training: bool = False):
        """acts[i+1] = f(acts[i] W_i^T + b_i) for hidden layers; the last is left linear.

        The input is ws.x, or `x` (B, I) when given: evaluation passes a view of the data,
        so nothing is copied (a group's members all read it). training: each layer's input
        passes through dropout (if any).
        """
        ops, last = self.ops, len(self.layers) - 1
        drop = self.dropout if training else None
        for i, layer in enumerate(self.layers):
            inputs = x if i == 0 and x is not None else ws.acts[i]  # (B, I)
            if drop is not None:
                inputs = drop.forward(i, inputs)
            y = ws.acts[i + 1]
            kept = ws.inputs[i + 1]  # z's own buffer, or None: z is written into y
            z = layer.forward(ops, inputs, out=y if kept is None else kept)  # (B, O)
            if i == last:
                ops.add_bias(z, layer.bias_rows)
                break
            ops.bias_activation(z, layer.bias_rows, self.activation, out=y)  # z -> y (in place)
            if self.unit_masks is not None:  # padded units read as 0 downstream
                ops.xp.multiply(y, self.unit_masks[i], out=y)
        return ws.acts[-1]

    def backward(self, ws: Workspace, sgd_lr=None) -> None:
        """Fills self.grads from ws.dlogits, walking the layers in reverse; with `sgd_lr`,
        takes plain SGD's step p <- p - lr g inside the products instead (nn.Linear)."""
        ops, dz = self.ops, ws.dlogits  # (B, C)
        for i in reversed(range(len(self.layers))):
            dx = ws.deltas[i] if i > 0 else None  # (B, sizes[i]) = dL/d acts[i]
            x = ws.acts[i] if self.dropout is None else self.dropout.dropped_input(i, ws.acts[i])
            self.layers[i].backward(ops, x, dz, dx_out=dx, sgd_lr=sgd_lr)
            if dx is not None:
                if self.dropout is not None:
                    self.dropout.backward(i, dx)  # dL/dy = dL/dy~ * mask
                # dL/dz_{i} = dL/dy_{i} * f'(z_{i}), with f' read from the saved y = acts[i]
                ops.activation_backward(self.activation, ws.acts[i], dx, out=dx, z=ws.inputs[i])
            dz = dx

    def loss_and_grad(self, ws: Workspace, targets, scale: float, step: int = 0, sums=None,
                      weights=None, sgd_lr=None):
        """Forward, loss, backward for the batch in ws.x; returns (summed loss, *the loss's
        tallies), per member for a group, or, with `sums` (..., 1 + tallies) float64, adds them
        there instead.

        `scale` multiplies dL/dlogits: 1/B gives the gradient of the batch-mean loss, or, with
        the batch's sample `weights` (B,), of its weighted mean (ops.loss_and_grad). `step`,
        the global optimizer step, picks the dropout masks (a pure function of it). `sgd_lr`:
        plain SGD's step at this rate is taken inside backward's products (one network;
        ops.folds_sgd), and self.grads is left as it was.
        """
        if self.dropout is not None:
            self.dropout.draw(self.sizes[:-1], ws.batch_size, step)  # this step's masks
        logits = self.forward(ws, training=True)
        found = self.ops.loss_and_grad(self.loss, logits, targets, ws.loss_cache, scale,
                                       ws.dlogits, sums, weights)
        self.backward(ws, sgd_lr)
        return found

    def forward_batches(self, X, batch_size: int):
        """Yields (start, stop, ws, logits (b, C)) for X (N, D) in batches of `batch_size`: the
        one batched evaluation pass (metrics, figures, predictions all use it). X may live on
        the host or the device; a batch already there in the model's dtype is used as a view,
        nothing copied. The workspace is reused by the next batch: take what you need first."""
        for start in range(0, X.shape[0], batch_size):
            stop = min(start + batch_size, X.shape[0])
            ws = self.workspace(stop - start)
            yield start, stop, ws, self.forward(ws, self.ops.asarray(X[start:stop], self.dtype))

    # -- state ----------------------------------------------------------------------------------

    @property
    def parameter_count(self) -> int:
        return sum(int(np.prod(p.shape)) for p in self.params.values())

    def state_dict(self) -> dict[str, np.ndarray]:
        """Host copies of the parameters, keyed by name, each C-ordered (a group's with the
        members axis: member_state(g) gives one member's)."""
        return {name: np.array(self.ops.to_host(p), order="C") for name, p in self.params.items()}

    def member_state(self, g: int) -> dict[str, np.ndarray]:
        """Member g's parameters as its own network's state_dict (a group's; g = 0 of one
        network is its state_dict)."""
        if not self.lead:
            return self.state_dict()
        return self.params.member(self.ops, g, self.member_sizes[g])

    def load_member_state(self, g: int, state: dict[str, np.ndarray]) -> None:
        """Member g's parameters from its own network's state_dict (after the checks of
        load_state_dict against that network's sizes)."""
        if not self.lead:
            self.load_state_dict(state)
            return
        self.params.load_member(self.ops, g, self.member_sizes[g], state)

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
        if len(self.layers) == 1:  # model.activation, dropout_hidden and max_norm do nothing
            lines[0] += "  (no hidden layer: a linear model)"
        return lines


def architecture(sizes: list[int], activation: str) -> str:
    """A network in a few characters: `784-128-10 relu`; `13-3 linear` without hidden layers,
    whose activation setting is never used."""
    return f"{'-'.join(map(str, sizes))} {activation if len(sizes) > 2 else 'linear'}"


def build_model(step, hidden: list[int], ops, n_features: int) -> MLP:
    """The MLP of a declared step (its activation, loss and dtype) with these hidden widths,
    with zero weights (call initialize)."""
    return MLP(ops, [n_features, *hidden, step.outputs], step.activation_fn(), step.loss_fn(),
               np.dtype(step.dtype))


def stack_members(models: list[MLP]) -> MLP:
    """One model of G members holding these networks (of one depth, activation, loss and
    dtype; initialised or trained alone) as they are: each padded to the widest of each
    layer, each keeping its loss's own statistics (a standardized target's)."""
    first = models[0]
    sizes = [max(m.sizes[i] for m in models) for i in range(len(first.sizes))]
    group = MLP(first.ops, sizes, first.activation,
                first.loss.of_members([m.loss for m in models]), first.dtype,
                members=[m.sizes for m in models])
    for g, m in enumerate(models):
        group.load_member_state(g, m.state_dict())
    return group
