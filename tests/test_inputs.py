"""Trust, round three: what enters the tool from outside, end to end through the commands.

Starting weights, data files, inputs to score and config values either do what they say or
are refused with a message naming the file, array or key (exit 1, no traceback); every path
into a run's network sees samples as the run's own splits were; --json is strict JSON."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from conftest import CONFIGS, ROOT
from typer.testing import CliRunner

from mlptrain.cli import app
from mlptrain.config import SECTIONS, load_config
from mlptrain.errors import ConfigError, DataError
from mlptrain.experiment import evaluate_run, fit_experiment
from mlptrain.experiment.setup import load_data_as_given, prepare_run
from mlptrain.reports.arrays import run_model
from mlptrain.runs import RunStore

runner = CliRunner()
XOR = CONFIGS / "xor.toml"


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def mlptrain(*args, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "mlptrain", *map(str, args)], env=env,
                          capture_output=True, timeout=timeout, **kwargs)


def clear_error(result, *phrases: str) -> str:
    """The one-paragraph error of a command that failed as the tool explains failures."""
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    text = " ".join(result.stderr.split())
    assert "Traceback" not in text
    for phrase in phrases:
        assert phrase in text, text
    return text


def xor_fit(runs: Path, *overrides: str):
    return fit_experiment(load_config(XOR, ["train.epochs=2", "report.plots=false",
                                            *overrides]), RunStore(runs))


# -- config values that would overflow later -------------------------------------------------------


FLOAT_KEYS = [(section, f.name) for section, cls in SECTIONS.items() for f in fields(cls)
              if "float" in str(f.type)]


def test_every_number_in_the_config_has_a_finite_range():
    for section, key in FLOAT_KEYS:
        meta = {f.name: f.metadata for f in fields(SECTIONS[section])}[key]
        assert meta["low"] is not None and meta["high"] is not None, f"{section}.{key}"
        assert math.isfinite(meta["low"]) and math.isfinite(meta["high"]), f"{section}.{key}"
    for config in CONFIGS.glob("*.toml"):  # the shipped configs stay inside
        load_config(config)


@pytest.mark.parametrize("section, key", FLOAT_KEYS)
def test_a_value_that_would_overflow_later_is_refused_at_load_naming_the_key(section, key):
    with pytest.raises(ConfigError, match=rf"--set {section}\.{key} = 1e\+308: expected a "
                                          "value"):
        load_config(XOR, [f"{section}.{key}=1e308"])


def test_xor_noise_of_1e308_is_a_config_error_on_the_command_line(tmp_path):
    result = run("fit", XOR, "--set", "data.noise=1e308", "--runs-dir", tmp_path)
    text = clear_error(result, "--set data.noise = 1e+308: expected a value >= 0.0 and <= 100.0")
    assert re.search(r"data\.noise", text) and not tmp_path.joinpath("runs").exists()
