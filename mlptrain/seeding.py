"""Independent random streams derived from one config seed.

Each consumer (generated data, the validation split, weight init, shuffling) gets its own
stream, so changing how one of them draws never shifts the numbers another one sees.
"""

from __future__ import annotations

import numpy as np

STREAMS = ("data", "split", "init", "shuffle", "dropout", "augment")  # append only: keeps seeds


def streams(seed: int) -> dict[str, np.random.Generator]:
    children = np.random.SeedSequence(seed).spawn(len(STREAMS))
    return {name: np.random.default_rng(child) for name, child in zip(STREAMS, children)}
