"""The NumPy backend's BLAS level-1 helpers: in place through every layout the model uses,
loud on any layout that would make SciPy's wrapper update a copy, and SciPy's own BLAS held
to one thread beside NumPy's."""

from __future__ import annotations

import os
from types import SimpleNamespace

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


# -- plain SGD's step inside the products (backend/gemm.py, NumpyBackend.matmul_descend) -------


def _fold_model(dtype, sizes=(7, 5, 4, 3), dropout=False):
    from mlptrain import nn
    from mlptrain.model import MLP

    model = MLP(ops, list(sizes), nn.make_activation("relu"),
                nn.make_loss("softmax_cross_entropy", sizes[-1]), dtype)
    model.initialize("he_uniform", np.random.default_rng(0))
    rng = np.random.default_rng(1)
    ws = model.workspace(6)
    ws.x[...] = rng.normal(size=ws.x.shape)
    return model, ws, np.asarray(rng.integers(0, sizes[-1], size=6), np.int64)


def test_the_numpy_blas_adds_products_into_their_output():
    assert ops.folds_sgd  # NumPy's wheels' OpenBLAS: the step below runs its BLAS path


@pytest.mark.parametrize("layouts", ["CC", "CF", "FC", "FF"])
@pytest.mark.parametrize("out_order", ["C", "F"])
def test_a_descent_product_reads_and_writes_every_layout(layouts, out_order):
    """out -= lr a @ b through BLAS with beta = 1, for C- and F-ordered operands (a weight's
    out is F-ordered), against the textbook formula in float64."""
    rng = np.random.default_rng(2)
    a = np.array(rng.normal(size=(5, 7)), order=layouts[0])
    b = np.array(rng.normal(size=(7, 3)), order=layouts[1])
    out = np.array(rng.normal(size=(5, 3)), order=out_order)
    want = out - 0.25 * (a @ b)
    ops.matmul_descend(a, b, out, 0.25)
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-12)
    rows, bias = rng.normal(size=(6, 3)), rng.normal(size=3)
    want = bias - 0.25 * rows.sum(axis=0)
    ops.sum_rows_descend(rows, bias, 0.25)
    np.testing.assert_allclose(bias, want, rtol=0, atol=1e-12)


def test_a_descent_product_blas_cannot_read_runs_the_formula():
    """A strided operand (no contiguous rows or columns) takes protocol.Backend's formula."""
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(5, 14))[:, ::2], rng.normal(size=(7, 3))
    out = rng.normal(size=(5, 3))
    want = out - 0.5 * (a @ b)
    ops.matmul_descend(a, b, out, 0.5)
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_folded_sgd_step_is_the_gradient_then_the_update(dtype):
    """loss_and_grad with sgd_lr leaves the weights where the gradients and SGD's update do
    (float64 to 1e-12; float32 to its rounding), and leaves the gradients unwritten."""
    from mlptrain.optim import SGD

    model, ws, targets = _fold_model(dtype)
    start = model.params.flat.copy()
    found = model.loss_and_grad(ws, targets, 1 / 6)
    SGD(ops, model.params).step(model.params, model.grads, 0.3)
    textbook = model.params.flat.copy()
    model.params.flat[...], model.grads.flat[...] = start, 0
    folded = model.loss_and_grad(ws, targets, 1 / 6, sgd_lr=0.3)
    assert folded[0] == found[0] and folded[1] == found[1]
    assert not model.grads.flat.any()
    tol = 1e-12 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(model.params.flat, textbook, rtol=0, atol=tol)
    assert np.abs(model.params.flat - start).max() > 1e-3  # it moved


def test_the_eager_step_folds_plain_sgd_only():
    from mlptrain.loop import EagerStep
    from mlptrain.optim import SGD, Adam

    model, _, _ = _fold_model(np.float32)
    step = SimpleNamespace(max_norm=0, augment=None, has_dropout=False, cycles_momentum=False,
                           dropout_rates=lambda n: (0.0,) * n)
    plain = EagerStep(step, model, SGD(ops, model.params))
    assert plain.folds_sgd
    for optimizer in (SGD(ops, model.params, momentum=0.9), SGD(ops, model.params,
                                                                weight_decay=1e-4),
                      Adam(ops, model.params)):
        assert not EagerStep(step, model, optimizer).folds_sgd
