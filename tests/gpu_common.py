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


def check_every_plan(gpu, tiles, mma: int, trans_a: bool, trans_b: bool, m: int, n: int,
                     k: int, tol: float) -> None:
    """op(a) @ op(b) of random normal float32 operands, with every tile of `tiles` at K-splits
    1, 3 and the heuristic's, each summed either way, within `tol` of a float64 product."""
    from mlptrain.backend.cuda import gemm as G

    rng = np.random.default_rng(m * 7 + n * 3 + k)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    want = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b).astype(np.float64)
    da, db = cp.asarray(a), cp.asarray(b)
    for tile in tiles:
        for splits, inline in ((1, False), (3, False), (3, True), (None, False), (None, True)):
            out = poisoned((m, n))
            p = G.plan(m, n, k, tile=tile, splits=splits, inline_reduce=inline, mma=mma)
            gpu.gemm(da, db, out, m, n, k, a.shape[1], b.shape[1], trans_a, trans_b, gemm_plan=p)
            assert rel(out.get(), want) < tol, p
