"""A capacity sweep on the GPU three ways, in one run: mlptrain grouped, mlptrain one trial at a
time, and a batched PyTorch reference (issue 17).

    python benchmarks/sweep.py [--epochs 5] [--big] [--only grouped,alone,torch] [--profile F]

Cases:
- `grouped`: `mlptrain sweep configs/mnist-capacity.toml --set train.device=cuda` (the 24 trials,
  widths 2..256 x 3 seeds, 5 epochs), as a user runs it; its trials share one batched model
  and, by default, draw no figures of their own (the sweep draws its capacity figure).
- `alone`: the same with `--group off --workers 0` and no figures: every trial trained in turn
  in one process (no process start or CUDA context per trial: the fairest one-at-a-time).
- `torch`: the same 24 nets as ONE PyTorch model: every net padded to width 256 with a unit
  mask, its own shuffle per epoch, one `torch.bmm` per layer, Nesterov SGD with each net's
  cosine rate; eager (no CUDA graph), float32, TF32 off.
- `--big`: 8 widths x 10 seeds x 3 learning rates = 240 models, grouped, to show how the cost
  grows with the number of models (per-model time against `alone`'s per-trial time; neither
  draws figures).

Reported: wall seconds of each command (kernels compiled and cached beforehand by a warm-up),
the training seconds (the sum of epoch seconds a run records: training plus its validation
pass), and the mean test accuracy per width. Run on the GPU machine from the repository root.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "mnist-capacity.toml"
WIDTHS = [2, 4, 8, 16, 32, 64, 128, 256]


def sweep(runs: Path, *extra: str, profile: Path | None = None) -> dict:
    """Runs `mlptrain sweep` as a user would; returns wall seconds, training seconds, accuracy
    per width, trials. With `profile`, under cProfile, its statistics saved there."""
    env = dict(os.environ, MLPTRAIN_RUNS_DIR=str(runs))
    python = [sys.executable] + (["-m", "cProfile", "-o", str(profile)] if profile else [])
    command = [*python, "-m", "mlptrain", "sweep", str(CONFIG),
               "--set", "train.device=cuda", *extra]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    summaries = [json.loads(p.read_text()) for p in runs.glob("*/summary.json")]
    by_width: dict[int, list[float]] = {}
    training = []
    for s in summaries:
        by_width.setdefault(s["model"]["sizes"][1], []).append(s["final"]["test_accuracy"])
        training.append(s["timing"]["training_seconds"])
    grouped = any(s.get("group") for s in summaries)
    # a group's members share their epochs: its training time is one member's, not the sum
    train_s = max(training) if grouped else sum(training)
    return {"wall": wall, "training": train_s, "trials": len(summaries),
            "accuracy": {w: statistics.mean(a) for w, a in sorted(by_width.items())}}


def torch_reference(epochs: int, seeds: int = 3, device: str = "cuda") -> dict:
    """The 24 nets as one batched PyTorch model (see the module's docstring)."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    start = time.perf_counter()
    sys.path.insert(0, str(ROOT))
    from mlptrain.data.idx import read_idx

    images, _ = read_idx(ROOT / "data/mnist/train-images-idx3-ubyte.gz")
    labels, _ = read_idx(ROOT / "data/mnist/train-labels-idx1-ubyte.gz")
    timages, _ = read_idx(ROOT / "data/mnist/t10k-images-idx3-ubyte.gz")
    tlabels, _ = read_idx(ROOT / "data/mnist/t10k-labels-idx1-ubyte.gz")
    dev = torch.device(device)
    X = torch.tensor(images.reshape(len(images), -1) / 255.0, dtype=torch.float32, device=dev)
    y = torch.tensor(labels.astype(np.int64), device=dev)
    Xt = torch.tensor(timages.reshape(len(timages), -1) / 255.0, dtype=torch.float32, device=dev)
    yt = torch.tensor(tlabels.astype(np.int64), device=dev)
    n_train = 54_000  # val_fraction 0.1, as the config
    widths = [w for w in WIDTHS for _ in range(seeds)]
    G, H, B, lr0, mu = len(widths), max(widths), 128, 0.1, 0.9
    gen = torch.Generator(device="cpu").manual_seed(0)
    mask = torch.zeros(G, 1, H, device=dev)
    W0, W1 = torch.zeros(G, 784, H, device=dev), torch.zeros(G, H, 10, device=dev)
    for g, w in enumerate(widths):
        a0, a1 = math.sqrt(6 / 784), math.sqrt(6 / w)
        W0[g, :, :w] = (torch.rand(784, w, generator=gen) * 2 - 1).to(dev) * a0
        W1[g, :w, :] = (torch.rand(w, 10, generator=gen) * 2 - 1).to(dev) * a1
        mask[g, 0, :w] = 1
    b0, b1 = torch.zeros(G, 1, H, device=dev), torch.zeros(G, 1, 10, device=dev)
    params = [W0, b0, W1, b1]
    for p in params:
        p.requires_grad_(True)
    velocity = [torch.zeros_like(p) for p in params]
    steps = math.ceil(n_train / B)
    total = steps * epochs
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    sync()
    setup = time.perf_counter() - start
    train_start = time.perf_counter()
    step = 0
    for _ in range(epochs):
        order = torch.stack([torch.randperm(n_train, device=dev) for _ in range(G)])
        for s in range(steps):
            idx = order[:, s * B:(s + 1) * B]
            x, t = X[idx], y[idx]  # (G, b, 784), (G, b)
            h = torch.relu(torch.baddbmm(b0, x, W0)) * mask
            logits = torch.baddbmm(b1, h, W1)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 10), t.reshape(-1),
                                                     reduction="sum") / idx.shape[1]
            grads = torch.autograd.grad(loss, params)
            rate = lr0 * 0.5 * (1 + math.cos(math.pi * min(step / max(total - 1, 1), 1.0)))
            with torch.no_grad():
                for p, g_, v in zip(params, grads, velocity):
                    v.mul_(mu).add_(g_)
                    p.sub_(rate * (g_ + mu * v))
            step += 1
    sync()
    training = time.perf_counter() - train_start
    with torch.no_grad():
        h = torch.relu(torch.baddbmm(b0, Xt.expand(G, -1, -1), W0)) * mask
        correct = (torch.baddbmm(b1, h, W1).argmax(2) == yt).float().mean(1).cpu().numpy()
    accuracy = {w: float(np.mean(correct[[g for g, x in enumerate(widths) if x == w]]))
                for w in WIDTHS}
    return {"wall": time.perf_counter() - start, "training": training, "setup": setup,
            "trials": G, "accuracy": accuracy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--big", action="store_true", help="also the 240-model grid")
    parser.add_argument("--only", default="grouped,alone,torch")
    parser.add_argument("--profile", type=Path, metavar="FILE",
                        help="also run the grouped case under cProfile, save its statistics "
                             "to FILE and print them (the timed case runs without it). cProfile "
                             "sees the main thread only and can charge a thread's waits to "
                             "whatever it interrupts: for where the wall goes, use "
                             "benchmarks/sweep_timeline.py")
    args = parser.parse_args()
    cases = args.only.split(",")
    results = {}
    # each case's row as soon as it is measured (a long run cut short still shows the rest)
    print(f"| case | trials | wall s | training s | per trial (wall) | "
          f"{' | '.join(f'w{w}' for w in WIDTHS)} |")
    print(f"|---|---|---|---|---|{'---|' * len(WIDTHS)}", flush=True)

    def record(name: str, r: dict) -> None:
        results[name] = r
        acc = " | ".join(f"{100 * r['accuracy'].get(w, float('nan')):.1f}" for w in WIDTHS)
        print(f"| {name} | {r['trials']} | {r['wall']:.2f} | {r['training']:.2f} | "
              f"{r['wall'] / r['trials']:.3f} | {acc} |", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # warm-up: compiles and caches the kernels of both paths, and matplotlib's font cache
        # (built once per machine), so no case pays for them
        for path in (["--group", "on"], ["--group", "off", "--workers", "0"]):
            sweep(tmp / f"warm{path[1]}", "--set", "train.epochs=1", "--grid", "model.hidden=8,16",
                  "--grid", "train.seed=0", *path)
        epochs = ["--set", f"train.epochs={args.epochs}"]
        if "grouped" in cases:
            record("mlptrain grouped", sweep(tmp / "grouped", *epochs))
            if args.profile:
                sweep(tmp / "profiled", *epochs, profile=args.profile)
                import pstats

                pstats.Stats(str(args.profile)).sort_stats("cumulative").print_stats(40)
        if "torch" in cases:
            try:
                record("PyTorch batched (eager)", torch_reference(args.epochs))
            except ImportError as exc:
                print(f"PyTorch reference skipped: {exc}")
        if args.big:
            record("mlptrain grouped, 240 models", sweep(
                tmp / "big", *epochs, "--grid", "train.seed=0,1,2,3,4,5,6,7,8,9",
                "--grid", "optimizer.lr=0.05,0.1,0.2", "--set", "report.plots=false"))
        if "alone" in cases:
            # figures off, as in the 240-model case that it is compared with per model
            record("mlptrain one at a time (no figures)", sweep(
                tmp / "alone", *epochs, "--group", "off", "--workers", "0",
                "--set", "report.plots=false"))
    print(json.dumps(results, default=float))

if __name__ == "__main__":
    main()
