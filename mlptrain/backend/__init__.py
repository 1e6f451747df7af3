"""Array backends: the small set of primitives the model is written in.

The model states its math once, in terms of these primitives over buffers allocated once per
batch shape; each backend executes them its own way. The NumPy backend runs them on the CPU
with `out=` arguments; the CuPy backend (cupy_backend.py) runs them as hand-written CUDA kernels
and can replay a whole epoch as one CUDA graph. Only a backend module may import an accelerator
library, and only when its device is asked for.

The protocol (every backend; B batch, I inputs, O outputs, C classes; arrays in the model's
dtype unless said; `out` is written and returned; nothing allocates in steady state). A group's
arrays (model.py: G networks trained at once) carry a leading members axis G, and every
primitive takes them, computing member by member:

    asarray(host, dtype) / to_host(a) / to_float(scalar)   cross the host/device boundary
    empty(shape, dtype) / zeros(shape, dtype)              allocate (set-up only)
    free_bytes()                                           bytes a GPU can still allocate
        (device backends only: the CPU's is the host's MemAvailable, read by memory.py)
    take_rows(source (N, ...), index (B,) int64, out (B, ...))   out[i] = source[index[i]]
    matmul(a, b, out, trans_a=False, trans_b=False)        out = op(a) @ op(b), op transposing
        the last two axes if asked; operands may be C- or F-ordered views (weights (O, I) are
        column-major); a group's out[g] = op(a[g]) @ op(b[g]), a may be one (B, I) all read
    sum_rows(a (B, O), out (O,))                           out[j] = sum_i a[i, j]
        (a group's stack: a (G, B, O), out (G, 1, O), per member)
    row_norms_squared(w (O, I), out (O,))                  out[j] = sum_i w[j, i]^2
    bias_activation, add_bias, activation_backward, loss_forward, loss_backward,
    loss_and_grad, sgd_update, adam_update, rmsprop_update: the math, each stated once as its
        textbook formula in protocol.Backend (shapes and formulas there); a backend inherits
        them or overrides them where speed needs it
    matmul_descend(a, b, out, lr, trans_a, trans_b)        out -= lr op(a) @ op(b)
    sum_rows_descend(a (B, O), out (O,), lr)               out[j] -= lr sum_i a[i, j]
        plain SGD's step inside a weight's and a bias's gradient products; folds_sgd says
        whether an eager step of plain SGD should run them (NumPy: BLAS's beta = 1)

and, for the choice of path (`epoch_path` below is the one place it is made):

    graph_blockers(step) -> list[str]   why this backend cannot replay the declared step's
        epochs as one captured graph (empty: it can); NumPy: ["cpu"]
    epoch_runner(step, model, optimizer, train, plans)   the captured epoch (asked only when
        graph_blockers gave nothing): .run(order, first_step, start, stop) trains steps
        [start, stop) of one epoch; .product_plans() the choices it timed, which a resume
        passes back as `plans` so that it computes exactly as the run it continues

and, for an eager run's threads (the base class has none to choose):

    choose_threads(trial, recorded, fresh) / restore_threads()   the CPU's BLAS thread count,
        timed on `trial` (one step without its update) or as `recorded` (backend/threads.py)

A backend subclasses protocol.Backend, so a primitive it lacks raises BackendError.
"""

from __future__ import annotations

from mlptrain.backend.numpy_backend import NumpyBackend
from mlptrain.backend.protocol import Backend
from mlptrain.errors import BackendError

DEVICES = ("cpu", "cuda", "auto")  # devices a config may name; auto = cuda when usable, else cpu
# train.precision: a GPU's float32 products at fp32's accuracy, or one TF32 product each
PRECISIONS = ("fp32", "tf32")
CUDA_EXTRA = "pip install 'mlptrain[cuda12]' (or 'mlptrain[cuda13]' for a CUDA 13 driver)"


def get_backend(device: str, precision: str = "fp32"):
    """The backend for a config's `train.device` and `train.precision` (the GPU's float32
    products: fp32-accurate, or TF32; the CPU computes in the dtype whatever it says)."""
    if device == "cpu":
        return NumpyBackend()
    if device == "cuda":
        return cuda_backend(precision)
    if device == "auto":
        try:
            return cuda_backend(precision)
        except BackendError:
            return NumpyBackend()
    raise BackendError(
        f"device {device!r} is not available; expected one of {', '.join(DEVICES)}."
    )


def gpu_count() -> int:
    """How many CUDA GPUs this process sees (0 without CuPy or a driver)."""
    try:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # noqa: BLE001 - no CuPy, no driver, no device: no GPU
        return 0


def cuda_backend(precision: str = "fp32"):
    """The CuPy backend, or a BackendError saying what is missing (CuPy, or a usable GPU)."""
    try:
        import cupy
    except ImportError as exc:
        raise BackendError(
            f"train.device = 'cuda' needs CuPy, which is not installed ({exc}). "
            f"Install the GPU extra: {CUDA_EXTRA}; or set train.device = 'cpu' or 'auto'."
        ) from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001 - CUDARuntimeError: no driver, no device
        raise BackendError(f"train.device = 'cuda' but CuPy finds no usable GPU ({exc}). "
                           "Set train.device = 'cpu' or 'auto'.") from None
    if count < 1:
        raise BackendError("train.device = 'cuda' but CuPy sees no GPU. "
                           "Set train.device = 'cpu' or 'auto'.")
    from mlptrain.backend.cupy_backend import CupyBackend

    try:
        return CupyBackend(precision=precision)
    except Exception as exc:  # noqa: BLE001 - a kernel that fails to compile or load here
        raise BackendError(f"the CUDA backend could not start on this GPU: {exc}") from None


def epoch_path(step, ops) -> list[str]:
    """THE decision of which path trains `step` on `ops`: the reasons against replaying whole
    epochs as one captured graph, or [] when the graph runs them. The loop, `fit --dry-run` and
    summary.json all ask here."""
    return list(ops.graph_blockers(step))


def describe_path(reasons: list[str]) -> str:
    """The path, for a person and for summary.json: `cuda graph` or `eager: <reasons>`."""
    return "cuda graph" if not reasons else "eager: " + "; ".join(reasons)


__all__ = ["DEVICES", "Backend", "NumpyBackend", "cuda_backend", "describe_path", "epoch_path",
           "get_backend", "gpu_count"]
