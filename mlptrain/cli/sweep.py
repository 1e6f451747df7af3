"""`mlptrain sweep CONFIG`: a grid of runs, side by side, summarized. One library call:
mlptrain.sweep.run_sweep; this module parses options and renders the sweep's events."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape

from mlptrain.cli.common import (RunsDir, err, fail, hush_numeric_warnings, interrupted, out,
                                 plain, sigterm_as_ctrl_c)
from mlptrain.errors import MlptrainError
from mlptrain.text import plural


def sweep(
    config: Path = typer.Argument(..., metavar="CONFIG", help="A TOML config with a \\[sweep] table of axes, e.g. "
                                            "configs/mnist-capacity.toml."),
    grid: Optional[List[str]] = typer.Option(
        None, "--grid", "-g", metavar="SECTION.KEY=V1,V2,...",
        help="Add or replace an axis (repeatable), e.g. --grid train.seed=0,1,2."),
    set_: Optional[List[str]] = typer.Option(
        None, "--set", "-s", metavar="SECTION.KEY=VALUE",
        help="Override one config key in every trial (repeatable), e.g. --set train.epochs=2."),
    samples: int = typer.Option(0, "--samples", min=0, metavar="N",
                                help="Run N grid points drawn at random (0: the whole grid)."),
    sample_seed: int = typer.Option(0, "--sample-seed", min=0, metavar="N",
                                    help="Seed of the --samples draw."),
    workers: Optional[int] = typer.Option(
        None, "--workers", "-w", min=0, metavar="N",
        help="Worker processes (default: the number of cores, or for trials on a GPU one "
             "per GPU, in this process when there is one; 0: run in this process). BLAS "
             "threads per worker are set so workers x threads <= cores."),
    executor: str = typer.Option("local", "--executor", metavar="local|dask",
                                 help="Where trials run: local (processes here) or dask."),
    scheduler: Optional[str] = typer.Option(
        None, "--scheduler", metavar="ADDRESS",
        help="The Dask scheduler's address for --executor dask, e.g. tcp://10.0.0.5:8786."),
    formats: Optional[List[str]] = typer.Option(
        None, "--format", metavar="png|svg", help="Figure format: png (default) or svg; repeat for both."),
    group: str = typer.Option(
        "auto", "--group", metavar="auto|on|off",
        help="Train the trials that can share one step (same depth, recipe and data; any "
             "widths, seeds, learning rates, weight decay) as one batched model in this "
             "process. auto: on a GPU. Each trial is still its own run."),
    trial_figures: bool = typer.Option(
        False, "--trial-figures/--no-trial-figures",
        help="Also draw each trial's run figures as fit does (\\[report] plots), 0.4-1 s of "
             "a core per trial. Default: only the sweep's own figures; `mlptrain plot RUN` "
             "draws a trial's on demand."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the trials and exit."),
    runs_dir: Optional[Path] = RunsDir,
):
    """Run a grid of trials, each an ordinary run, and summarise them.

    Writes runs/sweeps/<sweep-id>/: the trial list, summary.csv, summary.json and the capacity
    figure. Each trial is a complete run without its figures (their config.toml says
    report.plots = false); `mlptrain plot RUN` draws a trial's, or --trial-figures draws
    every trial's as it ends. Ctrl-C or SIGTERM stops it, each running trial keeping its
    checkpoint. Running the same sweep again resumes it: completed trials are skipped,
    interrupted or stale ones (their process killed) continue from their checkpoints (a group's
    members together again where theirs end the same epoch), failed ones run again.
    """
    from mlptrain.cli.sweep_render import SweepRenderer
    from mlptrain.runs import RunStore
    from mlptrain.sweep import load_sweep, run_sweep

    hush_numeric_warnings()
    try:
        spec = load_sweep(config, set_ or [], grid or [], samples, sample_seed, trial_figures)
        figure_formats = _formats(formats or ["png"])
        if dry_run:
            _dry_run(spec, RunStore(runs_dir).root, group)
            return
        grouped = _wants_groups(group, [t.config for t in spec.trials])  # (too many: refused)
        runner = _executor(executor, workers, scheduler, _gpus([t.config for t in spec.trials]))
        if grouped:
            from mlptrain.sweep.grouping import GroupingExecutor

            runner = GroupingExecutor(runner)
        with SweepRenderer(out, runs_dir) as renderer, sigterm_as_ctrl_c():
            result = run_sweep(spec, RunStore(runs_dir).root, runner, renderer, figure_formats)
    except MlptrainError as exc:
        fail(exc)
    except KeyboardInterrupt:
        interrupted()
    failed = result.summary["counts"].get("failed", 0)
    if failed:
        where = escape(str(result.path / "trials.json"))  # a runs folder's name may hold [ ]
        err.print(f"[bold red]error:[/bold red] {failed} of {plural(len(spec.trials), 'trial')} failed "
                  f"(their errors are in {where}); run the same command "
                  "again to retry them.", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def _formats(formats: list[str]) -> tuple[str, ...]:
    from mlptrain.config import PLOT_FORMATS

    for fmt in formats:
        if fmt not in PLOT_FORMATS:
            raise typer.BadParameter(f"{fmt!r} is not one of {', '.join(PLOT_FORMATS)}.",
                                     param_hint="--format")
    return tuple(dict.fromkeys(formats))


def _wants_groups(mode: str, configs: list) -> bool:
    """Whether the trials train in groups (--group, checked here)."""
    from mlptrain.sweep.grouping import GROUP_MODES, wants_groups

    if mode not in GROUP_MODES:
        raise typer.BadParameter(f"{mode!r} is not one of {', '.join(GROUP_MODES)}.",
                                 param_hint="--group")
    return wants_groups(configs, mode)


def _dry_run(spec, runs_root, group: str) -> None:
    """The first trials and how many there are, then what running the sweep now would do; a
    sweep too large to run is shown (its first trials and the count) and says so."""
    from mlptrain.cli.sweep_render import DRY_RUN_ROWS, trials_table
    from mlptrain.sweep.grid import MAX_TRIALS, too_many

    out.print(trials_table(spec, out, DRY_RUN_ROWS))
    if spec.size > MAX_TRIALS:
        plain(out, f"running it would be refused: {too_many(spec)}")
        return
    _print_plan(spec, runs_root, _wants_groups(group, [t.config for t in spec.trials]))


def _print_plan(spec, runs_root, grouped: bool) -> None:
    """What a run would do now: the trials done earlier, those that continue, the groups."""
    from mlptrain.cli.sweep_render import grouping_text
    from mlptrain.sweep.grouping import device_limit, plan_groups
    from mlptrain.sweep.runner import pending_tasks

    tasks = pending_tasks(spec, runs_root)
    done, resumed = len(spec.trials) - len(tasks), [t for t in tasks if t.resume]
    if done:
        out.print(f"{plural(done, 'trial')} completed earlier: skipped", highlight=False)
    if resumed:
        verb = "continues from its checkpoint" if len(resumed) == 1 else \
            "continue from their checkpoints"
        out.print(f"{plural(len(resumed), 'trial')} {verb}: "
                  + ", ".join(f"#{t.index} ({t.resume})" for t in resumed), highlight=False)
    for t in tasks:
        if t.afresh:
            plain(out, f"trial #{t.index}: {t.afresh}: will start afresh")
    if grouped:
        out.print(grouping_text(*plan_groups(tasks, device_limit)), highlight=False)


def _gpus(configs: list) -> list[str]:
    """The GPUs the trials train on ([]: they train on the CPU)."""
    from mlptrain.sweep.grouping import trains_on_gpu, visible_gpus

    return visible_gpus() if trains_on_gpu(configs) else []


def _executor(name: str, workers: int | None, scheduler: str | None,
              gpus: Sequence[str] = ()):
    """--executor and --workers: where the trials run. By default trials on GPUs run one at a
    time on each (a worker per core would crowd one GPU with as many contexts and nets)."""
    from mlptrain.sweep import DaskExecutor, InlineExecutor, LocalExecutor

    if name == "dask":
        if workers is not None:
            raise typer.BadParameter("applies to --executor local; a Dask cluster has the "
                                     "workers its scheduler knows.", param_hint="--workers")
        if not scheduler:
            raise typer.BadParameter("--executor dask needs the scheduler's address, e.g. "
                                     "--scheduler tcp://10.0.0.5:8786.", param_hint="--scheduler")
        return DaskExecutor(scheduler)
    if name != "local":
        raise typer.BadParameter(f"{name!r} is not one of local, dask.",
                                 param_hint="--executor")
    if scheduler:
        raise typer.BadParameter("is for --executor dask; add --executor dask.",
                                 param_hint="--scheduler")
    if workers is None and gpus:
        return InlineExecutor() if len(gpus) == 1 else LocalExecutor(devices=list(gpus))
    return InlineExecutor() if workers == 0 else LocalExecutor(workers)
