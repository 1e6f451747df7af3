"""The GPU backend: the primitives as hand-written CUDA kernels, through CuPy.

Two ways to train. The eager path launches one kernel per primitive from Python (matrix products
through cuBLAS): simple, and the one to debug with. The graph path (cuda/epoch.py) records a
whole epoch of steps, with matrix products from our own kernel, as one CUDA graph and replays it
each epoch: the Python and launch overhead of ~15 kernels per step is paid once. Set
MLPTRAIN_CUDA_GRAPH=0 to train eagerly.

This module, and the modules under backend/cuda, are the only ones that import CuPy.
"""

from __future__ import annotations

import math
import os

import cupy as cp
import numpy as np

from mlptrain import nn
from mlptrain.backend import PRECISIONS
from mlptrain.backend.cuda.dispatch import LOSS_KERNELS
from mlptrain.backend.cuda.gemm import MMAS, NULL, Gemm, mmas_for
from mlptrain.backend.cuda.kernels import ACT_IDS, THREADS, XENT_ROWS, Kernels
from mlptrain.backend.protocol import Backend, each_member
from mlptrain.errors import BackendError
from mlptrain.seeding import dropout_threshold


# Host arrays this large go to the device through page-locked memory: a process's first
# copies straight from pageable memory ran at 0.7-1 GB/s on an H200 host (MNIST's 188 MB in
# 0.2-0.3 s), staged at about 7 GB/s, the staging copy included.
STAGED_BYTES = 8 << 20
GRID_Y = 65535  # a launch grid's largest y dimension: the softmax kernel's members per launch


def _upload_staged(host: np.ndarray, dtype=None):
    host = np.ascontiguousarray(host, dtype=dtype)
    staged = np.frombuffer(cp.cuda.alloc_pinned_memory(host.nbytes), host.dtype,
                           host.size).reshape(host.shape)
    staged[...] = host
    out = cp.empty(host.shape, host.dtype)
    out.set(staged)
    cp.cuda.get_current_stream().synchronize()  # the staging buffer is reused once freed
    return out


_SGD = cp.ElementwiseKernel(
    "T g, T lr, T mu, T wd, int32 nesterov", "T p, T v",
    """
    T gg = g;
    if (wd != (T)0) gg += p * wd;          // the L2 penalty's gradient
    if (mu != (T)0) {
        T ve = v * mu;
        ve += gg;                          // v <- mu v + g
        v = ve;
        if (nesterov) gg += ve * mu; else gg = ve;
    }
    gg *= lr;
    p -= gg;
    """, "mlptrain_sgd_update")
_ADAM = cp.ElementwiseKernel(  # mode: 0 no decay, 1 L2 (Adam), 2 decoupled (AdamW)
    "T g, T step_size, T root_c2, T b1, T b2, T omb1, T omb2, T eps, T wd, T shrink, int32 mode",
    "T p, T m, T v",
    """
    T gg = g, pe = p;
    if (mode == 2) pe *= shrink; else if (mode == 1) gg += pe * wd;
    T me = m * b1;
    me += gg * omb1;
    T ve = v * b2;
    ve += (gg * gg) * omb2;
    m = me;
    v = ve;
    T denom = sqrt(ve) * root_c2;
    denom += eps;
    pe -= (me / denom) * step_size;
    p = pe;
    """, "mlptrain_adam_update")


def _blocks(total: int) -> int:
    return max(1, min(-(-total // THREADS), 4096))


def _members(one: bool, *arrays) -> tuple:
    """One network's arrays (B, ...) as a group of one member's (1, B, ...); a group's as
    they are."""
    return tuple(a[None] if one and a is not None else a for a in arrays)


def _activation_id(activation) -> int | None:
    """The kernels' id for an nn activation, or None for one they do not know."""
    return ACT_IDS.get(getattr(activation, "name", None)) if activation is not None else 0


class CupyBackend(Backend):
    """Executes the model's primitives on a CUDA GPU; arrays are C-contiguous CuPy arrays."""

    name = "cupy"
    device = "cuda"
    xp = cp

    def __init__(self, graph: bool | None = None, gemm: str | None = None,
                 precision: str = "fp32"):
        """`gemm`: the eager path's float32 products through cuBLAS ("cublas", the default,
        whose graph and groups run our kernels: SIMT or 3xTF32 on the tensor cores, whichever
        the graph's tuner times faster, see gemm.MMAS) or our kernels only: SIMT ("own"),
        3xTF32 ("tc3": fp32-level error) or plain TF32 ("tf32"); float64 runs SIMT whatever
        the kind. precision = "tf32"
        (train.precision) is gemm "tf32": every float32 product, eager ones too, a single
        TF32 product (~1e-3 relative error)."""
        if graph is None:
            graph = os.environ.get("MLPTRAIN_CUDA_GRAPH", "1") != "0"
        if gemm is None:  # MLPTRAIN_CUDA_GEMM=cublas-simt: no tensor cores (gemm.MMAS)
            gemm = os.environ.get("MLPTRAIN_CUDA_GEMM", "cublas")
        if precision not in PRECISIONS or gemm not in MMAS:
            raise ValueError(f"precision {precision!r} / gemm {gemm!r}: expected one of "
                             f"{PRECISIONS} / {tuple(MMAS)}")
        if precision == "tf32":
            gemm = "tf32"
        self.graph, self.gemm_kind, self.precision = graph, gemm, precision
        self.kernels = Kernels(lambda event: self.on_event(event))  # compiled on first use
        self.on_event = lambda event: None  # the loop sets it: hears first-use compiles
        self.gemm = Gemm(self.kernels, gemm)
        self._epochs = {}  # (step, model, optimizer, data) -> captured epoch
        self._parts = {}  # (members, blocks) -> _softmax_xent's per-block sums
        self._faults, self._gathered = None, False  # take_rows's out-of-range flag (to_host)

    def mmas(self, dtype) -> tuple[int, ...]:
        """The multiplies (gemm.MMA_*) this backend's own products of `dtype` may use; the
        epoch graph times them all, or takes the first untuned."""
        return mmas_for(dtype, self.gemm_kind)

    def function(self, name: str):
        return self.kernels(name)

    def kernel(self, name: str, dtype):
        return self.kernels.kernel(name, dtype)

    def prepare_kernels(self, names) -> None:
        """Loads (compiling on first use) the named kernels together, so none loads lazily
        inside a graph capture and first-use compiles run side by side."""
        self.kernels.prepare(list(names))

    # -- moving data across the host/device boundary --------------------------------------------

    def asarray(self, host, dtype=None):
        if isinstance(host, np.ndarray) and host.nbytes >= STAGED_BYTES:
            return _upload_staged(host, dtype)
        return cp.ascontiguousarray(cp.asarray(host, dtype=dtype))

    def to_host(self, array) -> np.ndarray:
        host = cp.asnumpy(array)
        if self._gathered:  # take_rows ran since the last check: did an index miss its rows?
            self._gathered = False
            if int(self._faults.get()[0]):
                self._faults.fill(0)
                raise BackendError("a batch asked take_rows for a row outside its source array "
                                   "(an index below 0 or past the last row) since the last "
                                   "sync; nothing was read past the array, but the batch is "
                                   "wrong: the caller's row indices must be rows of the array "
                                   "it gathers from (a shuffle over rows that were never "
                                   "uploaded, say).")
        return host

    def free_bytes(self) -> int:
        """What this device can still allocate: the driver's free memory plus the blocks CuPy's
        pool holds but does not use (memory.py compares a config's estimate with it)."""
        free, _ = cp.cuda.Device().mem_info
        return int(free) + int(cp.get_default_memory_pool().free_bytes())

    def to_float(self, scalar) -> float:
        return float(scalar)  # a sync point

    def empty(self, shape, dtype):
        return cp.empty(shape, dtype=dtype)

    def zeros(self, shape, dtype):
        return cp.zeros(shape, dtype=dtype)

    # -- the primitives -------------------------------------------------------------------------

    def take_rows(self, source, index, out):
        """out[i] = source[index[i]]; index (G, B) of a group fills out (G, B, D)."""
        if source.dtype not in (np.float32, np.float64) or source.ndim != 2:
            return cp.take(source, index, axis=0, out=out)
        rows, cols = index.size, out.shape[-1]
        if self._faults is None:
            self._faults = cp.zeros(1, np.int32)  # set by the kernel; read at the next sync
        self._gathered = True
        self.kernel("take_rows", source.dtype)(
            (_blocks(rows * cols),), (THREADS,),
            (source, cp.ascontiguousarray(index, dtype=np.int64), out, np.int64(rows),
             np.int32(cols), np.int64(source.shape[0]), self._faults))
        return out

    def matmul(self, a, b, out, trans_a: bool = False, trans_b: bool = False):
        """out = op(a) @ op(b): cuBLAS by default, our kernel with another gemm kind. Operands may be
        C- or F-ordered (a column-major weight is the C-ordered transpose, read transposed).
        A group's stacks (G, ...) go to _stacked_matmul."""
        if out.ndim == 3:
            return self._stacked_matmul(a, b, out, trans_a, trans_b)
        if self.gemm_kind.startswith("cublas"):
            return cp.matmul(a.T if trans_a else a, b.T if trans_b else b, out=out)
        if not out.flags.c_contiguous:  # out^T = op(b)^T op(a)^T, into the C-ordered out.T
            self.matmul(b, a, out.T, not trans_b, not trans_a)
            return out
        if not a.flags.c_contiguous:
            a, trans_a = a.T, not trans_a
        if not b.flags.c_contiguous:
            b, trans_b = b.T, not trans_b
        m, n = out.shape
        k = a.shape[0] if trans_a else a.shape[1]
        return self.gemm(a, b, out, m, n, k, a.shape[1], b.shape[1], trans_a, trans_b)

    def _stacked_matmul(self, a, b, out, trans_a: bool, trans_b: bool):
        """out[g] = op(a[g]) @ op(b[g]) for a group's G members, as one launch of our own
        product kernel (grid z = member): CuPy refuses cuBLAS inside a graph capture, and a
        group's steps are captured. A 2-d a (B, I) is read by every member (stride 0). The
        tile is gemm.plan's pick by output size: within 2 us of the fastest tile for each of
        the capacity sweep's products on an H200, where timing every tile on first use cost
        0.2 s and saved 0.05 s."""
        if not out.flags.c_contiguous:  # out^T = op(b)^T op(a)^T, into the C-ordered out^T
            self._stacked_matmul(b, a, out.swapaxes(-1, -2), not trans_b, not trans_a)
            return out
        if not b.flags.c_contiguous:  # a column-major weight (G, O, I): its C-ordered W^T
            b, trans_b = b.swapaxes(-1, -2), not trans_b
        if not a.flags.c_contiguous:
            a, trans_a = a.swapaxes(-1, -2), not trans_a
        G, m, n = out.shape
        k = a.shape[-2] if trans_a else a.shape[-1]
        stride = lambda x: x[0].size if x.ndim == 3 else 0  # noqa: E731
        return self.gemm(a, b, out, m, n, k, a.shape[-1], b.shape[-1], trans_a, trans_b,
                         batches=G, strides=(stride(a), stride(b), m * n))

    def row_norms_squared(self, w, out):
        """out[j] = sum_i w[j, i]^2 (max-norm; once per step, so a fused reduction will do)."""
        out[...] = cp.einsum("oi,oi->o", w, w)
        return out

    def sum_rows(self, a, out):
        """out[j] = sum_i a[i, j]; for a group's stack a (G, B, O), out (G, 1, O) per model."""
        stack, rows, cols = a.shape if a.ndim == 3 else (1, *a.shape)
        self.kernel("sum_rows", a.dtype)((-(-cols // 32), stack), (32, 8),
                                         (a, out, np.int32(rows), np.int32(cols)))
        return out

    def bias_activation(self, z, bias, activation, out):
        """out = activation(z + bias); z is overwritten with z + bias."""
        act = _activation_id(activation)
        if act is None:
            return super().bias_activation(z, bias, activation, out)
        cols = z.shape[-1]
        rows = z.size // cols
        per_bias = z.size // (bias.size // cols)  # a group's z (G, B, O) and bias (G, 1, O)
        self.kernel("bias_activation", z.dtype)(
            (_blocks(rows * cols),), (THREADS,),
            (z, bias, out, np.int64(rows), np.int32(cols), np.int64(per_bias), np.int32(act),
             z.dtype.type(getattr(activation, "slope", 0.0))))
        return out

    def activation_backward(self, activation, y, dy, out, z=None):
        """out = dy * activation'(z), read from the saved output y (or z, if it reads it)."""
        act = _activation_id(activation)
        if act is None:
            return super().activation_backward(activation, y, dy, out, z)
        saved = z if getattr(activation, "reads_input", False) else y
        self.kernel("activation_backward", y.dtype)(
            (_blocks(y.size),), (THREADS,),
            (saved, dy, out, np.int64(y.size), np.int32(act),
             y.dtype.type(getattr(activation, "slope", 0.0))))
        return out

    def loss_forward(self, loss: nn.Loss, logits, targets, cache, weights=None):
        """(summed loss, *tallies) as device scalars (per member for a group's (G, B, C)); the
        softmax's in its own kernel, where cache gets the softmax. `weights` (B,): each row's
        loss counts w_b times."""
        if LOSS_KERNELS.get(loss.name) != "softmax_xent":
            return super().loss_forward(loss, logits, targets, cache, weights)
        if weights is not None:  # each row as a group's member of one row: its own loss
            rows = cp.zeros((logits.shape[0], 2), dtype=np.float64)  # (B, 2): loss, correct
            for start in range(0, logits.shape[0], GRID_Y):  # members are the grid's y
                part = slice(start, start + GRID_Y)
                self._softmax_xent(logits[part, None], targets[part, None],
                                   cache.probs[part, None], loss.smoothing, None, rows[part])
            return nn.summed(cp, rows[:, 0], weights), rows[:, 1].sum()
        one = logits.ndim == 2  # one network: a group of one member
        sums = cp.zeros((1 if one else logits.shape[0], 2), dtype=np.float64)
        self._softmax_xent(*_members(one, logits, targets, cache.probs), loss.smoothing, None,
                           sums)
        return (sums[0, 0], sums[0, 1]) if one else (sums[:, 0], sums[:, 1])

    def loss_and_grad(self, loss, logits, targets, cache, scale, out, sums=None, weights=None):
        """The softmax loss and its gradient in one kernel (the formulas of
        nn.SoftmaxCrossEntropy), its (loss, correct) added to `sums` (G, 2) (one network: G =
        1); any other case (a weighted batch too) as protocol.Backend states it."""
        if weights is not None or sums is None or LOSS_KERNELS.get(loss.name) != "softmax_xent":
            return super().loss_and_grad(loss, logits, targets, cache, scale, out, sums, weights)
        logits, targets, out = _members(logits.ndim == 2, logits, targets, out)
        self._softmax_xent(logits, targets, None, loss.smoothing, scale, sums, grad=out)
        return None

    def _softmax_xent(self, logits, targets, probs, smoothing: float, scale, sums, grad=None):
        """sums (G, 2) float64 += each member's (summed loss, correct) over its rows of logits
        (G, B, C), targets (G, B); the softmax into `probs`, dL/dz * scale into `grad`."""
        G, rows, classes = logits.shape
        blocks = -(-rows // XENT_ROWS)
        parts = self._parts.get((G, blocks))  # kept: a captured step allocates nothing
        if parts is None:
            parts = self._parts[G, blocks] = cp.empty(2 * G * blocks, dtype=np.float64)
        self.kernel("softmax_xent", logits.dtype)(
            (blocks, G), (XENT_ROWS,),
            (logits, NULL, cp.ascontiguousarray(targets), NULL,
             NULL if probs is None else probs, NULL if grad is None else grad, np.int32(rows),
             np.int32(classes), logits.dtype.type(scale or 0), np.float64(smoothing), parts))
        self.function("sum_parts")((G,), (2,), (parts, np.int32(blocks), sums))

    def loss_backward(self, loss: nn.Loss, cache, targets, scale: float, out):
        """out = dL/dz * scale from the softmax that loss_forward kept (a weighted batch's; the
        reference formula reads indices that the kernel's forward does not keep)."""
        if LOSS_KERNELS.get(loss.name) != "softmax_xent" or out.ndim == 3:
            return super().loss_backward(loss, cache, targets, scale, out)
        probs = cache.probs
        rows, classes = probs.shape
        self.kernel("softmax_xent_grad", probs.dtype)(
            (-(-rows // 128),), (128,),
            (probs, targets, out, np.int32(rows), np.int32(classes), probs.dtype.type(scale)))
        if loss.smoothing:  # (p - onehot) s  ->  (p - (1 - e) onehot - e / C) s
            e = loss.smoothing
            out -= probs.dtype.type(e / classes * scale)
            out[cp.arange(rows), targets] += probs.dtype.type(e * scale)
        return out

    def dropout_mask(self, seed: int, slot: int, step: int, rate: float, out):
        """out (B, I) = keep / (1 - rate): the dropout kernel's bits (seeding.dropout_keep)."""
        rows, cols = out.shape
        self.kernel("dropout", out.dtype)(
            (max(1, min(-(-out.size // (8 * THREADS)), 4096)),), (THREADS,),
            (NULL, NULL, NULL, out, np.int64(rows), np.int32(cols), np.uint32(seed & 0xFFFFFFFF),
             np.int32(slot), cp.asarray([step], dtype=np.int64), np.int32(0),
             np.uint32(dropout_threshold(rate)), out.dtype.type(1.0 / (1.0 - rate))))
        return out

    # -- optimizer updates, in place (protocol.Backend's formulas, operation for operation) ----

    def sgd_update(self, param, grad, velocity, lr, momentum: float, nesterov: bool,
                   weight_decay) -> None:
        t = param.dtype.type
        if not param.flags.c_contiguous:  # a group's column-major weights (G, O, I): walked in
            # their storage order (W^T), as an element-wise update may, so that neighbouring
            # threads touch neighbouring memory (across O, they would stride by I elements)
            param, grad, velocity = (None if x is None else x.swapaxes(-1, -2)
                                     for x in (param, grad, velocity))
        # a group's (G,) rates and decays stay on the device (a captured step reads the values
        # set before each replay), each member's broadcast over its arrays
        lr, wd = (v if getattr(v, "ndim", 0) else t(v)
                  for v in each_member(param, lr, weight_decay))
        _SGD(grad, lr, t(momentum), wd, np.int32(bool(nesterov)), param,
             velocity if velocity is not None else grad)  # unused (not written) without momentum

    def adam_update(self, param, grad, m, v, step: int, lr: float, beta1: float, beta2: float,
                    eps: float, weight_decay: float, decoupled: bool) -> None:
        if getattr(lr, "ndim", 0):  # a group's (G,) rates: the reference formula, per member
            return super().adam_update(param, grad, m, v, step, lr, beta1, beta2, eps,
                                       weight_decay, decoupled)
        t = param.dtype.type
        mode = 0 if not weight_decay else 2 if decoupled else 1
        _ADAM(grad, t(lr / (1 - beta1**step)), t(1 / math.sqrt(1 - beta2**step)), t(beta1),
              t(beta2), t(1 - beta1), t(1 - beta2), t(eps), t(weight_decay),
              t(1 - lr * weight_decay), np.int32(mode), param, m, v)

    # -- the whole-epoch fast path (the loop asks for it when graph_blockers finds nothing) ----

    def capture(self, launch, prepare=None):
        """launch() captured as one CUDA graph on a stream of its own, replayed on the current
        stream (so it runs after the uploads before it); None with MLPTRAIN_CUDA_GRAPH=0 or
        when the capture fails (then `capture_failure` says why and the caller runs eagerly)."""
        if not self.graph:
            self.capture_failure = "graphs turned off (MLPTRAIN_CUDA_GRAPH=0)"
            return None
        if prepare is not None:
            prepare()
        stream = cp.cuda.Stream(non_blocking=True)
        cp.cuda.get_current_stream().synchronize()
        try:
            with stream:
                stream.begin_capture()
                try:
                    launch()
                finally:
                    graph = stream.end_capture()
        except Exception as exc:  # noqa: BLE001 - any failure: the eager path still works
            self.capture_failure = f"{type(exc).__name__}: {exc}"
            return None
        return lambda: graph.launch(cp.cuda.get_current_stream())

    def graph_blockers(self, step) -> list[str]:
        """Why the epoch graph cannot run this declared step (empty: it can)."""
        from mlptrain.backend.cuda.dispatch import graph_blockers

        return graph_blockers(step, self.graph)

    def epoch_runner(self, step, model, optimizer, train, plans=None):
        """The captured epoch (cuda/epoch.py) for this step, model, optimizer and data, built on
        first use (its kernels compiled, its products tuned, or planned as `plans`, an earlier
        runner's product_plans()); ask graph_blockers first."""
        from mlptrain.backend.cuda.epoch import EpochGraph

        key = (id(step), id(model), id(optimizer), id(train.X))
        runner = self._epochs.get(key)
        if runner is None:
            runner = self._epochs[key] = EpochGraph(self, step, model, optimizer, train,
                                                    plans=plans)
        return runner
