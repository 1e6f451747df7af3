"""The loop's graph path, checked on the CPU: a backend whose captured epoch replays segments
[start, stop) of the declared step. The loop must cut segments at checkpoint boundaries, resume
from a mid-epoch position on the graph, and reach the very bytes the eager loop reaches."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import CONFIGS

from mlptrain import loop
from mlptrain.backend import NumpyBackend
from mlptrain.config import load_config
from mlptrain.experiment import fit_experiment, resume_experiment, setup
from mlptrain.runs import RunStore


class SegmentReplay:
    """An epoch 'graph' with the CUDA graph's contract (run(order, first_step, start, stop) ->
    summed loss and correct of those steps), executing the same declared step on NumPy."""

    def __init__(self, step, model, optimizer, train, calls, plans):
        self.eager = loop.EagerStep(step, model, optimizer)
        self.train, self.calls, self.plans = train, calls, plans

    def product_plans(self) -> list[dict]:
        return self.plans

    def run(self, order, first_step, start=0, stop=None):
        step, model, ops = self.eager.step, self.eager.model, self.eager.model.ops
        stop = step.steps_per_epoch if stop is None else stop
        self.calls.append((first_step, start, stop))
        loss_sum, correct = 0.0, 0
        for s in range(start, stop):
            index = order[s * step.batch_size:(s + 1) * step.batch_size]
            ws = model.workspace(len(index))
            ops.take_rows(self.train.X, index, out=ws.x)
            targets = self.train.targets[index]
            batch_loss, batch_correct = self.eager(ws, targets, first_step + s)
            loss_sum, correct = loss_sum + batch_loss, correct + batch_correct
        return loss_sum, correct


class GraphBackend(NumpyBackend):
    calls: list = []
    plans_given: list = []  # what each epoch_runner call was handed as `plans`

    def graph_blockers(self, step) -> list[str]:
        return []

    def epoch_runner(self, step, model, optimizer, train, plans=None):
        self.plans_given.append(plans)
        # a fresh runner "times" its products: records unlike any earlier runner's
        fresh = [{"product": "forward 0", "tile": f"timed by runner {len(self.plans_given)}"}]
        return SegmentReplay(step, model, optimizer, train, self.calls, plans or fresh)


@pytest.fixture
def graph_backend(monkeypatch):
    GraphBackend.calls, GraphBackend.plans_given = [], []
    monkeypatch.setattr(setup, "get_backend", lambda device, precision="fp32": GraphBackend())
    return GraphBackend


AIDS = ["train.epochs=2", "train.checkpoint_every=3", "model.dropout_hidden=0.2",
        "model.max_norm=2.0", "schedule.name=cosine"]  # xor: 10 steps of 64 per epoch


def test_graph_segments_end_at_checkpoints_and_match_the_eager_loop(runs_dir, graph_backend):
    config = load_config(CONFIGS / "xor.toml", AIDS)
    replayed = fit_experiment(config, RunStore(runs_dir))
    assert replayed.summary["path"] == "cuda graph"
    # global steps 3, 6, 9 | 12, 15, 18: segments end where a checkpoint is due
    assert graph_backend.calls == [(0, 0, 3), (0, 3, 6), (0, 6, 9), (0, 9, 10),
                                   (10, 0, 2), (10, 2, 5), (10, 5, 8), (10, 8, 10)]
    with pytest.MonkeyPatch.context() as m:
        m.setattr(setup, "get_backend", lambda device, precision="fp32": NumpyBackend())
        eager = fit_experiment(config, RunStore(runs_dir / "eager"))
    assert eager.summary["path"] == "eager: cpu"
    assert (replayed.path / "weights.npz").read_bytes() == (eager.path / "weights.npz").read_bytes()


def test_a_stopped_graph_run_resumes_mid_epoch_on_the_graph(runs_dir, graph_backend):
    config = load_config(CONFIGS / "xor.toml", AIDS)
    alone = fit_experiment(config, RunStore(runs_dir))
    stop = loop.StopFlag()

    def stop_in_epoch_two(event):
        if isinstance(event, loop.StepsDone) and (event.epoch, event.step) == (2, 2):
            stop.set()

    graph_backend.calls.clear()
    stopped = fit_experiment(config, RunStore(runs_dir), stop_in_epoch_two, stop=stop)
    assert stopped.summary["status"] == "interrupted"
    checkpoint = np.load(stopped.path / "checkpoint.npz")
    assert (int(checkpoint["epoch"]), int(checkpoint["position"])) == (1, 2)
    graph_backend.calls.clear()
    resumed = resume_experiment(RunStore(runs_dir), stopped.run_id)
    assert graph_backend.calls == [(10, 2, 5), (10, 5, 8), (10, 8, 10)]  # on from step 2
    assert (resumed.path / "weights.npz").read_bytes() == (alone.path / "weights.npz").read_bytes()


def test_a_resumed_graph_is_handed_the_plans_its_run_recorded(runs_dir, graph_backend):
    """The device times its products afresh in each process; a resume must reuse the stopped
    run's choices (kept in its checkpoint) or it would round differently from it."""
    config = load_config(CONFIGS / "xor.toml", AIDS)
    stop = loop.StopFlag()
    stopped = fit_experiment(config, RunStore(runs_dir),
                             lambda e: isinstance(e, loop.StepsDone) and e.epoch == 2
                             and stop.set(), stop=stop)
    recorded = json.loads(str(np.load(stopped.path / "checkpoint.npz")["product_plans"]))
    assert recorded == [{"product": "forward 0", "tile": "timed by runner 1"}]
    resumed = resume_experiment(RunStore(runs_dir), stopped.run_id)
    assert graph_backend.plans_given == [None, recorded]
    final = np.load(resumed.path / "checkpoint.npz")
    assert json.loads(str(final["product_plans"])) == recorded
