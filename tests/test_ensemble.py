"""`mlptrain ensemble`: a committee averages its members' class probabilities, sample by sample,
and refuses runs that did not score the same samples."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import CONFIGS, ROOT
from mosaic_panels import mosaic_panels
from mlptrain.cli import app
from mlptrain.config import load_config
from mlptrain.errors import ConfigError, DataError
from mlptrain.experiment import evaluate_run, fit_experiment, prepare
from mlptrain.experiment.ensemble import Committee, Member, committee, mistakes_figure
from mlptrain.experiment.predict import predict
from mlptrain.experiment.setup import prepare_run
from mlptrain.runs import RunStore

runner = CliRunner()
NO_PLOTS = "report.plots=false"


def _fit(store: RunStore, config: str, *overrides: str) -> str:
    cfg = load_config(CONFIGS / config, [NO_PLOTS, *overrides])
    return fit_experiment(cfg, store).path.name


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> RunStore:
    return RunStore(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def mnist_members(store) -> list[str]:
    """Three small MNIST nets that differ: two seeds, and a third trained on fewer digits (its
    test split is still the same 10,000 digits)."""
    tiny = ("train.epochs=1", "model.hidden=16")
    return [_fit(store, "mnist.toml", "data.limit=1500", "train.seed=0", *tiny),
            _fit(store, "mnist.toml", "data.limit=1500", "train.seed=1", *tiny),
            _fit(store, "mnist.toml", "data.limit=800", "train.seed=2", *tiny)]


@pytest.fixture(scope="module")
def mnist_committee(store, mnist_members) -> Committee:
    return committee(store, mnist_members)


@pytest.fixture(scope="module")
def xor_members(store) -> list[str]:
    """Two-unit XOR nets stopped early: weak enough to disagree on some test points."""
    quick = ("model.hidden=2", "train.epochs=15")
    return [_fit(store, "xor.toml", f"train.seed={seed}", *quick) for seed in (0, 1, 2)]


def _member(run_id: str, probabilities) -> Member:
    p = np.array(probabilities, np.float64)
    return Member(run_id, run_id, p, p.argmax(axis=1))


def test_a_hand_worked_committee_averages_probabilities_not_votes():
    labels = np.array([0, 1, 2, 2])
    a = _member("a", [[.4, .5, .1], [.1, .9, .0], [.0, .3, .7], [.2, .2, .6]])  # votes 1 1 2 2
    b = _member("b", [[.8, .1, .1], [.5, .4, .1], [.0, .6, .4], [.3, .3, .4]])  # votes 0 0 1 2
    c = _member("c", [[.7, .2, .1], [.5, .4, .1], [.1, .8, .1], [.1, .1, .8]])  # votes 0 0 1 2
    # means: [.633 .267 .1] -> 0 right; [.367 .567 .067] -> 1 right, although two of three
    # members vote 0 (a vote would be wrong); [.033 .567 .4] -> 1 wrong; [.2 .2 .6] -> 2 right
    result = Committee("test", labels, [a, b, c]).to_dict()
    assert result["accuracy"] == 0.75 and result["errors"] == 1
    assert [m["accuracy"] for m in result["members"]] == [0.75, 0.5, 0.5]
    assert result["best_member"] == {"run_id": "a", "accuracy": 0.75}
    assert result["mean_member_accuracy"] == pytest.approx(7 / 12)
    assert result["disagreements"] == 3  # every sample but the last
    assert [c["errors"] for c in result["per_class"]] == [0, 0, 1]
    assert [c["samples"] for c in result["per_class"]] == [1, 1, 2]


def test_mnist_committee_matches_eval_and_predict(store, mnist_members, mnist_committee,
                                                  tmp_path):
    result = mnist_committee
    assert len(result.labels) == 10_000 and result.input_shape == (28, 28)
    accuracies = result.member_accuracies()
    for run_id, accuracy in zip(mnist_members, accuracies):  # each member scored as eval does
        assert accuracy == evaluate_run(store, run_id, "test")["accuracy"]
    assert len(set(accuracies)) == 3 and result.disagreements() > 0  # the members differ
    # the same average through another road: predict's loader and forward, on the test digits
    X_test, y_test = prepare(load_config(CONFIGS / "mnist.toml")).dataset.split("test")
    np.save(tmp_path / "test.npy", X_test)
    mean = np.mean([predict(store, r, tmp_path / "test.npy").probabilities
                    for r in mnist_members], axis=0)
    np.testing.assert_allclose(result.probabilities, mean, rtol=1e-5, atol=1e-7)
    assert result.accuracy == np.mean(mean.argmax(axis=1) == y_test)
    errors = result.errors_per_class()
    assert errors.sum() == round((1 - result.accuracy) * 10_000)
    assert list(errors) == [int(np.sum((y_test == c) & (mean.argmax(axis=1) != c)))
                            for c in range(10)]


def test_cli_json_and_table(store, xor_members):
    done = runner.invoke(app, ["ensemble", *xor_members, "--json", "--runs-dir", str(store.root)])
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    assert result["size"] == 3 and result["samples"] == 1000 and result["split"] == "test"
    assert [m["run_id"] for m in result["members"]] == xor_members
    assert [m["settings"] for m in result["members"]] == [{"train.seed": s} for s in (0, 1, 2)]
    members = [evaluate_run(store, r)["accuracy"] for r in xor_members]
    assert [m["accuracy"] for m in result["members"]] == members
    assert result["best_member"]["accuracy"] == max(members)
    assert result["mean_member_accuracy"] == pytest.approx(np.mean(members))
    assert sum(c["errors"] for c in result["per_class"]) == result["errors"]
    timings = [store.find(r).read_summary()["timing"] for r in xor_members]
    assert [m["seconds"] for m in result["members"]] == [t["run_wall_seconds"] for t in timings]
    assert result["seconds"] == sum(t["run_wall_seconds"] for t in timings)
    assert result["training_seconds"] == sum(t["run_training_seconds"] for t in timings)
    table = runner.invoke(app, ["ensemble", *xor_members, "--runs-dir", str(store.root)])
    assert table.exit_code == 0
    for text in ("committee of 3", "mean of probabilities", "errors per true class", "seed=2",
                 f"members disagree on {result['disagreements']}",
                 f"the members trained in {result['seconds']:.1f}s of wall time in all"):
        assert text in table.stdout


def test_runs_of_different_datasets_are_refused_by_name(store, xor_members, mnist_members):
    done = runner.invoke(app, ["ensemble", xor_members[0], mnist_members[0],
                               "--runs-dir", str(store.root)])
    message = done.stderr.replace("\n", " ")
    assert done.exit_code == 1 and "Traceback" not in done.output
    assert xor_members[0] in message and mnist_members[0] in message
    assert "different data" in message and "10 classes" in message and "2 classes" in message


def test_generated_data_with_other_settings_is_refused(store, xor_members):
    noisier = _fit(store, "xor.toml", "data.noise=0.3", "model.hidden=2", "train.epochs=1")
    with pytest.raises(DataError, match=f"{xor_members[0]} and {noisier} do not score the same "
                                        "test samples"):
        committee(store, [xor_members[0], noisier])


def test_validation_split_needs_one_seed(store, xor_members):
    with pytest.raises(DataError, match="drawn with train.seed"):
        committee(store, xor_members, "val")
    wider = _fit(store, "xor.toml", "train.seed=0", "model.hidden=3", "train.epochs=15")
    result = committee(store, [xor_members[0], wider], "val")
    assert len(result.labels) == 160  # 20% of 800


def test_members_of_other_widths_and_seeds_share_the_samples(store, mnist_members, tmp_path):
    """As in the committee papers: a member trained on digits of one width joins members that
    saw them as given; each is scored on its own view of the same samples."""
    narrow = _fit(store, "mnist.toml", "data.limit=1500", "train.seed=0", "train.epochs=1",
                  "model.hidden=16", "data.normalize_width=12")
    test = committee(store, [mnist_members[0], narrow], "test")
    assert [m.settings for m in test.members] == [{"data.normalize_width": w} for w in (0, 12)]
    assert test.member_accuracies()[1] == evaluate_run(store, narrow, "test")["accuracy"]
    val = committee(store, [mnist_members[0], narrow], "val")  # one seed: one held-out split
    assert len(val.labels) == 6_000
    # the figure's samples are the digits as given, whichever member comes first
    narrow_first = committee(store, [narrow, mnist_members[0]], "val")
    np.testing.assert_array_equal(narrow_first.samples, val.samples)
    assert not np.array_equal(narrow_first.samples,
                              prepare_run(store.find(narrow)).dataset.split("val")[0])
    with pytest.raises(DataError, match="drawn with train.seed"):
        committee(store, [mnist_members[1], narrow], "val")
    # another seed that holds out seed 0's digits (data.split_seed) joins the val committee
    other = _fit(store, "mnist.toml", "data.limit=1500", "train.seed=1", "data.split_seed=0",
                 "train.epochs=1", "model.hidden=16")
    assert len(committee(store, [mnist_members[0], narrow, other], "val").labels) == 6_000
    # predict gives the narrow member the digits as given and normalises them as training did
    X_test, _ = prepare(load_config(CONFIGS / "mnist.toml")).dataset.split("test")
    np.save(tmp_path / "raw.npy", X_test[:200])
    predicted = predict(store, narrow, tmp_path / "raw.npy")
    np.testing.assert_allclose(predicted.probabilities, test.members[1].probabilities[:200],
                               rtol=1e-5, atol=1e-7)
    assert any("12 pixels wide" in note for note in predicted.inputs[0].notes)


@pytest.mark.parametrize("refs, message", [
    (lambda runs: runs[:1], "at least two runs"),
    (lambda runs: [runs[0], runs[1], runs[0][:-2]], "listed twice"),
])
def test_a_committee_needs_distinct_runs(store, xor_members, refs, message):
    with pytest.raises(ConfigError, match=message):
        committee(store, refs(xor_members))


def test_bad_split_is_a_usage_error(store, xor_members):
    done = runner.invoke(app, ["ensemble", *xor_members, "--split", "train",
                               "--runs-dir", str(store.root)])
    assert done.exit_code == 2


def test_the_command_in_a_real_process(store, xor_members):
    env = {**os.environ, "MLPTRAIN_RUNS_DIR": str(store.root)}
    done = subprocess.run([sys.executable, "-m", "mlptrain", "ensemble", *xor_members, "--json"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["size"] == 3
    missing = subprocess.run([sys.executable, "-m", "mlptrain", "ensemble", xor_members[0],
                              "no-such-run"], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=120)
    assert missing.returncode == 1 and "no-such-run" in missing.stderr
    assert "Traceback" not in missing.stderr


@pytest.mark.slow
def test_the_shipped_committee_config_trains_members_that_ensemble_scores(tmp_path):
    """configs/mnist-deep.toml's [sweep] over seeds, shrunk to two tiny members, through the real
    command line: `sweep` trains them, `ensemble` scores their committee."""
    env = {**os.environ, "MLPTRAIN_RUNS_DIR": str(tmp_path / "runs")}

    def mlptrain(*args):
        return subprocess.run([sys.executable, "-m", "mlptrain", *map(str, args)], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=600)

    swept = mlptrain("sweep", CONFIGS / "mnist-deep.toml", "--grid", "train.seed=0,1",
                     "--set", "data.limit=1000", "--set", "model.hidden=[32,16]",
                     "--set", "train.epochs=1", "--set", "schedule.warmup_epochs=0",
                     "--set", NO_PLOTS, "--workers", "0")
    assert swept.returncode == 0, swept.stderr
    (trials,) = (tmp_path / "runs" / "sweeps").glob("*/trials.json")
    run_ids = [t["run_id"] for t in json.loads(trials.read_text())["trials"]]
    assert len(run_ids) == 2
    scored = mlptrain("ensemble", *run_ids, "--json")
    assert scored.returncode == 0, scored.stderr
    result = json.loads(scored.stdout)
    assert [m["run_id"] for m in result["members"]] == run_ids and result["samples"] == 10_000
    by_sweep = mlptrain("ensemble", "--sweep", "latest", "--json")  # as the README says
    assert by_sweep.returncode == 0, by_sweep.stderr
    assert json.loads(by_sweep.stdout) == result


def test_figure_of_the_committee_mistakes_shows_every_members_vote(mnist_committee):
    c = mnist_committee
    fig = mistakes_figure(c)
    wrong = np.flatnonzero(c.predictions != c.labels)[:32]
    panels = mosaic_panels(fig)
    assert len(panels) == len(wrong) == 32
    for panel, i in zip(panels, wrong):
        confidence = c.probabilities[i, c.predictions[i]]
        assert panel.above == [f"true {c.labels[i]}, pred {c.predictions[i]} "
                               f"({100 * confidence:.0f}%)"]
        assert panel.below == ["votes " + " ".join(str(m.predictions[i]) for m in c.members)]
        np.testing.assert_array_equal(panel.pixels, c.samples[i].reshape(28, 28))


def test_ensemble_draws_the_figure_file(store, mnist_members, tmp_path):
    done = runner.invoke(app, ["ensemble", *mnist_members[:2], "--figure", tmp_path / "m.png",
                               "--json", "--runs-dir", str(store.root)])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["figure"] == str(tmp_path / "m.png")
    assert (tmp_path / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_figure_needs_an_image_format_and_image_data(store, xor_members, tmp_path):
    wrong_suffix = runner.invoke(app, ["ensemble", *xor_members, "--figure", tmp_path / "m.jpg",
                                       "--runs-dir", str(store.root)])
    assert wrong_suffix.exit_code == 1 and ".png or .svg" in wrong_suffix.stderr
    not_images = runner.invoke(app, ["ensemble", *xor_members, "--figure", tmp_path / "m.png",
                                      "--runs-dir", str(store.root)])
    assert not_images.exit_code == 1 and "not images" in not_images.stderr
    assert not (tmp_path / "m.png").exists()


@pytest.fixture(scope="module")
def xor_sweep(tmp_path_factory) -> tuple[RunStore, str, list[str]]:
    """A seed sweep of three small XOR nets: its store, its id and its trials' run ids."""
    store = RunStore(tmp_path_factory.mktemp("swept"))
    done = runner.invoke(app, ["sweep", str(CONFIGS / "xor.toml"), "--grid", "train.seed=0,1,2",
                               "--set", "model.hidden=2", "--set", "train.epochs=15",
                               "--set", NO_PLOTS, "--workers", "0",
                               "--runs-dir", str(store.root)])
    assert done.exit_code == 0, done.output
    (trials,) = (store.root / "sweeps").glob("*/trials.json")
    data = json.loads(trials.read_text())
    return store, data["sweep_id"], [t["run_id"] for t in data["trials"]]


@pytest.mark.parametrize("ref", ["id", "prefix", "latest"])
def test_a_sweeps_trials_form_the_committee(xor_sweep, ref):
    store, sweep_id, run_ids = xor_sweep
    name = {"id": sweep_id, "prefix": sweep_id[:6], "latest": "latest"}[ref]
    done = runner.invoke(app, ["ensemble", "--sweep", name, "--json",
                               "--runs-dir", str(store.root)])
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    assert [m["run_id"] for m in result["members"]] == run_ids
    assert result["accuracy"] == committee(store, run_ids).accuracy


def test_a_sweep_with_an_unfinished_trial_or_no_such_sweep_is_refused(xor_sweep, tmp_path):
    store, sweep_id, run_ids = xor_sweep
    unknown = runner.invoke(app, ["ensemble", "--sweep", "mnist-deep",
                                  "--runs-dir", str(store.root)])
    assert unknown.exit_code == 1 and "Traceback" not in unknown.output
    assert "'mnist-deep' names no sweep" in unknown.stderr.replace("\n", " ")
    assert sweep_id in unknown.stderr.replace("\n", " ")
    empty = runner.invoke(app, ["ensemble", "--sweep", "latest", "--runs-dir", str(tmp_path)])
    assert empty.exit_code == 1 and "there are no sweeps" in empty.stderr.replace("\n", " ")
    summary = store.root / run_ids[1] / "summary.json"
    kept = summary.read_text()
    summary.write_text(kept.replace('"status": "completed"', '"status": "interrupted"'))
    try:
        half = runner.invoke(app, ["ensemble", "--sweep", sweep_id,
                                   "--runs-dir", str(store.root)])
    finally:
        summary.write_text(kept)
    message = half.stderr.replace("\n", " ")
    assert half.exit_code == 1 and "1 of 3 trials not completed" in message
    assert "run the same `mlptrain sweep` command again" in message


@pytest.mark.parametrize("accuracy, words", [(0.95, "0.50 points below the best member"),
                                             (0.96, "0.50 points over the best member")])
def test_the_verdict_says_whether_the_committee_beat_its_best_member(accuracy, words):
    from mlptrain.cli.ensemble import verdict

    result = {"disagreements": 3, "samples": 100, "accuracy": accuracy,
              "mean_member_accuracy": 0.95, "best_member": {"accuracy": 0.955, "run_id": "r"}}
    assert verdict(result).endswith(f"committee {100 * accuracy:.2f}%: {words}")
