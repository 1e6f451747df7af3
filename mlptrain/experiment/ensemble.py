"""A committee of saved runs: the mean of their class probabilities on one split of their data
(of regression runs: the mean of their predictions, scored by RMSE, MAE and R^2).

As Ciresan et al. did for MNIST (one deep MLP: 0.35% test error, arXiv 1003.0358; a committee
of seven: 0.31%, arXiv 1103.4487), the committee averages the outputs of independently trained
nets and takes the most probable class. Averaging probabilities (not votes) lets a confident
member outweigh two unsure ones. Every member must score the very same samples: the runs are
checked for one dataset (name, file checksums, input shape, class count) before anything
loads, and for the same samples in each split after, since a validation split is drawn with
the run's own seed (unless data.split_seed fixes it). Members may see the images preprocessed
differently (the committee of Ciresan et al. trained each member on digits normalised to
another width: data.normalize_width).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from mlptrain.data import Dataset
from mlptrain import nn
from mlptrain.errors import ConfigError, DataError
from mlptrain.experiment.evaluate import EMPTY_WHY
from mlptrain.experiment.setup import load_data_as_given, prepare_run
from mlptrain.reports import figures
from mlptrain.reports.arrays import misclassified, run_model
from mlptrain.reports.style import FORMATS, save_figure
from mlptrain.runs import Run, RunStore
from mlptrain.runs.query import config_table
from mlptrain.runs.schema import run_seconds
from mlptrain.runs.store import check_not_run_file

COMMITTEE_SPLITS = ("test", "val")  # a committee of the training split would score memory
MAX_MISTAKES = 32  # samples in the figure of the committee's mistakes


@dataclass
class Member:
    """One run's outputs on the committee's samples."""

    run_id: str
    name: str
    probabilities: np.ndarray  # (N, C) float64
    predictions: np.ndarray  # (N,) the member's own decision rule, as `eval` scores it
    settings: dict[str, Any] = field(default_factory=dict)  # its keys that differ (see below)
    seconds: float | None = None  # its training run's wall time, every sitting (None: unknown)
    training_seconds: float | None = None  # of which its epochs alone


@dataclass
class Committee:
    """Members' outputs on the same N labelled samples, and what their average decides."""

    split: str
    labels: np.ndarray  # (N,) true classes
    members: list[Member]
    samples: np.ndarray | None = None  # (N, D) the inputs, for figures of the mistakes
    input_shape: tuple[int, ...] = ()  # how one sample looks, (28, 28) for MNIST
    # or "regression": labels are then (N,) values and each member's probabilities its (N, 1)
    # predictions, in the target's units
    task: str = "classification"

    @property
    def n_classes(self) -> int:
        return self.members[0].probabilities.shape[1]

    @property
    def probabilities(self) -> np.ndarray:
        """(N, C): the members' class probabilities, averaged with equal weight."""
        return np.mean([m.probabilities for m in self.members], axis=0)

    @property
    def predictions(self) -> np.ndarray:
        """(N,) the most probable class of the average (the lowest index on a tie)."""
        return self.probabilities.argmax(axis=1)

    @property
    def votes(self) -> np.ndarray:
        """(M, N): each member's predicted class for each sample."""
        return np.stack([m.predictions for m in self.members])

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.predictions == self.labels))

    def member_accuracies(self) -> list[float]:
        return [float(np.mean(m.predictions == self.labels)) for m in self.members]

    def errors_per_class(self) -> np.ndarray:
        """(C,) how many samples of each true class the committee gets wrong."""
        wrong = self.labels[self.predictions != self.labels]
        return np.bincount(wrong, minlength=self.n_classes)

    def disagreements(self) -> int:
        """How many samples the members do not all give the same class."""
        votes = self.votes
        return int((votes != votes[0]).any(axis=0).sum())

    def seconds(self) -> tuple[float | None, float | None]:
        """What training the members took in all: (wall, epochs alone), None where a member's
        time is unknown. Trained one after another, the wall time is the committee's."""
        walls = [m.seconds for m in self.members]
        epochs = [m.training_seconds for m in self.members]
        return (None if None in walls else sum(walls),
                None if None in epochs else sum(epochs))

    def to_dict(self) -> dict[str, Any]:
        """Everything `ensemble --json` reports, as plain JSON-able values."""
        if self.task == "regression":
            return _regression_report(self)
        accuracies = self.member_accuracies()
        seconds, training_seconds = self.seconds()
        best = int(np.argmax(accuracies))  # the first listed on a tie
        per_class = np.bincount(self.labels, minlength=self.n_classes)
        return {
            "split": self.split,
            "samples": len(self.labels),
            "size": len(self.members),
            "accuracy": self.accuracy,
            "errors": int(np.sum(self.predictions != self.labels)),
            "members": [{"run_id": m.run_id, "name": m.name, "settings": m.settings,
                         "accuracy": a, "errors": int(np.sum(m.predictions != self.labels)),
                         "seconds": m.seconds, "training_seconds": m.training_seconds}
                        for m, a in zip(self.members, accuracies)],
            "seconds": seconds,
            "training_seconds": training_seconds,
            "best_member": {"run_id": self.members[best].run_id, "accuracy": accuracies[best]},
            "mean_member_accuracy": float(np.mean(accuracies)),
            "disagreements": self.disagreements(),
            "per_class": [{"class": c, "samples": int(per_class[c]), "errors": int(e)}
                          for c, e in enumerate(self.errors_per_class())],
        }


def _regression_scores(c: Committee) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """RMSE, MAE and R^2 of the committee's mean prediction and of each member's."""
    from mlptrain.experiment.evaluate import regression_scores

    mean = c.probabilities[:, 0]  # the members' predictions, averaged with equal weight
    return (regression_scores(c.labels, mean),
            [regression_scores(c.labels, m.probabilities[:, 0]) for m in c.members])


def _regression_report(c: Committee) -> dict[str, Any]:
    """Committee.to_dict of regression runs."""
    scores, each = _regression_scores(c)
    seconds, training_seconds = c.seconds()
    best = int(np.argmax([s["r2"] for s in each]))  # the first listed on a tie
    return {"split": c.split, "samples": len(c.labels), "size": len(c.members),
            "task": "regression", **scores,
            "members": [{"run_id": m.run_id, "name": m.name, "settings": m.settings, **s,
                         "seconds": m.seconds, "training_seconds": m.training_seconds}
                        for m, s in zip(c.members, each)],
            "seconds": seconds, "training_seconds": training_seconds,
            "best_member": {"run_id": c.members[best].run_id, "r2": each[best]["r2"]},
            "mean_member_r2": float(np.mean([s["r2"] for s in each]))}


def committee(store: RunStore, refs: Sequence[str], split: str = "test") -> Committee:
    """Loads each run (a run id, unique prefix, directory or `latest`) and scores it on `split`
    of its own data; raises if the runs do not share that split's samples."""
    if split not in COMMITTEE_SPLITS:
        raise ConfigError(f"split {split!r} is not one of {', '.join(COMMITTEE_SPLITS)}.")
    runs = _distinct_runs(store, refs)
    task = _one_task(runs)
    _check_same_dataset(runs)
    settings = member_settings(runs)
    members: list[Member] = []
    first: tuple[Run, str] | None = None
    labels = samples = None
    input_shape: tuple[int, ...] = ()
    for run in runs:
        p = prepare_run(run)
        X, y = p.dataset.split(split)
        if not len(y):
            raise ConfigError(f"run {run.run_id} has an empty {split} split "
                              f"({EMPTY_WHY[split]}); a committee needs samples to score.")
        # standardized splits differ by each member's statistics: the samples are the file's
        digest = _fingerprint(p.dataset if p.dataset.scaler is None else
                              load_data_as_given(p.config), split)
        if first is None:
            first, labels, input_shape = (run, digest), y, p.dataset.input_shape
            # the figure shows the samples as given, not as the first member preprocessed them
            samples = (load_data_as_given(p.config).split(split)[0]
                       if p.config.data.normalize_width else X)
        elif digest != first[1]:
            raise DataError(_split_mismatch(first[0], run, split))
        out = run_model(p.model, X, p.config.train.eval_batch_size, hidden=False)
        members.append(Member(run.run_id, p.config.name, out.probabilities.astype(np.float64),
                              out.predictions, settings[len(members)],
                              *run_seconds(run.read_summary())))
        del p  # one member's data and network at a time: members may be 12 M weights each
    return Committee(split, labels, members, samples, tuple(input_shape), task)


def _one_task(runs: list[Run]) -> str:
    """The members' task (their losses'): classifiers average class probabilities, regression
    runs their predictions; a committee of both has nothing to average."""
    tasks = {run.run_id: nn.LOSSES[run.read_summary(network=True)["model"]["loss"]].task
             for run in runs}
    if len(set(tasks.values())) > 1:
        regresses = next(r for r, t in tasks.items() if t == "regression")
        classifies = next(r for r, t in tasks.items() if t == "classification")
        raise ConfigError(f"run {regresses} regresses a real-valued target but run "
                          f"{classifies} classifies: a committee's members must predict the "
                          "same kind of target.")
    return next(iter(tasks.values()))


def _distinct_runs(store: RunStore, refs: Sequence[str]) -> list[Run]:
    if len(refs) < 2:
        raise ConfigError(f"a committee needs at least two runs; got {len(refs)}. Name them "
                          "(run ids, prefixes, directories), or a sweep's trials with --sweep.")
    runs, seen = [], {}
    for ref in refs:
        run = store.find(ref)
        key = run.path.resolve()
        if key in seen:
            raise ConfigError(f"run {run.run_id} is listed twice ({seen[key]!r} and {ref!r}); "
                              "each member counts once in the average.")
        seen[key] = ref
        runs.append(run)
    return runs


# config keys that say how a run was kept, not what it learned: members may differ in them
BOOKKEEPING = ("name", "report.", "train.checkpoint_", "train.eval_batch_size", "train.device")


def member_settings(runs: list[Run]) -> list[dict[str, Any]]:
    """Per run, the config keys (section.key: value) in which the members differ, bookkeeping
    left out: what makes each member another net (its seed, its digits' width, ...)."""
    differing = [(key, values) for key, values, differs in config_table(runs)
                 if differs and not key.startswith(BOOKKEEPING)]
    return [{key: values[i] for key, values in differing} for i in range(len(runs))]


def _data_signature(run: Run) -> tuple:
    """What the run's summary says about its data: (name, checksums, input shape, classes)."""
    summary = run.read_summary()
    dataset = summary.get("dataset") or {}
    outputs = (summary.get("model") or {}).get("sizes", [0])[-1]
    n_classes = 2 if outputs == 1 else outputs  # one sigmoid output scores two classes
    checksums = tuple(sorted((dataset.get("checksums") or {}).items()))
    return (dataset.get("name"), checksums, tuple(dataset.get("input_shape") or ()), n_classes)


def _check_same_dataset(runs: list[Run]) -> None:
    groups: dict[tuple, list[str]] = {}
    for run in runs:
        groups.setdefault(_data_signature(run), []).append(run.run_id)
    if len(groups) == 1:
        return
    described = "; ".join(f"{', '.join(ids)}: {_describe(sig)}" for sig, ids in groups.items())
    raise DataError(f"these runs were trained on different data, so their outputs cannot be "
                    f"averaged ({described}). A committee's members must share one dataset: the "
                    "same files (checksums), input shape and number of classes.")


def _describe(signature: tuple) -> str:
    name, checksums, shape, n_classes = signature
    files = ", ".join(f"{f} {digest[:12]}" for f, digest in checksums) or "no files"
    return f"{name} ({files}), input {'x'.join(map(str, shape))}, {n_classes} classes"


def _fingerprint(dataset: Dataset, split: str) -> str:
    """A digest of which samples a split holds: equal digests mean the same samples in the same
    order. A pooled source's samples are rows of its files (their checksums are compared
    first), so their rows name them, and members may preprocess the images differently
    (data.normalize_width); other samples are named by their contents."""
    X, y = dataset.split(split)
    if dataset.pool is not None:
        X = dataset.rows.get(split, np.arange(len(y)))  # the test split: the test file, in order
    h = hashlib.sha256()
    for a in (X, y):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.data)
    return h.hexdigest()


def _split_mismatch(a: Run, b: Run, split: str) -> str:
    why = ("the validation split is drawn with train.seed unless data.split_seed fixes it, "
           "so runs with different seeds hold out different samples; score the test split "
           "(--split test) instead, or train the members with one data.split_seed"
           if split == "val" else
           "their data settings differ (for generated data: samples, noise, test_samples)")
    return (f"runs {a.run_id} and {b.run_id} do not score the same {split} samples ({why}). "
            "A committee averages its members' outputs sample by sample.")


def check_figure_path(path: Path) -> None:
    """Raises unless the file name ends in a figure format (.png, .svg) and is not a run's own
    figure (a run's folder holds its figures)."""
    if Path(path).suffix.lstrip(".") not in FORMATS:
        raise ConfigError(f"figure {path}: the file name must end in "
                          f"{' or '.join('.' + f for f in FORMATS)}.")
    check_not_run_file(Path(path))


def mistakes_figure(c: Committee, limit: int = MAX_MISTAKES) -> Figure:
    """The first `limit` samples the committee gets wrong, with each member's vote; the samples
    must be images."""
    if len(c.input_shape) != 2 or c.samples is None:
        raise ConfigError(f"the committee's samples are not images (input shape "
                          f"{c.input_shape}); there is no figure of its mistakes to draw.")
    predictions = c.predictions
    wrong = misclassified(c.labels, predictions, limit)
    errors = int(np.sum(predictions != c.labels))
    confidence = c.probabilities[wrong, predictions[wrong]]
    images = np.asarray(c.samples[wrong]).reshape(-1, *c.input_shape)
    title = f"committee of {len(c.members)} runs, {c.split} split: {100 * c.accuracy:.2f}%"
    return figures.draw_committee_mistakes(images, c.labels[wrong], predictions[wrong],
                                           confidence, c.votes[:, wrong].T, errors,
                                           len(c.labels), title)


def draw_mistakes(c: Committee, path: Path, limit: int = MAX_MISTAKES) -> Path:
    """Draws `mistakes_figure` into `path` (.png or .svg) and returns the path."""
    check_figure_path(path)
    return save_figure(mistakes_figure(c, limit), Path(path))
