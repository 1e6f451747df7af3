"""`mlptrain fit`: train a config into a new run, or resume one; Ctrl-C stops cleanly."""

from __future__ import annotations

import signal
import sys
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from mlptrain.cli.common import (
    EXIT_INTERRUPTED,
    RunsDir,
    err,
    fail,
    hush_numeric_warnings,
    interrupted,
    json_text,
    out,
    plain,
    usage,
)
from mlptrain.config import load_config
from mlptrain.errors import MlptrainError
from mlptrain.experiment import fit_experiment, plan, resume_experiment
from mlptrain.runs import RunStore
from mlptrain.loop import StopFlag

STOP_SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}  # each stops a fit cleanly


class ProgressMode(str, Enum):
    auto = "auto"  # a live display on a terminal, plain lines otherwise
    always = "always"
    never = "never"


def fit(
    config: Optional[Path] = typer.Argument(
        None, metavar="CONFIG", help="A TOML experiment config, e.g. configs/mnist.toml (not with --resume)."),
    set_: Optional[List[str]] = typer.Option(
        None, "--set", "-s", metavar="SECTION.KEY=VALUE",
        help="Override one config key (repeatable), e.g. --set train.epochs=5."),
    device: Optional[str] = typer.Option(
        None, "--device", metavar="cpu|cuda|auto",
        help="Where to train: the same as --set train.device=..."),
    resume: Optional[str] = typer.Option(
        None, "--resume", metavar="RUN",
        help="Continue an interrupted run from its checkpoint, in its own directory."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Resolve config, device and data, "
                                 "print the model and the plan, and train nothing."),
    print_config: bool = typer.Option(False, "--print-config",
                                      help="Print the resolved config as TOML and exit."),
    progress: ProgressMode = typer.Option(
        ProgressMode.auto, "--progress", case_sensitive=False,
        help="auto: a live display on a terminal, one line per epoch otherwise."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress; only the result."),
    as_json: bool = typer.Option(False, "--json", help="Print the run's summary as one JSON "
                                 "object on stdout; progress goes to stderr."),
    allow_data_change: bool = typer.Option(
        False, "--allow-data-change", help="With --resume: continue even though a dataset "
        "file changed since the run started (its SHA-256 differs)."),
    runs_dir: Optional[Path] = RunsDir,
):
    """Train the model a config describes; writes runs/<run-id>/ (config, metrics, weights).

    Ctrl-C (or SIGTERM) once finishes the current batch, saves a checkpoint and exits 130 with
    the command that resumes the run; twice stops at once (the last checkpoint stays valid).

    `mlptrain train` is the same command.
    """
    from mlptrain.cli.render import FitRenderer, plan_text
    from mlptrain.cli.summary import finish_fit

    if (config is None) == (resume is None):
        usage("give a CONFIG to start a run, or --resume RUN to continue one (not both)")
    if resume is not None and (set_ or device is not None or dry_run or print_config):
        usage("--resume continues a run with its saved config; --set, --device, --dry-run "
              "and --print-config apply to a CONFIG")
    if allow_data_change and resume is None:
        usage("--allow-data-change applies to --resume RUN")
    hush_numeric_warnings()
    store = RunStore(runs_dir)
    try:
        device_set = [] if device is None else [f"train.device={device}"]  # a --set
        cfg = load_config(config, [*(set_ or []), *device_set]) if config is not None else None
        if print_config:
            sys.stdout.write(cfg.to_toml())
            return
        if dry_run:
            plain(out, plan_text(cfg, plan(cfg), store.root))
            return
        stop = StopFlag()
        renderer = FitRenderer.for_options(progress.value, quiet, as_json)
        with renderer, _first_signal_stops(stop):
            if cfg is not None:
                finished = fit_experiment(cfg, store, renderer, renderer.download, stop)
            else:
                finished = resume_experiment(store, resume, renderer, renderer.download, stop,
                                             allow_data_change)
        if finished.summary["status"] == "completed":
            # plots after training, never slowing it; then the closing panel
            finish_fit(renderer.console, cfg or load_config(finished.path / "config.toml"),
                       finished, quiet=quiet)
    except MlptrainError as exc:
        fail(exc)
    except KeyboardInterrupt:
        interrupted()
    if as_json:
        print(json_text(finished.summary))
    if finished.summary["status"] == "interrupted":
        plain(err, f"interrupted: checkpoint saved. Resume with\n  mlptrain fit --resume "
                   f"{finished.path}")
        raise typer.Exit(EXIT_INTERRUPTED)


@contextmanager
def _first_signal_stops(stop: StopFlag):
    """The first Ctrl-C or SIGTERM (what a scheduler sends to preempt a job) asks the loop to
    stop after this batch, with a checkpoint; a second aborts at once."""
    def on_signal(signum, frame):
        name = STOP_SIGNALS[signum]
        if stop.is_set:
            for number, handler in previous.items():
                signal.signal(number, handler)
            sys.stderr.write(f"\nsecond {name}: stopping at once; the last checkpoint is kept\n")
            raise KeyboardInterrupt
        stop.set()
        sys.stderr.write(f"\n{name}: finishing this batch and saving a checkpoint "
                         "(press again to stop at once)\n")

    previous = {number: signal.signal(number, on_signal) for number in STOP_SIGNALS}
    try:
        yield
    finally:
        # after a stop, a late second signal must not turn the clean exit into a traceback. A
        # Python no-op, not SIG_IGN: an ignored SIGINT is inherited by every process started
        # later (a CliRunner test's, say), which could then never be interrupted
        for number, handler in previous.items():
            signal.signal(number, _ignore_signal if stop.is_set else handler)


def _ignore_signal(signum, frame) -> None:
    """Ctrl-C or SIGTERM after a clean stop: nothing left to interrupt."""
