"""Array backends: the small set of primitives the model is written in.

The model states its math once, in terms of these primitives over buffers allocated once per
batch shape; each backend executes them its own way. The NumPy backend runs them on the CPU
with `out=` arguments; the CuPy backend (cupy_backend.py) runs them as hand-written CUDA kernels
and can replay a whole epoch as one CUDA graph. Only a backend module may import an accelerator
library, and only when its device is asked for.
"""

from __future__ import annotations

from mlptrain.backend.numpy_backend import NumpyBackend
from mlptrain.errors import BackendError

DEVICES = ("cpu", "cuda", "auto")  # devices a config may name; auto = cuda when usable, else cpu
CUDA_EXTRA = "pip install 'mlptrain[cuda12]' (or 'mlptrain[cuda13]' for a CUDA 13 driver)"


def get_backend(device: str):
    """The backend for a config's `train.device`."""
    if device == "cpu":
        return NumpyBackend()
    if device == "cuda":
        return cuda_backend()
    if device == "auto":
        try:
            return cuda_backend()
        except BackendError:
            return NumpyBackend()
    raise BackendError(
        f"device {device!r} is not available; expected one of {', '.join(DEVICES)}."
    )


def cuda_backend():
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
        return CupyBackend()
    except Exception as exc:  # noqa: BLE001 - a kernel that fails to compile or load here
        raise BackendError(f"the CUDA backend could not start on this GPU: {exc}") from None


__all__ = ["DEVICES", "NumpyBackend", "cuda_backend", "get_backend"]
