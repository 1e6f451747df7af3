"""The live displays of fit and sweep at 80 and 120 columns, through rich's Console at a fixed
width: the bars and the ETA must be there, and a Ctrl-C must not leave a second copy of a bar."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.console import Console

from mlptrain.cli.render import FitRenderer
from mlptrain.cli.sweep_render import SweepRenderer
from mlptrain.experiment import RunFinished, RunStarted
from mlptrain.sweep import SweepStarted, TrialProgress, TrialStarted
from mlptrain.loop import EpochEnded, EpochStarted, StepsDone
from terminal import screen

ETA = re.compile(r"eta (-:--:--|\d+:\d\d:\d\d)")
BAR = re.compile("[━╸╺]{3,}")  # rich's bar characters


def _console(width: int) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=True, width=width, color_system="standard"), buffer


def _fit_to_the_middle(renderer: FitRenderer) -> None:
    renderer(RunStarted("20261130-212711-mnist-c55b10", Path("runs/x"), ["layers.0: Linear"],
                        407_050, {"train": 54_000, "val": 6_000, "test": 10_000}, "cpu",
                        "float32"))
    renderer(EpochStarted(1, 10, 422))
    renderer(StepsDone(1, 422, 422, 0.2512, 0.9231, 48_123.0))
    renderer(EpochEnded(1, 10, {"train_loss": 0.2512, "train_accuracy": 0.9231,
                                "val_loss": 0.1401, "val_accuracy": 0.9577, "lr": 0.07941,
                                "seconds": 3.21}))
    renderer(EpochStarted(2, 10, 422))
    renderer(StepsDone(2, 211, 422, 0.1234, 0.9611, 49_626.0))
    renderer.progress.refresh()


@pytest.mark.parametrize("width", [80, 120])
def test_fit_display_keeps_its_bars_and_eta(width):
    console, buffer = _console(width)
    renderer = FitRenderer(console, live=True)
    with renderer:
        _fit_to_the_middle(renderer)
    shown = screen(buffer.getvalue(), width)
    rows = [line for line in shown if line.startswith(("epochs", "epoch 2"))]
    assert len(rows) == 2, shown
    for row in rows:
        assert BAR.search(row) and ETA.search(row), row
        assert len(row) < width  # room left for the terminal's ^C echo
    assert "1/10" in rows[0] and "211/422" in rows[1]
    # each finished epoch is a whole line above the bars
    assert any(line.startswith("epoch 1/10  train loss 0.2512") for line in shown)


@pytest.mark.parametrize("width", [80, 120])
def test_ctrl_c_leaves_one_epochs_bar(width):
    console, buffer = _console(width)
    renderer = FitRenderer(console, live=True)
    with renderer:
        _fit_to_the_middle(renderer)
        buffer.write("^C")  # what the terminal echoes where the cursor stands
        console.print("Ctrl-C: finishing this batch and saving a checkpoint")
        renderer.progress.refresh()
        renderer(RunFinished("20261130-212711-mnist-c55b10", Path("runs/x"),
                             {"status": "interrupted"}))
    shown = screen(buffer.getvalue(), width)
    assert sum(line.startswith("epochs") for line in shown) == 1, "\n".join(shown)


@pytest.mark.parametrize("width", [80, 120])
def test_sweep_display_keeps_its_bars_and_eta(width):
    console, buffer = _console(width)
    renderer = SweepRenderer(console)
    name = "mnist-capacity_hidden-256_seed-2"
    with renderer:
        renderer(SweepStarted(sweep_id="mnist-capacity-0123abcd", path=Path("runs/sweeps/x"),
                              trials=[object()] * 24, to_run=list(range(24)),
                              executor="2 worker processes x 1 BLAS thread"))
        renderer(TrialStarted(index=3, name=name, run_id="x", parameters=203_530))
        renderer(TrialProgress(index=3, epoch=2, epochs=5, step=100, steps=422, loss=0.1234,
                               accuracy=0.9611))
        renderer.progress.refresh()
    shown = screen(buffer.getvalue(), width)
    rows = [line for line in shown if line.startswith(("trials", "  mnist-capacity"))]
    assert len(rows) == 2, "\n".join(shown)
    for row in rows:
        assert BAR.search(row) and ETA.search(row), row
        assert len(row) < width
