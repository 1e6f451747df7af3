"""A whole epoch of training steps as one CUDA graph, captured once and replayed every epoch.

Each step is the model's math (model.py, nn.py, optim.py) in a handful of fused launches:
  forward   per layer: z = act(x W^T + b), the product, bias and activation in one kernel;
            the first layer reads its rows straight from the resident dataset through the
            epoch's permutation (no gather copy)
  loss      one kernel: softmax, log-sum-exp loss and correct count (summed on the device), and
            dL/dz = (softmax - onehot) / B
  backward  per layer: [dW | db] = dz^T [x | 1] (the ones column gives the bias gradient) and
            dx = (dz W) * act'(y), the derivative fused into the product
  update    one kernel over every parameter tensor
What changes between epochs lives in device buffers that the host refreshes before each replay:
the permutation (batch s reads rows perm[s B : (s + 1) B]), the learning rate of every step, and
Adam's step count. The graph never returns to the host; loss and accuracy are read once per
epoch.
"""

from __future__ import annotations

import math
import os

import cupy as cp
import numpy as np

from mlptrain.backend.cuda.gemm import (
    ACT_IDS,
    EPI_ACT_GRAD,
    EPI_BIAS_ACT,
    MAX_PARTIALS,
    NULL,
    GemmPlan,
    candidates,
    plan,
    ptr,
)
from mlptrain.backend.cupy_backend import XENT_ROWS

TUNE_REPS = 20  # launches per timed candidate


class EpochGraph:
    @staticmethod
    def supports(model, optimizer, train) -> bool:
        return (model.loss.name == "softmax_cross_entropy"
                and ACT_IDS.get(model.activation.name) is not None
                and model.dtype in (np.float32, np.float64)
                and hasattr(model.params, "flat")  # one flat buffer: the update is one launch
                and all(hasattr(state, "flat") for state in _Update.state_of(optimizer))
                and train.X.flags.c_contiguous and train.targets.dtype == np.int64)

    def __init__(self, backend, model, optimizer, train, batch: int, samples: int | None = None,
                 tune: bool | None = None):
        """An epoch is the first `samples` (default all) entries of each epoch's order."""
        self.backend, self.model, self.optimizer, self.train = backend, model, optimizer, train
        self.n, self.batch = samples or train.size, batch
        self.steps = math.ceil(self.n / batch)
        self.perm = cp.empty(self.n, dtype=np.int64)  # the epoch's order, refreshed each epoch
        self.lrs = cp.empty(self.steps, dtype=np.float64)  # every step's learning rate
        self.t0 = cp.zeros(1, dtype=np.int64)  # Adam's step count before the epoch
        self.acc = cp.zeros(2, dtype=np.float64)  # summed loss, correct predictions
        self.blocks = -(-batch // XENT_ROWS)  # loss kernel blocks per step
        self.parts = cp.zeros(2 * self.blocks * self.steps, dtype=np.float64)  # their sums
        sizes = {batch} | ({self.n % batch} if self.n % batch else set())
        self.buffers = {rows: self._buffers(rows) for rows in sizes}
        backend.load(model.dtype)
        self.update = _Update(backend, model, optimizer)
        self.stream = cp.cuda.Stream(non_blocking=True)
        self.tune = os.environ.get("MLPTRAIN_CUDA_TUNE", "1") != "0" if tune is None else tune
        self.plans = {}  # (product, m, n, k) -> GemmPlan, timed or from the heuristic
        self._choose_plans(sizes)
        self.side = cp.cuda.Stream(non_blocking=True)  # a graph branch for weight gradients
        self._joins = []  # side-branch events the next update must wait for
        self._emit = self._launch  # profile() records instead
        self.graph = self._capture()

    # -- set-up ---------------------------------------------------------------------------------

    def _buffers(self, rows: int) -> dict:
        new = lambda n: cp.empty((rows, n), dtype=self.model.dtype)
        sizes = self.model.sizes
        return {"acts": [None] + [new(n) for n in sizes[1:]],  # acts[0] is the dataset itself
                "deltas": [None] + [new(n) for n in sizes[1:-1]]}

    def _choose_plans(self, sizes) -> None:
        """Fixes every product's tile and K-split before the capture: by timing each candidate
        on the real buffers (MLPTRAIN_CUDA_TUNE=0: by the heuristic), then sizes the split-K
        scratch this graph keeps for itself."""
        # products read rows through the permutation: time them on a shuffled one
        self.perm[...] = cp.random.RandomState(0).permutation(self.train.size)[:self.n]
        self.scratch = (cp.empty(MAX_PARTIALS, dtype=self.model.dtype),
                        cp.zeros(4096, dtype=np.int32))
        self._emit = lambda label, launch, side=False: None
        for rows in sizes:
            self._step(0 if rows == self.batch else self.steps - 1)
        partials = max(p.partials(m, n) for (_, m, n, _), p in self.plans.items())
        tiles = max(p.tiles for p in self.plans.values())
        new = lambda: (cp.empty(max(partials, 1), dtype=self.model.dtype),
                       cp.zeros(tiles, dtype=np.int32))
        self.scratch, self.side_scratch = new(), new()  # one per branch: they run at once

    def _fastest(self, m: int, n: int, k: int, launch) -> GemmPlan:
        """The candidate plan whose launch, repeated in a small graph, takes least time; two
        passes, the best of each candidate's: the first also brings the clocks up."""
        plans, start, stop = candidates(m, n, k), cp.cuda.Event(), cp.cuda.Event()
        graphs = []
        with self.stream:
            for p in plans:
                self.stream.begin_capture()
                for _ in range(TUNE_REPS):
                    launch(p, self.scratch)
                graphs.append(self.stream.end_capture())
            best = [float("inf")] * len(plans)
            for _ in range(2):
                for i, graph in enumerate(graphs):
                    start.record(self.stream)
                    graph.launch(self.stream)
                    stop.record(self.stream)
                    stop.synchronize()
                    best[i] = min(best[i], cp.cuda.get_elapsed_time(start, stop))
        return plans[best.index(min(best))]

    def _launch(self, label, launch, side=False) -> None:
        """Records a launch into the graph being captured: on the main stream, or (side) on a
        branch that forks here from the main stream and joins it before the next update."""
        if not side:
            if label == "optimizer update":
                for event in self._joins:
                    self.stream.wait_event(event)
                self._joins = []
            launch(self.scratch)
            return
        fork = cp.cuda.Event(disable_timing=True)
        fork.record(self.stream)
        self.side.wait_event(fork)
        with self.side:
            launch(self.side_scratch)
            join = cp.cuda.Event(disable_timing=True)
            join.record(self.side)
        self._joins.append(join)

    def _capture(self):
        with self.stream:
            self.stream.begin_capture()
            try:
                for s in range(self.steps):
                    self._step(s)
                # the epoch's loss and correct count: every step's parts, summed in order
                self.backend.function("sum_parts")(
                    (1,), (2,), (self.parts, np.int32(self.parts.size // 2), self.acc))
            finally:
                graph = self.stream.end_capture()
        return graph

    # -- one step, as launches ------------------------------------------------------------------

    def _step(self, s: int) -> None:
        model, dtype, emit = self.model, self.model.dtype, self._emit
        rows = min(self.batch, self.n - s * self.batch)
        index = ptr(self.perm, s * self.batch)  # this batch's rows of the dataset
        buf, layers = self.buffers[rows], model.layers
        act, slope = ACT_IDS[model.activation.name], getattr(model.activation, "slope", 0.0)
        acts, deltas = [self.train.X, *buf["acts"][1:]], buf["deltas"]
        last = len(layers) - 1

        def gemm(label, m, n, k, *args, side=False, **kwargs):
            def launch(p, scratch):
                self.backend.gemm(*args[:3], m, n, k, *args[3:], gemm_plan=p, scratch=scratch,
                                  **kwargs)

            m_out = m + kwargs.get("ones_row", False)  # the bias gradient's ones row
            key = (label, m_out, n, k)
            if key not in self.plans:
                self.plans[key] = (self._fastest(m_out, n, k, launch) if self.tune
                                   else plan(m_out, n, k))
            p = self.plans[key]
            name = f"{label} {m}x{n}x{k} {p.tile}/{p.splits}{'i' * p.inline_reduce}"
            emit(name, lambda scratch: launch(p, scratch), side=side)

        # Weights are stored column-major: layer.weight.T, W^T (I, O), is the C-ordered array.
        for i, layer in enumerate(layers):  # acts[i+1] (rows, O) = f(acts[i] W^T + b)
            fan_out, fan_in = layer.weight.shape
            gemm(f"forward {i}", rows, fan_out, fan_in, acts[i], layer.weight.T, acts[i + 1],
                 fan_in, fan_out, gather_a=index if i == 0 else None,
                 mode=EPI_BIAS_ACT, bias=layer.bias, act=act if i < last else 0, slope=slope)
        logits, dz = acts[-1], acts[-1]  # dL/dz overwrites the logits: nothing reads them again
        blocks = -(-rows // XENT_ROWS)
        emit("softmax cross-entropy", lambda _: self.backend.kernel("softmax_xent", dtype)(
            (blocks,), (XENT_ROWS,),
            (logits, NULL, self.train.targets, index, NULL, dz, np.int32(rows),
             np.int32(logits.shape[1]), dtype.type(1.0 / rows),
             ptr(self.parts, 2 * self.blocks * s))))
        for i in reversed(range(len(layers))):
            layer = layers[i]
            fan_out, fan_in = layer.weight.shape
            # [dW^T ; db] (I + 1, O) = [acts[i] | 1]^T (I + 1, rows) @ dz (rows, O)
            gemm(f"weight grad {i}", fan_in, fan_out, rows, acts[i], dz, layer.grad_weight.T,
                 fan_in, fan_out, trans_a=True, gather_a=index if i == 0 else None,
                 ones_out=layer.grad_bias, ones_row=True,
                 side=i > 0)  # off the critical path, but for the first layer's
            if i > 0:  # dL/dz_{i-1} (rows, I) = (dz @ W) * f'(acts[i])
                gemm(f"input grad {i}", rows, fan_in, fan_out, dz, layer.weight.T, deltas[i],
                     fan_out, fan_out, trans_b=True, mode=EPI_ACT_GRAD, ymask=acts[i], act=act, slope=slope)
                dz = deltas[i]
        emit("optimizer update", lambda _: self.update(s, self.lrs, self.t0))

    def profile(self, reps: int = 100) -> list[tuple[str, float]]:
        """(launch, microseconds) for each launch of one full-batch step, each timed as a graph
        of `reps` back-to-back copies. For benchmarks: it trains the model on garbage."""
        launches = []
        self._emit = lambda label, launch, side=False: launches.append((label, launch))
        self._step(0)
        self._emit = self._launch
        timings = []
        for label, launch in launches:
            with self.stream:
                self.stream.begin_capture()
                for _ in range(reps):
                    launch(self.scratch)
                graph = self.stream.end_capture()
                graph.launch(self.stream)
                start, stop = cp.cuda.Event(), cp.cuda.Event()
                start.record(self.stream)
                for _ in range(5):
                    graph.launch(self.stream)
                stop.record(self.stream)
                stop.synchronize()
            timings.append((label, cp.cuda.get_elapsed_time(start, stop) * 1e3 / (5 * reps)))
        return timings

    # -- replay ---------------------------------------------------------------------------------

    def run(self, order, lrs) -> tuple:
        """Trains one epoch in `order` with per-step rates `lrs`; returns device scalars
        (summed loss, correct predictions). Nothing here waits for the GPU."""
        main = cp.cuda.get_current_stream()
        self.perm[...] = order[:self.n]
        self.lrs.set(np.asarray(lrs, dtype=np.float64))
        self.t0.fill(getattr(self.optimizer, "t", 0))
        self.acc.fill(0)
        self.stream.wait_event(main.record())
        self.graph.launch(self.stream)
        main.wait_event(self.stream.record())
        if hasattr(self.optimizer, "t"):
            self.optimizer.t += self.steps  # Adam's count, as its step() would have moved it
        return self.acc[0], self.acc[1]


class _Update:
    """The optimizer's step over the model's flat parameter buffer, as one launch reading the
    learning rate (and Adam's count) from device buffers."""

    @staticmethod
    def state_of(optimizer) -> tuple:
        if hasattr(optimizer, "velocity"):
            return (optimizer.velocity,)
        return (optimizer.m, optimizer.v) if hasattr(optimizer, "m") else (None,)

    def __init__(self, backend, model, optimizer):
        self.optimizer, self.dtype = optimizer, model.dtype
        address = lambda flat: cp.asarray([flat.data.ptr], dtype=np.int64)
        self.params, self.grads = address(model.params.flat), address(model.grads.flat)
        self.sizes = cp.asarray([model.params.flat.size], dtype=np.int64)
        self.blocks = min(-(-model.params.flat.size // 256), 1024)
        name = "sgd_update" if hasattr(optimizer, "velocity") else "adam_update"
        self.kernel = backend.kernel(name, self.dtype)
        self.state = tuple(address(state.flat) for state in self.state_of(optimizer))

    def __call__(self, step: int, lrs, t0) -> None:
        o, t = self.optimizer, self.dtype.type
        grid = (self.blocks, 1)
        if len(self.state) == 1:
            self.kernel(grid, (256,), (self.params, self.grads, *self.state, self.sizes, lrs,
                                       np.int32(step), t(o.momentum), t(o.weight_decay),
                                       np.int32(bool(o.nesterov))))
        else:
            self.kernel(grid, (256,), (self.params, self.grads, *self.state, self.sizes, lrs, t0,
                                       np.int32(step), np.float64(o.beta1), np.float64(o.beta2),
                                       t(o.eps), np.float64(o.weight_decay),
                                       np.int32(bool(o.decoupled))))
