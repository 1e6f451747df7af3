"""Array backends: the small set of primitives the model is written in.

The model states its math once, in terms of these primitives over buffers allocated once per
batch shape; each backend executes them its own way. The NumPy backend runs them on the CPU
with `out=` arguments; a CuPy backend (GPU issue) implements the same methods with fused
kernels. Only a backend module may import an accelerator library.
"""

from __future__ import annotations

from mlptrain.backend.numpy_backend import NumpyBackend
from mlptrain.errors import BackendError

DEVICES = ("cpu",)  # devices a config may name


def get_backend(device: str) -> NumpyBackend:
    """The backend for a config's `train.device`."""
    if device == "cpu":
        return NumpyBackend()
    raise BackendError(
        f"device {device!r} is not available; expected one of {', '.join(DEVICES)}."
    )


__all__ = ["DEVICES", "NumpyBackend", "get_backend"]
