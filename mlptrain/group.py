"""A group of MLPs trained in lockstep as one batched model (sweeps on a GPU, issue 17).

G models of one depth, activation, loss and optimizer kind, differing in their hidden widths,
seeds, learning rates and weight decay, run every step together: layer i of every model is
one slice of a stack, and each product is one batched product over the stack. A capacity
sweep's nets are too small to keep a GPU busy one at a time; stacked, they are one launch.

Padding. The stacks are as wide as the group's widest model: model g's layer i is the
top-left (I_g, O_g) corner of the (I, O) slice g, the rest zero. Padding changes no number:
a padded unit gets zero weights and bias, so its pre-activation is 0, and its output is 0
(f(0) = 0 for relu and tanh; for an f with f(0) != 0, such as sigmoid, it is multiplied by
the unit mask, 0); the next layer's weights from it are zero too. So every gradient of a
padded weight is exactly 0 (its input or its delta is), weight decay of a zero weight is 0,
and the padding stays zero for the whole run.

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

EVAL_ELEMENTS = 1 << 24  # activations per evaluation chunk (64 MB in float32), all models


@dataclass
class GroupBatch:
    """One step's buffers for batch size B, allocated once per size (like model.Workspace): a
    step allocates nothing, so a device backend can capture it as a graph."""

    acts: list  # acts[i] (G, B, sizes[i]); acts[0] the gathered inputs
    deltas: list  # deltas[i] (G, B, sizes[i]) = dL/d acts[i], hidden layers only
    flat_index: object  # (G, B) rows of the flattened data pool
    targets: object  # (G, B) class indices
    probs: object  # (G, B, C) softmax of the logits, kept for the backward
    m: object  # (G, B, 1) the row max
    s: object  # (G, B, 1) sum_c exp(z - m); then the row loss
    logit_index: object  # (G B,) where z_b[y_b] sits in the flattened logits
    row_starts: object  # (G B,) b C
    picked: object  # (G B,) z_b[y_b]; in the backward, dL/dz_b[y_b]
    predicted: object  # (G, B) argmax_c z
    hits: object  # (G, B) predicted == y
    loss: object  # (G,) float64: this batch's summed loss per model
    correct: object  # (G,) int64
    extra: object  # (G,) float64: label smoothing's sums


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
        pairs = list(zip(self.sizes, self.sizes[1:]))  # (I, O) of each padded layer
        self.Wt = [xp.zeros((G, I, O), self.dtype) for I, O in pairs]
        self.b = [xp.zeros((G, 1, O), self.dtype) for _, O in pairs]
        masks = [np.zeros((G, 1, O), self.dtype) for _, O in pairs]  # 1 for a model's own units
        for g, m in enumerate(models):
            self.load_state_dict(g, m.state_dict())  # the weights it was initialised with alone
            for i, mask in enumerate(masks):
                mask[g, 0, :m.sizes[i + 1]] = 1
        # Where f(0) = 0 (relu, tanh, ...) a padded unit's output is already 0 and its mask
        # would multiply by 1 or 0 for nothing; only an f(0) != 0 (sigmoid) needs it.
        zero_at_zero = not self.activation.forward(np, np.zeros(1, self.dtype),
                                                   out=np.empty(1, self.dtype)).any()
        self.masks = None if zero_at_zero else [ops.asarray(m, self.dtype) for m in masks]
        self.dWt = [xp.zeros_like(w) for w in self.Wt]
        self.db = [xp.zeros_like(b) for b in self.b]
        self.vWt = [xp.zeros_like(w) for w in self.Wt]
        self.vb = [xp.zeros_like(b) for b in self.b]
        wd = np.asarray(weight_decay, np.float64).reshape(G, 1, 1)
        self.weight_decay = ops.asarray(wd, self.dtype) if wd.any() else None
        self.lr = xp.zeros((G, 1, 1), self.dtype)  # this step's rates, set before each step
        self.sums = xp.zeros((G, 2), xp.float64)  # the epoch's running sums, per model:
        self.loss_sum, self.correct_sum = self.sums[:, 0], self.sums[:, 1]  # loss, correct
        # the loss in one kernel where the backend has one (the same formulas as below)
        self.fused_loss = ops.grouped_softmax_xent
        self._batches: dict[int, GroupBatch] = {}

    # -- buffers ----------------------------------------------------------------------------

    def batch(self, rows: int) -> GroupBatch:
        # (no operators on device arrays here or in a step: CuPy's first one imports cupyx,
        # and with it SciPy, 0.3-0.5 s that fell inside the first epoch on an H200 host)
        found = self._batches.get(rows)
        if found is None:
            xp, G, C = self.xp, self.G, self.sizes[-1]
            new = lambda *shape, dtype=self.dtype: xp.zeros(shape, dtype)  # noqa: E731
            found = self._batches[rows] = GroupBatch(
                acts=[new(G, rows, n) for n in self.sizes],
                deltas=[None] + [new(G, rows, n) for n in self.sizes[1:-1]],
                flat_index=new(G, rows, dtype=xp.int64), targets=new(G, rows, dtype=xp.int64),
                probs=new(G, rows, C), m=new(G, rows, 1), s=new(G, rows, 1),
                logit_index=new(G * rows, dtype=xp.int64),
                row_starts=self.ops.asarray(np.arange(G * rows, dtype=np.int64) * C),
                picked=new(G * rows), predicted=new(G, rows, dtype=xp.int64),
                hits=new(G, rows, dtype=bool), loss=new(G, dtype=xp.float64),
                correct=new(G, dtype=xp.int64), extra=new(G, dtype=xp.float64))
        return found

    # -- the math ---------------------------------------------------------------------------

    def forward(self, acts: list):
        """acts[i+1] = mask * f(acts[i] @ Wt_i + b_i) for hidden layers; the logits are left
        linear. acts[0] (G, B, D) holds the inputs (or one (B, D) that every model reads)."""
        xp, last = self.xp, self.depth - 1
        for i in range(self.depth):
            z = self.ops.grouped_matmul(acts[i], self.Wt[i], out=acts[i + 1])  # (G, B, O)
            if i == last:
                xp.add(z, self.b[i], out=z)
                break
            self.ops.bias_activation(z, self.b[i], self.activation, out=z)  # y = f(z + b)
            if self.masks is not None:
                xp.multiply(z, self.masks[i], out=z)  # padded units read as 0 downstream
        return acts[-1]

    def backward(self, batch: GroupBatch, dz) -> None:
        """dWt, db from dz = dL/dlogits (G, B, C), walking the layers in reverse."""
        acts = batch.acts
        for i in reversed(range(self.depth)):
            # dWt (G, I, O) = x^T (G, I, B) @ dz (G, B, O)
            self.ops.grouped_matmul(acts[i], dz, out=self.dWt[i], trans_a=True)
            # db (G, 1, O) = sum over the batch of dz
            self.ops.sum_rows(dz, out=self.db[i])
            if i == 0:
                break
            # dy (G, B, I) = dz (G, B, O) @ Wt^T (G, O, I); then dz = dy * f'(z), from y
            dy = self.ops.grouped_matmul(dz, self.Wt[i], out=batch.deltas[i], trans_b=True)
            dz = self.ops.activation_backward(self.activation, acts[i], dy, out=dy)

    def loss_forward(self, logits, targets, batch: GroupBatch) -> None:
        """Softmax cross-entropy with label smoothing e per model, as nn.SoftmaxCrossEntropy:
        loss = logsumexp(z) - (1 - e) z_y - (e / C) sum_j z_j, summed over the batch into
        batch.loss (G,) (float64), the correct predictions into batch.correct (G,); the
        softmax stays in batch.probs for the backward. logits (G, B, C), targets (G, B)."""
        xp = self.xp
        G, B, C = logits.shape
        m, s, p = batch.m, batch.s, batch.probs
        xp.max(logits, axis=2, keepdims=True, out=m)  # keeps exp() <= 1
        xp.subtract(logits, m, out=p)
        xp.exp(p, out=p)
        xp.sum(p, axis=2, keepdims=True, out=s)
        xp.divide(p, s, out=p)
        # z_b[y_b], read from the flattened logits at b C + y_b
        xp.add(batch.row_starts, targets.reshape(G * B), out=batch.logit_index)
        xp.take(logits.reshape(G * B * C), batch.logit_index, out=batch.picked)
        row = xp.log(s, out=s)  # (G, B, 1): log s + m - z_y
        xp.add(row, m, out=row)
        xp.subtract(row, batch.picked.reshape(G, B, 1), out=row)
        xp.sum(row, axis=(1, 2), dtype=xp.float64, out=batch.loss)
        if self.smoothing:  # the sums over z_j and z_y are linear: move e of the weight
            e = self.smoothing
            xp.sum(batch.picked.reshape(G, B), axis=1, dtype=xp.float64, out=batch.extra)
            xp.multiply(batch.extra, e, out=batch.extra)
            xp.add(batch.loss, batch.extra, out=batch.loss)
            xp.sum(logits, axis=(1, 2), dtype=xp.float64, out=batch.extra)
            xp.multiply(batch.extra, e / C, out=batch.extra)
            xp.subtract(batch.loss, batch.extra, out=batch.loss)
        xp.argmax(logits, axis=2, out=batch.predicted)
        xp.equal(batch.predicted, targets, out=batch.hits)
        xp.sum(batch.hits, axis=1, out=batch.correct)

    def loss_backward(self, batch: GroupBatch, scale: float, out):
        """dL/dz (G, B, C) = (softmax(z) - q) * scale, q = (1 - e) onehot(y) + e / C; the
        one-hot touches only z_b[y_b], at the flat index loss_forward found."""
        xp, e, C = self.xp, self.smoothing, out.shape[2]
        xp.multiply(batch.probs, scale, out=out)
        if e:
            xp.subtract(out, e / C * scale, out=out)
        flat = out.reshape(-1)
        xp.take(flat, batch.logit_index, out=batch.picked)
        xp.subtract(batch.picked, (1 - e) * scale, out=batch.picked)
        flat.put(batch.logit_index, batch.picked, mode="clip")
        return out

    def update(self) -> None:
        """Every model's SGD step with its own rate and decay (optim.SGD's formula, the
        backend's grouped_sgd_update)."""
        for p, g, v in zip(self.Wt + self.b, self.dWt + self.db, self.vWt + self.vb):
            self.ops.grouped_sgd_update(p, g, v, self.lr, self.momentum, self.nesterov,
                                        self.weight_decay)

    def train_step(self, batch: GroupBatch, X_flat, y_flat) -> None:
        """One step of every model on the rows batch.flat_index names in the data pool
        X_flat (K N, D); adds the batch's summed loss and correct predictions per model to
        the running sums self.loss_sum (G,) and self.correct_sum (G,)."""
        xp = self.xp
        xp.take(X_flat, batch.flat_index, axis=0, out=batch.acts[0])
        xp.take(y_flat, batch.flat_index, out=batch.targets)
        logits = self.forward(batch.acts)
        scale = 1.0 / batch.targets.shape[1]  # the mean over the batch
        if self.fused_loss is not None:  # logits <- dL/dz scale, sums += loss, correct
            self.fused_loss(logits, batch.targets, self.smoothing, scale, self.sums)
            dz = logits
        else:
            self.loss_forward(logits, batch.targets, batch)
            xp.add(self.loss_sum, batch.loss, out=self.loss_sum)
            xp.add(self.correct_sum, batch.correct, out=self.correct_sum)
            dz = self.loss_backward(batch, scale, out=logits)
        self.backward(batch, dz)
        self.update()

    def evaluate(self, X, y, rows=None):
        """(summed loss (G,), correct (G,)) of every model on its own samples: model g scores
        X[rows[g]], y[rows[g]] (rows (G, n) of X (P, D), y (P,), a pool of samples), or, with
        rows None, all score the same X (n, D), y (n,)."""
        sums = self.xp.zeros((self.G, 2), self.xp.float64)  # per model: summed loss, correct
        for _, batch, logits, t in self._forward_chunks(X, y, rows):
            if self.fused_loss is not None:
                self.fused_loss(logits, t, self.smoothing, None, sums)
                continue
            self.loss_forward(logits, t, batch)
            sums[:, 0] += batch.loss
            sums[:, 1] += batch.correct
        return sums[:, 0], sums[:, 1]

    def top_probabilities(self, X, rows):
        """(G, n) float64: each model's largest class probability on its own samples X[rows[g]]
        (rows (G, n) of X (P, D)), as nn.SoftmaxCrossEntropy.probabilities gives it: the top
        class's exp(z - max z) is 1, so its probability is 1 / sum_c exp(z_c - max z)."""
        xp = self.xp
        top = xp.empty(rows.shape, xp.float64)
        for chunk, batch, logits, _ in self._forward_chunks(X, None, rows):  # logits (G, b, C)
            xp.max(logits, axis=2, keepdims=True, out=batch.m)
            xp.subtract(logits, batch.m, out=logits)
            xp.exp(logits, out=logits)
            xp.sum(logits, axis=2, keepdims=True, out=batch.s)
            xp.divide(1, batch.s[:, :, 0], out=top[:, chunk])
        return top

    def _forward_chunks(self, X, y, rows):
        """(slice, batch buffers, logits (G, b, C), targets (G, b) or None) for consecutive
        chunks of the samples (as evaluate takes them), each of about EVAL_ELEMENTS
        activations over all models."""
        xp, G = self.xp, self.G
        n = X.shape[0] if rows is None else rows.shape[1]
        size = max(64, EVAL_ELEMENTS // (G * sum(self.sizes)))
        for start in range(0, n, size):
            chunk = slice(start, min(start + size, n))
            batch = self.batch(chunk.stop - start)
            if rows is None:  # (b, D) @ (G, D, O) broadcasts over the models
                x = X[chunk]
                t = None if y is None else xp.broadcast_to(y[chunk], (G, chunk.stop - start))
            else:
                index = rows[:, chunk]  # (G, b)
                x = xp.take(X, index, axis=0)
                t = None if y is None else xp.take(y, index)
            yield chunk, batch, self.forward([x] + batch.acts[1:]), t

    def snapshot(self) -> list:
        """Copies of what a step changes for good (parameters and velocities), for restore."""
        return [x.copy() for x in self.Wt + self.b + self.vWt + self.vb]

    def restore(self, saved: list) -> None:
        for x, copy in zip(self.Wt + self.b + self.vWt + self.vb, saved):
            x[...] = copy

    # -- the models, one by one ---------------------------------------------------------------

    def load_state_dict(self, g: int, state: dict[str, np.ndarray],
                        velocity: bool = False) -> None:
        """Model g's parameters (or, with `velocity`, their SGD velocities) from `state`
        (state_dict's names and shapes)."""
        Wt, b = (self.vWt, self.vb) if velocity else (self.Wt, self.b)
        sizes = self.model_sizes[g]
        for i in range(self.depth):
            I, O = sizes[i], sizes[i + 1]
            Wt[i][g, :I, :O] = self.ops.asarray(state[f"layers.{i}.weight"].T, self.dtype)
            b[i][g, 0, :O] = self.ops.asarray(state[f"layers.{i}.bias"], self.dtype)

    def state_dict(self, g: int, velocity: bool = False) -> dict[str, np.ndarray]:
        """Model g's parameters (or, with `velocity`, their SGD velocities), unpadded, named
        and shaped as model.MLP.state_dict's."""
        Wt, b = (self.vWt, self.vb) if velocity else (self.Wt, self.b)
        sizes, state = self.model_sizes[g], {}
        for i in range(self.depth):
            I, O = sizes[i], sizes[i + 1]
            state[f"layers.{i}.weight"] = np.array(self.ops.to_host(Wt[i][g, :I, :O]).T,
                                                   order="C")
            state[f"layers.{i}.bias"] = np.array(self.ops.to_host(b[i][g, 0, :O]))
        return state
