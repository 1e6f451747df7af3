"""Where a grouped sweep's wall time goes: `mlptrain sweep configs/mnist-capacity.toml` run in
this process as the CLI runs it, with a clock at each phase of the group (issue 17).

    MLPTRAIN_RUNS_DIR=/tmp/timeline python benchmarks/sweep_timeline.py [--set ... --grid ...]

Prints each phase's start and end (seconds since this script started), then the time spent in
often-called parts, summed, and each member's epoch seconds, how its steps ran and its figures'
seconds. Extra arguments go to `mlptrain sweep` (default: `--set train.device=cuda`). cProfile
is no help here: it sees the main thread only, and the figure pool's threads confuse it (it
once charged 28 s to matplotlib's text measurement in a command that took 14 s).
"""

from __future__ import annotations

import functools
import glob
import json
import os
import sys
import time

START = time.perf_counter()


def mark(what: str) -> None:
    print(f"{time.perf_counter() - START:7.2f} s  {what}", flush=True)


def clocked(owner, name: str, label: str | None = None) -> None:
    """owner.name marks its start and end."""
    f = getattr(owner, name)

    @functools.wraps(f)
    def timed(*args, **kwargs):
        mark(f"{label or name} begins")
        try:
            return f(*args, **kwargs)
        finally:
            mark(f"{label or name} ends")

    setattr(owner, name, timed)


def tallied(totals: dict, owner, name: str, label: str) -> None:
    """owner.name adds its calls and seconds to totals[label]."""
    f = getattr(owner, name)

    @functools.wraps(f)
    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return f(*args, **kwargs)
        finally:
            calls, seconds = totals.get(label, (0, 0.0))
            totals[label] = (calls + 1, seconds + time.perf_counter() - start)

    setattr(owner, name, timed)


def main() -> None:
    import mlptrain.cli.app as app

    mark("imported the CLI")
    import mlptrain.experiment.group_data as gd
    import mlptrain.experiment.group_fit as gf
    import mlptrain.experiment.training as tr
    import mlptrain.loop as loop
    import mlptrain.model as model
    import mlptrain.sweep.grouping as grouping
    import mlptrain.sweep.runner as runner

    for owner, name, label in ((grouping, "plan_groups", None), (gf, "fit_group", None),
                               (gf, "_train", "training and scores"),
                               (gf, "GroupData", "data onto the device"),
                               (runner, "write_summary", "sweep summary")):
        clocked(owner, name, label)
    totals: dict = {}
    import mlptrain.experiment.setup as setup

    clocked(gf.FigureDrawers, "records", "waiting for the figures")
    for owner, name, label in ((tr, "complete_run", "members' runs written"),
                               (gf, "prepare", "members prepared (setup.prepare)"),
                               (setup, "load_dataset", "datasets loaded"),
                               (setup, "build_model", "members' models built"),
                               (gd, "_stacked", "data stacked onto the device"),
                               (gf, "stack_members", "the group's model built"),
                               (model.MLP, "workspace", "step buffers (MLP.workspace)"),
                               (tr, "run_reference", "predict's reference (image ranges)"),
                               (loop._Training, "_warm_up", "warm-up"),
                               (loop._Training, "_capture_steps", "capture (with warm-up)"),
                               (loop._Training, "_orders", "orders (shuffles)"),
                               (loop._Training, "_draw_ahead", "orders drawn ahead"),
                               (loop._Training, "_rates", "rates"),
                               (loop._Training, "_select", "select (rows, rates)"),
                               (loop._Training, "_eager_steps", "steps run eagerly"),
                               (loop._Training, "_report", "progress (waits for the device)"),
                               (loop._Training, "_end_epoch", "epoch records (validation)"),
                               (tr, "final_metrics", "scores"),
                               (loop._Training, "_captured_step", "train_step calls")):
        tallied(totals, owner, name, label)
    try:
        import mlptrain.backend.cupy_backend as cupy_backend
    except ImportError:  # no CuPy: a CPU sweep (pass --set train.device=cpu --group on)
        cupy_backend = None
    if cupy_backend is not None:
        clocked(cupy_backend.CupyBackend, "capture")
        tallied(totals, cupy_backend.CupyBackend, "asarray", "uploads (asarray)")
    end_epoch = loop._Training._end_epoch

    def epoch(self, number, begin):
        end_epoch(self, number, begin)
        mark(f"epoch {number} done")

    loop._Training._end_epoch = epoch
    sys.argv = ["mlptrain", "sweep", "configs/mnist-capacity.toml",
                *(sys.argv[1:] or ["--set", "train.device=cuda"])]
    try:
        app.main()
    except SystemExit as exc:
        mark(f"exit {exc.code}")
    for label, (calls, seconds) in sorted(totals.items(), key=lambda item: -item[1][1]):
        print(f"  {label:34s} {calls:6d} calls {seconds:8.3f} s")
    report(os.environ.get("MLPTRAIN_RUNS_DIR", "runs"))


def report(runs: str) -> None:
    summaries = [json.load(open(p)) for p in glob.glob(f"{runs}/2*/summary.json")]
    metrics = sorted(glob.glob(f"{runs}/2*/metrics.jsonl"))
    if not summaries or not metrics:
        return
    print("epoch seconds:", [round(json.loads(line)["seconds"], 3) for line in open(metrics[0])])
    print("steps ran as:", sorted({str(s.get("group", {}).get("steps")) for s in summaries}))
    drawn = sorted(s.get("figures", {}).get("seconds", 0.0) for s in summaries)
    print(f"figures per run: min {drawn[0]:.2f} s, median {drawn[len(drawn) // 2]:.2f} s, "
          f"max {drawn[-1]:.2f} s")


if __name__ == "__main__":  # the figure processes import this file again: run nothing then
    main()
