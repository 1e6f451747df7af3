"""The counter-based generator (Philox4x32-10) against Random123's published known answers, and
the layout rules both backends follow (see seeding.py)."""

from __future__ import annotations

import numpy as np

from mlptrain.seeding import (AUGMENT, DROPOUT, dropout_keep, dropout_threshold, philox,
                              random_bits, uniform)

# Random123's kat_vectors for philox4x32 with 10 rounds: counter, key, output
KNOWN = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


def test_philox_matches_random123_known_answers_vectorised():
    counters = np.array([c for c, _, _ in KNOWN], dtype=np.uint32).T  # (4, 3)
    for i, (_, key, want) in enumerate(KNOWN):
        got = philox(counters, key)[:, i]  # each column computed in one vectorised call
        assert tuple(int(w) for w in got) == want
    assert philox(counters, (0, 0)).dtype == np.uint32


def test_random_bits_lay_out_blocks_slots_and_64_bit_steps():
    step = 2**32 * 3 + 17
    bits = random_bits(DROPOUT, 7, 2, step, 10)
    for i in range(10):
        block = philox(np.array([[i // 4], [2], [17], [3]], np.uint32), (7, DROPOUT))
        assert bits[i] == block[i % 4, 0]
    # streams, slots, seeds and steps each give other numbers
    others = [random_bits(AUGMENT, 7, 2, step, 10), random_bits(DROPOUT, 7, 3, step, 10),
              random_bits(DROPOUT, 8, 2, step, 10), random_bits(DROPOUT, 7, 2, step + 1, 10)]
    assert all(not np.array_equal(bits, o) for o in others)
    assert np.array_equal(random_bits(DROPOUT, 7 + 2**32, 2, step, 10), bits)  # seed mod 2^32


def test_dropout_decisions_and_uniforms_have_the_stated_distribution():
    keep = dropout_keep(0, 1, 5, 200_000, 0.3)
    assert abs(keep.mean() - 0.7) < 0.005  # binomial s.e. ~ 0.001
    assert dropout_threshold(0.0) == 0 and dropout_keep(0, 0, 0, 100, 0.0).all()
    assert dropout_threshold(1.0) == 0xFFFF
    u = uniform(random_bits(AUGMENT, 0, 0, 0, 100_000))
    assert u.dtype == np.float64 and 0 <= u.min() and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.005
    assert np.array_equal(u * 2**32, random_bits(AUGMENT, 0, 0, 0, 100_000))  # exact
