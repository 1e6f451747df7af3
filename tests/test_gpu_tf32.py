"""The tensor-core products (kernels.cu gemm with MMA_3XTF32_RN, MMA_3XTF32 and MMA_TF32): every
feature of the SIMT kernel they replace (transposes, ragged shapes, tiles, split-K, gathers, the
ones row and column, the fused epilogues, stacks), and each product of the shapes we train
measured against a float64 product, the SIMT kernel and cuBLAS beside them. The error table is
printed (pytest -s shows it): 3xTF32 must stay at the SIMT kernel's level, plain TF32 is ~1e-3.

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

# "3xtf32" is what gemm kind tc3 runs; "3xtf32-tcsum" sums on the tensor cores alone, whose
# running fp32 sums truncate: kept to show why (its error was up to 10x the SIMT kernel's)
TENSOR = {"3xtf32": G.MMA_3XTF32_RN, "3xtf32-tcsum": G.MMA_3XTF32, "tf32": G.MMA_TF32}
# normwise relative error allowed on random normal operands: test_gpu.py's float32 bound for
# the fp32-accurate products; TF32 rounds each operand to 11 significant bits (2^-11 ~ 5e-4)
NORM_TOL = {G.MMA_3XTF32: 2e-5, G.MMA_3XTF32_RN: 2e-5, G.MMA_TF32: 3e-3}
FP32_FACTOR = 4  # 3xTF32's worst error may exceed the SIMT kernel's by at most this factor


@pytest.fixture(scope="module")
def gpu():
    backend = CupyBackend(graph=False, gemm="own")
    # every tensor-core instantiation compiled side by side now, not one by one on first use
    backend.prepare_kernels(G.kernel_names(np.float32, G.TILES, tuple(TENSOR.values())))
    return backend


SHAPES = [(1, 1, 1), (37, 53, 71), (64, 128, 784), (128, 785, 64), (1024, 10, 128),
          (130, 129, 257), (1000, 1024, 784), (5, 300, 3)]


@pytest.mark.parametrize("mode", TENSOR)
@pytest.mark.parametrize("trans_a,trans_b", G.TRANSPOSES)
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_tensor_core_gemm_for_every_transpose_tile_and_split(gpu, mode, trans_a, trans_b, m, n,
                                                             k):
    mma = TENSOR[mode]
    check_every_plan(gpu, G.TILES, mma, trans_a, trans_b, m, n, k, NORM_TOL[mma])


@pytest.mark.parametrize("mode", TENSOR)
def test_tensor_core_gemm_gathers_adds_the_ones_and_fuses_epilogues(gpu, mode):
    mma, tol = TENSOR[mode], NORM_TOL[TENSOR[mode]]
    rng = np.random.default_rng(1)
    X = rng.standard_normal((500, 97)).astype(np.float32)
    W = rng.standard_normal((45, 97)).astype(np.float32)
    bias = rng.standard_normal(45).astype(np.float32)
    index = rng.permutation(500)[:70]
    dX, dW, dbias, dI = (cp.asarray(v) for v in (X, W, bias, index))
    for splits, inline in ((1, False), (4, False), (4, True)):
        plan = lambda m, n, k, s=splits, i=inline: G.plan(m, n, k, splits=s,  # noqa: E731
                                                          inline_reduce=i, mma=mma)
        out = poisoned((70, 45))  # forward: relu(X[index] W^T + b)
        gpu.gemm(dX, dW, out, 70, 45, 97, 97, 97, trans_b=True, gather_a=dI,
                 mode=G.EPI_BIAS_ACT, bias=dbias, act=1, gemm_plan=plan(70, 45, 97))
        assert rel(out.get(), np.maximum(X[index].astype(np.float64) @ W.T + bias, 0)) < tol
        dz = rng.standard_normal((70, 45)).astype(np.float32)  # [dW^T ; db] = [X[index] | 1]^T dz
        gwt, gb = poisoned((97, 45)), poisoned(45)
        gpu.gemm(dX, cp.asarray(dz), gwt, 97, 45, 70, 97, 45, trans_a=True, gather_a=dI,
                 ones_out=gb, ones_row=True, gemm_plan=plan(98, 45, 70))
        assert rel(gwt.get(), X[index].T.astype(np.float64) @ dz) < tol
        assert rel(gb.get(), dz.astype(np.float64).sum(axis=0)) < tol
        gw, gb = poisoned((45, 97)), poisoned(45)  # [dW | db] = dz^T [X[index] | 1]
        gpu.gemm(cp.asarray(dz), dX, gw, 45, 97, 70, 45, 97, trans_a=True, gather_b=dI,
                 ones_out=gb, gemm_plan=plan(45, 98, 70))
        assert rel(gw.get(), dz.T.astype(np.float64) @ X[index]) < tol
        assert rel(gb.get(), dz.astype(np.float64).sum(axis=0)) < tol
        y = np.maximum(rng.standard_normal((70, 97)), 0).astype(np.float32)
        dx = poisoned((70, 97))  # (dz W) * [y > 0]
        gpu.gemm(cp.asarray(dz), dW, dx, 70, 97, 45, 45, 97, mode=G.EPI_ACT_GRAD,
                 ymask=cp.asarray(y), act=1, gemm_plan=plan(70, 97, 45))
        assert rel(dx.get(), (dz.astype(np.float64) @ W) * (y > 0)) < tol


@pytest.mark.parametrize("kind", ["tc3", "tf32"])
@pytest.mark.parametrize("trans_a,trans_b", G.TRANSPOSES)
def test_a_gemm_kind_runs_eager_products_and_stacks_on_the_tensor_cores(kind, trans_a, trans_b):
    """CupyBackend(gemm=kind): matmul of plain and column-major operands and a group's stack
    (grid z), also inside a capture; float64 stays on the SIMT kernel, at float64's accuracy."""
    gpu, rng = CupyBackend(graph=False, gemm=kind), np.random.default_rng(3)
    tol = NORM_TOL[G.MMAS[kind][0]]
    G_, m, n, k = 5, 37, 130, 71
    a = rng.standard_normal((G_, *((k, m) if trans_a else (m, k)))).astype(np.float32)
    b = rng.standard_normal((G_, *((n, k) if trans_b else (k, n)))).astype(np.float32)
    op = lambda x, t: x.astype(np.float64).swapaxes(-1, -2) if t else x.astype(np.float64)  # noqa
    want = op(a, trans_a) @ op(b, trans_b)
    out, a_dev, b_dev = poisoned((G_, m, n)), cp.asarray(a), cp.asarray(b)
    gpu.matmul(a_dev, b_dev, out, trans_a, trans_b)
    assert rel(out.get(), want) < tol
    out[...] = np.nan
    graph = CupyBackend(graph=True).capture(lambda: gpu.matmul(a_dev, b_dev, out, trans_a,
                                                               trans_b))
    assert graph is not None
    graph()
    assert rel(out.get(), want) < tol
    b_f = cp.asfortranarray(cp.asarray(b[0]))  # a column-major weight, read transposed
    one = gpu.matmul(cp.asarray(a[0]), b_f, poisoned((m, n)), trans_a, trans_b)
    assert rel(one.get(), want[0]) < tol
    a64, b64 = a[0].astype(np.float64), b[0].astype(np.float64)
    got64 = gpu.matmul(cp.asarray(a64), cp.asarray(b64), cp.empty((m, n)), trans_a, trans_b)
    assert rel(got64.get(), want[0]) < 1e-12


def test_precision_tf32_is_the_tf32_gemm_kind():
    assert CupyBackend(graph=False, precision="tf32").mmas(np.float32) == (G.MMA_TF32,)
    assert CupyBackend(graph=False, precision="tf32").mmas(np.float64) == (G.MMA_SIMT,)
    assert G.MMA_TF32 not in CupyBackend(graph=False).mmas(np.float32)
    with pytest.raises(ValueError):
        CupyBackend(graph=False, precision="bf16")


# -- the error table: each product of the nets we train, against float64 ------------------------

HIDDEN, BATCHES, FEATURES, CLASSES = (128, 1024, 2048), (64, 128, 1024), 784, 10


def training_products(hidden: int, batch: int, rng):
    """(label, a, b, trans_a, trans_b) of one 784-H-10 step, with operands shaped as training
    sees them: pixels in [0, 1) (80% blank, like MNIST), Xavier weights, ReLU outputs, small
    gradients. The SIMT and tensor-core kernels both read them exactly as stored."""
    x = (rng.random((batch, FEATURES)) * (rng.random((batch, FEATURES)) < 0.2))
    w0 = rng.uniform(-1, 1, (hidden, FEATURES)) * np.sqrt(6 / (FEATURES + hidden))
    w1 = rng.uniform(-1, 1, (CLASSES, hidden)) * np.sqrt(6 / (hidden + CLASSES))
    h = np.maximum(rng.standard_normal((batch, hidden)), 0)
    dz1 = rng.standard_normal((batch, CLASSES)) * 1e-2
    dz0 = rng.standard_normal((batch, hidden)) * 1e-3 * (h > 0)
    f = lambda v: v.astype(np.float32)  # noqa: E731
    return [(f"forward {FEATURES}->{hidden}", f(x), f(w0), False, True),
            (f"forward {hidden}->{CLASSES}", f(h), f(w1), False, True),
            (f"weight grad {FEATURES}x{hidden}", f(x), f(dz0), True, False),
            (f"weight grad {hidden}x{CLASSES}", f(h), f(dz1), True, False),
            (f"input grad {CLASSES}->{hidden}", f(dz1), f(w1), False, False)]


def product_errors(got, a, b, trans_a, trans_b) -> tuple[float, float]:
    """(worst elementwise error relative to the size of the terms summed, max_ij |C - C64|_ij /
    (|op(A)| |op(B)|)_ij, the bound that rounding analysis gives and that a cancellation to
    near zero does not blow up; the normwise relative error) against a float64 product."""
    op = lambda x, t: x.astype(np.float64).T if t else x.astype(np.float64)  # noqa: E731
    A, B = op(a, trans_a), op(b, trans_b)
    want, scale = A @ B, np.abs(A) @ np.abs(B)
    err = np.abs(np.asarray(got, np.float64) - want)
    worst = float((err / np.where(scale > 0, scale, 1.0)).max())
    return worst, float(np.linalg.norm(err) / max(np.linalg.norm(want), 1e-300))


def error_table(gpu) -> list[tuple]:
    """(shape, product, m, n, k, {kernel: (worst, normwise)}) for every training product: the
    heuristic plan (the untuned graph's pick) of each kernel, and cuBLAS in fp32."""
    rows, rng = [], np.random.default_rng(0)
    for hidden in HIDDEN:
        for batch in BATCHES:
            for label, a, b, ta, tb in training_products(hidden, batch, rng):
                m, k = (a.shape[1], a.shape[0]) if ta else a.shape
                n = b.shape[0] if tb else b.shape[1]
                da, db = cp.asarray(a), cp.asarray(b)
                errors = {}
                for name, mma in (("simt", G.MMA_SIMT), *TENSOR.items()):
                    out = poisoned((m, n))
                    gpu.gemm(da, db, out, m, n, k, a.shape[1], b.shape[1], ta, tb,
                             gemm_plan=G.plan(m, n, k, mma=mma))
                    errors[name] = product_errors(out.get(), a, b, ta, tb)
                blas = cp.matmul(da.T if ta else da, db.T if tb else db)
                errors["cublas"] = product_errors(blas.get(), a, b, ta, tb)
                rows.append((f"H={hidden} B={batch}", label, m, n, k, errors))
    return rows


def print_error_table(rows) -> None:
    names = list(rows[0][-1])
    print("\n| net | product | m x n x k | " + " | ".join(names) + " |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in names) + " |")
    for shape, label, m, n, k, errors in rows:
        print(f"| {shape} | {label} | {m}x{n}x{k} | "
              + " | ".join(f"{errors[x][0]:.2e} ({errors[x][1]:.1e})" for x in names) + " |")
    print("(each cell: worst |C - C64| / (|A||B|) over the elements, then the normwise error)")
    for name in names:
        print(f"max over products, {name}: worst {max(r[-1][name][0] for r in rows):.2e}, "
              f"normwise {max(r[-1][name][1] for r in rows):.2e}")


def test_each_training_product_keeps_fp32_accuracy_on_the_tensor_cores(gpu):
    rows = error_table(gpu)
    print_error_table(rows)
    eps = float(np.finfo(np.float32).eps)
    for shape, label, m, n, k, errors in rows:
        simt = max(errors["simt"][0], eps)  # a product exact in fp32 still has eps of room
        assert errors["3xtf32"][0] <= FP32_FACTOR * simt, (shape, label, errors)
        assert errors["3xtf32-tcsum"][0] <= 16 * simt, (shape, label, errors)
        # TF32 rounds each operand to 11 significant bits (~5e-4 per product): far above
        # fp32's error, below a few 1e-3
        assert 10 * errors["3xtf32"][0] < errors["tf32"][0] < 5e-3, (shape, label, errors)


# -- train.precision through a whole run --------------------------------------------------------

RUN = """
[data]
dataset = "mnist"
limit = 3000
val_fraction = 0.1
[model]
hidden = [64]
[optimizer]
name = "sgd"
lr = 0.1
momentum = 0.9
[train]
batch_size = 128
epochs = 3
device = "{device}"
precision = "{precision}"
[report]
plots = false
"""


def test_train_precision_tf32_trains_in_the_graph_beside_fp32(runs_dir):
    """train.precision reaches the epoch graph: tf32's run differs from fp32's in the last
    bits of its weights, both track the CPU's accuracy; fp32's weights stay within float32
    rounding of the CPU's."""
    from mlptrain.config import parse_config
    from mlptrain.experiment import fit_experiment
    from mlptrain.runs import RunStore

    runs = {(device, precision): fit_experiment(
        parse_config(RUN.format(device=device, precision=precision)), RunStore(runs_dir))
        for device, precision in (("cpu", "fp32"), ("cuda", "fp32"), ("cuda", "tf32"))}
    weights = {key: dict(np.load(run.path / "weights.npz")) for key, run in runs.items()}
    accuracy = {key: run.summary["final"]["test_accuracy"] for key, run in runs.items()}
    for key, run in runs.items():
        assert key[0] == "cpu" or run.summary["path"] == "cuda graph", key
        assert abs(accuracy[key] - accuracy["cpu", "fp32"]) <= 0.01, accuracy
    cpu = weights["cpu", "fp32"]
    for name, w in cpu.items():
        assert rel(weights["cuda", "fp32"][name], w) < 1e-4, name
    drift = max(rel(weights["cuda", "tf32"][name], w) for name, w in cpu.items())
    assert 1e-5 < drift < 5e-2, drift  # TF32 changes the arithmetic, not the training
