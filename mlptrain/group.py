"""A group of MLPs trained in lockstep as one batched model (sweeps on a GPU, issue 17).

G models of one depth, activation, loss and optimizer kind, differing in their hidden widths,
seeds, learning rates and weight decay, run every step together: layer i of every model is
one slice of a stack, and each product is one batched product over the stack. A capacity
sweep's nets are too small to keep a GPU busy one at a time; stacked, they are one launch.

Padding. The stacks are as wide as the group's widest model: model g's layer i is the
top-left (I_g, O_g) corner of the (I, O) slice g, the rest zero. Padding changes no number:
a padded unit gets zero weights and bias, so its pre-activation is 0, and its output is
multiplied by the unit mask (0) before the next layer reads it; the next layer's weights from
it are zero too. So every gradient of a padded weight is exactly 0 (its input or its delta
is), weight decay of a zero weight is 0, and the padding stays zero for the whole run.

Shapes: G models, B the batch, I a layer's (padded) inputs, O its (padded) outputs, C the
classes. Weights are stored transposed, Wt (G, I, O), so the forward product is x @ Wt.
Each backward sits beside its forward, as in nn.py; the activations are nn.py's (they are
element-wise, so they serve any shape). The loss is nn.SoftmaxCrossEntropy's formula, summed
per model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlptrain.model import MLP


@dataclass
class GroupBatch:
    """One step's buffers for batch size B (allocated once per size, like model.Workspace)."""

    acts: list  # acts[i] (G, B, sizes[i]); acts[0] the gathered inputs
    deltas: list  # deltas[i] (G, B, sizes[i]) = dL/d acts[i], hidden layers only
    flat_index: object  # (G, B) rows of the flattened data pool
    targets: object  # (G, B) class indices
    probs: object  # (G, B, C) softmax of the logits, kept for the backward


class GroupedMLP:
    """The stacked parameters of G MLPs (model.MLP each, initialised alone) and their step.

    `lr` and `weight_decay` are per-model device arrays (G, 1, 1); momentum and Nesterov are
    the group's (grouping requires them equal).
    """

    def __init__(self, ops, models: list[MLP], momentum: float, nesterov: bool,
                 weight_decay: list[float]):
        first = models[0]
        self.ops, self.xp, self.dtype = ops, ops.xp, first.dtype
        self.activation, self.smoothing = first.activation, first.loss.smoothing
        self.G, self.depth = len(models), len(first.layers)
        self.sizes = [max(m.sizes[i] for m in models) for i in range(len(first.sizes))]
        self.model_sizes = [list(m.sizes) for m in models]
        self.momentum, self.nesterov = momentum, nesterov
        xp, G = self.xp, self.G
        self.Wt, self.b, self.masks = [], [], []
        for i, (I, O) in enumerate(zip(self.sizes, self.sizes[1:])):
            wt, b = np.zeros((G, I, O), self.dtype), np.zeros((G, 1, O), self.dtype)
            mask = np.zeros((G, 1, O), self.dtype)
            for g, m in enumerate(models):
                state = m.state_dict()
                w = state[f"layers.{i}.weight"]  # (O_g, I_g)
                wt[g, :w.shape[1], :w.shape[0]] = w.T
                b[g, 0, :w.shape[0]] = state[f"layers.{i}.bias"]
                mask[g, 0, :w.shape[0]] = 1
            self.Wt.append(ops.asarray(wt, self.dtype))
            self.b.append(ops.asarray(b, self.dtype))
            self.masks.append(ops.asarray(mask, self.dtype))
        self.dWt = [xp.zeros_like(w) for w in self.Wt]
        self.db = [xp.zeros_like(b) for b in self.b]
        self.vWt = [xp.zeros_like(w) for w in self.Wt]
        self.vb = [xp.zeros_like(b) for b in self.b]
        wd = np.asarray(weight_decay, np.float64).reshape(G, 1, 1)
        self.weight_decay = ops.asarray(wd, self.dtype) if wd.any() else None
        self.lr = xp.zeros((G, 1, 1), self.dtype)  # this step's rates: set_lr
        self._batches: dict[int, GroupBatch] = {}
        self._scratch: dict[tuple, object] = {}

    # -- buffers ----------------------------------------------------------------------------

    def batch(self, rows: int) -> GroupBatch:
        found = self._batches.get(rows)
        if found is None:
            xp, G = self.xp, self.G
            new = lambda n: xp.zeros((G, rows, n), self.dtype)  # noqa: E731
            found = self._batches[rows] = GroupBatch(
                acts=[new(n) for n in self.sizes],
                deltas=[None] + [new(n) for n in self.sizes[1:-1]],
                flat_index=xp.zeros((G, rows), xp.int64),
                targets=xp.zeros((G, rows), xp.int64),
                probs=new(self.sizes[-1]))
        return found

    def _tmp(self, name: str, shape, dtype=None):
        key = (name, tuple(shape), dtype)
        found = self._scratch.get(key)
        if found is None:
            found = self._scratch[key] = self.xp.empty(shape, dtype or self.dtype)
        return found

    # -- the math ---------------------------------------------------------------------------

    def forward(self, acts: list):
        """acts[i+1] = mask * f(acts[i] @ Wt_i + b_i) for hidden layers; the logits are left
        linear. acts[0] (G, B, D) holds the inputs."""
        xp, last = self.xp, self.depth - 1
        for i in range(self.depth):
            z = xp.matmul(acts[i], self.Wt[i], out=acts[i + 1])  # (G, B, O)
            xp.add(z, self.b[i], out=z)
            if i < last:
                self.activation.forward(xp, z, out=z)
                xp.multiply(z, self.masks[i], out=z)  # padded units read as 0 downstream
        return acts[-1]

    def backward(self, acts: list, deltas: list, dz) -> None:
        """dWt, db from dz = dL/dlogits (G, B, C), walking the layers in reverse."""
        xp = self.xp
        for i in reversed(range(self.depth)):
            # dWt (G, I, O) = x^T (G, I, B) @ dz (G, B, O)
            xp.matmul(acts[i].transpose(0, 2, 1), dz, out=self.dWt[i])
            # db (G, 1, O) = sum over the batch of dz
            xp.sum(dz, axis=1, keepdims=True, out=self.db[i])
            if i == 0:
                break
            # dy (G, B, I) = dz (G, B, O) @ Wt^T (G, O, I); then dz = dy * f'(z), from y
            dy = xp.matmul(dz, self.Wt[i].transpose(0, 2, 1), out=deltas[i])
            dz = self.activation.backward(xp, acts[i], dy, out=dy,
                                          scratch=self._tmp("act", dy.shape,
                                                            self.activation.scratch_dtype))

    def loss_forward(self, logits, targets, probs):
        """Per model: (summed loss (G,), correct (G,)) of softmax cross-entropy with label
        smoothing e, as nn.SoftmaxCrossEntropy: loss = logsumexp(z) - (1 - e) z_y - (e/C) sum z.
        logits (G, B, C), targets (G, B); probs receives softmax(z) for the backward."""
        xp = self.xp
        G, B, C = logits.shape
        m = xp.max(logits, axis=2, keepdims=True, out=self._tmp("m", (G, B, 1)))
        xp.subtract(logits, m, out=probs)
        xp.exp(probs, out=probs)
        s = xp.sum(probs, axis=2, keepdims=True, out=self._tmp("s", (G, B, 1)))
        xp.divide(probs, s, out=probs)
        picked = xp.take_along_axis(logits, targets[:, :, None], axis=2)  # z_y (G, B, 1)
        row = xp.log(s, out=s)
        xp.add(row, m, out=row)
        xp.subtract(row, picked, out=row)
        loss = row.sum(axis=(1, 2), dtype=xp.float64)
        if self.smoothing:
            e = self.smoothing
            loss += e * (picked.sum(axis=(1, 2), dtype=xp.float64)
                         - logits.sum(axis=(1, 2), dtype=xp.float64) / C)
        correct = (xp.argmax(logits, axis=2) == targets).sum(axis=1)
        return loss, correct

    def loss_backward(self, probs, targets, scale: float, out):
        """dL/dz (G, B, C) = (softmax(z) - q) * scale, q = (1 - e) onehot(y) + e / C."""
        xp, e, C = self.xp, self.smoothing, probs.shape[2]
        xp.multiply(probs, scale, out=out)
        if e:
            xp.subtract(out, e / C * scale, out=out)
        onehot = xp.equal(targets[:, :, None], self._classes(C),
                          out=self._tmp("onehot", out.shape, bool))  # (G, B, C)
        out -= onehot * ((1 - e) * scale)
        return out

    def _classes(self, C: int):
        found = self._scratch.get(("classes", C))
        if found is None:
            found = self._scratch["classes", C] = self.xp.arange(C)
        return found

    def update(self) -> None:
        """Every model's SGD step with its own rate and decay (optim.SGD's formula, the
        backend's grouped_sgd_update)."""
        for p, g, v in zip(self.Wt + self.b, self.dWt + self.db, self.vWt + self.vb):
            self.ops.grouped_sgd_update(p, g, v, self.lr, self.momentum, self.nesterov,
                                        self.weight_decay)

    def train_step(self, batch: GroupBatch, X_flat, y_flat):
        """One step of every model on the rows batch.flat_index names in the data pool
        X_flat (K N, D); returns (summed loss (G,), correct (G,)) as device arrays."""
        xp = self.xp
        xp.take(X_flat, batch.flat_index, axis=0, out=batch.acts[0])
        xp.take(y_flat, batch.flat_index, out=batch.targets)
        logits = self.forward(batch.acts)
        loss, correct = self.loss_forward(logits, batch.targets, batch.probs)
        rows = batch.targets.shape[1]
        dz = self.loss_backward(batch.probs, batch.targets, 1.0 / rows, out=logits)
        self.backward(batch.acts, batch.deltas, dz)
        self.update()
        return loss, correct

    def evaluate(self, X, y, rows_per_batch: int, pick=None):
        """(summed loss (G,), correct (G,)) of every model on its own samples: model g scores
        X[pick[g]] (X (K, N, D) a pool of splits, y (K, N)), or, with pick None, all score the
        same X (N, D), y (N,)."""
        xp, G = self.xp, self.G
        n = X.shape[-2]
        loss, correct = xp.zeros(G, xp.float64), xp.zeros(G, xp.int64)
        for start in range(0, n, rows_per_batch):
            stop = min(start + rows_per_batch, n)
            if pick is None:  # (b, D) @ (G, D, O) broadcasts over the models
                x, t = X[start:stop], xp.broadcast_to(y[start:stop], (G, stop - start))
            else:
                x, t = X[pick, start:stop], y[pick, start:stop]
            acts = [x] + [xp.empty((G, stop - start, s), self.dtype) for s in self.sizes[1:]]
            logits = self.forward(acts)
            part_loss, part_correct = self.loss_forward(logits, t, xp.empty_like(logits))
            loss += part_loss
            correct += part_correct
        return loss, correct

    # -- the models, one by one ---------------------------------------------------------------

    def state_dict(self, g: int) -> dict[str, np.ndarray]:
        """Model g's parameters, unpadded, named and shaped as model.MLP.state_dict's."""
        sizes, state = self.model_sizes[g], {}
        for i in range(self.depth):
            I, O = sizes[i], sizes[i + 1]
            state[f"layers.{i}.weight"] = np.array(self.ops.to_host(self.Wt[i][g, :I, :O]).T,
                                                   order="C")
            state[f"layers.{i}.bias"] = np.array(self.ops.to_host(self.b[i][g, 0, :O]))
        return state
