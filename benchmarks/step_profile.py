"""Where one training step of a config's epoch graph spends its time, launch by launch (GPU).

    python benchmarks/step_profile.py configs/mnist-deep.toml [--set KEY=VALUE ...] [--reps 50]

Runs `mlptrain fit CONFIG --device cuda` in this process for one epoch (so the products are
tuned exactly as a user's run tunes them), then times each launch of one full-batch step as a
graph of `--reps` back-to-back copies (EpochGraph.profile) and prints them with each product's
rate (TFLOP/s of the fp32 arithmetic it stands for), grouped and summed by kind. Launches that
fork off the main stream (weight gradients) overlap in a real step, so the sum is an upper
bound of the step. Run on the GPU machine from the repository root.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections import defaultdict


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--reps", type=int, default=50)
    args = parser.parse_args(argv)

    import mlptrain.backend.cupy_backend as cupy_backend
    from mlptrain.cli.app import app

    runners = []
    built = cupy_backend.CupyBackend.epoch_runner

    def keep(self, *a, **k):
        runner = built(self, *a, **k)
        runners.append(runner)
        return runner

    cupy_backend.CupyBackend.epoch_runner = keep
    with tempfile.TemporaryDirectory() as runs:
        command = ["fit", args.config, "--device", "cuda", "--runs-dir", runs, "--progress",
                   "never", "--set", "train.epochs=1", "--set", "report.plots=false",
                   "--set", "train.checkpoint_epochs=0",
                   "--set", "schedule.warmup_epochs=0"]
        for item in args.set:
            command += ["--set", item]
        try:
            app(command, standalone_mode=False)
        except SystemExit as exc:
            if exc.code:
                raise
    if not runners:
        sys.exit("the run took the eager path: nothing to profile")
    runner = runners[-1]
    timings = runner.profile(args.reps)
    groups = defaultdict(float)
    total = 0.0
    print(f"one step of {args.config}, batch {runner.batch}, {runner.steps} steps an epoch")
    for label, us in timings:
        total += us
        shape = re.search(r"(\d+)x(\d+)x(\d+)", label)
        rate = ""
        if shape:
            m, n, k = map(int, shape.groups())
            rate = f"{2 * m * n * k / us / 1e6:7.1f} TFLOP/s"
        kind = re.sub(r" \d.*", "", label) if shape else label.split(" ")[0]
        groups[kind] += us
        print(f"  {label:55s} {us:9.2f} us {rate}")
    print(f"sum {total:.1f} us; x {runner.steps} steps = {total * runner.steps / 1e6:.3f} s "
          "per epoch of launches timed apart")
    for kind, us in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:20s} {us:9.1f} us  {100 * us / total:5.1f}%")


if __name__ == "__main__":
    main()
