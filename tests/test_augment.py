"""Image augmentation: exact shifts, a per-pixel reference for the affine path, seeding,
identity cases, and the config boundary."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlptrain.config import DataConfig
from mlptrain.data.augment import Augmenter
from mlptrain.step import build_augment_spec
from mlptrain.seeding import AUGMENT, random_bits
from mlptrain.errors import ConfigError

H = W = 28


def images(batch: int, seed: int = 0, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, H * W)).astype(dtype)


def shifted(img: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """img (H, W) moved down by dy and right by dx, zeros where nothing moved in."""
    out = np.zeros_like(img)
    src = img[max(-dy, 0):H - max(dy, 0), max(-dx, 0):W - max(dx, 0)]
    out[max(dy, 0):max(dy, 0) + src.shape[0], max(dx, 0):max(dx, 0) + src.shape[1]] = src
    return out


def drawn_shifts(seed, step, B, limit):
    """The documented draw: slot 0 (rows) and 1 (cols) of the AUGMENT stream, element b,
    (bits (2 limit + 1)) >> 32 - limit, in Python integers."""
    return np.array([[(int(random_bits(AUGMENT, seed, slot, step, B)[b]) * (2 * limit + 1) >> 32)
                      - limit for slot in (0, 1)] for b in range(B)])


def drawn_affine(seed, step, B, rotate, scale, shear):
    u = lambda slot: random_bits(AUGMENT, seed, slot, step, B).astype(np.float64) / 2**32
    return (math.radians(rotate) * (2 * u(2) - 1), 1 + scale * (2 * u(3) - 1),
            math.radians(shear) * (2 * u(4) - 1))


def test_shift_moves_every_pixel_exactly_by_the_drawn_offset():
    x = images(64)
    aug = Augmenter((H, W), 5, shift=3)
    drawn = drawn_shifts(5, 0, 64, 3)  # the same stream's draw
    out = aug(x.copy(), 0).reshape(-1, H, W)
    for b, (dy, dx) in enumerate(drawn):
        np.testing.assert_array_equal(out[b], shifted(x[b].reshape(H, W), dy, dx))
    assert {tuple(d) for d in drawn} >= {(3, 3), (-3, -3), (0, 0)}  # the range is covered


def test_shift_one_bright_pixel_lands_where_expected():
    x = np.zeros((1, H * W), np.float64)
    x[0, 10 * W + 12] = 1.0
    aug = Augmenter((H, W), 0, shift=2)
    dy, dx = drawn_shifts(0, 0, 1, 2)[0]
    out = aug(x, 0).reshape(H, W)
    assert out[10 + dy, 12 + dx] == 1.0 and out.sum() == 1.0


def test_augmentation_works_in_place_on_the_batch_and_keeps_dtype():
    x = images(8, dtype=np.float64)
    for aug in (Augmenter((H, W), 0, shift=2),
                Augmenter((H, W), 0, shift=2, rotate=10, scale=0.1)):
        y = x.copy()
        assert aug(y, 0) is y and y.dtype == np.float64 and y.shape == x.shape


def test_zero_settings_are_the_identity():
    x = images(16)
    assert np.array_equal(Augmenter((H, W), 0)(x.copy(), 0), x)
    # every limit tiny: the affine path with M = I and t = 0 samples each pixel at itself
    aug = Augmenter((H, W), 0, rotate=1e-12, scale=1e-12, shear=1e-12)
    np.testing.assert_allclose(aug(x.copy(), 0), x, atol=1e-6)


def test_affine_with_integer_shift_only_equals_the_shift_path():
    x = images(32, dtype=np.float64)
    exact = Augmenter((H, W), 9, shift=2)(x.copy(), 0)
    affine = Augmenter((H, W), 9, shift=2, rotate=1e-12)
    affine._draw_affine = lambda bits, labels: (np.zeros(32), (np.ones(32),) * 2,  # M = I
                                                np.zeros(32))
    np.testing.assert_allclose(affine(x.copy(), 0), exact, atol=1e-12)


def bilinear_reference(img, theta, zoom, phi, dy, dx, zoom_c=None):
    """The documented map s = M (p - c) + c - t, sampled pixel by pixel with plain floats;
    M = R(theta) diag(zoom, zoom_c) H(phi) (zoom_c = zoom unless given)."""
    c = (H - 1) / 2
    out = np.zeros_like(img)
    tan, zr = math.tan(phi), zoom
    zc = zoom if zoom_c is None else zoom_c
    cos, sin = math.cos(theta), math.sin(theta)
    m = [[zr * cos, zr * cos * tan - zc * sin], [zr * sin, zr * sin * tan + zc * cos]]

    def pixel(r, q):
        return img[r, q] if 0 <= r < H and 0 <= q < W else 0.0

    for r in range(H):
        for q in range(W):
            sr = m[0][0] * (r - c) + m[0][1] * (q - c) + c - dy
            sc = m[1][0] * (r - c) + m[1][1] * (q - c) + c - dx
            r0, c0 = math.floor(sr), math.floor(sc)
            fr, fc = sr - r0, sc - c0
            out[r, q] = ((1 - fr) * (1 - fc) * pixel(r0, c0) + (1 - fr) * fc * pixel(r0, c0 + 1)
                         + fr * (1 - fc) * pixel(r0 + 1, c0) + fr * fc * pixel(r0 + 1, c0 + 1))
    return out


def test_affine_matches_a_per_pixel_bilinear_reference():
    x = images(3, seed=2, dtype=np.float64)
    aug = Augmenter((H, W), 4, shift=2, rotate=20, scale=0.2, shear=15)
    shifts = drawn_shifts(4, 7, 3, 2)  # replay the counter-based draws of step 7
    theta, zoom, phi = drawn_affine(4, 7, 3, 20, 0.2, 15)
    out = aug(x.copy(), 7).reshape(-1, H, W)
    for b in range(3):
        expected = bilinear_reference(x[b].reshape(H, W), theta[b], zoom[b], phi[b], *shifts[b])
        np.testing.assert_allclose(out[b], expected, atol=1e-12)


def test_rotation_keeps_a_centred_digit_s_mass_roughly():
    x = np.zeros((16, H * W))
    x.reshape(-1, H, W)[:, 8:20, 12:16] = 1.0  # a centred bar, well inside the frame
    out = Augmenter((H, W), 0, rotate=15, scale=0.1)(x.copy(), 0)
    # bilinear sampling preserves mass up to the zoom's area factor 1 / (1 + k)^2
    ratio = out.sum(axis=1) / x.sum(axis=1)
    assert np.all((ratio > 1 / 1.1**2 - 0.05) & (ratio < 1 / 0.9**2 + 0.05))
    assert out.min() >= 0 and out.max() <= 1 + 1e-12  # convex blends of pixels in [0, 1]


def test_reproducible_with_a_seed_and_different_across_seeds_and_batches():
    x = images(16)

    def run(seed):
        aug = Augmenter((H, W), seed, shift=2, rotate=10, shear=5)
        return aug(x.copy(), 0), aug(x.copy(), 1)

    (a1, a2), (b1, _), (c1, _) = run(3), run(3), run(4)
    assert np.array_equal(a1, b1)
    assert not np.array_equal(a1, c1)
    assert not np.array_equal(a1, a2)  # a fresh distortion for every batch


def test_augmentation_is_opt_in_and_only_for_images():
    assert build_augment_spec(DataConfig(), (28, 28)) is None
    spec = build_augment_spec(DataConfig(augment_shift=2, augment_rotate=5.0), (28, 28))
    assert spec.shift == 2 and spec.affine
    with pytest.raises(ConfigError, match=r"\[data\] augment_shift = 2: augmentation needs image"):
        build_augment_spec(DataConfig(dataset="xor", augment_shift=2), (2,))


def test_elastic_with_a_constant_field_is_a_whole_pixel_shift():
    x = images(4, dtype=np.float64)
    aug = Augmenter((H, W), 0, elastic=5.0)
    field = np.ones((4, H * W))  # every pixel's source moves by (+1, -2): content by (-1, +2)
    aug._draw_elastic = lambda B, step, buf, bits: (field * 1.0, field * -2.0)
    out = aug(x.copy(), 0).reshape(-1, H, W)
    for b in range(4):
        np.testing.assert_allclose(out[b], shifted(x[b].reshape(H, W), -1, 2), atol=1e-12)


def test_elastic_field_is_the_blurred_uniform_noise_scaled_by_alpha():
    from mlptrain.data.augment import gaussian_blur_matrix

    aug = Augmenter((H, W), 6, elastic=34.0, elastic_sigma=4.0)
    buf = aug._buffers_for(5, np.float64)
    du_r, du_c = (f.copy() for f in aug._draw_elastic(5, 0, buf))
    G = gaussian_blur_matrix(H, 4.0, np.float64)
    for slot, got in ((5, du_r), (6, du_c)):  # element b H W + p of the axis's slot
        u = random_bits(AUGMENT, 6, slot, 0, 5 * H * W).reshape(5, H, W) / 2**32 * 2 - 1
        np.testing.assert_allclose(got.reshape(5, H, W), 34.0 * G @ u @ G.T, atol=1e-12)
    # the kernel sums to one (less its tail beyond 3.5 sigma) mid-image; neighbours move together
    assert G[H // 2].sum() == pytest.approx(1.0, abs=1e-3)
    field = du_r.reshape(5, H, W)
    # (white noise gives a ratio above 1; a field blurred with sigma = 4 about 0.2)
    assert np.abs(np.diff(field, axis=2)).mean() < 0.3 * np.abs(field).mean()


def test_elastic_is_reproducible_and_keeps_pixels_in_range():
    x = images(8)
    a = Augmenter((H, W), 2, elastic=34.0)(x.copy(), 0)
    b = Augmenter((H, W), 2, elastic=34.0)(x.copy(), 0)
    assert np.array_equal(a, b) and not np.array_equal(a, x)
    assert a.min() >= 0 and a.max() <= 1 + 1e-6
