"""Seconds per epoch of MNIST training on the GPU: mlptrain's CuPy backend against PyTorch and JAX.

Work (as in ../shared/notes/gpu-measurements.md): 784-H-10 ReLU MLP, softmax cross-entropy,
plain SGD (lr 0.1), fp32, the 60,000 training images resident on the GPU, reshuffled on the GPU
every epoch, full batches only. Each contender trains `--epochs` epochs from the same initial
weights; the median over epochs 2..N is reported, with the training-set accuracy it reached (the
same training should reach about the same accuracy). The floor is the epoch's FLOPs at the
measured fp32 GEMM rate (TF32 off).

    python benchmarks/gpu.py [--epochs 5] [--only mlptrain] [--cases 128x64,128x1024,1024x1024]
                             [--recipe-epochs 5]   (0 skips the recipe case; --cases none: only it)

The recipe case trains configs/mnist-best.toml's whole step (dropout, max-norm, label smoothing,
affine augmentation, Nesterov SGD with its schedule) with `mlptrain fit`'s library call, against
the same step in PyTorch eager (augmentation with affine_grid/grid_sample) and PyTorch with the
whole step captured as a CUDA graph: seconds per epoch and test accuracy side by side.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mlptrain.data.idx import read_idx

LR, CLASSES, FEATURES = 0.1, 10, 784
CASES = {"128x64": (128, 64), "128x1024": (128, 1024), "1024x1024": (1024, 1024)}
PROFILES = {}  # (hidden, batch) -> [(launch, microseconds)] of one captured step
TARGETS_MS = {"128x64": 15.0, "128x1024": 2.0, "1024x1024": 6.0}


def mnist():
    images, _ = read_idx(ROOT / "data/mnist/train-images-idx3-ubyte.gz")
    labels, _ = read_idx(ROOT / "data/mnist/train-labels-idx1-ubyte.gz")
    return (images.reshape(len(images), -1) / 255.0).astype(np.float32), labels.astype(np.int64)


def initial_weights(hidden: int):
    rng = np.random.default_rng(0)
    a0, a1 = np.sqrt(6 / FEATURES), np.sqrt(6 / hidden)
    return {"w0": rng.uniform(-a0, a0, (hidden, FEATURES)).astype(np.float32),
            "b0": np.zeros(hidden, np.float32),
            "w1": rng.uniform(-a1, a1, (CLASSES, hidden)).astype(np.float32),
            "b1": np.zeros(CLASSES, np.float32)}


def accuracy(logits, labels) -> float:
    return float((np.asarray(logits).argmax(axis=1) == labels).mean())


def timed_epochs(run_epoch, sync, epochs: int) -> list[float]:
    times = []
    for _ in range(epochs):
        sync()
        start = time.perf_counter()
        run_epoch()
        sync()
        times.append(time.perf_counter() - start)
    return times


# -- mlptrain -----------------------------------------------------------------------------------


def bench_mlptrain(X, y, hidden, batch, epochs, graph: bool, gemm: str = "cublas",
                   precision: str = "fp32"):
    import cupy as cp

    from mlptrain import nn
    from mlptrain.backend.cuda.epoch import EpochGraph
    from mlptrain.backend.cupy_backend import CupyBackend
    from mlptrain.model import MLP
    from mlptrain.optim import SGD
    from mlptrain.loop import Split

    from mlptrain.config import parse_config
    from mlptrain.step import build_step

    ops = CupyBackend(graph=graph, gemm=gemm, precision=precision)
    model = MLP(ops, [FEATURES, hidden, CLASSES], nn.ReLU(), nn.SoftmaxCrossEntropy(), np.float32)
    w = initial_weights(hidden)
    model.load_state_dict({"layers.0.weight": w["w0"], "layers.0.bias": w["b0"],
                           "layers.1.weight": w["w1"], "layers.1.bias": w["b1"]})
    opt = SGD(ops, model.params)
    steps = len(X) // batch
    full = steps * batch  # full batches only, as the peers
    train = Split(cp.asarray(X[:full]), cp.asarray(y[:full]))
    if graph:
        config = parse_config(f'[model]\nhidden = {hidden}\n[optimizer]\nname = "sgd"\n'
                              f'lr = {LR}\n[train]\nbatch_size = {batch}\nepochs = {epochs}\n'
                              f'precision = "{precision}"')
        step = build_step(config, (28, 28), CLASSES, full)
        runner = EpochGraph(ops, step, model, opt, train)
        done = [0]

        def epoch():
            runner.run(cp.random.permutation(full), done[0] * steps)
            done[0] += 1
    else:
        ws = model.workspace(batch)
        targets = cp.empty(batch, np.int64)

        def epoch():
            order = cp.random.permutation(full)  # the uploaded rows only (full batches)
            for s in range(steps):
                index = order[s * batch:(s + 1) * batch]
                ops.take_rows(train.X, index, out=ws.x)
                ops.take_rows(train.targets, index, out=targets)
                model.loss_and_grad(ws, targets, 1.0 / batch)
                opt.step(model.params, model.grads, LR)

    times = timed_epochs(epoch, cp.cuda.Device().synchronize, epochs)
    ws = model.workspace(full)
    ws.x[...] = train.X
    acc = accuracy(model.forward(ws).get(), y[:full])
    if graph and gemm == "cublas" and precision == "fp32":  # where a step's time goes (this
        PROFILES[hidden, batch] = runner.profile()  # trains the model on garbage: measure last)
    return times, acc


# -- PyTorch ------------------------------------------------------------------------------------


def torch_model(hidden):
    import torch

    w = initial_weights(hidden)
    net = torch.nn.Sequential(torch.nn.Linear(FEATURES, hidden), torch.nn.ReLU(),
                              torch.nn.Linear(hidden, CLASSES)).cuda()
    with torch.no_grad():
        for layer, (wk, bk) in zip((net[0], net[2]), (("w0", "b0"), ("w1", "b1"))):
            layer.weight.copy_(torch.from_numpy(w[wk]))
            layer.bias.copy_(torch.from_numpy(w[bk]))
    return net


def bench_torch(X, y, hidden, batch, epochs, graph: bool, tf32: bool = False):
    import torch

    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    net = torch_model(hidden)
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    Xd, yd = torch.from_numpy(X).cuda(), torch.from_numpy(y).cuda()
    steps = len(X) // batch

    def step(index):
        loss = torch.nn.functional.cross_entropy(net(Xd[index]), yd[index])
        opt.zero_grad(set_to_none=False)
        loss.backward()
        opt.step()

    if graph:
        static_index = torch.zeros(batch, dtype=torch.int64, device="cuda")
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside the capture, as the docs ask
            state = {k: v.clone() for k, v in net.state_dict().items()}
            for _ in range(3):
                step(static_index)
            net.load_state_dict(state)
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            step(static_index)

        def epoch():
            order = torch.randperm(len(X), device="cuda")
            for s in range(steps):
                static_index.copy_(order[s * batch:(s + 1) * batch])
                g.replay()
    else:
        def epoch():
            order = torch.randperm(len(X), device="cuda")
            for s in range(steps):
                step(order[s * batch:(s + 1) * batch])

    times = timed_epochs(epoch, torch.cuda.synchronize, epochs)
    with torch.no_grad():
        return times, accuracy(net(Xd).cpu().numpy(), y)


def gemm_rate() -> float:
    """Measured fp32 (TF32 off) FLOP/s of a large square product, through PyTorch."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    a = torch.randn(8192, 8192, device="cuda")
    b = torch.randn(8192, 8192, device="cuda")
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start, reps = time.perf_counter(), 10
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * 8192**3 * reps / (time.perf_counter() - start)


# -- JAX ----------------------------------------------------------------------------------------


def bench_jax(X, y, hidden, batch, epochs, scan: bool, tf32: bool = False):
    import jax
    import jax.numpy as jnp

    # fp32 ("highest"), or one TF32 product on the tensor cores
    jax.config.update("jax_default_matmul_precision", "tensorfloat32" if tf32 else "highest")
    w = {k: jnp.asarray(v) for k, v in initial_weights(hidden).items()}
    Xd, yd = jnp.asarray(X), jnp.asarray(y)
    steps = len(X) // batch

    def loss_fn(p, xb, yb):
        h = jax.nn.relu(xb @ p["w0"].T + p["b0"])
        logits = h @ p["w1"].T + p["b1"]
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), yb[:, None], 1))

    def sgd(p, index):
        g = jax.grad(loss_fn)(p, Xd[index], yd[index])
        return jax.tree_util.tree_map(lambda a, b: a - LR * b, p, g)

    key = jax.random.PRNGKey(0)
    state = {"p": w, "key": key}
    if scan:
        @jax.jit
        def run(p, order):
            batches = order[:steps * batch].reshape(steps, batch)
            return jax.lax.scan(lambda p, index: (sgd(p, index), None), p, batches)[0]

        def epoch():
            state["key"], sub = jax.random.split(state["key"])
            state["p"] = run(state["p"], jax.random.permutation(sub, len(X)))
    else:
        step = jax.jit(lambda p, order, s: sgd(p, jax.lax.dynamic_slice_in_dim(
            order, s * batch, batch)))

        def epoch():
            state["key"], sub = jax.random.split(state["key"])
            order = jax.random.permutation(sub, len(X))
            p = state["p"]
            for s in range(steps):
                p = step(p, order, s)
            state["p"] = p

    times = timed_epochs(epoch, lambda: jax.block_until_ready(state["p"]), epochs)
    p = state["p"]
    logits = jax.nn.relu(Xd @ p["w0"].T + p["b0"]) @ p["w1"].T + p["b1"]
    return times, accuracy(np.asarray(logits), y)


# -- the table ----------------------------------------------------------------------------------

CONTENDERS = {
    "mlptrain cupy, epoch graph": lambda *a: bench_mlptrain(*a, graph=True),  # SIMT, fp32
    # the tensor cores: 3xTF32 (fp32-level error, gemm kind tc3), TF32 (train.precision)
    "mlptrain cupy, epoch graph, 3xTF32": lambda *a: bench_mlptrain(*a, graph=True,
                                                                    gemm="tc3"),
    "mlptrain cupy, epoch graph, TF32": lambda *a: bench_mlptrain(*a, graph=True,
                                                                  precision="tf32"),
    "mlptrain cupy, eager (cuBLAS)": lambda *a: bench_mlptrain(*a, graph=False),
    "PyTorch eager": lambda *a: bench_torch(*a, graph=False),
    "PyTorch, whole step as a CUDA graph": lambda *a: bench_torch(*a, graph=True),
    "JAX jit per step": lambda *a: bench_jax(*a, scan=False),
    "JAX jit + lax.scan over the epoch": lambda *a: bench_jax(*a, scan=True),
    "PyTorch, CUDA graph, TF32": lambda *a: bench_torch(*a, graph=True, tf32=True),
    "JAX jit + lax.scan, TF32": lambda *a: bench_jax(*a, scan=True, tf32=True),
}


def flops_per_epoch(hidden: int, samples: int) -> float:
    h = hidden
    return samples * (2 * (FEATURES * h + CLASSES * h) + 2 * FEATURES * h + 4 * CLASSES * h)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--only", default="", help="run contenders whose name contains this")
    parser.add_argument("--recipe-epochs", type=int, default=5,
                        help="epochs of the mnist-best recipe case (0: skip it)")
    args = parser.parse_args(argv)
    if args.recipe_epochs:
        recipe_table(args.recipe_epochs)
    if args.cases == "none":
        return
    X, y = mnist()
    cases = args.cases.split(",")
    results = {}  # (contender, case) -> (median seconds, accuracy) or an error string
    for name, bench in CONTENDERS.items():
        if args.only and args.only not in name:
            continue
        for case in cases:
            hidden, batch = CASES[case]
            try:
                times, acc = bench(X, y, hidden, batch, args.epochs)
                results[name, case] = (statistics.median(times[1:]), acc)
                print(f"{name:40s} {case:10s} {1e3 * results[name, case][0]:9.2f} ms/epoch  "
                      f"acc {acc:.4f}  epochs: {', '.join(f'{1e3 * t:.2f}' for t in times)}",
                      flush=True)
            except Exception as exc:  # noqa: BLE001 - a missing peer leaves its row empty
                results[name, case] = f"{type(exc).__name__}: {exc}"[:80]
                print(f"{name:40s} {case:10s} failed: {results[name, case]}", flush=True)
    try:
        rate = gemm_rate()
        floor = {c: flops_per_epoch(CASES[c][0], len(X) // CASES[c][1] * CASES[c][1]) / rate
                 for c in cases}
    except Exception:  # noqa: BLE001 - without PyTorch there is no measured rate
        rate, floor = None, {}
    for (hidden, batch), launches in PROFILES.items():
        total = sum(us for _, us in launches)
        print(f"\none step of mlptrain's graph, H={hidden} B={batch}: {total:.1f} us "
              f"({total * (len(X) // batch) / 1e3:.2f} ms per epoch of launches timed apart)")
        for label, us in launches:
            print(f"  {label:45s} {us:8.2f} us")
    print_table(results, cases, floor, rate)


ACCURACY_SPREAD = 0.05  # a contender this far from its peers' median trained something else


def _off_peers(results, case: str, accuracy: float) -> bool:
    """Whether an accuracy is far from the median of every contender's on the same case: the
    same network, data and epochs should land close, so a gap means a broken contender (a
    shuffle over rows that were never uploaded once scored 0.11 here)."""
    peers = [r[1] for (_, c), r in results.items() if c == case and isinstance(r, tuple)]
    return len(peers) > 2 and abs(accuracy - statistics.median(peers)) > ACCURACY_SPREAD


def print_table(results, cases, floor, rate) -> None:
    header = "| contender | " + " | ".join(
        f"H={CASES[c][0]}, B={CASES[c][1]}" for c in cases) + " |"
    print("\n" + header)
    print("| --- |" + " --- |" * len(cases))
    names = sorted({name for name, _ in results}, key=list(CONTENDERS).index)
    for name in names:
        cells = []
        for case in cases:
            r = results.get((name, case))
            mine = results.get(("mlptrain cupy, epoch graph", case))
            if isinstance(r, tuple):
                ratio = (f" ({r[0] / mine[0]:.1f}x ours)" if isinstance(mine, tuple)
                         and name != "mlptrain cupy, epoch graph" else "")
                cells.append(f"{1e3 * r[0]:.2f} ms, acc {r[1]:.3f}{ratio}"
                             f"{' **acc off its peers**' if _off_peers(results, case, r[1]) else ''}")
            else:
                cells.append("-" if r is None else "failed")
        print(f"| {name} | " + " | ".join(cells) + " |")
    if floor:
        print(f"| arithmetic floor at {rate / 1e12:.1f} TFLOP/s (fp32) | " + " | ".join(
            f"{1e3 * floor[c]:.2f} ms" for c in cases) + " |")
    print("| target | " + " | ".join(f"<= {TARGETS_MS[c]} ms" for c in cases) + " |")


# -- the recipe: configs/mnist-best.toml's step --------------------------------------------------
# 784-1024-1024-10 ReLU, dropout 0.1 (inputs) / 0.3 (hidden), max-norm 3.5, label smoothing 0.1,
# shift 2 px + rotate 8 deg + scale 8% + shear 8 deg per image, SGD Nesterov 0.9, lr 0.1 with 2
# warm-up epochs then cosine, batch 128, float32; trained on the config's 54,000 images and
# scored on the 10,000 test images after `--recipe-epochs` epochs (the schedule spans them).


def bench_recipe_mlptrain(epochs: int):
    """`fit configs/mnist-best.toml --device cuda` through the library, as a user runs it:
    (seconds of training per epoch, epochs 2..N, from metrics.jsonl; test accuracy; path)."""
    import json
    import tempfile

    from mlptrain.config import load_config
    from mlptrain.experiment import fit_experiment
    from mlptrain.runs import RunStore

    config = load_config(ROOT / "configs/mnist-best.toml",
                         overrides=["train.device=cuda", f"train.epochs={epochs}"])
    with tempfile.TemporaryDirectory() as runs:
        run = fit_experiment(config, RunStore(Path(runs)))
        rows = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    seconds = [r["seconds"] for r in rows]  # the epoch: training, then validation (6,000)
    return seconds, run.summary["final"]["test_accuracy"], run.summary.get("path", "?")


def bench_recipe_torch(epochs: int, mode: str):
    """The same step in PyTorch (torch_recipes.py: augmentation on the GPU; mode "eager", or
    "graph": the whole step captured once as a CUDA graph, replayed per batch).
    (seconds per epoch, test accuracy)."""
    from torch_recipes import train

    found = train(ROOT / "configs/mnist-best.toml", [f"train.epochs={epochs}"], mode)
    return found["epochs"], found["test_accuracy"]


def recipe_table(epochs: int) -> None:
    rows = []
    for name, run in (("mlptrain fit (cuda graph path)", lambda: bench_recipe_mlptrain(epochs)),
                      ("PyTorch eager, augmentation on the GPU",
                       lambda: bench_recipe_torch(epochs, "eager") + ("",)),
                      ("PyTorch, whole step as a CUDA graph",
                       lambda: bench_recipe_torch(epochs, "graph") + ("",))):
        try:
            times, acc, path = run()
            rows.append((name, statistics.median(times[1:]), acc, path))
            print(f"{name:42s} {statistics.median(times[1:]):.3f} s/epoch  test acc {acc:.4f}  "
                  f"{path}  epochs: {', '.join(f'{t:.3f}' for t in times)}", flush=True)
        except Exception as exc:  # noqa: BLE001 - a peer that fails leaves its row empty
            print(f"{name:42s} failed: {type(exc).__name__}: {exc}"[:200], flush=True)
    print(f"\n| recipe (mnist-best step, {epochs} epochs) | s/epoch | test accuracy |")
    print("| --- | --- | --- |")
    for name, sec, acc, _ in rows:
        print(f"| {name} | {sec:.3f} | {100 * acc:.2f}% |")


if __name__ == "__main__":
    main()
