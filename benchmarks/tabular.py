"""mlptrain on the tables scikit-learn ships, against scikit-learn's own MLP, side by side.

    python benchmarks/tabular.py [--seeds 5] [--epochs 200]
                                 [--sets wine,breast_cancer,digits,diabetes] [--out FILE.md]

For each data set and seed: one train/test split (20% test, scikit-learn's `train_test_split`
with that seed; stratified by class for a classification set), handed to both contenders as raw
features. mlptrain reads
them from an npz (X, y, X_test, y_test) with its defaults for a user's file (data.standardize
on: the training split's mean and deviation); scikit-learn gets the same split through its
StandardScaler fitted on the training rows. The same network and training for both: one hidden
layer of 64 ReLU units, Adam at 1e-3, batches of 32, `--epochs` full passes, no weight decay, no
validation split and no early stopping (scikit-learn's stopping rule is switched off with
n_iter_no_change = max_iter), float64. Reported per set: test accuracy (mean and standard
deviation over the seeds) and seconds of training (the library call, without imports and data
loading; mlptrain's includes writing its run), in one process, one after the other.

A regression set (diabetes) is scored by test R^2 instead: mlptrain trains its defaults for a
real-valued target (loss mse, the target standardized by the training rows), scikit-learn's
MLPRegressor the same network and training, with its target standardized likewise
(TransformedTargetRegressor with a StandardScaler), as MLPRegressor does not scale it itself.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HIDDEN, LR, BATCH = 64, 1e-3, 32
SETS = ("wine", "breast_cancer", "digits", "diabetes")
REGRESSION = frozenset({"diabetes"})  # scored by R^2; the others by accuracy


def load(name: str):
    from sklearn import datasets

    return getattr(datasets, f"load_{name}")(return_X_y=True)


def split(X, y, seed: int, regression: bool):
    from sklearn.model_selection import train_test_split

    return train_test_split(X, y, test_size=0.2, random_state=seed,
                            stratify=None if regression else y)


def run_mlptrain(parts, seed: int, epochs: int, folder: Path,
                 regression: bool) -> tuple[float, float]:
    from mlptrain.config import parse_config
    from mlptrain.experiment import fit_experiment
    from mlptrain.runs import RunStore

    X, X_test, y, y_test = parts
    data = folder / f"s{seed}.npz"
    np.savez(data, X=X, y=y, X_test=X_test, y_test=y_test)
    config = parse_config(f"""
[data]
dataset = "npz"
path = "{data}"
task = "{'regression' if regression else 'classification'}"
val_fraction = 0.0
[model]
hidden = [{HIDDEN}]
[optimizer]
name = "adam"
lr = {LR}
[train]
epochs = {epochs}
batch_size = {BATCH}
seed = {seed}
dtype = "float64"
[report]
plots = false
""")
    start = time.perf_counter()
    run = fit_experiment(config, RunStore(folder / "runs"))
    score = "test_r2" if regression else "test_accuracy"
    return run.summary["final"][score], time.perf_counter() - start


def run_sklearn(parts, seed: int, epochs: int, regression: bool) -> tuple[float, float]:
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.preprocessing import StandardScaler

    X, X_test, y, y_test = parts
    start = time.perf_counter()
    scaler = StandardScaler().fit(X)
    kind = MLPRegressor if regression else MLPClassifier
    net = kind(hidden_layer_sizes=(HIDDEN,), activation="relu", solver="adam", learning_rate_init=LR,
                   batch_size=BATCH, max_iter=epochs, n_iter_no_change=epochs, tol=0.0,
                   alpha=0.0, shuffle=True, random_state=seed)
    if regression:  # the target standardized by the training rows, as mlptrain's default
        net = TransformedTargetRegressor(net, transformer=StandardScaler())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter reached: as asked
        net.fit(scaler.transform(X), y)
    seconds = time.perf_counter() - start
    return float(net.score(scaler.transform(X_test), y_test)), seconds  # accuracy, or R^2


def table(results: dict, seeds: int, epochs: int) -> str:
    lines = [f"| set | mlptrain test acc. (R^2) | scikit-learn test acc. (R^2) | mlptrain s | "
             f"scikit-learn s | scikit-learn s / mlptrain s ({seeds} seeds, {epochs} epochs) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        cell = _r2_cell if name in REGRESSION else _accuracy_cell
        faster = statistics.mean(r["sklearn_s"]) / statistics.mean(r["mlptrain_s"])
        lines.append(f"| {name} | {cell(r['mlptrain'])} | {cell(r['sklearn'])} | "
                     f"{statistics.mean(r['mlptrain_s']):.2f} | "
                     f"{statistics.mean(r['sklearn_s']):.2f} | {faster:.2f} |")
    return "\n".join(lines)


def _accuracy_cell(v: list[float]) -> str:
    return f"{100 * statistics.mean(v):.2f}% +- {100 * statistics.pstdev(v):.2f}"


def _r2_cell(v: list[float]) -> str:
    return f"R^2 {statistics.mean(v):.3f} +- {statistics.pstdev(v):.3f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets.split(","):
            X, y = load(name)
            r = results[name] = {"mlptrain": [], "sklearn": [], "mlptrain_s": [],
                                 "sklearn_s": []}
            regression = name in REGRESSION
            for seed in range(args.seeds):
                parts = split(X, y, seed, regression)
                for who, run in (("mlptrain", lambda: run_mlptrain(parts, seed, args.epochs,
                                                                   Path(tmp), regression)),
                                 ("sklearn", lambda: run_sklearn(parts, seed, args.epochs,
                                                                 regression))):
                    score, seconds = run()
                    r[who].append(score)
                    r[f"{who}_s"].append(seconds)
                    print(f"{name:14s} seed {seed} {who:9s} "
                          f"{'R^2' if regression else 'acc'} {score:.4f}  {seconds:6.2f} s",
                          flush=True)
    text = table(results, args.seeds, args.epochs)
    print("\n" + text)
    if args.out:
        args.out.write_text(f"`python {' '.join(sys.argv)}`, {os.cpu_count()} cores\n\n"
                            f"{text}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
