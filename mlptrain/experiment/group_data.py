"""A group's data on the device (experiment/group_fit.py): each source uploaded once, and each
member's splits as rows of it.

An MNIST sweep's seeds each draw their own train/val split, but every split is rows of the
same 60,000 digits: the group uploads those once (188 MB, where a copy per seed was 3 x 170 MB
for three seeds) and indexes them per member.
"""

from __future__ import annotations

import numpy as np

from mlptrain.experiment.setup import SPLITS, Prepared
from mlptrain.loop import Split


class GroupData:
    """Every member's data on the device, each array once: the pools its train and val splits
    are rows of (one for an MNIST sweep whatever its seeds: every split is drawn from the
    same 60,000 digits), and the test set. rows[name] (G, n) are member g's samples of a
    split, as rows of the pools X_flat, y_flat."""

    def __init__(self, members: list[Prepared]):
        first = members[0]
        ops, dtype = first.model.ops, first.model.dtype
        datasets = list({id(p.dataset): p.dataset for p in members}.values())  # per seed
        # the targets as each seed's loss reads them (class indices; a target standardized
        # by that seed's training split)
        losses = {id(p.dataset): p.model.loss for p in members}
        targets = lambda d, y: losses[id(d)].targets(np, y, dtype)  # noqa: E731
        # the test set is scored by every member at once where all have the same (a test
        # file, XOR's fixed set); else it is rows of each member's pool, as its other splits
        # (each seed's standardization, or its own test_fraction of an npz file)
        self.split_names = ("train", "val") if _one_test_set(datasets, targets) else SPLITS
        self.pooled = {id(d): _pool_of(d, "test" in self.split_names)
                       for d in datasets}  # id(dataset) -> (pool, rows)
        pools, self.offsets = [], {}  # distinct pools; id(pool) -> its first row in X_flat
        for d in datasets:
            (X, y), _ = self.pooled[id(d)]
            if id(X) not in self.offsets:
                self.offsets[id(X)] = sum(len(t) for _, t in pools)
                pools.append((X, targets(d, y)))
        self.X_flat = _stacked(ops, [X for X, _ in pools], dtype)  # (P, D), P pooled rows
        self.y_flat = _stacked(ops, [t for _, t in pools], None)
        ids = [id(d) for d in datasets]
        pick = [ids.index(id(p.dataset)) for p in members]
        self.rows = {name: ops.asarray(np.stack([self.pool_rows(d, name)
                                                 for d in datasets])[pick], np.int64)
                     for name in self.split_names}
        self.n = self.rows["train"].shape[1]
        if "test" not in self.rows:
            X, y = first.dataset.split("test")
            self.test = (ops.asarray(X, dtype), ops.asarray(targets(first.dataset, y)))

    def pool_rows(self, dataset, name: str) -> np.ndarray:
        """A member's dataset's split `name`, as rows of X_flat (host indices)."""
        pool, rows = self.pooled[id(dataset)]
        return self.offsets[id(pool[0])] + rows[name]

    def split(self, name: str) -> Split:
        """The split for loop.train_members and loop.evaluate: the pools and each member's
        rows of them (the test set, where every member has the same: those samples)."""
        if name not in self.rows:
            return Split(*self.test)
        return Split(self.X_flat, self.y_flat, self.rows[name])


def _one_test_set(datasets: list, targets) -> bool:
    """Whether every dataset's test split holds the same samples and targets, as each
    dataset's loss reads them (`targets(d, y)`), compared by value."""
    X, y = datasets[0].split("test")
    t = targets(datasets[0], y)
    return all(np.array_equal(d.X_test, X) and np.array_equal(targets(d, d.y_test), t)
               for d in datasets[1:])


def _pool_of(d, with_test: bool) -> tuple[tuple, dict]:
    """((X, y), rows): what dataset d's train and val splits (and test split, `with_test`)
    are rows of, and those rows: the loader's arrays where the dataset kept them (MNIST's,
    shared by every seed), else d's own splits one after the other."""
    if d.pool is not None and not with_test:
        return d.pool, d.rows
    names = SPLITS if with_test else ("train", "val")
    parts = [d.split(name) for name in names]
    starts = np.cumsum([0] + [len(y) for _, y in parts])
    return ((np.concatenate([X for X, _ in parts]), np.concatenate([y for _, y in parts])),
            {name: np.arange(starts[i], starts[i + 1]) for i, name in enumerate(names)})


def _stacked(ops, arrays: list, dtype):
    """The same-width host arrays, one after another, as one device array, filled one by one
    (no joined copy on the host)."""
    if len(arrays) == 1:
        return ops.asarray(arrays[0], dtype)
    dtype = dtype or arrays[0].dtype
    pool = ops.empty((sum(len(a) for a in arrays), *arrays[0].shape[1:]), dtype)
    start = 0
    for array in arrays:
        pool[start:start + len(array)] = ops.asarray(array, dtype)
        start += len(array)
    return pool
