"""The CPU backend: NumPy primitives that write into preallocated buffers."""

from __future__ import annotations

import os

import numpy as np
from threadpoolctl import ThreadpoolController

from mlptrain import seeding
from mlptrain.backend import gemm, threads
from mlptrain.backend.events import ThreadsChosen
from mlptrain.backend.protocol import Backend


def _import_blas_single_threaded():
    """scipy.linalg.blas, with its BLAS held to one thread when it is not NumPy's own.

    SciPy's wheels carry a second OpenBLAS with its own thread pool. The updates it runs here
    are memory-bound passes that one core streams; a second pool's threads would spin beside
    NumPy's GEMM threads on the same cores (measured on 2 loaded cores: a 128x64 epoch went
    from 2.7 s to 59 s). A build whose SciPy shares NumPy's BLAS adds no library: left alone.
    """
    before = {c.filepath for c in ThreadpoolController().lib_controllers}
    import scipy
    from scipy.linalg import blas

    scipy_dir = os.path.dirname(scipy.__file__)  # its wheels' own libraries sit beside it
    for controller in ThreadpoolController().lib_controllers:
        own = controller.filepath.startswith((scipy_dir + ".libs", scipy_dir + os.sep))
        if controller.user_api == "blas" and (own or controller.filepath not in before):
            controller.set_num_threads(1)
    return blas


# BLAS level 1, in place on 1-D views: y <- y + a x (axpy) and x <- a x (scal) each stream
# their arrays once, where NumPy needs a scaled copy and a second pass (p - lr g: two passes
# and a scratch buffer). The optimizer updates are memory-bound, so passes are what they cost.
# Filled on first use: importing SciPy would add 0.3 s to the start of every command, GPU
# runs and `--help` included.
_AXPY: dict = {}  # dtype -> the routine
_SCAL: dict = {}


def _load_blas() -> None:
    blas = _import_blas_single_threaded()
    _AXPY.update({np.dtype(np.float32): blas.saxpy, np.dtype(np.float64): blas.daxpy})
    _SCAL.update({np.dtype(np.float32): blas.sscal, np.dtype(np.float64): blas.dscal})


def _order(a: np.ndarray) -> str:
    """The memory order of an updated array (a weight's view of the flat buffer is "F")."""
    return "F" if a.flags.f_contiguous and not a.flags.c_contiguous else "C"


def _flat(a: np.ndarray, order: str, written: bool) -> np.ndarray:
    """A 1-D view of `a` in `order` (element i of every operand is the same array element).

    An array that is written must be contiguous in that order, so BLAS writes through the
    view in place; one that is only read may be copied (mixed layouts; never on the flat
    buffers a model's optimizer passes)."""
    contiguous = a.flags.f_contiguous if order == "F" else a.flags.c_contiguous
    if a.dtype not in _AXPY or (written and not contiguous):
        raise ValueError(f"an in-place update needs {order}-contiguous float32/float64 arrays, "
                         f"got {a.dtype} with strides {a.strides}")
    return a.ravel(order=order)


def axpy(a: float, x: np.ndarray, y: np.ndarray) -> None:
    """y <- y + a x, in place, one pass."""
    if not _AXPY:
        _load_blas()
    if x.ndim == y.ndim == 1 and x.dtype == y.dtype and x.flags.c_contiguous \
            and y.flags.c_contiguous:  # a model's flat buffers: no checks beyond these
        _AXPY[y.dtype](x, y, a=a)
        return
    order = _order(y)
    x_view, y_view = _flat(x, order, written=False), _flat(y, order, written=True)
    _AXPY[y.dtype](x_view, y_view, a=a)


def scal(a: float, x: np.ndarray) -> None:
    """x <- a x, in place, one pass."""
    if not _SCAL:
        _load_blas()
    view = x if x.ndim == 1 and x.flags.c_contiguous and x.dtype in _SCAL \
        else _flat(x, _order(x), written=True)
    _SCAL[x.dtype](a, view)


_ADDS: list = []  # [NumPy's BLAS's add-into products, or None]: looked up on first use


def _add_products():
    """backend/gemm.py's products with beta = 1 on NumPy's own BLAS, or None where there are
    none (another BLAS, no threadpoolctl view of it)."""
    if not _ADDS:
        blas = threads.numpy_blas()
        _ADDS.append(gemm.load(blas.filepath if blas is not None else None))
    return _ADDS[0]


UPDATE_BLOCK_BYTES = 256 * 1024  # per array: p, g and v blocks fit a core's L2 together


def _sgd_passes(p, g, v, lr: float, momentum: float, nesterov: bool, weight_decay: float,
                axpy=axpy, scal=scal):
    """The SGD update of sgd_update on same-shaped arrays, one in-place BLAS pass per line:
    1 pass for plain SGD, 3 with momentum, 4 with Nesterov, +1 for weight decay. `axpy` and
    `scal`: the checked helpers above, or a dtype's bare routines (_bare_routines)."""
    if weight_decay:
        axpy(weight_decay, p, g)  # g' = g + wd p, in the gradient (scratch)
    if not momentum:
        axpy(-lr, g, p)  # p <- p - lr g'
        return
    scal(momentum, v)
    axpy(1.0, g, v)  # v <- mu v + g'
    if nesterov:
        axpy(-lr, g, p)
        axpy(-lr * momentum, v, p)  # p <- p - lr g' - lr mu v
    else:
        axpy(-lr, v, p)  # p <- p - lr v


_BARE: dict = {}  # dtype -> (axpy, scal) with the helpers' signatures, unchecked


def _bare_routines(dtype) -> tuple:
    """axpy and scal of `dtype` straight to SciPy's routines, without the helpers' layout
    checks: for the blocks of a model's flat buffers, 1-D and contiguous by construction (the
    checks cost about as much as a small block's pass)."""
    found = _BARE.get(dtype)
    if found is None:
        if not _AXPY:
            _load_blas()
        ax, sc = _AXPY[dtype], _SCAL[dtype]
        found = _BARE[dtype] = (lambda a, x, y: ax(x, y, a=a)), (lambda a, x: sc(a, x))
    return found


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
        # the update's blocks of the last few sets of flat buffers (_update_blocks): cut once,
        # not on every step; a handful, so a finished model's buffers are let go
        self._blocks: dict[tuple, tuple] = {}
        # the products plain SGD's step runs in (matmul_descend), kept per set of arrays
        self._products: dict[tuple, tuple] = {}

    on_event = staticmethod(lambda event: None)  # the loop sets it: hears ThreadsChosen

    # -- BLAS threads for a run's steps (backend/threads.py says why they are timed) -----------

    def choose_threads(self, trial, recorded: list[dict] | None, fresh: bool) -> dict | None:
        """Sets NumPy's BLAS threads for an eager run until restore_threads: as `recorded` (the
        product_plans of the run being resumed) where it holds a count; else, for a `fresh`
        run, the fastest count for `trial` (one step without its update); else the BLAS's own.
        Reports ThreadsChosen; returns the record a run keeps (a timed choice), or None."""
        blas = self._blas = threads.numpy_blas()
        if blas is None:
            return None
        self._threads_before = own = blas.num_threads
        found = next((r for r in recorded or () if "blas_threads" in r), None)
        fixed = threads.fixed_by() or ("" if fresh else "resumed: none recorded")
        if found is not None:
            chosen, how, seconds = found["blas_threads"], "as recorded", {}
        elif fixed or own == 1:
            chosen, how, seconds = own, fixed or "one core", {}
        elif threads.quick(trial):
            chosen, how, seconds = own, "a step too quick to share", {}
        else:
            seconds = threads.time_counts(trial, threads.candidates(own), blas.set_num_threads)
            chosen, how = min(seconds, key=seconds.get), "timed"
        blas.set_num_threads(chosen)
        self.on_event(ThreadsChosen(chosen, how, {n: round(t * 1e3, 3)
                                                  for n, t in seconds.items()}))
        return found or ({"blas_threads": chosen} if how == "timed" else None)

    def restore_threads(self) -> None:
        """The BLAS's thread count as it was before choose_threads."""
        if getattr(self, "_blas", None) is not None:
            self._blas.set_num_threads(self._threads_before)
            self._blas = None

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
        """out = op(a) @ op(b), op transposing when asked (a view, no copy: BLAS's trans flag).
        A group's stacks (G, ...) run one BLAS product per member (a may be one (B, I) that
        every member reads): np.matmul on stacks of transposed views takes a slow non-BLAS
        loop (measured 7x slower)."""
        if out.ndim == 3:
            for g in range(out.shape[0]):
                self.matmul(a[g] if a.ndim == 3 else a, b[g], out[g], trans_a, trans_b)
            return out
        return np.matmul(a.T if trans_a else a, b.T if trans_b else b, out=out)

    @property
    def folds_sgd(self) -> bool:
        """Whether NumPy's BLAS adds products into their output here (backend/gemm.py)."""
        return _add_products() is not None

    def matmul_descend(self, a, b, out, lr: float, trans_a: bool = False,
                       trans_b: bool = False):
        """out -= lr op(a) @ op(b) as one BLAS product with beta = 1 and alpha = -lr (the
        formula's where BLAS cannot read the arrays in place). It rounds as the gradient's
        product and axpy's step do, or within an ulp of them: where the product's inner
        dimension (the batch) is cut into blocks, each block's sum is added to the weight
        in turn."""
        product = self._product("gemm", a, b, out, (id(a), id(b), id(out), trans_a, trans_b),
                                trans_a, trans_b)
        if product is None:
            return super().matmul_descend(a, b, out, lr, trans_a, trans_b)
        product(-lr)
        return out

    def sum_rows_descend(self, a, out, lr: float):
        """out[j] -= lr sum_i a[i, j] as sum_rows's product 1^T a with beta = 1."""
        product = self._product("gemv", a, None, out, (id(a), id(out)))
        if product is None:
            return super().sum_rows_descend(a, out, lr)
        product(-lr)
        return out

    def _product(self, kind: str, a, b, out, key: tuple, trans_a: bool = False,
                 trans_b: bool = False):
        """gemm.AddProducts's product of these arrays, op(a) @ op(b) (a gemv's b: ones; None:
        BLAS cannot take them), made on first use and kept with the arrays `key` names (their
        ids: the cache holds them); a step's call costs one lookup."""
        found = self._products.get(key)
        if found is None:
            adds = _add_products()
            ops = (a.T if trans_a else a,
                   self._ones_of(a) if kind == "gemv" else b.T if trans_b else b)
            product = getattr(adds, kind)(*ops, out) if adds is not None else None
            if len(self._products) >= 64:  # the oldest goes (a finished model's buffers)
                del self._products[next(iter(self._products))]
            # the arrays the key names are kept, so that their ids stay theirs
            found = self._products[key] = (a, b, out, product)
        return found[3]

    def row_norms_squared(self, w: np.ndarray, out: np.ndarray) -> np.ndarray:
        """out[j] = sum_i w[j, i]^2, without a (O, I) temporary (max-norm)."""
        return np.einsum("oi,oi->o", w, w, out=out)

    def sum_rows(self, a: np.ndarray, out: np.ndarray) -> np.ndarray:
        """out[j] = sum_i a[i, j]: the bias gradient, summed over the batch.

        Computed as the product 1^T a (a GEMV): about twice as fast as np.sum's pairwise
        reduction over axis 0, and no less accurate for the batch sizes used here.
        """
        if a.ndim == 3:  # a group's stack (G, B, O) -> out (G, 1, O): one GEMV per model
            for g in range(a.shape[0]):
                self.sum_rows(a[g], out[g].reshape(-1))
            return out
        return np.matmul(self._ones_of(a), a, out=out)

    def _ones_of(self, a: np.ndarray) -> np.ndarray:
        """ones (B,) of a's dtype, for a (B, O): made once per B and dtype."""
        ones = self._ones.get((a.shape[0], a.dtype))
        if ones is None:
            ones = self._ones[a.shape[0], a.dtype] = np.ones(a.shape[0], a.dtype)
        return ones

    def dropout_mask(self, seed: int, slot: int, step: int, rate: float, out: np.ndarray):
        """out (B, I) = keep / (1 - rate), keep from seeding.dropout_keep (the kernels' bits)."""
        keep = seeding.dropout_keep(seed, slot, step, out.size, rate).reshape(out.shape)
        return np.multiply(keep, out.dtype.type(1.0 / (1.0 - rate)), out=out)

    def add_sums(self, sums, found) -> None:
        """As the formula's, but one network's scalars go in as scalars: two ufunc calls on
        views cost ~2.5 us a step, more than the rest of a small batch's loss bookkeeping."""
        if sums.shape[0] == 1 and getattr(found[0], "ndim", 0) == 0:
            row = sums[0]
            for i, total in enumerate(found):
                row[i] += total  # the same float64 addition
            return
        super().add_sums(sums, found)

    # -- optimizer updates, in place; `grad` is scratch and is overwritten ---------------------

    def sgd_update(self, param, grad, velocity, lr, momentum: float, nesterov: bool,
                   weight_decay) -> None:
        """The formula of protocol.Backend.sgd_update as in-place BLAS passes. A model's flat
        buffers go through in blocks of UPDATE_BLOCK_BYTES: every pass of the update runs on a
        block while it is in the core's cache, so each array streams from memory about once
        instead of once per pass (measured: 1.4-1.6x faster for 0.4-1.9 M parameters).
        lr and weight_decay (G,) give a group's arrays (G, ...) each member's own: the same
        passes run on each member's slice.
        """
        if getattr(lr, "ndim", 0):  # (np.ndim costs a microsecond: this runs every step)
            for g in range(param.shape[0]):
                wd = float(weight_decay[g]) if np.ndim(weight_decay) else weight_decay
                self.sgd_update(param[g], grad[g], None if velocity is None else velocity[g],
                                float(lr[g]), momentum, nesterov, wd)
            return
        hyper = (lr, momentum, nesterov, weight_decay)
        blocks = self._update_blocks(param, grad, velocity)
        if blocks is None:  # named arrays: one checked call each
            _sgd_passes(param, grad, velocity, *hyper)
            return
        bare = _bare_routines(param.dtype)
        for p, g, v in blocks:
            _sgd_passes(p, g, v, *hyper, *bare)

    def _update_blocks(self, param, grad, velocity):
        """[(p, g, v) views of one block of UPDATE_BLOCK_BYTES]: flat buffers (1-D,
        C-contiguous, one dtype) cut once and kept, keyed by the buffers themselves (the
        cache holds them, so their ids stay theirs); None for arrays of any other kind."""
        key = (id(param), id(grad), id(velocity))
        found = self._blocks.get(key)
        if found is not None:
            return found[1]
        arrays = (param, grad, velocity)
        if not all(a is None or (a.ndim == 1 and a.flags.c_contiguous and a.dtype == param.dtype
                                 and a.size == param.size) for a in arrays):
            return None
        block = UPDATE_BLOCK_BYTES // param.itemsize
        cut = [tuple(None if a is None else a[start:start + block] for a in arrays)
               for start in range(0, param.size, block)]
        if len(self._blocks) >= 4:  # the oldest set goes (a sweep's finished trials)
            del self._blocks[next(iter(self._blocks))]
        self._blocks[key] = (arrays, cut)
        return cut
