"""mlptrain on the tables scikit-learn ships, against scikit-learn's own MLP, side by side.

    python benchmarks/tabular.py [--seeds 5] [--epochs 200] [--sets wine,breast_cancer,digits]
                                 [--out FILE.md]

For each data set and seed: one stratified train/test split (20% test, scikit-learn's
`train_test_split` with that seed), handed to both contenders as raw features. mlptrain reads
them from an npz (X, y, X_test, y_test) with its defaults for a user's file (data.standardize
on: the training split's mean and deviation); scikit-learn gets the same split through its
StandardScaler fitted on the training rows. The same network and training for both: one hidden
layer of 64 ReLU units, Adam at 1e-3, batches of 32, `--epochs` full passes, no weight decay, no
validation split and no early stopping (scikit-learn's stopping rule is switched off with
n_iter_no_change = max_iter), float64. Reported per set: test accuracy (mean and standard
deviation over the seeds) and seconds of training (the library call, without imports and data
loading; mlptrain's includes writing its run), in one process, one after the other.

Regression sets (diabetes) are listed as pending until mlptrain trains regression targets.
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
SETS = ("wine", "breast_cancer", "digits")
PENDING = {"diabetes": "regression: mlptrain does not train regression targets yet (issue 29)"}


def load(name: str):
    from sklearn import datasets

    return getattr(datasets, f"load_{name}")(return_X_y=True)


def split(X, y, seed: int):
    from sklearn.model_selection import train_test_split

    return train_test_split(X, y, test_size=0.2, random_state=seed, stratify=y)


def run_mlptrain(parts, seed: int, epochs: int, folder: Path) -> tuple[float, float]:
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
    return run.summary["final"]["test_accuracy"], time.perf_counter() - start


def run_sklearn(parts, seed: int, epochs: int) -> tuple[float, float]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    X, X_test, y, y_test = parts
    start = time.perf_counter()
    scaler = StandardScaler().fit(X)
    net = MLPClassifier((HIDDEN,), activation="relu", solver="adam", learning_rate_init=LR,
                        batch_size=BATCH, max_iter=epochs, n_iter_no_change=epochs, tol=0.0,
                        alpha=0.0, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter reached: as asked
        net.fit(scaler.transform(X), y)
    seconds = time.perf_counter() - start
    return float(net.score(scaler.transform(X_test), y_test)), seconds


def table(results: dict, seeds: int, epochs: int) -> str:
    lines = [f"| set | mlptrain test acc. | scikit-learn test acc. | mlptrain s | "
             f"scikit-learn s | scikit-learn s / mlptrain s ({seeds} seeds, {epochs} epochs) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        cell = lambda v: f"{100 * statistics.mean(v):.2f}% +- {100 * statistics.pstdev(v):.2f}"  # noqa: E731
        faster = statistics.mean(r["sklearn_s"]) / statistics.mean(r["mlptrain_s"])
        lines.append(f"| {name} | {cell(r['mlptrain'])} | {cell(r['sklearn'])} | "
                     f"{statistics.mean(r['mlptrain_s']):.2f} | "
                     f"{statistics.mean(r['sklearn_s']):.2f} | {faster:.2f} |")
    for name, why in PENDING.items():
        lines.append(f"| {name} | - | - | - | - | {why} |")
    return "\n".join(lines)


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
            for seed in range(args.seeds):
                parts = split(X, y, seed)
                for who, run in (("mlptrain", lambda: run_mlptrain(parts, seed, args.epochs,
                                                                   Path(tmp))),
                                 ("sklearn", lambda: run_sklearn(parts, seed, args.epochs))):
                    acc, seconds = run()
                    r[who].append(acc)
                    r[f"{who}_s"].append(seconds)
                    print(f"{name:14s} seed {seed} {who:9s} acc {acc:.4f}  {seconds:6.2f} s",
                          flush=True)
    text = table(results, args.seeds, args.epochs)
    print("\n" + text)
    if args.out:
        args.out.write_text(f"`python {' '.join(sys.argv)}`, {os.cpu_count()} cores\n\n"
                            f"{text}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
