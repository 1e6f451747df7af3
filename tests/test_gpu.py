"""The CuPy backend: each kernel against NumPy, and whole training runs against the CPU backend.

Marked `gpu`: skipped where CuPy or a GPU is missing (CI), run on the device machine.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlptrain import nn
from mlptrain.backend import NumpyBackend, get_backend
from mlptrain.config import parse_config
from mlptrain.experiment import fit_experiment
from mlptrain.runs import RunStore

from gpu_common import GPU_MARKS, cp, poisoned, rel  # skips this module without CuPy
pytestmark = GPU_MARKS

from mlptrain.backend.cuda import gemm as G
from mlptrain.backend.cupy_backend import CupyBackend

TOL = {np.float64: 1e-12, np.float32: 2e-5}


@pytest.fixture(scope="module")
def gpu():
    return CupyBackend(graph=False, gemm="own")


# -- uploads --------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [None, np.float32])
def test_a_large_upload_through_pinned_memory_arrives_exactly(gpu, dtype):
    from mlptrain.backend.cupy_backend import STAGED_BYTES

    host = np.random.default_rng(1).standard_normal((STAGED_BYTES // 800 + 7, 100))[:, ::-1]
    assert host.nbytes >= STAGED_BYTES and not host.flags.c_contiguous
    got = gpu.asarray(host, dtype)
    want = np.ascontiguousarray(host, dtype)
    assert got.dtype == want.dtype and got.flags.c_contiguous
    np.testing.assert_array_equal(cp.asnumpy(got), want)
    small = gpu.asarray(host[:3], dtype)  # below the threshold: the direct copy
    np.testing.assert_array_equal(cp.asnumpy(small), np.asarray(host[:3], dtype))


# -- matrix products ----------------------------------------------------------------------------

SHAPES = [(1, 1, 1), (37, 53, 71), (64, 128, 784), (128, 785, 64), (1024, 10, 128),
          (130, 129, 257), (1000, 1024, 784), (5, 300, 3)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("trans_a,trans_b", G.TRANSPOSES)
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_gemm_matches_numpy_for_every_transpose_and_ragged_shape(gpu, dtype, trans_a, trans_b,
                                                                 m, n, k):
    rng = np.random.default_rng(m * 7 + n * 3 + k)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    want = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b).astype(np.float64)
    for tile in G.TILES:
        for splits, inline in ((1, False), (3, False), (3, True), (None, False), (None, True)):
            out = poisoned((m, n), dtype)
            p = G.plan(m, n, k, tile=tile, splits=splits, inline_reduce=inline)
            gpu.gemm(cp.asarray(a), cp.asarray(b), out, m, n, k, a.shape[1], b.shape[1],
                     trans_a, trans_b, gemm_plan=p)
            assert rel(out.get(), want) < TOL[dtype], p


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("trans_a,trans_b", G.TRANSPOSES)
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("layout", ["C", "F"])
def test_a_stack_of_products_matches_numpy_member_by_member(gpu, dtype, trans_a, trans_b,
                                                            shared, layout):
    """matmul of a group's stacks: one launch over its members (grid z), a shared operand read
    with stride 0, column-major members (a model's weights (G, O, I)) read through their
    C-ordered transpose, a column-major out written as its transpose; also inside a graph
    capture, which CuPy's cuBLAS refuses."""
    G_, m, n, k = 5, 37, 130, 71
    rng = np.random.default_rng(3)
    a_shape = (k, m) if trans_a else (m, k)
    a = rng.standard_normal(a_shape if shared else (G_, *a_shape)).astype(dtype)
    b = rng.standard_normal((G_, *((n, k) if trans_b else (k, n)))).astype(dtype)
    op = lambda x, t: x.astype(np.float64).T if t else x.astype(np.float64)  # noqa: E731
    want = [op(a if shared else a[g], trans_a) @ op(b[g], trans_b) for g in range(G_)]
    column_major = lambda x: cp.asarray(x.swapaxes(-1, -2).copy()).swapaxes(-1, -2)  # noqa
    a_dev = cp.asarray(a)
    b_dev = cp.asarray(b) if layout == "C" else column_major(b)
    out = poisoned((G_, m, n), dtype) if layout == "C" else \
        poisoned((G_, n, m), dtype).swapaxes(-1, -2)
    gpu.matmul(a_dev, b_dev, out, trans_a, trans_b)
    for g in range(G_):
        assert rel(out[g].get(), want[g]) < TOL[dtype], g
    out[...] = np.nan
    graph = CupyBackend(graph=True).capture(
        lambda: gpu.matmul(a_dev, b_dev, out, trans_a, trans_b))
    assert graph is not None
    graph()
    assert rel(out.get(), np.stack(want)) < TOL[dtype]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gemm_gathers_rows_adds_the_ones_column_and_fuses_epilogues(gpu, dtype):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((500, 97)).astype(dtype)
    W = rng.standard_normal((45, 97)).astype(dtype)
    bias = rng.standard_normal(45).astype(dtype)
    index = rng.permutation(500)[:70]
    dX, dW, dbias, dI = (cp.asarray(v) for v in (X, W, bias, index))
    for splits, inline in ((1, False), (4, False), (4, True)):
        plan = lambda m, n, k, s=splits, i=inline: G.plan(m, n, k, splits=s, inline_reduce=i)
        # forward: relu(X[index] W^T + b)
        out = poisoned((70, 45), dtype)
        gpu.gemm(dX, dW, out, 70, 45, 97, 97, 97, trans_b=True, gather_a=dI,
                 mode=G.EPI_BIAS_ACT, bias=dbias, act=1, gemm_plan=plan(70, 45, 97))
        want = np.maximum(X[index].astype(np.float64) @ W.T + bias, 0)
        assert rel(out.get(), want) < TOL[dtype]
        # weight and bias gradient as the model stores them: [dW^T ; db] = [X[index] | 1]^T dz
        dz = rng.standard_normal((70, 45)).astype(dtype)
        gwt, gb = poisoned((97, 45), dtype), poisoned(45, dtype)
        gpu.gemm(dX, cp.asarray(dz), gwt, 97, 45, 70, 97, 45, trans_a=True, gather_a=dI,
                 ones_out=gb, ones_row=True, gemm_plan=plan(98, 45, 70))
        assert rel(gwt.get(), X[index].T.astype(np.float64) @ dz) < TOL[dtype]
        assert rel(gb.get(), dz.astype(np.float64).sum(axis=0)) < TOL[dtype]
        # the same with the ones as a column of B: [dW | db] = dz^T [X[index] | 1]
        gw, gb = poisoned((45, 97), dtype), poisoned(45, dtype)
        gpu.gemm(cp.asarray(dz), dX, gw, 45, 97, 70, 45, 97, trans_a=True, gather_b=dI,
                 ones_out=gb, gemm_plan=plan(45, 98, 70))
        assert rel(gw.get(), dz.T.astype(np.float64) @ X[index]) < TOL[dtype]
        assert rel(gb.get(), dz.astype(np.float64).sum(axis=0)) < TOL[dtype]
        # input gradient with the derivative fused: (dz W) * [y > 0]
        y = np.maximum(rng.standard_normal((70, 97)), 0).astype(dtype)
        dx = poisoned((70, 97), dtype)
        gpu.gemm(cp.asarray(dz), dW, dx, 70, 97, 45, 45, 97, mode=G.EPI_ACT_GRAD,
                 ymask=cp.asarray(y), act=1, gemm_plan=plan(70, 97, 45))
        assert rel(dx.get(), (dz.astype(np.float64) @ W) * (y > 0)) < TOL[dtype]


# -- element-wise kernels, loss, reductions ------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", ["relu", "leaky_relu", "tanh", "sigmoid"])
def test_activation_kernels_match_the_numpy_backend(gpu, dtype, name):
    rng = np.random.default_rng(2)
    act, cpu = nn.make_activation(name, 0.05), NumpyBackend()
    z, bias = rng.standard_normal((33, 70)).astype(dtype) * 3, rng.standard_normal(70).astype(dtype)
    dy = rng.standard_normal((33, 70)).astype(dtype)
    want_z, want_y = z.copy(), np.empty_like(z)
    cpu.bias_activation(want_z, bias, act, out=want_y)
    got_z, got_y = cp.asarray(z), poisoned(z.shape, dtype)
    gpu.bias_activation(got_z, cp.asarray(bias), act, out=got_y)
    tol = 0 if dtype == np.float64 and name in ("relu", "leaky_relu") else 8 * np.finfo(dtype).eps
    np.testing.assert_allclose(got_z.get(), want_z, rtol=tol)
    np.testing.assert_allclose(got_y.get(), want_y, rtol=tol, atol=tol)
    want_dz = cpu.activation_backward(act, want_y, dy, out=np.empty_like(dy))
    got_dz = gpu.activation_backward(act, got_y, cp.asarray(dy), out=poisoned(dy.shape, dtype))
    np.testing.assert_allclose(got_dz.get(), want_dz, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sum_rows_take_rows_and_softmax_cross_entropy_match_numpy(gpu, dtype):
    rng = np.random.default_rng(3)
    cpu, loss = NumpyBackend(), nn.SoftmaxCrossEntropy()
    a = rng.standard_normal((1000, 77)).astype(dtype)
    sums = gpu.sum_rows(cp.asarray(a), poisoned(77, dtype)).get()
    assert rel(sums, a.astype(np.float64).sum(axis=0)) < TOL[dtype]
    index = rng.permutation(1000)[:123]
    got = gpu.take_rows(cp.asarray(a), cp.asarray(index), poisoned((123, 77), dtype))
    assert np.array_equal(got.get(), a[index])
    logits = (rng.standard_normal((300, 10)) * 20).astype(dtype)  # large: exp must not overflow
    targets = rng.integers(0, 10, 300)
    cache_cpu, cache_gpu = loss.new_cache(np, 300, 10, dtype), loss.new_cache(cp, 300, 10, dtype)
    cache_gpu.probs[...] = np.nan
    want_loss, want_correct = cpu.loss_forward(loss, logits, targets, cache_cpu)
    got_loss, got_correct = gpu.loss_forward(loss, cp.asarray(logits), cp.asarray(targets),
                                             cache_gpu)
    assert float(got_loss) == pytest.approx(float(want_loss), rel=10 * np.finfo(dtype).eps)
    assert float(got_correct) == int(want_correct)
    want_grad = cpu.loss_backward(loss, cache_cpu, targets, 1 / 300, np.empty_like(logits))
    got_grad = gpu.loss_backward(loss, cache_gpu, cp.asarray(targets), 1 / 300,
                                 poisoned(logits.shape, dtype))
    np.testing.assert_allclose(got_grad.get(), want_grad, rtol=0, atol=10 * np.finfo(dtype).eps)


def test_devices_resolve_cuda_and_auto_to_the_gpu_backend():
    assert get_backend("cuda").device == "cuda"
    assert get_backend("auto").device == "cuda"
    assert get_backend("cpu").device == "cpu"


# -- whole runs: the GPU trains the same network as the CPU ---------------------------------------

MNIST_SMALL = """
name = "parity"
[data]
dataset = "mnist"
limit = 3000
val_fraction = 0.1
[model]
hidden = [{hidden}]
activation = "{activation}"
init = "he_uniform"
[optimizer]
{optimizer}
[schedule]
name = "cosine"
warmup_epochs = 0.5
[train]
batch_size = 128
epochs = 4
dtype = "{dtype}"
device = "{device}"
"""
SGD = 'name = "sgd"\nlr = 0.1\nmomentum = 0.9\nnesterov = true\nweight_decay = 1e-4'
ADAMW = 'name = "adamw"\nlr = 0.002\nweight_decay = 0.01'
RMSPROP = 'name = "rmsprop"\nlr = 0.001\nrho = 0.9\nweight_decay = 1e-4'


def run_on(device, runs_dir, monkeypatch, graph="1", dtype="float64", optimizer=SGD,
           activation="relu", hidden="64"):
    monkeypatch.setenv("MLPTRAIN_CUDA_GRAPH", graph)
    text = MNIST_SMALL.format(device=device, dtype=dtype, optimizer=optimizer,
                              activation=activation, hidden=hidden)
    run = fit_experiment(parse_config(text), RunStore(runs_dir))
    metrics = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    return run, metrics, dict(np.load(run.path / "weights.npz"))


@pytest.mark.parametrize("graph", ["1", "0"])
@pytest.mark.parametrize("optimizer,activation,hidden", [
    (SGD, "relu", "64"), (ADAMW, "tanh", "48, 32"), (SGD, "leaky_relu", "40, 24"),
    (SGD, "gelu", "48, 32"),  # the graph keeps z for GELU's backward
    (RMSPROP, "gelu", "48, 32")])  # RMSprop has no graph kernel: eager on the GPU too
def test_float64_training_matches_numpy_to_1e_9(runs_dir, monkeypatch, graph, optimizer,
                                                activation, hidden):
    _, cpu_metrics, cpu_w = run_on("cpu", runs_dir, monkeypatch, graph, "float64", optimizer,
                                   activation, hidden)
    gpu_run, gpu_metrics, gpu_w = run_on("cuda", runs_dir, monkeypatch, graph, "float64",
                                         optimizer, activation, hidden)
    graphed = graph == "1" and optimizer != RMSPROP
    assert (gpu_run.summary["path"] == "cuda graph") == graphed, gpu_run.summary["path"]
    assert len(gpu_metrics) == len(cpu_metrics) == 4
    for mine, ref in zip(gpu_metrics, cpu_metrics):
        for key in ("train_loss", "val_loss", "lr"):
            assert mine[key] == pytest.approx(ref[key], rel=1e-9), (mine["epoch"], key)
        assert mine["train_accuracy"] == ref["train_accuracy"]
        assert mine["val_accuracy"] == ref["val_accuracy"]
    for name, w in cpu_w.items():
        assert rel(gpu_w[name], w) < 1e-9, name


def gpu_matches_cpu(text: str, runs_dir, device: str = "cuda") -> str:
    """Fits the config `text` on the CPU and on `device`: every record (but its time) to 1e-9
    and every weight; returns the device run's path."""
    runs = {d: fit_experiment(parse_config(text.replace(
        "[train]\n", f'[train]\ndevice = "{d}"\n')), RunStore(runs_dir)) for d in ("cpu", device)}
    cpu, gpu = ([json.loads(line) for line in (runs[d].path / "metrics.jsonl").read_text()
                 .splitlines()] for d in ("cpu", device))
    assert len(cpu) == len(gpu) == 3
    for mine, ref in zip(gpu, cpu):  # (a regression's R^2 follows from its RMSE)
        for key in {k for k in ref if not k.endswith("_r2")} - {"epoch", "seconds"}:
            assert mine[key] == pytest.approx(ref[key], rel=1e-9), (mine["epoch"], key)
    want = dict(np.load(runs["cpu"].path / "weights.npz"))
    got = dict(np.load(runs[device].path / "weights.npz"))
    for name, w in want.items():
        assert rel(got[name], w) < 1e-9, name
    return runs[device].summary["path"]


@pytest.mark.parametrize("loss", ["mse", "huber", "poisson"])
def test_a_regression_run_on_the_gpu_matches_numpy_to_1e_9(runs_dir, tmp_path, loss):
    """A real target (standardized, but for poisson's counts) trains on the GPU, in the epoch
    graph (the real_target kernel), to the CPU's records and weights in float64."""
    rng = np.random.default_rng(7)
    X = rng.normal(size=(600, 5)) * [1, 10, 100, 0.1, 3]
    y = X @ [0.5, -0.05, 0.004, 3.0, 0.2] + rng.normal(scale=0.3, size=600)
    np.savez(tmp_path / "r.npz", X=X, y=np.exp(y / 4).round() if loss == "poisson" else y)
    text = (f'[data]\ndataset = "npz"\npath = "{tmp_path / "r.npz"}"\ntask = "regression"\n'
            f'[model]\nhidden = [24, 16]\nactivation = "tanh"\nloss = "{loss}"\n'
            '[optimizer]\nname = "sgd"\nlr = 0.01\nmomentum = 0.9\n'
            '[train]\nepochs = 3\nbatch_size = 32\ndtype = "float64"\n[report]\nplots = false\n')
    assert gpu_matches_cpu(text, runs_dir) == "cuda graph"


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "sigmoid_bce", "mse"])
def test_a_weighted_run_on_the_gpu_matches_numpy_to_1e_9(runs_dir, tmp_path, loss):
    """Sample weights (an npz's w) and class weights run eagerly on the GPU (the graph has no
    kernel for them, and says so) to the CPU's records and weights in float64."""
    rng = np.random.default_rng(11)
    X = rng.normal(size=(400, 6))
    score = X @ rng.normal(size=6) + rng.normal(scale=0.5, size=400)
    y = {"softmax_cross_entropy": np.digitize(score, [-1.0, 0.5]), "sigmoid_bce": score > 0,
         "mse": score}[loss]
    np.savez(tmp_path / "w.npz", X=X, y=y, w=rng.uniform(0.2, 3.0, size=400))
    task = "regression" if loss == "mse" else "classification"
    weights = "" if loss == "mse" else 'class_weight = "balanced"\n'
    text = (f'[data]\ndataset = "npz"\npath = "{tmp_path / "w.npz"}"\ntask = "{task}"\n'
            f'{weights}[model]\nhidden = [16]\nactivation = "tanh"\nloss = "{loss}"\n'
            '[optimizer]\nname = "sgd"\nlr = 0.05\nmomentum = 0.9\n'
            '[train]\nepochs = 3\nbatch_size = 32\ndtype = "float64"\n[report]\nplots = false\n')
    path = gpu_matches_cpu(text, runs_dir)
    assert path.startswith("eager: ") and "weights" in path


@pytest.mark.parametrize("key,value,reason", [
    ("optimizer", RMSPROP, "no kernel for the rmsprop optimizer")])
def test_a_kind_without_a_graph_kernel_says_so_and_runs_eagerly(runs_dir, monkeypatch, key,
                                                                 value, reason):
    run, metrics, _ = run_on("cuda", runs_dir, monkeypatch, "1", "float32", **{key: value})
    assert run.summary["path"] == f"eager: {reason}"
    assert len(metrics) == 4 and metrics[-1]["train_loss"] < metrics[0]["train_loss"]


@pytest.mark.parametrize("graph", ["1", "0"])
def test_float32_training_tracks_numpy_within_float32_rounding(runs_dir, monkeypatch, graph):
    cpu_run, cpu_metrics, cpu_w = run_on("cpu", runs_dir, monkeypatch, graph, "float32")
    gpu_run, gpu_metrics, gpu_w = run_on("cuda", runs_dir, monkeypatch, graph, "float32")
    for mine, ref in zip(gpu_metrics, cpu_metrics):
        assert mine["train_loss"] == pytest.approx(ref["train_loss"], rel=1e-4)
        assert mine["val_loss"] == pytest.approx(ref["val_loss"], rel=1e-3)
    for name, w in cpu_w.items():
        assert rel(gpu_w[name], w) < 1e-4, name
    acc = lambda run: run.summary["final"]["test_accuracy"]
    assert abs(acc(gpu_run) - acc(cpu_run)) <= 0.002  # at most a couple of the 10,000 flip


@pytest.mark.parametrize("name", ["mse", "huber", "poisson"])
def test_the_real_target_loss_kernel_is_its_nn_formula_in_float64(name):
    """The epoch graph's kernel for a real target's loss (kernels.cu real_target) against
    nn.py's forward and backward: summed loss, summed squared and absolute errors, dL/dz."""
    from mlptrain.backend.cuda.dispatch import REAL_TARGET_IDS
    from mlptrain.backend.cuda.kernels import XENT_ROWS

    gpu, rng, rows = CupyBackend(graph=False), np.random.default_rng(3), 300
    z = rng.normal(scale=1.5, size=(rows, 1))
    t = rng.poisson(2.0, rows).astype(float) if name == "poisson" else \
        z[:, 0] + rng.choice([-3.0, -0.4, 0.3, 2.5], rows)  # within Huber's delta and beyond
    loss = nn.REGRESSION_LOSSES[name]()
    targets = loss.targets(np, t, np.float64)
    cache = loss.new_cache(np, rows, 1, np.float64)
    sums = loss.forward(np, z, targets, cache)  # loss, squared error, absolute error
    grad = loss.backward(np, cache, targets, 1.0 / rows, out=np.empty_like(z))
    blocks = -(-rows // XENT_ROWS)
    parts, grad_gpu = cp.zeros(3 * blocks, np.float64), cp.empty((rows, 1), np.float64)
    gpu.kernel("real_target", np.float64)(
        (blocks,), (XENT_ROWS,),
        (cp.asarray(z), G.NULL, cp.asarray(targets), G.NULL, grad_gpu, np.int32(rows),
         np.float64(1.0 / rows), np.int32(REAL_TARGET_IDS[name]),
         np.float64(getattr(loss, "delta", 0.0)), parts))
    got = parts.get().reshape(blocks, 3).sum(axis=0)
    assert list(got) == pytest.approx([float(s) for s in sums], rel=1e-12)
    np.testing.assert_allclose(grad_gpu.get(), grad, rtol=1e-12, atol=0)


def test_a_gather_outside_its_source_fails_loudly_at_the_next_sync():
    """take_rows of an index past the source's rows (a shuffle over rows never uploaded once
    scored 0.11 in benchmarks/gpu.py, reading past the array without a word) sets a flag that
    the next to_host turns into an error; in-range gathers stay silent."""
    from mlptrain.errors import BackendError

    gpu = CupyBackend(graph=False)
    source = cp.arange(15, dtype=np.float64).reshape(5, 3)
    out = cp.empty((2, 3), np.float64)
    gpu.take_rows(source, cp.asarray([4, 0], np.int64), out)
    assert gpu.to_host(out).tolist() == [[12, 13, 14], [0, 1, 2]]
    gpu.take_rows(source, cp.asarray([1, 5], np.int64), out)
    with pytest.raises(BackendError, match="outside its source array"):
        gpu.to_host(out)
    assert gpu.to_host(out)[1].tolist() == [0, 0, 0]  # the flag is reset; the row read nothing


def test_own_matmul_reads_and_writes_column_major_views():
    gpu, rng = CupyBackend(graph=False, gemm="own"), np.random.default_rng(5)
    w = rng.standard_normal((45, 97))  # (O, I), stored column-major as the model does
    x, dz = rng.standard_normal((70, 97)), rng.standard_normal((70, 45))
    w_gpu = cp.asfortranarray(cp.asarray(w))
    out = gpu.matmul(cp.asarray(x), w_gpu, poisoned((70, 45), np.float64), trans_b=True)
    assert rel(out.get(), x @ w.T) < 1e-12
    grad = cp.asfortranarray(poisoned((45, 97), np.float64))  # dW written through dW^T
    gpu.matmul(cp.asarray(x), cp.asarray(dz), grad.T, trans_a=True)
    assert rel(grad.get(), dz.T @ x) < 1e-12
    dx = gpu.matmul(cp.asarray(dz), w_gpu, poisoned((70, 97), np.float64))
    assert rel(dx.get(), dz @ w) < 1e-12


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, 0.0), (0.9, False, 1e-3),
                                                  (0.9, True, 1e-2)])
def test_sgd_update_matches_the_numpy_backend(gpu, dtype, momentum, nesterov, wd):
    rng, cpu = np.random.default_rng(6), NumpyBackend()
    p, v = (rng.standard_normal(1000).astype(dtype) for _ in range(2))
    pg, vg = cp.asarray(p), cp.asarray(v)
    for lr in (0.1, 0.05, 0.01):
        g = rng.standard_normal(1000).astype(dtype)
        cpu.sgd_update(p, g.copy(), v, lr, momentum, nesterov, wd)
        gpu.sgd_update(pg, cp.asarray(g), vg, lr, momentum, nesterov, wd)
    tol = 4 * np.finfo(dtype).eps
    np.testing.assert_allclose(pg.get(), p, rtol=tol, atol=tol)
    np.testing.assert_allclose(vg.get(), v, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("wd,decoupled", [(0.0, False), (1e-2, False), (1e-2, True)])
def test_adam_update_matches_the_numpy_backend(gpu, dtype, wd, decoupled):
    rng, cpu = np.random.default_rng(7), NumpyBackend()
    p = rng.standard_normal(1000).astype(dtype)
    m, v = np.zeros_like(p), np.zeros_like(p)
    pg, mg, vg = cp.asarray(p), cp.asarray(m), cp.asarray(v)
    for step in (1, 2, 3):
        g = rng.standard_normal(1000).astype(dtype)
        cpu.adam_update(p, g.copy(), m, v, step, 1e-3, 0.9, 0.999, 1e-8, wd, decoupled)
        gpu.adam_update(pg, cp.asarray(g), mg, vg, step, 1e-3, 0.9, 0.999, 1e-8, wd, decoupled)
    tol = 8 * np.finfo(dtype).eps
    for got, want in ((pg, p), (mg, m), (vg, v)):
        np.testing.assert_allclose(got.get(), want, rtol=tol, atol=tol)


AIDS = ["model.dropout_input=0.1", "model.dropout_hidden=0.3", "model.max_norm=1.0",
        "model.label_smoothing=0.1", "data.augment_shift=2", "data.augment_rotate=8",
        "schedule.name=onecycle", "schedule.momentum_low=0.85", "train.epochs=2"]


def test_training_aids_match_numpy_to_1e_9_in_float64(runs_dir):
    # dropout masks and distortions are drawn on the host from the same seeded streams, so
    # the device must reach the same weights: max-norm, smoothing and the round trip included
    def run(device):
        text = MNIST_SMALL.format(device=device, dtype="float64", optimizer=SGD,
                                  activation="relu", hidden="64, 32")
        done = fit_experiment(parse_config(text, overrides=AIDS), RunStore(runs_dir))
        metrics = [json.loads(line)
                   for line in (done.path / "metrics.jsonl").read_text().splitlines()]
        return metrics, dict(np.load(done.path / "weights.npz"))

    cpu_metrics, cpu_w = run("cpu")
    gpu_metrics, gpu_w = run("cuda")
    for mine, ref in zip(gpu_metrics, cpu_metrics):
        for key in ("train_loss", "val_loss"):
            assert mine[key] == pytest.approx(ref[key], rel=1e-9), (mine["epoch"], key)
    for name, w in cpu_w.items():
        assert rel(gpu_w[name], w) < 1e-9, name


def test_kernels_compile_for_a_script_read_from_stdin(tmp_path):
    """Spawned compile workers cannot start for `python -` (spawn runs the parent's main file
    again, and stdin has none): the kernels then compile in the process itself."""
    import os
    import subprocess
    import sys

    from conftest import ROOT

    script = ("from mlptrain.backend.cuda.kernels import Kernels\n"
              "k = Kernels()\n"
              "k.prepare(['sum_parts', 'splitk_reduce<float>'])\n"
              "print('loaded', len(k._functions))\n")
    env = {**os.environ, "CUPY_CACHE_DIR": str(tmp_path),  # nothing cached yet
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "loaded 2" in done.stdout
