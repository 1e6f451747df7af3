"""`mlptrain gradcheck`: passes on the real math for every activation and loss, and fails (exit 1)
when a backward pass is wrong."""

from __future__ import annotations

import json

import pytest
from conftest import CONFIGS
from typer.testing import CliRunner

from mlptrain import nn
from mlptrain.cli import app
from mlptrain.config import load_config
from mlptrain.experiment.gradcheck import TOLERANCE, gradcheck

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("loss", [n for n, loss in nn.LOSSES.items()
                                  if loss.task == "classification"])  # (regression: test_regression)
@pytest.mark.parametrize("activation", list(nn.ACTIVATIONS))
def test_every_activation_and_loss_passes_on_every_entry(activation, loss):
    config = load_config(CONFIGS / "xor.toml", [f"model.activation={activation}",
                                                f"model.loss={loss}", "model.hidden=[6, 5]"])
    report = gradcheck(config, batch=16, entries=0)
    assert report.passed, [(c.name, c.max_rel_error) for c in report.checks]
    assert [c.name for c in report.checks] == [f"layers.{i}.{k}" for i in range(3)
                                               for k in ("weight", "bias")]
    assert all(c.checked == c.size for c in report.checks)  # entries=0: every one
    assert report.sizes[-1] == (1 if loss == "sigmoid_bce" else 2)


def test_mnist_config_passes_on_sampled_entries():
    report = gradcheck(load_config(CONFIGS / "mnist.toml"), batch=4, entries=10)
    assert report.passed and report.sizes == [784, 512, 10]
    assert [c.checked for c in report.checks] == [10, 10, 10, 10]
    assert all(c.max_abs_gradient > 0 for c in report.checks)


def test_a_wrong_activation_derivative_fails(monkeypatch):
    # tanh' = 1 - y^2; dropping the square is the kind of slip gradcheck exists to catch
    def wrong_backward(self, xp, y, dy, out, **scratch):
        return xp.multiply(dy, 1 - y, out=out)

    monkeypatch.setattr(nn.Tanh, "backward", wrong_backward)
    report = gradcheck(load_config(CONFIGS / "xor.toml"), batch=16, entries=0)
    assert not report.passed
    failed = {c.name for c in report.checks if not c.passed}
    assert "layers.0.weight" in failed and "layers.1.weight" not in failed  # the output layer
    assert max(c.max_rel_error for c in report.checks) > 100 * TOLERANCE    # is still right


def test_a_wrong_bias_gradient_fails(monkeypatch):
    # biases start at 0; gradcheck perturbs them so a bias bug cannot hide
    original = nn.Linear.backward

    def doubled_bias(self, ops, x, dz, dx_out=None, sgd_lr=None):
        out = original(self, ops, x, dz, dx_out, sgd_lr)
        self.grad_bias *= 2
        return out

    monkeypatch.setattr(nn.Linear, "backward", doubled_bias)
    report = gradcheck(load_config(CONFIGS / "xor.toml"), batch=16, entries=0)
    assert {c.name for c in report.checks if not c.passed} == {"layers.0.bias", "layers.1.bias"}


def test_cli_prints_a_row_per_parameter_and_the_verdict():
    result = run("gradcheck", CONFIGS / "xor.toml", "--set", "model.hidden=[3, 3]")
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if line.strip().startswith("layers.")]
    assert len(rows) == 6 and all(line.rstrip().endswith("PASS") for line in rows)
    assert "float64" in result.stdout and result.stdout.strip().endswith(
        "PASS: every gradient matches")
    as_json = json.loads(run("gradcheck", CONFIGS / "xor.toml", "--json").stdout)
    assert as_json["passed"] and len(as_json["checks"]) == 4


def test_cli_exits_1_on_a_failure(monkeypatch):
    monkeypatch.setattr(nn.Tanh, "backward",
                        lambda self, xp, y, dy, out, **scratch: xp.multiply(dy, 1.0, out=out))
    result = run("gradcheck", CONFIGS / "xor.toml")
    assert result.exit_code == 1 and "FAIL" in result.stdout


def test_cli_reports_a_bad_config_as_an_error(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[model]\nactivation = "swish"\n')
    result = run("gradcheck", config)
    assert result.exit_code == 1 and "expected one of relu" in result.stderr


@pytest.mark.parametrize("config", sorted(p.name for p in CONFIGS.glob("*.toml")))
def test_every_shipped_config_passes(config):
    # mnist-best has input and hidden dropout: the check must hold its masks fixed, or the
    # analytic gradient (masked) and the differences (unmasked) disagree by ~100%
    report = gradcheck(load_config(CONFIGS / config), batch=4, entries=5)
    assert report.passed, [(c.name, c.max_rel_error) for c in report.checks]


DROPOUT = ["model.hidden=[6, 5]", "model.dropout_input=0.3", "model.dropout_hidden=0.5"]


def test_dropout_passes_on_every_entry_with_the_masks_held_fixed():
    report = gradcheck(load_config(CONFIGS / "xor.toml", DROPOUT), batch=16, entries=0)
    assert report.passed, [(c.name, c.max_rel_error) for c in report.checks]
    assert report.dropout == [0.3, 0.5, 0.5]


def test_a_wrong_dropout_derivative_fails(monkeypatch):
    # forgetting the mask in dropout's backward: the frozen masks must not hide it
    from mlptrain.regularize import Dropout

    monkeypatch.setattr(Dropout, "backward", lambda self, i, dx: None)
    report = gradcheck(load_config(CONFIGS / "xor.toml", DROPOUT), batch=16, entries=0)
    failed = {c.name for c in report.checks if not c.passed}
    assert {"layers.0.weight", "layers.1.weight"} <= failed
    assert "layers.2.weight" not in failed  # the output layer's gradient is still right


def test_the_check_leaves_dropout_unfrozen_for_training():
    from mlptrain.experiment.gradcheck import frozen_dropout
    from mlptrain.experiment.setup import prepare
    from mlptrain.regularize import dropout_of

    p = prepare(load_config(CONFIGS / "xor.toml", DROPOUT))
    model = p.model
    model.dropout = dropout_of(p.step, model)
    with frozen_dropout(model):
        assert model.dropout.frozen
    assert not model.dropout.frozen
