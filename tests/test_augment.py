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


def bilinear_reference(img, theta, zoom, phi, dy, dx, zoom_c=None, field=None):
    """The documented map s = M (p - c) + c - t (+ field[:, r, q], an elastic displacement
    (2, H, W) per axis, when given), sampled pixel by pixel with plain floats;
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
            if field is not None:
                sr, sc = sr + field[0, r, q], sc + field[1, r, q]
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


# -- Ciresan et al. (2010)'s refinements: per-class limits, per-axis zoom, per-image ranges ----

# Configs without the refinements' keys must distort exactly as the documented map did before
# they existed: checked against that map computed here, pixel by pixel in float64 (a digest of
# the output would depend on the NumPy and BLAS build: the elastic blur is a BLAS product).
BEFORE_CASES = {"shift": dict(shift=2), "affine": dict(shift=2, rotate=8.0, scale=0.08, shear=8.0),
                "elastic": dict(rotate=15.0, scale=0.15, shear=15.0, elastic=36.0,
                                elastic_sigma=6.0)}


def documented_map(x, seed, step, shift=0, rotate=0.0, scale=0.0, shear=0.0, elastic=0.0,
                   elastic_sigma=4.0):
    """The module docstring's map for a batch x (B, H*W), replayed from the counter-based draws:
    s = M (p - c) + c - t + alpha (G u G^T), sampled bilinearly, zeros outside the image."""
    from mlptrain.data.augment import gaussian_blur_matrix

    B = x.shape[0]
    shifts = drawn_shifts(seed, step, B, shift)
    theta, zoom, phi = drawn_affine(seed, step, B, rotate, scale, shear)
    fields = np.zeros((2, B, H, W))
    if elastic:
        G = gaussian_blur_matrix(H, elastic_sigma, np.float64)
        for axis, slot in enumerate((5, 6)):  # element b H W + p of the axis's slot
            bits = random_bits(AUGMENT, seed, slot, step, B * H * W).reshape(B, H, W)
            u = (bits / 2**32 * 2 - 1).astype(x.dtype)  # the noise in the batch's dtype
            fields[axis] = elastic * G @ u @ G.T
    return np.stack([bilinear_reference(x[b].reshape(H, W), theta[b], zoom[b], phi[b],
                                        *shifts[b], field=fields[:, b]).ravel()
                     for b in range(B)])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", BEFORE_CASES)
def test_configs_without_the_new_keys_distort_as_the_documented_map(case, dtype):
    x = np.random.default_rng(18).random((6, H * W)).astype(dtype)
    spec = build_augment_spec(DataConfig(**{f"augment_{k}": v
                                            for k, v in BEFORE_CASES[case].items()}), (H, W))
    out = Augmenter((H, W), 5, **spec.augmenter_args())(x.copy(), 3)
    want = documented_map(x.astype(np.float64), 5, 3, **BEFORE_CASES[case])
    if case == "shift":  # whole pixels: exact in any dtype
        np.testing.assert_array_equal(out, want.astype(dtype))
        return
    # bilinear sampling is continuous in the source point: rounding moves a pixel by at most
    # the image's steepest slope (< 1 per pixel here) times the point's rounding
    np.testing.assert_allclose(out, want, atol=2e-5 if dtype == "float32" else 1e-10)
    assert not np.allclose(out, x, atol=1e-3)  # the distortion did something


def test_narrowed_classes_never_exceed_the_narrowed_limits():
    B, seed, step = 400, 3, 11
    labels = np.arange(B) % 10
    aug = Augmenter((H, W), seed, rotate=15, shear=15, narrow_classes=[1, 7], narrow_factor=0.5)
    theta, _, phi = aug._draw_affine(aug._draw(B, step), labels)
    wide_theta, _, wide_phi = drawn_affine(seed, step, B, 15, 0, 15)
    narrow = np.isin(labels, [1, 7])
    for got, wide in ((theta, wide_theta), (phi, wide_phi)):
        assert np.abs(got[narrow]).max() <= math.radians(7.5)
        assert np.abs(got[narrow]).max() > math.radians(7.0)  # the whole narrowed range is used
        np.testing.assert_array_equal(got[narrow], 0.5 * wide[narrow])  # same draws, halved
        np.testing.assert_array_equal(got[~narrow], wide[~narrow])  # others untouched
        assert np.abs(got[~narrow]).max() > math.radians(14.0)
    with pytest.raises(ValueError, match="labels"):
        aug(images(4), 0)  # per-class limits cannot guess the classes


def test_narrowed_images_are_sampled_with_the_narrowed_map():
    x = images(4, seed=5, dtype=np.float64)
    labels = np.array([1, 3, 7, 0])
    aug = Augmenter((H, W), 8, shift=1, rotate=15, shear=15, narrow_classes=[1, 7],
                    narrow_factor=0.5)
    out = aug(x.copy(), 2, labels).reshape(-1, H, W)
    theta, zoom, phi = drawn_affine(8, 2, 4, 15, 0, 15)
    shifts = drawn_shifts(8, 2, 4, 1)
    for b in range(4):
        f = 0.5 if labels[b] in (1, 7) else 1.0
        expected = bilinear_reference(x[b].reshape(H, W), f * theta[b], zoom[b], f * phi[b],
                                      *shifts[b])
        np.testing.assert_allclose(out[b], expected, atol=1e-12)


def test_per_axis_zoom_draws_each_axis_from_its_own_slot_and_limit():
    x = images(3, seed=4, dtype=np.float64)
    aug = Augmenter((H, W), 4, shift=2, rotate=10, shear=5, scale_x=0.15, scale_y=0.2)
    out = aug(x.copy(), 7).reshape(-1, H, W)
    theta, zoom_r, phi = drawn_affine(4, 7, 3, 10, 0.2, 5)  # rows: the zoom slot, scale_y
    u7 = random_bits(AUGMENT, 4, 7, 7, 3).astype(np.float64) / 2**32
    zoom_c = 1 + 0.15 * (2 * u7 - 1)  # columns: slot 7, scale_x
    assert not np.allclose(zoom_r, zoom_c)
    shifts = drawn_shifts(4, 7, 3, 2)
    for b in range(3):
        expected = bilinear_reference(x[b].reshape(H, W), theta[b], zoom_r[b], phi[b],
                                      *shifts[b], zoom_c=zoom_c[b])
        np.testing.assert_allclose(out[b], expected, atol=1e-12)


def test_horizontal_zoom_alone_keeps_every_row_where_it_was():
    x = np.zeros((8, H * W))
    x.reshape(-1, H, W)[:, 10:18, 13:15] = 1.0  # a centred vertical bar
    aug = Augmenter((H, W), 1, scale_x=0.3)
    _, (zoom_r, zoom_c), _ = aug._draw_affine(aug._draw(8, 0))
    assert np.all(zoom_r == 1.0) and np.all(np.abs(zoom_c - 1) <= 0.3) and np.std(zoom_c) > 0
    out = aug(x.copy(), 0).reshape(-1, H, W)
    rows = out.sum(axis=2) > 1e-12  # which rows hold ink: exactly those of the bar
    assert np.array_equal(rows, np.broadcast_to(x.reshape(-1, H, W)[0].sum(axis=1) > 0, rows.shape))


def test_elastic_strength_and_width_ranges_are_drawn_per_image():
    from mlptrain.data.augment import gaussian_blur_matrix

    B, seed, step = 6, 6, 4
    aug = Augmenter((H, W), seed, elastic=[30.0, 38.0], elastic_sigma=[4.0, 6.0])
    buf = aug._buffers_for(B, np.float64)
    du_r, du_c = (f.copy() for f in aug._draw_elastic(B, step, buf, aug._draw(B, step)))
    u = lambda slot: random_bits(AUGMENT, seed, slot, step, B) / 2**32  # noqa: E731
    alpha, sigma = 30.0 + 8.0 * u(8), 4.0 + 2.0 * u(9)
    assert np.ptp(alpha) > 1.0 and np.ptp(sigma) > 0.3  # they do vary across images
    for slot, got in ((5, du_r), (6, du_c)):
        noise = random_bits(AUGMENT, seed, slot, step, B * H * W).reshape(B, H, W) / 2**32 * 2 - 1
        for b in range(B):  # each image with its own scalar-width blur
            G = gaussian_blur_matrix(H, sigma[b], np.float64)
            np.testing.assert_allclose(got.reshape(B, H, W)[b], alpha[b] * G @ noise[b] @ G.T,
                                       atol=1e-12)


def test_a_range_with_equal_ends_is_the_number():
    x = images(4, dtype=np.float64)
    a = Augmenter((H, W), 2, elastic=[34.0, 34.0], elastic_sigma=[4.0, 4.0])(x.copy(), 1)
    b = Augmenter((H, W), 2, elastic=34.0, elastic_sigma=4.0)(x.copy(), 1)
    assert np.array_equal(a, b)


def test_the_new_keys_are_validated_and_reach_the_augmenter():
    from mlptrain.config import parse_config

    def data(text):
        return parse_config(f'[data]\ndataset = "mnist"\n{text}\n', "c.toml").data

    for text, match in [
            ("augment_elastic = [38, 36]",
             r"augment_elastic = \[38.0, 36.0\]: the range's low end"),
            ("augment_elastic_sigma = [4, 5, 6]", "a range is two numbers"),
            ("augment_elastic_sigma = [0, 5]", "expected a value > 0"),
            ("augment_elastic = 'wide'", "expected a number or a two-number range"),
            ("augment_narrow_classes = [1, 10]", r"augment_narrow_classes = 10: expected a value"),
            ("augment_narrow_factor = 0", "augment_narrow_factor = 0.0: expected a value > 0"),
            ("augment_scale = 0.1\naugment_scale_y = 0.2",
             r"line 3: \[data\] augment_scale = 0.1: one zoom factor for both axes and per-axis")]:
        with pytest.raises(ConfigError, match=match):
            data(text)
    d = data("augment_narrow_classes = [7, 1, 7]\naugment_scale_x = 0.15\n"
             "augment_elastic = [36, 38]\naugment_elastic_sigma = [5, 5]")
    assert d.augment_elastic == [36.0, 38.0] and d.augment_elastic_sigma == 5.0
    spec = build_augment_spec(d, (H, W))
    assert spec.affine and spec.narrow_classes == (1, 7) and spec.elastic == (36.0, 38.0)
    aug = Augmenter((H, W), 0, **spec.augmenter_args())
    assert aug.per_axis and (aug.scale_r, aug.scale_c) == (0.0, 0.15)
    assert build_augment_spec(data("augment_scale_y = 0.1"), (H, W)).affine


def test_the_eager_step_hands_the_batch_labels_to_the_augmenter():
    from mlptrain.backend.numpy_backend import NumpyBackend
    from mlptrain.loop import _augment_on_host

    x, labels = images(40, dtype=np.float64), np.arange(40) % 10
    aug = Augmenter((H, W), 3, rotate=15, narrow_classes=[1, 7], narrow_factor=0.5)
    got = x.copy()
    _augment_on_host(NumpyBackend(), aug, got, 5, labels)
    np.testing.assert_array_equal(got, aug(x.copy(), 5, labels))
    assert not np.array_equal(got, aug(x.copy(), 5, np.zeros(40, np.int64)))  # labels matter


@pytest.mark.parametrize("keys, affine", [
    ({"shift": 2}, False), ({"shift": 2, "rotate": 5.0}, True),
    ({"elastic": [36.0, 38.0]}, True), ({"shift": 1, "elastic_sigma": [5.0, 6.0]}, False)])
def test_only_a_distortion_beyond_shifts_takes_the_affine_path(keys, affine):
    """An elastic width alone distorts nothing: a shift-only augmenter keeps the one-gather path."""
    assert Augmenter((28, 28), 0, **keys).affine is affine
