"""Products that add into their output, C <- C + alpha op(A) op(B): NumPy's own BLAS's gemm and
gemv with beta = 1, which np.matmul cannot ask for.

Plain SGD's update, p <- p - lr g, is then the weight gradient's product itself (alpha = -lr):
the gradient is never written and no pass of the update streams the weights again (issue 32:
at 784-128-10, B = 64, the first layer's product with its update went from ~76 to ~62 us).
Bound through ctypes to the library threadpoolctl names as NumPy's BLAS, so the products run on
the same kernels and threads as np.matmul's. Found only where its CBLAS symbols are known
(NumPy's wheels: scipy-openblas, ILP64; an OpenBLAS64_ or LP64 CBLAS build) and where a product
on small random arrays agrees with np.matmul's; elsewhere `load` gives None and the step takes
its gradient and update apart.
"""

from __future__ import annotations

import ctypes

import numpy as np

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112
# (symbol prefix, suffix, integer type) of a CBLAS build, most likely first
BUILDS = (("scipy_", "64_", ctypes.c_int64), ("", "64_", ctypes.c_int64),
          ("", "", ctypes.c_int))


class AddProducts:
    """gemm(alpha, a, b, out) and gemv(alpha, a, x, out): out += alpha op(a) @ b, for 2-D
    arrays whose rows or columns are contiguous (either layout, as np.matmul takes them).
    Each returns a Product, the call with its arguments made once, or None where BLAS cannot
    read the arrays in place (strided both ways, another dtype, a mix of dtypes)."""

    def __init__(self, lib, prefix: str, suffix: str, integer):
        self.routines = {}  # dtype -> ((gemm, its argument types), (gemv, its types))
        pointer = ctypes.c_void_p
        for dtype, letter, real in ((np.float32, "s", ctypes.c_float),
                                    (np.float64, "d", ctypes.c_double)):
            gemm = getattr(lib, f"{prefix}cblas_{letter}gemm{suffix}")
            gemv = getattr(lib, f"{prefix}cblas_{letter}gemv{suffix}")
            gemm.restype = gemv.restype = None
            self.routines[np.dtype(dtype)] = (
                (gemm, [ctypes.c_int] * 3 + [integer] * 3
                 + [real, pointer, integer, pointer, integer, real, pointer, integer]),
                (gemv, [ctypes.c_int] * 2 + [integer] * 2
                 + [real, pointer, integer, pointer, integer, real, pointer, integer]))

    def gemm(self, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> Product | None:
        """out (M, N) += alpha a (M, K) @ b (K, N)."""
        routines = self.routines.get(out.dtype)
        if routines is None or not a.dtype == b.dtype == out.dtype or a.ndim != 2 \
                or b.ndim != 2 or a.shape[1] != b.shape[0] or out.shape != (a.shape[0],
                                                                             b.shape[1]):
            return None
        if (_lead(out) or (None,))[0] != NO_TRANS:  # a column-major out: its transpose,
            a, b, out = b.T, a.T, out.T  # b^T a^T, is row-major
        ta, tb, ldc = _lead(a), _lead(b), _lead(out)
        if ta is None or tb is None or ldc is None or ldc[0] != NO_TRANS:
            return None
        (m, k), n = a.shape, b.shape[1]
        return Product(routines[0], (a, b, out), ROW_MAJOR, ta[0], tb[0], m, n, k, ALPHA,
                       a, ta[1], b, tb[1], 1.0, out, ldc[1])

    def gemv(self, a: np.ndarray, x: np.ndarray, out: np.ndarray) -> Product | None:
        """out (N,) += alpha x (M,) @ a (M, N), x and out contiguous."""
        routines = self.routines.get(out.dtype)
        lead = _lead(a) if a.ndim == 2 else None
        if routines is None or lead is None or not a.dtype == x.dtype == out.dtype \
                or x.shape != a.shape[:1] or out.shape != a.shape[1:] \
                or x.strides[0] != x.itemsize or out.strides[0] != out.itemsize:
            return None
        trans, ld = lead
        m, n = a.shape  # x^T a = (a^T x): a row-major a is read transposed
        return Product(routines[1], (a, x, out), ROW_MAJOR,
                       TRANS if trans == NO_TRANS else NO_TRANS,
                       m if trans == NO_TRANS else n, n if trans == NO_TRANS else m, ALPHA,
                       a, ld, x, 1, 1.0, out, 1)


ALPHA = object()  # where a Product's argument list takes the call's alpha


class Product:
    """One BLAS call on fixed arrays, its arguments converted to C once (a pointer and a dozen
    integers cost ~3 us a call, as much as a small product): call it with alpha. It keeps its
    arrays, so their memory outlives it."""

    def __init__(self, routine: tuple, arrays: tuple, *args):
        (self.routine, types), self.arrays = routine, arrays
        self.args = [kind(0 if a is ALPHA else a.ctypes.data if isinstance(a, np.ndarray)
                          else a) for kind, a in zip(types, args, strict=True)]
        self.alpha = self.args[[a is ALPHA for a in args].index(True)]

    def __call__(self, alpha: float) -> None:
        self.alpha.value = alpha
        self.routine(*self.args)


def _lead(a: np.ndarray):
    """(trans, leading dimension) of a 2-D array as a row-major CBLAS operand: its rows
    contiguous (NO_TRANS) or its columns (TRANS, the transpose of a row-major array); None
    for any other layout."""
    item, (n_rows, n_cols), (rows, cols) = a.itemsize, a.shape, a.strides
    if n_cols == 1 or cols == item:  # rows contiguous
        ld = rows // item if n_rows > 1 else n_cols
        if n_rows == 1 or (rows % item == 0 and ld >= n_cols):
            return NO_TRANS, max(ld, n_cols, 1)
    if n_rows == 1 or rows == item:  # columns contiguous
        ld = cols // item if n_cols > 1 else n_rows
        if n_cols == 1 or (cols % item == 0 and ld >= n_rows):
            return TRANS, max(ld, n_rows, 1)
    return None


def load(filepath: str | None) -> AddProducts | None:
    """The add-into products of the BLAS library at `filepath` (NumPy's, from threadpoolctl),
    checked against np.matmul on small random arrays of both dtypes; None where its symbols
    are not found or its answer is not np.matmul's."""
    if not filepath:
        return None
    try:
        lib = ctypes.CDLL(filepath)
    except OSError:
        return None
    for prefix, suffix, integer in BUILDS:
        try:
            found = AddProducts(lib, prefix, suffix, integer)
        except AttributeError:
            continue
        return found if _agrees(found) else None
    return None


def _agrees(found: AddProducts) -> bool:
    """Whether out + alpha a @ b by the bound routines matches np.matmul's, in both layouts."""
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        a, b = rng.normal(size=(5, 7)).astype(dtype), rng.normal(size=(7, 3)).astype(dtype)
        out, x = rng.normal(size=(5, 3)).astype(dtype), rng.normal(size=5).astype(dtype)
        want = out - 0.5 * (a @ b)
        got, got_t = out.copy(), np.asfortranarray(out)
        v = rng.normal(size=7).astype(dtype)
        v_want = v - 0.5 * (x @ a)
        products = (found.gemm(a, b, got), found.gemm(a, b, got_t), found.gemv(a, x, v))
        if None in products:
            return False
        for product in products:
            product(-0.5)
        tol = 1e-4 if dtype == np.float32 else 1e-12
        if not (np.allclose(got, want, rtol=tol, atol=tol)
                and np.allclose(got_t, want, rtol=tol, atol=tol)
                and np.allclose(v, v_want, rtol=tol, atol=tol)):
            return False
    return True
