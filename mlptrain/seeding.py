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


# ---------------------------------------------------------------------------------------------
# Counter-based random numbers: Philox4x32-10 (Salmon et al. 2011, "Parallel random numbers: as
# easy as 1, 2, 3"; the Random123 library). A pure function of (counter, key): the NumPy backend
# and the CUDA kernels (kernels.cu: philox4x32) compute the same bits for the same counter, so
# dropout masks and augmentation parameters agree between backends, and an exact resume needs
# only the global step. See /coord notes: key = (seed, stream), counter = (block, slot, step).
# ---------------------------------------------------------------------------------------------

PHILOX_M = (0xD2511F53, 0xCD9E8D57)  # round multipliers
PHILOX_W = (0x9E3779B9, 0xBB67AE85)  # Weyl key increments
PHILOX_ROUNDS = 10
# stream ids (the key's second word), one per purpose; ASCII "DROP" and "AUGS"
DROPOUT = 0x44524F50
AUGMENT = 0x41554753
_LOW = np.uint64(0xFFFFFFFF)


def philox(counter: np.ndarray, key) -> np.ndarray:
    """Philox4x32-10 of each column of counter (4, n) uint32 under key (2,): (4, n) uint32.

    Each round multiplies words 0 and 2 by M0, M1 (64-bit products split into hi, lo) and
    mixes:  (c0, c1, c2, c3) <- (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0);  the key then
    grows by (W0, W1). Vectorised over the columns in uint64 (no Python loop over elements).
    """
    c = np.asarray(counter, dtype=np.uint32).astype(np.uint64)  # (4, n), values < 2^32
    k0, k1 = (int(v) & 0xFFFFFFFF for v in key)
    m0, m1 = np.uint64(PHILOX_M[0]), np.uint64(PHILOX_M[1])
    shift = np.uint64(32)
    c0, c1, c2, c3 = c[0], c[1], c[2], c[3]
    p0, p1 = np.empty_like(c0), np.empty_like(c0)
    for r in range(PHILOX_ROUNDS):
        if r:
            k0, k1 = (k0 + PHILOX_W[0]) & 0xFFFFFFFF, (k1 + PHILOX_W[1]) & 0xFFFFFFFF
        np.multiply(c0, m0, out=p0)  # < 2^64: exact in uint64
        np.multiply(c2, m1, out=p1)
        # new c0 = hi(p1) ^ c1 ^ k0, c1 = lo(p1), c2 = hi(p0) ^ c3 ^ k1, c3 = lo(p0)
        np.bitwise_xor(c1, np.uint64(k0), out=c1)
        np.bitwise_xor(c3, np.uint64(k1), out=c3)
        c0, c1, c2, c3, p0, p1 = c1, p1, c3, p0, c0, c2  # rename; hi parts folded in below
        np.bitwise_xor(c0, c1 >> shift, out=c0)
        np.bitwise_and(c1, _LOW, out=c1)
        np.bitwise_xor(c2, c3 >> shift, out=c2)
        np.bitwise_and(c3, _LOW, out=c3)
    return np.stack([c0, c1, c2, c3]).astype(np.uint32)


def random_bits(stream: int, seed: int, slot: int, step: int, n: int) -> np.ndarray:
    """n uint32 words for (stream, seed, slot, global step): element i is word i % 4 of the
    Philox block whose counter is (i // 4, slot, step mod 2^32, step >> 32)."""
    blocks = -(-n // 4)
    counter = np.empty((4, blocks), dtype=np.uint32)
    counter[0] = np.arange(blocks, dtype=np.uint32)
    counter[1], counter[2], counter[3] = slot, step & 0xFFFFFFFF, (step >> 32) & 0xFFFFFFFF
    return philox(counter, (seed & 0xFFFFFFFF, stream)).T.reshape(-1)[:n]


def dropout_threshold(rate: float) -> int:
    """Dropout keeps an element when its 16 random bits are >= this (integer-only, so both
    backends decide alike): P(drop) = threshold / 2^16 = rate to within 2^-17."""
    return min(0xFFFF, round(rate * 2**16))


def dropout_keep(seed: int, slot: int, step: int, n: int, rate: float) -> np.ndarray:
    """(n,) bool keep decisions for layer input `slot` at global step `step`. Element i reads
    the 16-bit half i % 2 (low half first) of word i // 2 of random_bits(DROPOUT, ...): two
    decisions per 32 bits halve the Philox work on the CPU."""
    words = random_bits(DROPOUT, seed, slot, step, -(-n // 2)).astype("<u4")
    return words.view("<u2")[:n] >= dropout_threshold(rate)


def uniform(bits: np.ndarray) -> np.ndarray:
    """Uniforms in [0, 1) from uint32 words: bits * 2^-32, exact in float64 (as on the GPU)."""
    return bits.astype(np.float64) * 2.0**-32
