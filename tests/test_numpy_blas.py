"""The NumPy backend's BLAS level-1 helpers: in place through every layout the model uses,
loud on any layout that would make SciPy's wrapper update a copy, and SciPy's own BLAS held
to one thread beside NumPy's."""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy
from threadpoolctl import threadpool_info

from mlptrain.backend import get_backend
from mlptrain.backend.numpy_backend import axpy, scal
from mlptrain.model import Parameters

ops = get_backend("cpu")
SHAPES = {"layers.0.weight": (5, 3), "layers.0.bias": (5,), "layers.1.weight": (2, 5)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_axpy_and_scal_write_through_the_weight_views_of_a_flat_buffer(dtype):
    rng = np.random.default_rng(0)
    params = Parameters.zeros(ops, SHAPES, dtype)
    for p in params.values():
        p[...] = rng.normal(size=p.shape)
    expected = {k: np.array(v) for k, v in params.items()}
    for name, p in params.items():  # weights are F-ordered views, biases 1-D
        x = rng.normal(size=p.shape).astype(dtype)  # C-ordered: read in p's order
        axpy(-0.5, x, p)
        scal(2.0, p)
        expected[name] = 2.0 * (expected[name] - 0.5 * x)
        np.testing.assert_allclose(params[name], expected[name], rtol=1e-6)
    axpy(1.0, params.flat, params.flat)  # the fast path on the flat buffer itself
    for name in SHAPES:
        np.testing.assert_allclose(params[name], 2.0 * expected[name], rtol=1e-6)


def test_a_written_array_in_another_layout_or_dtype_is_an_error_not_a_silent_copy():
    y = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match="in-place"):
        axpy(1.0, np.ones(6, np.float32), y[:, ::2])  # strided: no 1-D view
    with pytest.raises(ValueError, match="float32/float64"):
        scal(2.0, np.zeros((2, 2), np.int64))


def test_sgd_update_reads_a_gradient_in_another_layout():
    """Plain dicts may hold an F-ordered weight with a C-ordered gradient and state."""
    rng = np.random.default_rng(1)
    p = np.asfortranarray(rng.normal(size=(4, 3)))
    g, v = rng.normal(size=(4, 3)), np.zeros((4, 3))
    p0 = p.copy()
    ops.sgd_update(p, g.copy(), v, 0.1, 0.9, True, 0.01)
    g1 = g + 0.01 * p0
    np.testing.assert_allclose(v, g1, rtol=1e-14)
    np.testing.assert_allclose(p, p0 - 0.1 * (g1 + 0.9 * g1), rtol=1e-14)


def test_scipys_own_blas_runs_on_one_thread():
    scipy_dir = os.path.dirname(scipy.__file__)
    own = [lib for lib in threadpool_info() if lib["user_api"] == "blas"
           and lib["filepath"].startswith((scipy_dir + ".libs", scipy_dir + os.sep))]
    assert all(lib["num_threads"] == 1 for lib in own), own
