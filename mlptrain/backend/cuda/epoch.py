"""A whole epoch of declared training steps (step.py) as CUDA graphs, captured once, replayed.

Each step is the model's math (model.py, nn.py, optim.py, regularize.py, data/augment.py) in a
handful of fused launches:
  input     the batch's rows read straight from the resident dataset through the epoch's
            permutation; with augmentation, an elastic-field kernel (if asked) and one kernel
            that distorts the gathered images into a batch buffer; with input dropout, one
            kernel that draws the mask (Philox, keyed by seed and global step) and applies it
  forward   per layer: y = act(x W^T + b), the product, bias and activation in one kernel
            (for an activation whose backward reads z, GELU, the product keeps z and one
            element-wise kernel computes y);
            a dropped hidden layer adds one kernel drawing and applying its mask
  loss      one kernel: softmax (with label smoothing), sigmoid BCE or a real target's loss,
            the loss and its tallies (summed on the device) and dL/dz
  backward  per layer: [dW | db] = dz^T [x | 1] (the ones column gives the bias gradient) and
            dx = (dz W) * mask * act'(y or z), mask and derivative fused into the product
  update    one kernel over every parameter tensor (learning rate and SGD momentum read per
            step from device arrays), then max-norm, one kernel per hidden layer
What changes between replays lives in device buffers that the host refreshes first: the
permutation, every step's learning rate and momentum, the global step of the epoch's first
step (random numbers are keyed by it), and Adam's count. A graph covers a segment of the epoch,
[start, stop): the whole epoch, or the steps between two mid-epoch checkpoints; each segment
shape is captured once and kept.

`dispatch.graph_blockers` is the one place that decides whether a step can be compiled at all,
and dispatch's tables say which kernel runs each kind.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict

import cupy as cp
import numpy as np

from mlptrain.backend.cuda.gemm import (MAX_PARTIALS, MMA_3XTF32, MMA_3XTF32_RN, MMA_SIMT,
                                        MMA_TF32, NULL, TC_TILES, TILES, GemmPlan, candidates,
                                        gemm_name, plan, ptr, tiles_for, untuned_mma)
from mlptrain.backend.cuda.dispatch import (LOSS_KERNELS, REAL_TARGET_IDS, UPDATE_KERNELS,
                                           kernel_names)
from mlptrain.backend.cuda.kernels import ACT_IDS, EPI_ACT_GRAD, EPI_BIAS_ACT, THREADS, XENT_ROWS
from mlptrain.optim import OptimizerKind
from mlptrain.seeding import dropout_threshold

MMA_NAMES = {MMA_SIMT: "", MMA_3XTF32: " 3xtf32 (tc sums)", MMA_3XTF32_RN: " 3xtf32",
             MMA_TF32: " tf32"}  # profile()'s labels
TUNE_REPS = 20  # launches per timed candidate
MAX_SEGMENTS = 8  # captured segment graphs kept per epoch shape


def _span(value) -> tuple[float, float]:
    """(lo, hi - lo) of an augmentation range (lo, hi), or (x, 0) for a number x."""
    if isinstance(value, (tuple, list)):
        return float(value[0]), float(value[1]) - float(value[0])
    return float(value), 0.0


def _recorded_plans(records: list[dict] | None) -> dict:
    """product_plans() records back as {(product, m, n, k): GemmPlan}; a record this version
    cannot read (another tile set, a field missing) is left out: that product is timed again."""
    plans = {}
    for r in records or ():
        try:
            # a record from before the tensor-core kernels has no mma: it ran SIMT
            fields = {f: r.get(f, MMA_SIMT) if f == "mma" else r[f]
                      for f in GemmPlan.__dataclass_fields__}
            if fields["tile"] in TILES or fields["tile"] in TC_TILES:
                plans[str(r["product"]), int(r["m"]), int(r["n"]), int(r["k"])] = GemmPlan(
                    **{**fields, "grid": tuple(int(g) for g in fields["grid"])})
        except (KeyError, TypeError, ValueError):
            continue
    return plans


class EpochGraph:
    """`plans`: product_plans() of an earlier graph of this run (from its checkpoint). Its
    products keep those tiles and K-splits instead of being timed again: a split changes the
    order of a sum, so a resumed run would otherwise round differently from the run it
    continues."""

    def __init__(self, backend, step, model, optimizer, train, tune: bool | None = None,
                 plans: list[dict] | None = None):
        self.backend, self.step, self.model, self.optimizer, self.train = (
            backend, step, model, optimizer, train)
        self.n, self.batch = train.size, step.batch_size
        self.steps = math.ceil(self.n / self.batch)
        dtype = self.dtype = model.dtype
        self.perm = cp.empty(self.n, dtype=np.int64)  # the epoch's order, refreshed each epoch
        self.lrs = cp.empty(self.steps, dtype=np.float64)  # every step's learning rate
        self.mus = cp.empty(self.steps, dtype=np.float64) if step.cycles_momentum else None
        self.step_base = cp.zeros(1, dtype=np.int64)  # global step of the epoch's step 0
        self.t0 = cp.zeros(1, dtype=np.int64)  # Adam's count before the segment's step 0
        self.sums = 1 + len(model.loss.tallies)  # the loss kernel's: loss, then its tallies
        self.acc = cp.zeros(self.sums, dtype=np.float64)  # summed over a segment's steps
        self.blocks = -(-self.batch // XENT_ROWS)  # loss kernel blocks per step
        self.parts = cp.zeros(self.sums * self.blocks * self.steps, dtype=np.float64)
        layers = len(model.layers)
        self.rates = [step.dropout_input] + [step.dropout_hidden] * (layers - 1)
        self.augment = step.augment
        if self.augment is not None:
            from mlptrain.data.augment import gaussian_blur_matrix

            (h, w), (sigma, _) = self.augment.shape, _span(self.augment.elastic_sigma)
            self.blur = (cp.asarray(gaussian_blur_matrix(h, sigma, dtype)),
                         cp.asarray(gaussian_blur_matrix(w, sigma, dtype)))
        sizes = {self.batch} | ({self.n % self.batch} if self.n % self.batch else set())
        self.buffers = {rows: self._buffers(rows) for rows in sizes}
        self.tune = os.environ.get("MLPTRAIN_CUDA_TUNE", "1") != "0" if tune is None else tune
        self.mmas = backend.mmas(dtype)  # the multiplies the products may use (SIMT, TF32...)
        self.plans = _recorded_plans(plans)  # (product, m, n, k) -> GemmPlan
        backend.prepare_kernels(kernel_names(step, dtype) + self._gemm_names(sizes))
        self.update = _Update(backend, step, model, optimizer)
        self.max_norm = [layer.weight for layer in model.layers[:-1]] if step.max_norm else []
        self.stream = cp.cuda.Stream(non_blocking=True)
        self._choose_plans(sizes)  # the products not in self.plans: timed or by the heuristic
        self.side = cp.cuda.Stream(non_blocking=True)  # a graph branch for weight gradients
        self._joins = []  # side-branch events the next update must wait for
        self._emit = self._launch  # profile() records instead
        self.graphs = {}  # (start, stop) -> captured segment

    # -- set-up ---------------------------------------------------------------------------------

    def _buffers(self, rows: int) -> dict:
        new = lambda n: cp.zeros((rows, n), dtype=self.dtype)  # noqa: E731
        sizes = self.model.sizes
        buf = {"acts": [None] + [new(n) for n in sizes[1:]],  # acts[0] is the dataset itself
               "deltas": [None] + [new(n) for n in sizes[1:-1]],
               # z of each hidden layer, kept for an activation whose backward reads it (GELU)
               "zs": [None] + [new(n) if self.model.activation.reads_input else None
                               for n in sizes[1:-1]] + [None],
               "dropped": [new(n) if r > 0 else None for r, n in zip(self.rates, sizes)],
               "masks": [new(n) if r > 0 and i > 0 else None  # the input's needs no backward
                         for i, (r, n) in enumerate(zip(self.rates, sizes))]}
        if self.augment is not None:
            buf["x0"] = new(sizes[0])
            buf["field"] = (cp.zeros((rows, 2, sizes[0]), dtype=self.dtype)
                            if self.augment.elastic else None)
        return buf

    def _gemm_names(self, sizes) -> list[str]:
        """The product kernels this graph may launch: each product's transposes with the tiles
        the tuner tries for its output (or the heuristic's one tile, untuned), and the tiles
        of recorded plans."""
        names = set()
        for rows in sizes:
            for i, layer in enumerate(self.model.layers):
                fan_out, fan_in = layer.weight.shape
                products = [(rows, fan_out, fan_in, False, True),  # forward: x W^T
                            (fan_in + 1, fan_out, rows, True, False)]  # [dW^T ; db]
                if i > 0:
                    products.append((rows, fan_in, fan_out, False, False))  # dz W
                for m, n, k, ta, tb in products:
                    if self.tune:
                        names.update(gemm_name(self.dtype, ta, tb, t, mma) for mma in self.mmas
                                     for t in tiles_for(m, n, mma, self.mmas))
                    else:
                        first = plan(m, n, k, mma=untuned_mma(self.mmas, m, n))
                        names.add(gemm_name(self.dtype, ta, tb, first.tile, first.mma))
                    names.update(gemm_name(self.dtype, ta, tb, p.tile, p.mma)  # a resumed run's
                                 for (_, *shape), p in self.plans.items() if shape == [m, n, k])
        return sorted(names)

    def product_plans(self) -> list[dict]:
        """Every product's tile and K-split, as JSON-able records: what a checkpoint keeps so
        that a resume (`plans`) runs the very same arithmetic."""
        return [{"product": label, "m": m, "n": n, "k": k, **asdict(p)}
                for (label, m, n, k), p in sorted(self.plans.items(), key=lambda kv: kv[0])]

    def _choose_plans(self, sizes) -> None:
        """Fixes every product's tile and K-split before the capture: by timing each candidate
        on the real buffers (MLPTRAIN_CUDA_TUNE=0: by the heuristic), then sizes the split-K
        scratch this graph keeps for itself."""
        # products read rows through the permutation: time them on a shuffled one
        self.perm[...] = cp.random.RandomState(0).permutation(self.train.size)[:self.n]
        self.scratch = (cp.empty(MAX_PARTIALS, dtype=self.dtype),
                        cp.zeros(4096, dtype=np.int32))
        self._emit = lambda label, launch, side=False: None
        for rows in sizes:
            self._step(0 if rows == self.batch else self.steps - 1)
        partials = max(p.partials(m, n) for (_, m, n, _), p in self.plans.items())
        tiles = max(p.tiles for p in self.plans.values())
        new = lambda: (cp.empty(max(partials, 1), dtype=self.dtype),  # noqa: E731
                       cp.zeros(tiles, dtype=np.int32))
        self.scratch, self.side_scratch = new(), new()  # one per branch: they run at once

    def _fastest(self, m: int, n: int, k: int, launch) -> GemmPlan:
        """The candidate plan whose launch, repeated in a small graph, takes least time; two
        passes, the best of each candidate's: the first also brings the clocks up."""
        plans, start, stop = candidates(m, n, k, self.mmas), cp.cuda.Event(), cp.cuda.Event()
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

    def _capture(self, start: int, stop: int):
        """Steps [start, stop) and the sum of their loss parts into acc, as one graph."""
        parts = ptr(self.parts, self.sums * self.blocks * start)
        with self.stream:
            self.stream.begin_capture()
            try:
                for s in range(start, stop):
                    self._step(s)
                # the segment's loss and tallies: its steps' parts, summed in order
                self.backend.kernels("sum_parts")(
                    (1,), (self.sums,), (parts, np.int32(self.blocks * (stop - start)),
                                         self.acc))
            finally:
                graph = self.stream.end_capture()
        return graph

    # -- one step, as launches ------------------------------------------------------------------

    def _step(self, s: int) -> None:
        model, dtype, emit, step = self.model, self.dtype, self._emit, self.step
        kernel = lambda name: self.backend.kernels.kernel(name, dtype)  # noqa: E731
        rows = min(self.batch, self.n - s * self.batch)
        index = ptr(self.perm, s * self.batch)  # this batch's rows of the dataset
        buf, layers = self.buffers[rows], model.layers
        act, slope = ACT_IDS[step.activation], step.leaky_slope
        acts, deltas, dropped, masks = buf["acts"], buf["deltas"], buf["dropped"], buf["masks"]
        zs = buf["zs"]
        last, seed = len(layers) - 1, np.uint32(step.seed & 0xFFFFFFFF)

        def gemm(label, m, n, k, *args, side=False, **kwargs):
            def launch(p, scratch):
                self.backend.gemm(*args[:3], m, n, k, *args[3:], gemm_plan=p, scratch=scratch,
                                  **kwargs)

            m_out = m + kwargs.get("ones_row", False)  # the bias gradient's ones row
            key = (label, m_out, n, k)
            if key not in self.plans:
                self.plans[key] = (self._fastest(m_out, n, k, launch) if self.tune
                                   else plan(m_out, n, k, mma=untuned_mma(self.mmas, m_out, n)))
            p = self.plans[key]
            name = (f"{label} {m}x{n}x{k} {p.tile}/{p.splits}{'i' * p.inline_reduce}"
                    f"{MMA_NAMES[p.mma]}")
            emit(name, lambda scratch: launch(p, scratch), side=side)

        def drop(i, src, gather):  # dropped[i] = src[gather] * mask_i (Philox, this step)
            rate, cols = self.rates[i], model.sizes[i]
            emit(f"dropout {i}", lambda _: kernel("dropout")(
                (min(-(-(rows * cols) // (8 * THREADS)), 4096),), (THREADS,),
                (src, gather, dropped[i], masks[i] if masks[i] is not None else NULL,
                 np.int64(rows), np.int32(cols), seed, np.int32(i), self.step_base,
                 np.int32(s), np.uint32(dropout_threshold(rate)),
                 dtype.type(1.0 / (1.0 - rate)))))

        # the input: the dataset's rows (through the permutation), distorted, dropped
        x, gather = self.train.X, index
        if self.augment is not None:
            x = self._augment(s, rows, buf, index)
            gather = NULL
        inputs = [x] + acts[1:-1]  # what Linear i reads, before dropout
        if self.rates[0] > 0:
            drop(0, x, gather)
            inputs[0], gather = dropped[0], NULL
        gathered = lambda i: gather if i == 0 and gather is not NULL else None  # noqa: E731

        # Weights are stored column-major: layer.weight.T, W^T (I, O), is the C-ordered array.
        for i, layer in enumerate(layers):  # acts[i+1] (rows, O) = f(inputs[i] W^T + b)
            fan_out, fan_in = layer.weight.shape
            z_kept = zs[i + 1] is not None  # then the product writes z, a launch its f(z)
            gemm(f"forward {i}", rows, fan_out, fan_in, inputs[i], layer.weight.T,
                 zs[i + 1] if z_kept else acts[i + 1], fan_in, fan_out, gather_a=gathered(i),
                 mode=EPI_BIAS_ACT, bias=layer.bias, act=act if i < last and not z_kept else 0,
                 slope=slope)
            if z_kept:
                emit(f"activation {i}", lambda _, z=zs[i + 1], y=acts[i + 1]: kernel(
                    "activation_forward")((min(-(-z.size // THREADS), 4096),), (THREADS,),
                                          (z, y, np.int64(rows * z.shape[1]), np.int32(act),
                                           dtype.type(slope))))
            if i < last and self.rates[i + 1] > 0:
                drop(i + 1, acts[i + 1], NULL)
                inputs[i + 1] = dropped[i + 1]
        self._loss(s, rows, acts[-1], index)
        dz = acts[-1]  # dL/dz overwrote the logits: nothing reads them again
        for i in reversed(range(len(layers))):
            layer = layers[i]
            fan_out, fan_in = layer.weight.shape
            # [dW^T ; db] (I + 1, O) = [inputs[i] | 1]^T (I + 1, rows) @ dz (rows, O)
            gemm(f"weight grad {i}", fan_in, fan_out, rows, inputs[i], dz, layer.grad_weight.T,
                 fan_in, fan_out, trans_a=True, gather_a=gathered(i),
                 ones_out=layer.grad_bias, ones_row=True,
                 side=i > 0)  # off the critical path, but for the first layer's
            if i > 0:  # dL/dz_{i-1} (rows, I) = (dz @ W) * mask_i * f'(acts[i] or zs[i])
                gemm(f"input grad {i}", rows, fan_in, fan_out, dz, layer.weight.T, deltas[i],
                     fan_out, fan_out, trans_b=True, mode=EPI_ACT_GRAD,
                     ymask=acts[i] if zs[i] is None else zs[i],
                     dmask=masks[i], act=act, slope=slope)
                dz = deltas[i]
        emit("optimizer update", lambda _: self.update(s, self.lrs, self.mus, self.t0))
        for i, weight in enumerate(self.max_norm):  # W^T (I, O): 32 units per block
            fan_out, fan_in = weight.shape
            emit(f"max-norm {i}", lambda _, w=weight, o=fan_out, n=fan_in: kernel("max_norm")(
                (-(-o // 32),), (32, 32), (w.T, np.int32(n), np.int32(o),
                                           dtype.type(step.max_norm))))

    def _augment(self, s, rows, buf, index):
        """Launches this step's distortion of the gathered images into buf["x0"]."""
        a, dtype, kernel = self.augment, self.dtype, self.backend.kernels.kernel
        (h, w), seed = a.shape, np.uint32(self.step.seed & 0xFFFFFFFF)
        field = buf["field"]
        if field is not None:
            (alpha, alpha_span), (sigma, sigma_span) = _span(a.elastic), _span(a.elastic_sigma)
            self._emit("elastic field", lambda _: kernel("elastic_field", dtype)(
                (rows, 2), (256,), (field, np.int32(h), np.int32(w), *self.blur,
                                    np.float64(alpha), np.float64(alpha_span), np.float64(sigma),
                                    np.float64(sigma_span), seed, self.step_base, np.int32(s))))
        per_axis = bool(a.scale_x or a.scale_y)
        narrow = sum(1 << c for c in a.narrow_classes)  # bit y: label y is narrowed
        self._emit("augment", lambda _: kernel("augment", dtype)(
            (rows,), (256,),
            (self.train.X, index, buf["x0"], np.int32(h), np.int32(w), np.int32(a.shift),
             np.float64(math.radians(a.rotate)), np.float64(a.scale_y if per_axis else a.scale),
             np.float64(math.radians(a.shear)), np.float64(a.scale_x), np.int32(per_axis),
             self.train.targets if narrow else NULL, np.uint32(narrow),
             np.float64(a.narrow_factor), np.int32(a.affine),
             field if field is not None else NULL, seed, self.step_base, np.int32(s))))
        return buf["x0"]

    def _loss(self, s, rows, logits, index) -> None:
        """The loss kernel (dispatch.LOSS_KERNELS): summed loss and tallies (a correct count;
        a real target's squared and absolute errors) into this step's parts, and dL/dz
        (scaled by 1/rows: the batch mean's gradient) over the logits."""
        dtype, parts = self.dtype, ptr(self.parts, self.sums * self.blocks * s)
        name = LOSS_KERNELS[self.step.loss]
        scale, common = dtype.type(1.0 / rows), (logits, NULL, self.train.targets, index)
        args = {"softmax_xent": lambda: (*common, NULL, logits, np.int32(rows),
                                         np.int32(logits.shape[1]), scale,
                                         np.float64(self.step.label_smoothing), parts),
                "sigmoid_bce": lambda: (*common, logits, np.int32(rows), scale, parts),
                "real_target": lambda: (*common, logits, np.int32(rows), scale,
                                        np.int32(REAL_TARGET_IDS[self.step.loss]),
                                        dtype.type(getattr(self.model.loss, "delta", 0.0)),
                                        parts)}[name]
        kernel = self.backend.kernels.kernel(name, dtype)
        self._emit(self.step.loss, lambda _: kernel((-(-rows // XENT_ROWS),), (XENT_ROWS,),
                                                    args()))

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

    def run(self, order, first_step: int, start: int = 0, stop: int | None = None) -> tuple:
        """Trains steps [start, stop) of the epoch in `order` whose step 0 is global step
        `first_step`; returns the device array (summed loss, *tallies) of those steps.
        Nothing here waits for the GPU."""
        stop = self.steps if stop is None else stop
        graph = self.graphs.get((start, stop))
        if graph is None:
            if len(self.graphs) >= MAX_SEGMENTS:  # odd segment shapes: keep the epoch's
                self.graphs = {k: g for k, g in self.graphs.items() if k == (0, self.steps)}
            graph = self.graphs[start, stop] = self._capture(start, stop)
        main = cp.cuda.get_current_stream()
        self.perm[...] = cp.asarray(order[:self.n], dtype=np.int64)
        schedule = self.step.schedule
        self.lrs.set(schedule.lrs(first_step, self.steps))
        if self.mus is not None:
            self.mus.set(schedule.momenta(first_step, self.steps))
        self.step_base.fill(first_step)
        t = getattr(self.optimizer, "t", 0)  # Adam's count (SGD has none)
        self.t0.fill(t - start)  # the kernel counts t0 + s + 1 for the segment's step s
        self.acc.fill(0)
        self.stream.wait_event(main.record())
        graph.launch(self.stream)
        main.wait_event(self.stream.record())
        if self.update.counts_steps:
            self.optimizer.t = t + stop - start  # as its step() would have moved it
        return self.acc.copy()  # the next segment refills acc


class _Update:
    """The optimizer's step over the model's flat parameter buffer, as one launch (the kind's
    kernel in dispatch.UPDATE_KERNELS) reading the learning rate, SGD's momentum and Adam's
    count from device buffers."""

    def __init__(self, backend, step, model, optimizer):
        self.spec, self.optimizer, self.dtype = step.optimizer, optimizer, model.dtype
        self.name = UPDATE_KERNELS[step.optimizer.kind]
        self.counts_steps = self.name == "adam_update"  # the kernel counts t; the host follows
        address = lambda flat: cp.asarray([flat.data.ptr], dtype=np.int64)  # noqa: E731
        self.params, self.grads = address(model.params.flat), address(model.grads.flat)
        self.sizes = cp.asarray([model.params.flat.size], dtype=np.int64)
        self.blocks = min(-(-model.params.flat.size // 256), 1024)
        self.kernel = backend.kernels.kernel(self.name, self.dtype)
        self.state = tuple(address(state.flat) for state in optimizer.buffers())

    def __call__(self, s: int, lrs, mus, t0) -> None:
        args = {"sgd_update": self._sgd, "adam_update": self._adam}[self.name]
        self.kernel((self.blocks, 1), (256,), args(s, lrs, mus, t0))

    def _sgd(self, s, lrs, mus, t0) -> tuple:
        o, t = self.spec, self.dtype.type
        velocity = self.state[0] if self.state else self.params  # unused without momentum
        return (self.params, self.grads, velocity, self.sizes, lrs,
                mus if mus is not None else NULL, np.int32(s), t(o.momentum),
                t(o.weight_decay), np.int32(bool(o.nesterov)))

    def _adam(self, s, lrs, mus, t0) -> tuple:
        o, t = self.spec, self.dtype.type
        return (self.params, self.grads, *self.state, self.sizes, lrs, t0, np.int32(s),
                np.float64(o.beta1), np.float64(o.beta2), t(o.eps), np.float64(o.weight_decay),
                np.int32(o.kind is OptimizerKind.ADAMW))
