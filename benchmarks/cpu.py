"""CPU speed: mlptrain's NumPy backend against scikit-learn, PyTorch and JAX on the same work.

Work (issue 7): MNIST's 60,000 training images in float32, a 784-H-10 ReLU MLP, softmax
cross-entropy, plain SGD (lr 0.1), reshuffled every epoch, full batches only (the last partial
batch is dropped for everyone). Reported: median seconds per epoch over epochs 2..N, and the
arithmetic floor at the float32 GEMM rate measured in the same run.

    python benchmarks/cpu.py                               # every case, every importable peer
    python benchmarks/cpu.py --cases 128x64 --epochs 4 --peers torch,jax --json out.json
    env -u OPENBLAS_CORETYPE python benchmarks/cpu.py      # let OpenBLAS pick its kernels

Each contender runs in its own subprocess with this process's environment, unchanged, so one
library's thread pools cannot slow another's. Peers are optional: one that does not import is
reported as such. Run from the repository root (or with mlptrain installed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CASES = ("128x64", "128x1024", "1024x1024")  # HIDDEN x BATCH
PEERS = ("sklearn", "torch", "jax_step", "jax_scan")
LR = 0.1
N_IN, N_OUT = 784, 10


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def flops_per_epoch(hidden: int, samples: int) -> float:
    # forward 2(784H + 10H), backward 2(784H) for dW0 (no dx for the input) + 4(10H) for dW1, dx1
    return samples * (2 * (N_IN * hidden + hidden * N_OUT) + 2 * N_IN * hidden
                      + 4 * hidden * N_OUT)


def load_data(batch: int) -> tuple[np.ndarray, np.ndarray]:
    """MNIST's training set in float32, cut to whole batches."""
    sys.path.append(str(REPO))  # PYTHONPATH, if set, wins: compare versions of mlptrain
    from mlptrain.data import default_mnist_dir
    from mlptrain.data.mnist import load_mnist

    m = load_mnist(default_mnist_dir())
    n = len(m.train_labels) // batch * batch
    X = np.ascontiguousarray(m.train_images[:n].reshape(n, -1), dtype=np.float32)
    return X, m.train_labels[:n].astype(np.int64)


# -- contenders: each returns the seconds of every epoch ----------------------------------------


def run_mlptrain(hidden, batch, epochs, X, y):
    from mlptrain import loop
    from mlptrain.backend import get_backend
    from mlptrain.config import Config
    from mlptrain.model import build_model
    from mlptrain.optim import build_optimizer
    from mlptrain.step import build_step

    cfg = Config()
    cfg.model.hidden, cfg.model.init = [hidden], "he_uniform"
    cfg.optimizer.lr, cfg.train.batch_size, cfg.train.epochs = LR, batch, epochs
    ops = get_backend("cpu")
    step = build_step(cfg, (N_IN,), N_OUT, len(y))
    model = build_model(step, cfg.model.hidden, ops, N_IN)
    model.initialize(cfg.model.init, np.random.default_rng(0))
    optimizer = build_optimizer(step.optimizer, ops, model.params)
    train = loop.to_device(ops, model, X, y)
    eager = loop.EagerStep(step, model, optimizer)
    state = loop.fit(eager, train, None, loop.LoopSettings(), np.random.default_rng(1))
    return [r["seconds"] for r in state.history], state.history[-1]["train_accuracy"]


def run_sklearn(hidden, batch, epochs, X, y):
    import warnings

    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=(hidden,), activation="relu", solver="sgd",
                        alpha=0.0, batch_size=batch, learning_rate_init=LR, momentum=0.0,
                        nesterovs_momentum=False, shuffle=True, random_state=0)
    classes, times = np.arange(N_OUT), []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(epochs):
            start = time.perf_counter()
            clf.partial_fit(X, y, classes=classes)  # one epoch of mini-batch SGD
            times.append(time.perf_counter() - start)
    return times, None


def run_torch(hidden, batch, epochs, X, y):
    import torch

    torch.set_num_threads(cores())
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(N_IN, hidden), torch.nn.ReLU(),
                                torch.nn.Linear(hidden, N_OUT))
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    n, times = len(y), []
    for _ in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(n)
        for s in range(n // batch):
            idx = order[s * batch:(s + 1) * batch]
            loss = torch.nn.functional.cross_entropy(model(Xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - start)
    return times, None


def _jax_setup(hidden):
    import jax
    import jax.numpy as jnp

    k0, k1 = jax.random.split(jax.random.PRNGKey(0))
    params = {"w0": jax.random.normal(k0, (N_IN, hidden), jnp.float32) * (2 / N_IN) ** 0.5,
              "b0": jnp.zeros(hidden, jnp.float32),
              "w1": jax.random.normal(k1, (hidden, N_OUT), jnp.float32) * (2 / hidden) ** 0.5,
              "b1": jnp.zeros(N_OUT, jnp.float32)}

    def loss(p, xb, yb):
        logits = jax.nn.relu(xb @ p["w0"] + p["b0"]) @ p["w1"] + p["b1"]
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), yb[:, None], 1))

    def step(p, X, y, idx):
        g = jax.grad(loss)(p, X[idx], y[idx])
        return jax.tree_util.tree_map(lambda a, b: a - LR * b, p, g)

    return jax, jnp, params, step


def run_jax(hidden, batch, epochs, X, y, scan):
    jax, jnp, params, step = _jax_setup(hidden)
    Xd, yd = jnp.asarray(X), jnp.asarray(y)
    n, rng, times = len(y), np.random.default_rng(1), []
    if scan:
        @jax.jit
        def epoch(p, order):  # order (steps, B): the whole epoch as one compiled loop
            return jax.lax.scan(lambda q, idx: (step(q, Xd, yd, idx), None), p, order)[0]
    else:
        jstep = jax.jit(step)
    for _ in range(epochs):
        start = time.perf_counter()
        order = rng.permutation(n).reshape(-1, batch)  # host indices, like the other loops
        if scan:
            params = epoch(params, jnp.asarray(order))
        else:
            for idx in order:
                params = jstep(params, Xd, yd, idx)
        jax.block_until_ready(params)
        times.append(time.perf_counter() - start)
    return times, None


CONTENDERS = {
    "mlptrain": run_mlptrain,
    "sklearn": run_sklearn,
    "torch": run_torch,
    "jax_step": lambda *a: run_jax(*a, scan=False),
    "jax_scan": lambda *a: run_jax(*a, scan=True),
}
LABELS = {"mlptrain": "mlptrain (NumPy backend)", "sklearn": "scikit-learn MLPClassifier",
          "torch": "PyTorch CPU eager", "jax_step": "JAX jit per step",
          "jax_scan": "JAX jit + lax.scan", "floor": "floor at measured fp32 GEMM rate"}


def gemm_rate(seconds: float = 1.0) -> float:
    """float32 GFLOP/s of NumPy's BLAS on a (1024, 784) @ (784, 1024) product."""
    rng = np.random.default_rng(0)
    a, b = rng.random((1024, N_IN), dtype=np.float32), rng.random((N_IN, 1024), dtype=np.float32)
    out = np.empty((1024, 1024), np.float32)
    np.matmul(a, b, out=out)
    best, end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        for _ in range(5):
            np.matmul(a, b, out=out)
        best = min(best, (time.perf_counter() - start) / 5)
    return 2 * 1024 * N_IN * 1024 / best / 1e9


def blas_config() -> dict:
    info = {"OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "(unset)"),
            "cores": cores(), "numpy": np.__version__}
    try:
        from threadpoolctl import threadpool_info

        info["threadpools"] = [
            {k: p.get(k) for k in ("internal_api", "version", "architecture", "corelib",
                                   "num_threads", "threading_layer") if p.get(k) is not None}
            for p in threadpool_info()]
    except ImportError:
        info["threadpools"] = "threadpoolctl not installed"
    return info


# -- the orchestration --------------------------------------------------------------------------


def worker(name: str, case: str, epochs: int) -> None:
    """Runs one contender on one case in this process; prints one JSON line."""
    hidden, batch = (int(v) for v in case.split("x"))
    X, y = load_data(batch)
    try:
        times, accuracy = CONTENDERS[name](hidden, batch, epochs, X, y)
    except ImportError as e:
        print(json.dumps({"error": f"not importable: {e.name or e}"}))
        return
    print(json.dumps({"times": times, "accuracy": accuracy}))


def run_one(name: str, case: str, epochs: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, "--cases", case, "--epochs", str(epochs)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    result = json.loads(lines[-1])
    if "times" in result:
        result["median"] = statistics.median(result["times"][1:] or result["times"])
    return result


def table(results: dict, cases: list[str], floor: dict) -> str:
    rows = [["contender", *[f"H={c.split('x')[0]}, B={c.split('x')[1]}" for c in cases]]]
    best = {c: min((r[c]["median"] for n, r in results.items() if n != "mlptrain"
                    and "median" in r[c]), default=None) for c in cases}
    for name, per_case in results.items():
        cells = []
        for c in cases:
            r = per_case[c]
            if "median" not in r:
                cells.append(r.get("error", "-")[:40])
                continue
            cell = f"{r['median']:.3f}"
            if best[c]:
                cell += f" ({r['median'] / best[c]:.2f}x best peer)"
            cells.append(cell)
        rows.append([LABELS[name], *cells])
    rows.append([LABELS["floor"], *[f"{floor[c]:.3f}" for c in cases]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(r, widths)) + " |" for r in rows]
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default=",".join(CASES),
                        help="comma-separated HIDDENxBATCH cases (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=5,
                        help="epochs per contender; the median skips the first (default 5)")
    parser.add_argument("--peers", default=",".join(PEERS),
                        help=f"comma-separated peers from {', '.join(PEERS)}, or 'none'")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if args.worker:
        worker(args.worker, cases[0], args.epochs)
        return 0
    peers = [] if args.peers == "none" else [p.strip() for p in args.peers.split(",")]
    unknown = [p for p in peers if p not in PEERS]
    if unknown or args.epochs < 1:
        parser.error(f"unknown peers {unknown}; choose from {', '.join(PEERS)}" if unknown
                     else "--epochs must be >= 1")

    config = blas_config()
    print("BLAS:", json.dumps(config, indent=None))
    rate = gemm_rate()
    print(f"float32 GEMM (1024x784 @ 784x1024): {rate:.0f} GFLOP/s")
    results: dict[str, dict] = {}
    for name in ["mlptrain", *peers]:
        results[name] = {}
        for case in cases:
            results[name][case] = run_one(name, case, args.epochs)
            r = results[name][case]
            shown = f"{r['median']:.3f} s/epoch" if "median" in r else r["error"]
            print(f"  {name:9s} {case:10s} {shown}", flush=True)
    floor = {}
    for c in cases:
        hidden, batch = (int(v) for v in c.split("x"))
        floor[c] = flops_per_epoch(hidden, 60000 // batch * batch) / (rate * 1e9)
    print(f"\nseconds per epoch, median of epochs 2..{args.epochs} "
          f"(OPENBLAS_CORETYPE={config['OPENBLAS_CORETYPE']}):\n")
    print(table(results, cases, floor))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"blas": config, "gemm_gflops": rate, "floor": floor, "epochs": args.epochs,
             "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
