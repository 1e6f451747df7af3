"""The tensor cores' fast product (kernels.cu gemm_tc, gemm.TC_TILES) with 3xTF32 and TF32:
every feature of the SIMT kernel it stands in for (the three transposes, ragged and unaligned
shapes, every tile, split-K with either reduction, gathers, the ones row and column, the fused
epilogues, stacks, column-major views through matmul), against float64 products; and the fp32
default's tuner, which times it beside the SIMT kernel.

Marked `gpu`: skipped where CuPy or a GPU is missing (CI), run on the device machine.
"""

from __future__ import annotations

import numpy as np
import pytest

# skips this module without CuPy
from gpu_common import GPU_MARKS, check_every_plan, cp, poisoned, rel
pytestmark = GPU_MARKS

from mlptrain.backend.cuda import gemm as G  # noqa: E402
from mlptrain.backend.cupy_backend import CupyBackend  # noqa: E402

MMAS = {"3xtf32": G.MMA_3XTF32_RN, "tf32": G.MMA_TF32}
# normwise relative error allowed on random normal operands (test_gpu_tf32.py's bounds)
NORM_TOL = {G.MMA_3XTF32_RN: 2e-5, G.MMA_TF32: 3e-3}


@pytest.fixture(scope="module")
def gpu():
    backend = CupyBackend(graph=False, gemm="own")
    # every gemm_tc instantiation compiled side by side now, not one by one on first use
    backend.prepare_kernels(G.kernel_names(np.float32, G.TC_TILES, tuple(MMAS.values())))
    return backend


# (m, n, k): tiny, ragged in every axis, rows not 16-byte aligned (k or n odd: element copies),
# several K-tiles and blocks, K shorter than a K-tile
SHAPES = [(1, 1, 1), (37, 53, 71), (130, 129, 257), (128, 256, 96), (200, 300, 784),
          (257, 64, 33), (64, 500, 128)]


@pytest.mark.parametrize("mode", MMAS)
@pytest.mark.parametrize("trans_a,trans_b", G.TRANSPOSES + ((True, True),))
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_gemm_tc_for_every_transpose_tile_and_split(gpu, mode, trans_a, trans_b, m, n, k):
    mma = MMAS[mode]
    if (trans_a, trans_b) == (True, True):  # not a transpose the graph uses: compiled here
        gpu.prepare_kernels([G.gemm_name(np.float32, True, True, t, mma) for t in G.TC_TILES])
    check_every_plan(gpu, G.TC_TILES, mma, trans_a, trans_b, m, n, k, NORM_TOL[mma])


@pytest.mark.parametrize("mode", MMAS)
@pytest.mark.parametrize("tile", G.TC_TILES)
def test_gemm_tc_gathers_adds_the_ones_and_fuses_epilogues(gpu, mode, tile):
    """The epoch graph's products: the forward over gathered rows with bias and ReLU fused, the
    weight gradient with its ones row (bias gradient) over gathered rows, the other way round
    with a ones column and gathered B rows, and the input gradient with its mask."""
    mma, tol = MMAS[mode], NORM_TOL[MMAS[mode]]
    rng = np.random.default_rng(1)
    X = rng.standard_normal((900, 196)).astype(np.float32)
    W = rng.standard_normal((150, 196)).astype(np.float32)
    bias = rng.standard_normal(150).astype(np.float32)
    index = rng.permutation(900)[:170]
    dX, dW, dbias, dI = (cp.asarray(v) for v in (X, W, bias, index))
    for splits, inline in ((1, False), (4, False), (4, True)):
        plan = lambda m, n, k, s=splits, i=inline: G.plan(m, n, k, tile=tile,  # noqa: E731
                                                          splits=s, inline_reduce=i, mma=mma)
        out = poisoned((170, 150))  # forward: relu(X[index] W^T + b)
        gpu.gemm(dX, dW, out, 170, 150, 196, 196, 196, trans_b=True, gather_a=dI,
                 mode=G.EPI_BIAS_ACT, bias=dbias, act=1, gemm_plan=plan(170, 150, 196))
        assert rel(out.get(), np.maximum(X[index].astype(np.float64) @ W.T + bias, 0)) < tol
        out = poisoned((170, 150))  # the same through a C-ordered W^T (the graph's forward)
        wt = cp.ascontiguousarray(dW.T)
        gpu.gemm(dX, wt, out, 170, 150, 196, 196, 150, gather_a=dI, mode=G.EPI_BIAS_ACT,
                 bias=dbias, act=1, gemm_plan=plan(170, 150, 196))
        assert rel(out.get(), np.maximum(X[index].astype(np.float64) @ W.T + bias, 0)) < tol
        dz = rng.standard_normal((170, 150)).astype(np.float32)  # [dW^T ; db] = [X[index] | 1]^T dz
        gwt, gb = poisoned((196, 150)), poisoned(150)
        gpu.gemm(dX, cp.asarray(dz), gwt, 196, 150, 170, 196, 150, trans_a=True, gather_a=dI,
                 ones_out=gb, ones_row=True, gemm_plan=plan(197, 150, 170))
        assert rel(gwt.get(), X[index].T.astype(np.float64) @ dz) < tol
        assert rel(gb.get(), dz.astype(np.float64).sum(axis=0)) < tol
        gw, gb = poisoned((150, 196)), poisoned(150)  # [dW | db] = dz^T [X[index] | 1]
        gpu.gemm(cp.asarray(dz), dX, gw, 150, 196, 170, 150, 196, trans_a=True, gather_b=dI,
                 ones_out=gb, gemm_plan=plan(150, 197, 170))
        assert rel(gw.get(), dz.T.astype(np.float64) @ X[index]) < tol
        assert rel(gb.get(), dz.astype(np.float64).sum(axis=0)) < tol
        y = np.maximum(rng.standard_normal((170, 196)), 0).astype(np.float32)
        mask = (rng.random((170, 196)) < 0.8).astype(np.float32) / 0.8
        dx = poisoned((170, 196))  # (dz W) * mask * [y > 0], W read as the graph's W^T
        gpu.gemm(cp.asarray(dz), wt, dx, 170, 196, 150, 150, 150, trans_b=True,
                 mode=G.EPI_ACT_GRAD, ymask=cp.asarray(y), dmask=cp.asarray(mask), act=1,
                 gemm_plan=plan(170, 196, 150))
        assert rel(dx.get(), (dz.astype(np.float64) @ W) * mask * (y > 0)) < tol
    # a gathered K-range longer than the rows a block stages (GATHER_MAX): read from the index
    big = rng.integers(0, 900, G.CONSTANTS["GATHER_MAX"] + 77)
    rows = len(big)
    dz = rng.standard_normal((rows, 150)).astype(np.float32)
    gwt, gb = poisoned((196, 150)), poisoned(150)
    gpu.gemm(dX, cp.asarray(dz), gwt, 196, 150, rows, 196, 150, trans_a=True,
             gather_a=cp.asarray(big), ones_out=gb, ones_row=True,
             gemm_plan=G.plan(197, 150, rows, tile=tile, splits=1, mma=mma))
    assert rel(gwt.get(), X[big].T.astype(np.float64) @ dz) < tol


@pytest.mark.parametrize("mode", MMAS)
@pytest.mark.parametrize("trans_a,trans_b", G.TRANSPOSES)
def test_gemm_tc_runs_a_stack_of_products_also_in_a_capture(gpu, mode, trans_a, trans_b):
    """A group's stack (grid z = member, strides between members, a shared operand) on every
    gemm_tc tile, and inside a graph capture."""
    mma, tol = MMAS[mode], NORM_TOL[MMAS[mode]]
    rng = np.random.default_rng(3)
    g, m, n, k = 3, 130, 200, 99
    a = rng.standard_normal((g, *((k, m) if trans_a else (m, k)))).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)  # shared
    op = lambda x, t: x.astype(np.float64).swapaxes(-1, -2) if t else x.astype(np.float64)  # noqa
    want = op(a, trans_a) @ op(b, trans_b)
    da, db = cp.asarray(a), cp.asarray(b)
    for tile in G.TC_TILES:
        out = poisoned((g, m, n))
        p = G.plan(m, n, k, tile=tile, splits=1, mma=mma)
        launch = lambda p=p, out=out: gpu.gemm(  # noqa: E731
            da, db, out, m, n, k, a.shape[-1], b.shape[-1], trans_a, trans_b, gemm_plan=p,
            batches=g, strides=(a[0].size, 0, m * n))
        launch()
        assert rel(out.get(), want) < tol, tile
        out[...] = np.nan
        graph = CupyBackend(graph=True).capture(launch)
        assert graph is not None
        graph()
        assert rel(out.get(), want) < tol, tile


@pytest.mark.parametrize("kind", ["tc3", "tf32"])
def test_a_gemm_kind_runs_large_eager_products_and_stacks_on_gemm_tc(kind):
    """CupyBackend(gemm=kind).matmul of plain and column-major operands, and of a stack: from
    gemm.TC_AREA outputs on, the untuned pick is a gemm_tc tile."""
    gpu, rng = CupyBackend(graph=False, gemm=kind), np.random.default_rng(4)
    tol = NORM_TOL[G.MMAS[kind][0]]
    m, n, k = 256, 300, 200
    assert G.plan(m, n, k, mma=G.untuned_mma(G.MMAS[kind], m, n)).tile in G.TC_TILES
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((n, k)).astype(np.float32)
    want = a.astype(np.float64) @ b.T.astype(np.float64)
    got = gpu.matmul(cp.asarray(a), cp.asarray(b), poisoned((m, n)), False, True)
    assert rel(got.get(), want) < tol
    b_f = cp.asfortranarray(cp.asarray(b.T))  # a column-major (k, n): its C-ordered b, read T
    got = gpu.matmul(cp.asarray(a), b_f, poisoned((m, n)))
    assert rel(got.get(), want) < tol
    out_f = cp.asfortranarray(poisoned((m, n)))  # a column-major out: out^T = b a^T
    gpu.matmul(cp.asarray(a), cp.asarray(b), out_f, False, True)
    assert rel(out_f.get(), want) < tol
    stack = np.stack([a, -a])
    got = gpu.matmul(cp.asarray(stack), cp.asarray(np.stack([b, b])), poisoned((2, m, n)),
                     False, True)
    assert rel(got.get(), np.stack([want, -want])) < tol


def test_the_fp32_default_tunes_simt_and_3xtf32_and_untuned_takes_gemm_tc_for_large_products():
    assert G.MMAS["cublas"] == (G.MMA_SIMT, G.MMA_3XTF32_RN)
    big = G.candidates(1024, 2048, 784, G.MMAS["cublas"])
    assert {p.mma for p in big} == {G.MMA_SIMT, G.MMA_3XTF32_RN}
    assert all(p.tile in G.TC_TILES for p in big if p.mma != G.MMA_SIMT)
    assert all(p.tile in G.TILES for p in big if p.mma == G.MMA_SIMT)
    small = G.candidates(64, 10, 784, G.MMAS["cublas"])
    assert {p.mma for p in small} == {G.MMA_SIMT}
    assert G.untuned_mma(G.MMAS["cublas"], 1024, 2048) == G.MMA_3XTF32_RN
    assert G.untuned_mma(G.MMAS["cublas"], 64, 10) == G.MMA_SIMT
    assert G.untuned_mma(G.MMAS["own"], 1024, 2048) == G.MMA_SIMT
    assert G.MMAS["cublas-simt"] == (G.MMA_SIMT,)  # the default before gemm_tc


# -- the error table of mnist-deep's products (configs/mnist-deep.toml: 784-2500-2000-1500-1000-
# 500-10, batch 128), each kernel at every plan the tuner may pick ------------------------------

DEEP, DEEP_BATCH = (784, 2500, 2000, 1500, 1000, 500, 10), 128


def deep_products(rng):
    """(label, a, b, trans_a, trans_b) of one mnist-deep step as the epoch graph runs them
    (weights stored as W^T (I, O), C-ordered): He-uniform weights, pixels in [0, 1) (80%
    blank), ReLU activations, small gradients."""
    products = []
    for i, (fan_in, fan_out) in enumerate(zip(DEEP[:-1], DEEP[1:])):
        wt = rng.uniform(-1, 1, (fan_in, fan_out)) * np.sqrt(6 / fan_in)
        x = (rng.random((DEEP_BATCH, fan_in)) * (rng.random((DEEP_BATCH, fan_in)) < 0.2)
             if i == 0 else np.maximum(rng.standard_normal((DEEP_BATCH, fan_in)), 0))
        dz = rng.standard_normal((DEEP_BATCH, fan_out)) * 1e-3
        f = lambda v: v.astype(np.float32)  # noqa: E731
        products.append((f"forward {i} {fan_in}->{fan_out}", f(x), f(wt), False, False))
        products.append((f"weight grad {i}", f(x), f(dz), True, False))
        if i > 0:
            products.append((f"input grad {i}", f(dz), f(wt), False, True))
    return products


def errors_on_device(out, want, scale) -> tuple[float, float]:
    """(max |C - C64| / (|op(A)| |op(B)|), ||C - C64|| / ||C64||), as test_gpu_tf32's
    product_errors, computed on the device."""
    err = cp.abs(out.astype(cp.float64) - want)
    worst = float((err / cp.where(scale > 0, scale, 1.0)).max())
    return worst, float(cp.linalg.norm(err) / max(float(cp.linalg.norm(want)), 1e-300))


def test_deep_products_keep_fp32_accuracy_on_gemm_tc(gpu):
    """Every mnist-deep product with 3xTF32 on gemm_tc, at each tile and split the tuner may
    pick (its worst), within 2.5x of the SIMT kernel's worst over its own plans; the table is
    printed (pytest -s)."""
    rng, eps = np.random.default_rng(0), float(np.finfo(np.float32).eps)
    print("\n| product | m x n x k | SIMT (worst plan) | 3xTF32 gemm_tc (worst plan) | "
          "TF32 gemm_tc (worst plan) | 3xTF32, KF = 2 | cuBLAS fp32 | 3xTF32 / SIMT |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    ratios = []
    for label, a, b, ta, tb in deep_products(rng):
        m, k = (a.shape[1], a.shape[0]) if ta else a.shape
        n = b.shape[0] if tb else b.shape[1]
        da, db = cp.asarray(a), cp.asarray(b)
        A64 = (da.T if ta else da).astype(cp.float64)
        B64 = (db.T if tb else db).astype(cp.float64)
        want, scale = A64 @ B64, cp.abs(A64) @ cp.abs(B64)
        worst = {}
        for name, mma, kf in (("simt", G.MMA_SIMT, 1), ("3xtf32", G.MMA_3XTF32_RN, G.TC_KF),
                              ("tf32", G.MMA_TF32, G.TC_KF),
                              ("3xtf32-kf2", G.MMA_3XTF32_RN, 2)):
            plans = [p for p in G.candidates(m, n, k, (G.MMA_SIMT, mma))
                     if p.mma == mma and not p.inline_reduce]  # inline sums as splitk_reduce
            if not plans:  # too small for gemm_tc's tiles: its smallest all the same
                plans = [G.plan(m, n, k, tile="tc-64x64", mma=mma)]
            errs, default_kf = [], G.TC_KF
            try:
                G.TC_KF = kf  # gemm_name reads it: KF = 2 (not shipped) shown beside
                for p in plans:
                    out = poisoned((m, n))
                    gpu.gemm(da, db, out, m, n, k, a.shape[1], b.shape[1], ta, tb, gemm_plan=p)
                    errs.append(errors_on_device(out, want, scale))
            finally:
                G.TC_KF = default_kf
            worst[name] = max(errs)
        blas = cp.matmul(da.T if ta else da, db.T if tb else db)
        worst["cublas"] = errors_on_device(blas, want, scale)
        ratio = worst["3xtf32"][0] / max(worst["simt"][0], eps)
        ratios.append(ratio)
        print(f"| {label} | {m}x{n}x{k} | "
              + " | ".join(f"{worst[x][0]:.2e} ({worst[x][1]:.1e})"
                           for x in ("simt", "3xtf32", "tf32", "3xtf32-kf2", "cublas"))
              + f" | {ratio:.2f} |")
        assert worst["3xtf32"][0] <= 2.5 * max(worst["simt"][0], eps), (label, worst)
        assert worst["tf32"][0] < 5e-3, (label, worst)
    print(f"worst 3xTF32 / SIMT ratio: {max(ratios):.2f}")
