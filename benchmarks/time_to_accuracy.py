"""Seconds from `mlptrain fit` to an MNIST test accuracy, against PyTorch for the same network
(issue 31's time-to-accuracy table).

    python benchmarks/time_to_accuracy.py [--targets 98.0=configs/mnist.toml,...]
        [--torch graph,graph-tf32,eager,compile | none] [--device cuda] [--out PATH]

Each target is a test accuracy and the shipped config meant to reach it (`@N` after the
config: train.epochs=N). Every contender is a fresh process timed from its start to its exit,
so Python's imports, reading MNIST, the CUDA context and kernel compiles count, as they do for
a user:
- mlptrain, kernel cache cold: `mlptrain fit CONFIG --set train.device=cuda` with an empty
  CUPY_CACHE_DIR (every kernel compiled), then the same command with that cache (warm);
- PyTorch (benchmarks/torch_recipes.py: the config read by mlptrain, the same network, step,
  schedule and training split), as a CUDA graph with TF32 off and on, and whatever else
  `--torch` names.
Figures are off (`report.plots = false`): the test accuracy is known before they are drawn.
A row says whether its run reached the target: the target counts only for a run that did.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = "98.0=configs/mnist.toml,99.0=configs/mnist-best.toml,99.5=configs/mnist-deep.toml@300"
TORCH_MODES = {"graph": ("graph", False), "graph-tf32": ("graph", True),
               "eager": ("eager", False), "compile": ("compile", False)}


def parse_targets(text: str) -> list[tuple[float, str, list[str]]]:
    """[(accuracy %, config, overrides)] from `98.0=configs/mnist.toml,99.5=...@300`."""
    found = []
    for item in filter(None, text.split(",")):
        accuracy, _, config = item.partition("=")
        config, _, epochs = config.partition("@")
        found.append((float(accuracy), config, [f"train.epochs={epochs}"] if epochs else []))
    return found


def timed(command: list[str], env: dict | None = None) -> tuple[float, str, str]:
    """(seconds from start to exit, stdout, the tail of stderr) of a fresh process."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})})
    seconds = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"exit {done.returncode}: {done.stderr.strip()[-300:]}")
    return seconds, done.stdout, done.stderr[-300:]


def run_mlptrain(config: str, overrides: list[str], device: str, cache: str) -> dict:
    sets = [f"train.device={device}", "report.plots=false", *overrides]
    with tempfile.TemporaryDirectory() as runs:
        command = [sys.executable, "-m", "mlptrain", "fit", config, "--runs-dir", runs, "-q",
                   "--json", *[a for s in sets for a in ("--set", s)]]
        seconds, out, _ = timed(command, {"CUPY_CACHE_DIR": cache})
    summary = json.loads(out)
    return {"seconds": seconds, "accuracy": summary["final"]["test_accuracy"],
            "training": summary["timing"]["training_seconds"], "path": summary.get("path", "")}


def run_torch(config: str, overrides: list[str], mode: str) -> dict:
    command = [sys.executable, __file__, "--worker", mode, config, *overrides]
    seconds, out, _ = timed(command)
    found = json.loads(out.strip().splitlines()[-1])
    return {"seconds": seconds, "accuracy": found["test_accuracy"],
            "training": sum(found["epochs"]), "path": mode}


def worker(mode: str, config: str, overrides: list[str]) -> None:
    """One PyTorch contender, in its own process: prints its result as one JSON line."""
    sys.path.insert(0, str(Path(__file__).parent))
    from torch_recipes import train

    kind, tf32 = TORCH_MODES[mode]
    print(json.dumps(train(config, overrides, kind, tf32)))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default=TARGETS)
    parser.add_argument("--torch", default="graph,graph-tf32",
                        help=f"PyTorch contenders ({', '.join(TORCH_MODES)}), or none")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default="", help="also write the table here (markdown)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    if args.worker:
        worker(args.worker, rest[0], rest[1:])
        return
    modes = [] if args.torch == "none" else args.torch.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for target, config, overrides in parse_targets(args.targets):
            contenders = [("mlptrain, kernel cache cold",
                           lambda: run_mlptrain(config, overrides, args.device, cache)),
                          ("mlptrain, kernel cache warm",
                           lambda: run_mlptrain(config, overrides, args.device, cache))]
            contenders += [(f"PyTorch {m}", lambda m=m: run_torch(config, overrides, m))
                           for m in modes]
            for name, run in contenders:
                if name.endswith("cold"):  # each target's first run compiles its own kernels
                    shutil.rmtree(cache)
                    os.mkdir(cache)
                try:
                    r = run()
                except Exception as exc:  # noqa: BLE001 - a contender that fails keeps its row
                    r = {"error": f"{type(exc).__name__}: {exc}"[:200]}
                rows.append((target, " ".join([config, *overrides]), name, r))
                print(json.dumps({"target": target, "config": config, "overrides": overrides,
                                  "contender": name, **r}), flush=True)
    table = render(rows)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")


def render(rows) -> str:
    lines = ["| target | config | contender | seconds to exit | training s | test accuracy "
             "| reached |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for target, config, name, r in rows:
        if "error" in r:
            lines.append(f"| {target}% | {config} | {name} | - | - | - | {r['error']} |")
            continue
        reached = "yes" if 100 * r["accuracy"] >= target else "**no**"
        lines.append(f"| {target}% | {config} | {name} | {r['seconds']:.2f} | "
                     f"{r['training']:.2f} | {100 * r['accuracy']:.2f}% | {reached} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
