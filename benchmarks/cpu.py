"""CPU speed: mlptrain's NumPy backend against scikit-learn, PyTorch and JAX on the same work.

Synthetic cases `HIDDENxBATCH` (issue 7): MNIST's 60,000 training images in float32, a 784-H-10
ReLU MLP, softmax cross-entropy, plain SGD (lr 0.1), reshuffled every epoch, full batches only
(the last partial batch is dropped for everyone). Recipe cases `mnist` and `mnist-best`
(issue 16): configs/mnist.toml and configs/mnist-best.toml run by `mlptrain fit` for a few
epochs, and the same recipes in PyTorch and JAX (see cpu_recipes.py). Reported: median seconds
per epoch over epochs 2..N, and the arithmetic floor at the float32 GEMM rate measured in the
same run.

    python benchmarks/cpu.py                          # every case and peer; saves the table
    python benchmarks/cpu.py --cases 128x64,mnist --epochs 4 --peers torch --repeats 3
    env -u OPENBLAS_CORETYPE python benchmarks/cpu.py # let OpenBLAS pick its kernels

Each contender runs in its own subprocess with this process's environment, unchanged, so one
library's thread pools cannot slow another's. With --repeats R every contender runs R times,
round-robin, and the table shows the median over repeats (a shared machine's noise moves all
contenders alike). Peers are optional: one that does not import is reported as such. Run from
the repository root (or with mlptrain installed).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cpu_recipes  # noqa: E402 - this folder is not a package

REPO = Path(__file__).resolve().parents[1]
CASES = ("128x64", "128x1024", "1024x1024", "mnist", "mnist-best")  # HIDDENxBATCH or recipe
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
    ledger = loop.Member(loop.TrainState(), np.random.default_rng(1), step.schedule)
    loop.train_members(eager, train, None, [ledger])
    history = ledger.state.history
    return [r["seconds"] for r in history], history[-1]["train_accuracy"]


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
LABELS = {"mlptrain": "mlptrain", "sklearn": "scikit-learn", "torch": "PyTorch eager",
          "jax_step": "JAX jit/step", "jax_scan": "JAX jit+scan"}


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
    try:
        if cpu_recipes.is_recipe(case):
            if name not in cpu_recipes.CONTENDERS:
                raise NotImplementedError(f"{name} runs the synthetic cases only")
            times, accuracy = cpu_recipes.CONTENDERS[name](case, epochs)
        else:
            hidden, batch = (int(v) for v in case.split("x"))
            X, y = load_data(batch)
            times, accuracy = CONTENDERS[name](hidden, batch, epochs, X, y)
    except ImportError as e:
        print(json.dumps({"error": f"not importable: {e.name or e}"}))
        return
    except NotImplementedError as e:
        print(json.dumps({"error": "-", "why": str(e)}))
        return
    print(json.dumps({"times": times, "accuracy": accuracy}))


def run_one(name: str, case: str, epochs: int, compare: str | None = None) -> dict:
    """One contender on one case in a fresh process. name "mlptrain@DIR" runs the mlptrain
    found in DIR (another checkout: the same work, side by side with this one)."""
    worker_name, env = name, None
    if name.startswith("mlptrain@"):
        worker_name, env = "mlptrain", {**os.environ, "PYTHONPATH": compare}
    cmd = [sys.executable, __file__, "--worker", worker_name, "--cases", case,
           "--epochs", str(epochs)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    result = json.loads(lines[-1])
    if "times" in result:
        result["median"] = statistics.median(result["times"][1:] or result["times"])
    return result


def combine(runs: list[dict]) -> dict:
    """One contender's repeats on one case: the median of their per-run medians."""
    good = [r for r in runs if "median" in r]
    if not good:
        return runs[-1]
    return {"median": statistics.median(r["median"] for r in good),
            "medians": [r["median"] for r in good], "accuracy": good[-1].get("accuracy")}


def case_label(case: str) -> str:
    if cpu_recipes.is_recipe(case):
        return f"{case} recipe"
    hidden, batch = case.split("x")
    return f"H={hidden}, B={batch}"


def table(results: dict, cases: list[str], floor: dict) -> str:
    """One row per case: every contender's seconds per epoch, mlptrain against the best peer
    (> 1: mlptrain is ahead), against another checkout's mlptrain if any, and the floor."""
    others = [n for n in results if n != "mlptrain"]
    peers = [n for n in others if not n.startswith("mlptrain@")]
    compared = [n for n in others if n.startswith("mlptrain@")]
    rows = [["case", LABELS["mlptrain"], *[LABELS[n] for n in others], "best peer / mlptrain",
             *[f"{n} / mlptrain" for n in compared], "floor", "mlptrain / floor"]]
    for c in cases:
        mine = results["mlptrain"][c].get("median")
        cells = [case_label(c)]
        for name in ["mlptrain", *others]:
            r = results[name][c]
            cells.append(f"{r['median']:.3f}" if "median" in r else r.get("error", "-")[:30])
        best = min((results[n][c]["median"] for n in peers if "median" in results[n][c]),
                   default=None)
        for theirs in [best, *[results[n][c].get("median") for n in compared]]:
            cells.append(f"{theirs / mine:.2f}x" if theirs and mine else "-")
        cells.append(f"{floor[c]:.3f}")
        cells.append(f"{mine / floor[c]:.2f}x" if mine else "-")
        rows.append(cells)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(r, widths)) + " |" for r in rows]
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines)


def case_floor(case: str, rate: float) -> float:
    if cpu_recipes.is_recipe(case):
        return cpu_recipes.flops_per_epoch(case) / (rate * 1e9)
    hidden, batch = (int(v) for v in case.split("x"))
    return flops_per_epoch(hidden, 60000 // batch * batch) / (rate * 1e9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default=",".join(CASES),
                        help="comma-separated HIDDENxBATCH cases or recipes (mnist, mnist-best)"
                             " (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=5,
                        help="epochs per contender on a synthetic case; the median skips the "
                             "first (default 5)")
    parser.add_argument("--recipe-epochs", type=int, default=3,
                        help="epochs per contender on a recipe (default 3)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of every contender, round-robin; the median is shown")
    parser.add_argument("--peers", default=",".join(PEERS),
                        help=f"comma-separated peers from {', '.join(PEERS)}, or 'none'")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    parser.add_argument("--out", metavar="PATH",
                        help="where to save the table (default: benchmarks/results/"
                             "cpu-<date>-<time>.md; 'none' saves nothing)")
    parser.add_argument("--compare", metavar="DIR",
                        help="also run the mlptrain of another checkout (e.g. main's), "
                             "round-robin with this one; shown as a peer-like row")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if args.worker:
        worker(args.worker, cases[0], args.epochs)
        return 0
    peers = [] if args.peers == "none" else [p.strip() for p in args.peers.split(",")]
    unknown = [p for p in peers if p not in PEERS]
    bad_cases = [c for c in cases if not cpu_recipes.is_recipe(c)
                 and not (len(c.split("x")) == 2 and all(v.isdigit() for v in c.split("x")))]
    if unknown or bad_cases or min(args.epochs, args.recipe_epochs, args.repeats) < 1:
        parser.error(f"unknown peers {unknown}; choose from {', '.join(PEERS)}" if unknown
                     else f"unknown cases {bad_cases}: HIDDENxBATCH, mnist or mnist-best"
                     if bad_cases else "--epochs, --recipe-epochs and --repeats must be >= 1")

    config = blas_config()
    print("BLAS:", json.dumps(config, indent=None))
    rate = gemm_rate()
    print(f"float32 GEMM (1024x784 @ 784x1024): {rate:.0f} GFLOP/s", flush=True)
    names = ["mlptrain", *peers]
    if args.compare:
        other = f"mlptrain@{Path(args.compare).name}"
        LABELS[other] = other
        names.insert(1, other)
    runs: dict[str, dict[str, list]] = {n: {c: [] for c in cases} for n in names}
    for repeat in range(args.repeats):
        for case in cases:
            epochs = args.recipe_epochs if cpu_recipes.is_recipe(case) else args.epochs
            for name in names:
                r = run_one(name, case, epochs, args.compare)
                if r.get("error") == "-":  # this peer does not run this case
                    continue
                runs[name][case].append(r)
                shown = f"{r['median']:.3f} s/epoch" if "median" in r else r["error"]
                print(f"  [{repeat + 1}/{args.repeats}] {name:9s} {case:10s} {shown}",
                      flush=True)
    results = {n: {c: combine(runs[n][c]) if runs[n][c] else {"error": "-"} for c in cases}
               for n in names}
    rate_after = gemm_rate()  # the machine's state can change during a long run: show both
    floor = {c: case_floor(c, max(rate, rate_after)) for c in cases}
    heading = (f"seconds per epoch, median of epochs 2..N (synthetic N={args.epochs}, recipes "
               f"N={args.recipe_epochs}), median of {args.repeats} run(s); floor at "
               f"{max(rate, rate_after):.0f} GFLOP/s (float32 GEMM before/after: {rate:.0f}/"
               f"{rate_after:.0f}); OPENBLAS_CORETYPE={config['OPENBLAS_CORETYPE']}")
    text = f"{heading}\n\n{table(results, cases, floor)}\n"
    print(f"\n{text}")
    accuracies = {n: {c: results[n][c].get("accuracy") for c in cases
                      if cpu_recipes.is_recipe(c) and results[n][c].get("accuracy") is not None}
                  for n in names}
    if any(accuracies.values()):
        print("validation accuracy after the recipes' epochs:", json.dumps(accuracies))
    if args.out != "none":
        out = Path(args.out) if args.out else \
            REPO / "benchmarks" / "results" / f"cpu-{time.strftime('%Y-%m-%d-%H%M%S')}.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(f"`python {' '.join(['benchmarks/cpu.py', *(argv or sys.argv[1:])])}`"
                       f"\n\nBLAS: {json.dumps(config)}\n\n{text}\n"
                       f"accuracy: {json.dumps(accuracies)}\n")
        print(f"saved to {out}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"blas": config, "gemm_gflops": [rate, rate_after], "floor": floor,
             "epochs": args.epochs, "recipe_epochs": args.recipe_epochs, "runs": runs,
             "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
