"""The live displays of fit and sweep at 80 and 120 columns, through rich's Console at a fixed
width: the bars and the ETA must be there, numbers whole, no line wider than the screen, the
epoch history bounded, and a Ctrl-C must not leave a second copy of a bar."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from conftest import CONFIGS
from rich.console import Console
from typer.testing import CliRunner

from mlptrain.cli import app
from mlptrain.cli.epochs import HISTORY, PLAIN_LINES, EpochRows, PlainLog, stride
from mlptrain.cli.render import FitRenderer
from mlptrain.cli.sweep_render import SweepRenderer
from mlptrain.experiment import RunFinished, RunStarted
from mlptrain.sweep import SweepStarted, TrialProgress, TrialStarted
from mlptrain.loop import EarlyStopped, EpochEnded, EpochStarted, StepsDone
from terminal import screen

ETA = re.compile(r"eta (-:--:--|\d+:\d\d:\d\d)")
BAR = re.compile("[━╸╺]{3,}")  # rich's bar characters
EPOCH_ROW = re.compile(r"^epoch \d+/\d+ ")  # a finished epoch's row (a bar reads `epoch 2 ━`)


def _console(width: int) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=True, width=width, height=30,
                   color_system="standard"), buffer


def _metrics(epoch: int, loss: float = 0.2512) -> dict:
    return {"epoch": epoch, "train_loss": loss, "train_accuracy": 0.9231, "val_loss": 0.1401,
            "val_accuracy": 0.9577, "lr": 0.07507, "seconds": 17.66}


def _fit_to_the_middle(renderer: FitRenderer, epochs: int = 10, ended: int = 1) -> None:
    renderer(RunStarted("20261130-212711-mnist-c55b10", Path("runs/x"), ["layers.0: Linear"],
                        407_050, {"train": 54_000, "val": 6_000, "test": 10_000}, "cpu",
                        "float32"))
    for epoch in range(1, ended + 1):
        renderer(EpochStarted(epoch, epochs, 1875))
        renderer(StepsDone(epoch, 1875, 1875, 0.2512, 0.9231, 48_123.0))
        renderer(EpochEnded(epoch, epochs, _metrics(epoch)))
    renderer(EpochStarted(ended + 1, epochs, 1875))
    renderer(StepsDone(ended + 1, 211, 1875, 0.1234, 0.9611, 49_626.0))
    renderer.progress.refresh()


@pytest.mark.parametrize("width", [80, 120])
def test_fit_display_keeps_its_bars_and_eta(width):
    console, buffer = _console(width)
    renderer = FitRenderer(console, live=True)
    with renderer:
        _fit_to_the_middle(renderer)
    shown = screen(buffer.getvalue(), width)
    rows = [line for line in shown if line.startswith(("epochs", "epoch 2 "))]
    assert len(rows) == 2, shown
    for row in rows:
        assert BAR.search(row) and ETA.search(row), row
        assert len(row) < width  # room left for the terminal's ^C echo
    assert "1/10" in rows[0] and "211/1875" in rows[1]
    # each finished epoch is a whole row above the bars, under its header
    assert any(line.startswith("epoch 1/10 ") and "0.2512" in line for line in shown)
    assert any(line.split()[:3] == ["epoch", "train", "loss"] for line in shown)


def test_fit_display_at_80_columns_shows_every_number_whole():
    """The issue's 80x30 tmux: an epoch row wrapped (`lr 0.07507` / `17.66s`) and the step
    bar cut its loss and accuracy; now every line fits and every number is whole."""
    console, buffer = _console(80)
    renderer = FitRenderer(console, live=True)
    with renderer:
        _fit_to_the_middle(renderer, epochs=2000, ended=1233)
    shown = screen(buffer.getvalue(), 80)
    assert max(map(len, shown)) < 80, "\n".join(shown)
    row = next(line for line in shown if line.startswith("epoch 1233/2000 "))
    assert row.split()[2:] == ["0.2512", "92.31%", "0.1401", "95.77%", "0.07507", "17.66s"]
    step_bar = next(line for line in shown if line.startswith("epoch 1234 "))
    assert "loss 0.1234 acc 96.11%" in step_bar
    # no room left for the samples per second, which a wider terminal shows
    assert "samples/s" not in step_bar
    wide, wide_buffer = _console(120)
    with FitRenderer(wide, live=True) as renderer:
        _fit_to_the_middle(renderer)
    assert "loss 0.1234 acc 96.11% 49,626 samples/s" in wide_buffer.getvalue()


def test_the_epochs_eta_is_estimated_from_the_epochs_done():
    """rich's own estimate showed -:--:-- after epoch 1 (it keeps 30 s of samples and needs
    two); here 1 epoch of 10 took 10 s, so 9 are left: 90 s."""
    console, buffer = _console(80)
    renderer = FitRenderer(console, live=True)
    now = [0.0]  # the display's clock
    renderer.progress.get_time = lambda: now[0]
    with renderer:
        renderer(EpochStarted(1, 10, 100))
        now[0] = 10.0
        renderer(StepsDone(1, 100, 100, 0.5, 0.9, 1000.0))
        renderer(EpochEnded(1, 10, _metrics(1)))
        renderer(EpochStarted(2, 10, 100))
        renderer.progress.refresh()
    epochs_bar = next(line for line in screen(buffer.getvalue(), 80)
                      if line.startswith("epochs"))
    assert "eta 0:01:30" in epochs_bar


def test_the_live_history_keeps_the_last_epochs_and_the_best():
    console, buffer = _console(80)
    renderer = FitRenderer(console, live=True)
    with renderer:
        renderer(EpochStarted(1, 300, 10))
        for epoch in range(1, 301):  # the validation loss is lowest at epoch 100
            renderer(EpochEnded(epoch, 300, {**_metrics(epoch), "val_loss": abs(epoch - 100)}))
        renderer(RunFinished("20261130-212711-xor-c55b10", Path("runs/x"),
                             {"status": "interrupted"}))
    rows = [line for line in screen(buffer.getvalue(), 80) if EPOCH_ROW.match(line)]
    assert [row.split()[1] for row in rows] == ["100/300"] + [f"{e}/300" for e in range(291, 301)]
    assert rows[0].endswith(" best") and not any(row.endswith("best") for row in rows[1:])


def test_a_live_xor_fit_leaves_a_bounded_history(runs_dir):
    """The real command, live in 80x30 columns: at most HISTORY epoch rows plus the best stay
    on the screen (they filled the scrollback, one per epoch), and no line is wider. (60
    epochs: a run writes its metrics files each epoch, a few ms each.)"""
    result = CliRunner().invoke(app, [
        "fit", str(CONFIGS / "xor.toml"), "--progress", "always", "--set", "train.epochs=60",
        "--set", "data.samples=100", "--set", "train.checkpoint_epochs=60",
        "--set", "report.plots=false"], env={"COLUMNS": "80", "LINES": "30"})
    assert result.exit_code == 0, result.output
    shown = screen(result.stdout_bytes.decode(), 80)  # (.stdout turns \r\n into \n)
    assert max(map(len, shown)) <= 80, "\n".join(shown)
    rows = [line for line in shown if EPOCH_ROW.match(line)]
    assert HISTORY <= len(rows) <= HISTORY + 1, "\n".join(shown)
    assert rows[-1].startswith("epoch 60/60 ")
    # the loss, accuracy, lr and seconds of every row, whole
    for row in rows:
        assert re.fullmatch(r"epoch \d+/60 +(\d\.\d{4} +\d+\.\d\d% +){2}0\.05 +\d+\.\d\ds"
                            r"( best)?", row), row


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


def test_stride_keeps_a_log_near_plain_lines():
    assert PLAIN_LINES == 200
    assert [stride(n, PLAIN_LINES) for n in (1, 200, 201, 400, 401, 1000, 2000, 4001, 10**6)] == \
        [1, 1, 2, 2, 5, 5, 10, 50, 5_000]


def test_a_log_of_many_epochs_prints_the_first_every_kth_the_last_the_best_and_rises():
    """4,000 epochs print one row in 20 (PLAIN_LINES), and always the first, the last, a row
    whose loss rose, and the best again at the end, marked."""
    rows = EpochRows(4000)
    log = PlainLog(rows)
    printed = []
    for epoch in range(1, 4001):
        m = {**_metrics(epoch, loss=1.0 if epoch == 333 else 0.5),
             "val_loss": abs(epoch - 777) + 0.5}
        rows.add(m)
        printed += log.ended(m)
    printed += log.closing()
    assert printed[0].startswith("(showing one epoch in 20,")
    epochs = [int(line.split()[1].split("/")[0]) for line in printed if EPOCH_ROW.match(line)]
    assert epochs == [1, *range(20, 333, 20), 333, *range(340, 4001, 20), 777]
    assert len(epochs) <= PLAIN_LINES + 4
    assert printed[-1].endswith(" best") and " loss up" in printed[epochs.index(333) + 2]
    assert log.closing() == []  # RunFinished after EarlyStopped prints nothing more


def test_plain_output_of_an_early_stop_ends_with_the_last_and_the_best():
    console = Console(file=io.StringIO(), width=80, record=True)
    renderer = FitRenderer(console, live=False)
    with renderer:
        renderer(EpochStarted(1, 1000, 10))
        for epoch in range(1, 58):
            renderer(EpochEnded(epoch, 1000, {**_metrics(epoch), "val_loss": abs(epoch - 47)}))
        renderer(EarlyStopped(57, 47))
        renderer(RunFinished("20261130-212711-xor-c55b10", Path("runs/x"),
                             {"status": "interrupted"}))
    lines = console.export_text().splitlines()
    rows = [line for line in lines if EPOCH_ROW.match(line)]
    assert [row.split()[1] for row in rows] == ["1/1000", *(f"{e}/1000" for e in range(5, 56, 5)),
                                              "57/1000", "47/1000"]
    assert rows[-1].endswith(" best")
    assert lines[lines.index(rows[-1]) + 1].startswith("early stopping after epoch 57")
    assert max(map(len, lines)) <= 80


@pytest.mark.parametrize("width", [80, 120])
def test_sweep_display_keeps_its_bars_and_eta(width):
    console, buffer = _console(width)
    renderer = SweepRenderer(console)
    names = [f"mnist-capacity_hidden-{h}_seed-{s}" for h in (2, 256) for s in range(3)]
    with renderer:
        renderer(SweepStarted(sweep_id="mnist-capacity-0123abcd", path=Path("runs/sweeps/x"),
                              trials=[{"index": i, "name": n, "point": {}}
                                      for i, n in enumerate(names)],
                              to_run=list(range(6)),
                              executor="2 worker processes x 1 BLAS thread"))
        renderer(TrialStarted(index=5, name=names[5], run_id="x", parameters=203_530))
        renderer(TrialProgress(index=5, epoch=2, epochs=5, step=100, steps=422, loss=0.1234,
                               score=0.9611))
        renderer.progress.refresh()
    shown = screen(buffer.getvalue(), width)
    # a trial's row names its grid point: the sweep's name is the title's
    rows = [line for line in shown if line.startswith(("trials", "  hidden-256_seed-2 "))]
    assert len(rows) == 2, "\n".join(shown)
    for row in rows:
        assert BAR.search(row) and ETA.search(row), row
        assert len(row) < width
    assert "acc 96.1%" in rows[1] and ("loss 0.1234" in rows[1]) == (width > 80)
