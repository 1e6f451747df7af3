"""Noisy XOR: the smallest problem a linear model cannot solve but a one-hidden-layer MLP can."""

from __future__ import annotations

import numpy as np

# Fixed so that every run, whatever its own seed, is scored on the same test points.
XOR_TEST_SEED = 20241124


def make_xor(n: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw n noisy XOR samples.

    Each sample is a pair of random bits plus uniform noise in [-noise, noise] per coordinate;
    its label is the XOR of the bits. Returns X as float64 (n, 2) and y as int64 (n,).
    """
    if n < 0:
        raise ValueError(f"XOR sample count must be >= 0, got {n}")
    if noise < 0:
        raise ValueError(f"XOR noise must be >= 0, got {noise}")
    bits = rng.integers(0, 2, size=(n, 2))
    labels = (bits[:, 0] ^ bits[:, 1]).astype(np.int64)
    inputs = bits.astype(np.float64) + rng.uniform(-noise, noise, size=(n, 2))
    return inputs, labels


def xor_test_set(n: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """The fixed XOR test set: the same n samples for a given noise, independent of any run seed."""
    return make_xor(n, noise, np.random.default_rng(XOR_TEST_SEED))
