"""Which trials of a sweep train together as one model of G members, and the executor for it.

Trials share a group when one step of a model of G members (model.py) can train them all: the
same data, depth and declared step (step.py), less what each member keeps for itself: its
width (`model.hidden`, padded), seed (`train.seed`: init, split, shuffle), learning rate and
weight decay. What the group's step does not execute (step.member_blockers, from the tables:
dropout, augmentation, max-norm, momentum cycling, an optimizer or loss without a grouped
update) and starting weights keep a trial out of groups (it runs alone, as before). Early
stopping is per member (a stopped one freezes). This module is the one place that decides it,
from the declared step.

On a GPU a capacity sweep's nets are far too small to fill the device one at a time, and each
process of its own pays for a CUDA context, a data copy and kernel set-up; stacked, the whole
grid trains in about the time of one trial (issue 17).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Any

from mlptrain import memory
from mlptrain.config import config_folder
from mlptrain.data import IMAGE_SOURCES, POOLED_SOURCES, weighted
from mlptrain.step import member_blockers, shared_part
from mlptrain.sweep.trial import (GroupTask, TrialFinished, TrialProgress, TrialTask,
                                  trial_started, worker_info)

GROUP_MODES = ("auto", "on", "off")  # --group: auto = on a GPU
PROGRESS_SECONDS = 0.25  # a group reports its members' progress at most this often
MEMORY_SHARE = 0.5  # of the device's free memory a group may plan to use


def planned_step(config):
    """The Step a trial's config declares (step.build_step), from the shape of its data read
    without loading it; None when the config builds none (the trial then says why, alone)."""
    from mlptrain.errors import MlptrainError
    from mlptrain.step import build_step

    near = config_folder(config)
    samples, features, classes = memory.data_shape(config.data, near)
    side = math.isqrt(features)  # an image dataset's samples are square images
    shape = (side, side) if config.data.dataset in IMAGE_SOURCES else (features,)
    train = max(1, int(samples * (1 - config.data.val_fraction)))  # only compared, never used
    try:
        return build_step(config, shape, classes, train, _planned_task(config),
                          weighted=weighted(config.data, near))
    except MlptrainError:
        return None


def _planned_task(config) -> str:
    """The data's task as far as the config tells it without reading the target: [data]
    task, else what the loss fits (an `auto` loss on an `auto` task plans as classes; the
    group's members share their data, so they resolve alike once it is read)."""
    from mlptrain import nn

    if config.data.task != "auto":
        return config.data.task
    loss = nn.LOSSES.get(config.model.loss)
    return loss.task if loss else "classification"


def group_blockers(config) -> list[str]:
    """Why a trial's config cannot join a group (empty: it can): what its declared step does
    that a group's step does not (step.member_blockers), or starting weights."""
    step = planned_step(config)
    if step is None:
        return ["a config error (the trial, run alone, names it)"]
    return member_blockers(step) + (["starting weights"] if config.model.weights else [])


def group_key(config) -> tuple:
    """Equal for configs that one batched step can train together: the same data, depth,
    device and declared step, less what each member keeps for itself (step.shared_part;
    widths are padded to the widest)."""
    data = repr(sorted(config.to_dict()["data"].items()))
    return data, len(config.model.hidden), config.train.device, shared_part(planned_step(config))


def plan_groups(tasks: list[TrialTask], limit: Callable[[list[TrialTask]], int]
                ) -> tuple[list[list[TrialTask]], list[TrialTask]]:
    """(groups of two or more tasks, tasks that run alone). `limit(tasks)` is how many such
    tasks fit on the device at once: a larger set is cut into several groups."""
    by_key: dict[tuple, list[TrialTask]] = {}
    alone = []
    for task in tasks:
        if task.resumes_inside_an_epoch or group_blockers(task.config):
            alone.append(task)
        else:  # resumed members share a group with those stopped at the same epoch's end
            key = (group_key(task.config), task.resume_epoch or 0)
            by_key.setdefault(key, []).append(task)
    groups = []
    for members in by_key.values():
        size = max(1, limit(members))
        for start in range(0, len(members), size):
            part = members[start:start + size]
            if len(part) > 1:
                groups.append(part)
            else:  # a group of one gains nothing: it runs as an ordinary trial
                alone.extend(part)
    return groups, sorted(alone, key=lambda t: t.index)


def device_limit(tasks: list[TrialTask]) -> int:
    """How many of these (groupable, same-key) tasks fit in MEMORY_SHARE of the free memory of
    their device, each counted at the group's widest model."""
    from mlptrain.backend import get_backend

    config = tasks[0].config
    ops = get_backend(config.train.device)
    free = ops.free_bytes() if ops.device != "cpu" else memory.host_available()
    if free is None:
        return len(tasks)
    widest = copy.deepcopy(config)
    widths = [t.config.model.hidden for t in tasks]
    widest.model.hidden = [max(w[i] for w in widths) for i in range(len(widths[0]))]
    samples, features, classes = memory.data_shape(config.data, config_folder(config))
    need = memory.estimate(widest, samples, features, classes)
    # a group uploads each pool once: one for a pooled source, else one per seed's split
    pools = 1 if config.data.dataset in POOLED_SOURCES else len({t.config.train.seed
                                                                  for t in tasks})
    per_model = need.parameters + need.activations
    room = MEMORY_SHARE * free - pools * need.data_device
    return max(1, int(room // per_model))


def wants_groups(configs: list, mode: str) -> bool:
    """--group: `on` groups on any device, `off` never, `auto` when the trials train on a GPU
    (on a CPU a batched product is no faster than its parts, and padding costs)."""
    if mode != "auto" or not configs:
        return mode == "on"
    return trains_on_gpu(configs)


def trains_on_gpu(configs: list) -> bool:
    """Whether the trials' device (the first's: a sweep's trials share it) is a GPU here."""
    device = configs[0].train.device if configs else "cpu"
    if device == "cpu":
        return False
    from mlptrain.backend import get_backend
    from mlptrain.errors import MlptrainError

    try:
        return get_backend(device).device != "cpu"
    except MlptrainError:
        return False  # `cuda` without a GPU: each trial reports that error itself


def group_cost(group: list[TrialTask]) -> int:
    """A group's work, roughly: members x the widest member's units x epochs."""
    widest = max(sum(t.config.model.hidden) for t in group)
    return len(group) * widest * group[0].config.train.epochs


class GroupingExecutor:
    """Trains the tasks that can share a step as groups; hands the rest to `rest`, another
    executor. With one GPU (or none: `--group on` on a CPU) the groups train one after another
    in this process; with several, one worker process per GPU, pinned to it, takes the next
    group whenever it is free, the costliest groups first (so the GPUs finish close together).
    On Dask (an executor that `takes_groups`) each group is one task for one worker.
    `devices`: the GPUs to use, as CUDA_VISIBLE_DEVICES names them (default: every one)."""

    def __init__(self, rest, limit: Callable[[list[TrialTask]], int] = device_limit,
                 devices: list[str] | None = None):
        self.rest, self.limit = rest, limit
        self.devices = visible_gpus() if devices is None else list(devices)

    def describe(self) -> str:
        if getattr(self.rest, "takes_groups", False):
            return f"groups of trials, each a task of the {self.rest.describe()}"
        where = f"{len(self.devices)} GPU workers" if len(self.devices) > 1 else "this process"
        return f"groups of trials in {where}; trials that cannot share a step: " \
               f"{self.rest.describe()}"

    def run(self, tasks: list[TrialTask], report: Callable[[Any], None]) -> None:
        groups, alone = plan_groups(tasks, self.limit)
        groups.sort(key=group_cost, reverse=True)
        if getattr(self.rest, "takes_groups", False):  # Dask: a group is one worker's task
            self.rest.run([GroupTask(g) for g in groups] + alone, report)
            return
        if len(self.devices) > 1 and len(groups) > 1:
            from mlptrain.sweep.executors import LocalExecutor

            LocalExecutor(len(self.devices)).run([GroupTask(g) for g in groups], report,
                                                 devices=self.devices)
        else:
            for group in groups:
                run_group(group, report)
        if alone:
            self.rest.run(alone, report)


def visible_gpus() -> list[str]:
    """The GPUs this process may use, by the names CUDA_VISIBLE_DEVICES gives them ([] with
    none, or without CuPy)."""
    import os

    from mlptrain.backend import gpu_count

    count = gpu_count()
    listed = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return listed[:count] if listed else [str(i) for i in range(count)]


def run_group_task(task: GroupTask, report: Callable[[Any], None],
                   should_stop: Callable[[], bool]) -> None:
    """run_group as a worker process runs it: a stop ends it quietly (its members have been
    reported interrupted; the worker takes no more work)."""
    try:
        run_group(task.tasks, report, should_stop)
    except KeyboardInterrupt:
        pass


def run_group(tasks: list[TrialTask], report: Callable[[Any], None],
              should_stop: Callable[[], bool] = lambda: False) -> None:
    """Fits one group; reports each member as a trial (TrialStarted, TrialProgress,
    TrialFinished), like a worker running it alone; members with `resume` go on in their
    interrupted runs. Ctrl-C marks the members interrupted, checkpoints them and raises
    KeyboardInterrupt; so does should_stop, asked at each progress report and honoured at the
    next epoch's start (or, on the eager path, the next report), so that a device's captured
    epoch ends first and the checkpoints end an epoch (a group can resume from those)."""
    from mlptrain.errors import MlptrainError
    from mlptrain.experiment import RunFinished, RunStarted
    from mlptrain.experiment.group_fit import MemberRefused, fit_group
    from mlptrain.loop import StepsDone, StopFlag
    from mlptrain.runs import RunStore

    start = time.perf_counter()
    started: dict[int, tuple[str, int]] = {}  # member -> (run id, parameters)
    finished: set[int] = set()
    last = [0.0]
    stop = StopFlag()

    def on_event(event) -> None:
        if isinstance(event, RunStarted):
            started[event.member] = (event.run_id, event.parameters)
            trial_started(tasks[event.member], event, report)
        elif isinstance(event, StepsDone):
            if should_stop():
                stop.set()
            now = time.perf_counter()
            if now - last[0] < PROGRESS_SECONDS and event.step < event.steps:
                return
            last[0] = now
            for task, loss, score in zip(tasks, event.losses, event.scores):
                report(TrialProgress(task.index, event.epoch, task.config.train.epochs,
                                     event.step, event.steps, loss, score, event.metric))
        elif isinstance(event, RunFinished):
            task, summary = tasks[event.member], event.summary
            finished.add(event.member)
            report(TrialFinished(task.index, task.name, event.status, event.run_id,
                                 summary["final"] or {}, started[event.member][1],
                                 summary["epochs_completed"], time.perf_counter() - start,
                                 summary.get("error", ""),
                                 worker=worker_info() | {"group": len(tasks)}))

    try:
        fit_group([t.config for t in tasks], RunStore(tasks[0].runs_root), on_event, stop,
                  [t.resume for t in tasks])
    except MemberRefused as exc:  # one member's config, before any run: it fails, not the rest
        refused = tasks[exc.member]
        report(TrialFinished(refused.index, refused.name, "failed", None, error=str(exc),
                             seconds=time.perf_counter() - start, worker=worker_info()))
        rest = [t for t in tasks if t is not refused]
        if rest:
            run_group(rest, report, should_stop)
    except MlptrainError as exc:  # set-up failed (data, memory, disk): every member fails
        for g, task in enumerate(tasks):
            if g not in finished:
                run_id, parameters = started.get(g, (None, None))
                report(TrialFinished(task.index, task.name, "failed", run_id,
                                     parameters=parameters, error=str(exc),
                                     seconds=time.perf_counter() - start,
                                     worker=worker_info()))
