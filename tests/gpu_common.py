"""What the GPU test modules share. Importing it skips the importing module where CuPy is
missing; GPU_MARKS (the module's pytestmark) marks its tests `gpu` and skips them where no GPU
is (CI). They run on the device machine."""

from __future__ import annotations

import numpy as np
import pytest

cp = pytest.importorskip("cupy")
try:
    HAVE_GPU = cp.cuda.runtime.getDeviceCount() > 0
except Exception:  # noqa: BLE001 - no driver, no device
    HAVE_GPU = False
GPU_MARKS = [pytest.mark.gpu, pytest.mark.skipif(not HAVE_GPU, reason="no CUDA GPU")]


def rel(got, want) -> float:
    """Normwise relative error of got against want, in float64."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-300))


def poisoned(shape, dtype=np.float32):
    return cp.full(shape, np.nan, dtype=dtype)  # every element must be written
