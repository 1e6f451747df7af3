"""Image augmentation for training batches: random shifts, small affine and elastic distortions.

Applied on the host, in place, to each training batch of flattened images (B, H*W) after it is
gathered; evaluation never sees it. This is the NumPy reference of the CUDA kernels `augment`
and `elastic_field` (backend/cuda/kernels.cu), which compute the same formulas on batches
gathered on the device: every random draw comes from the counter-based generator
(seeding.random_bits, stream AUGMENT, keyed by the seed and the global step), so both backends
distort a step's batch alike, to rounding, and a resumed run needs no generator state. Everything is vectorised over the batch: one gather of
precomputed flat indices for integer shifts, or four gathers plus a bilinear blend for the affine
case, all into buffers allocated once per batch size. Pixels that come from outside the image
are 0 (MNIST's background).

The sampling map sends each output pixel p (row, col, relative to the image centre c) to the
source point  s = M (p - c) + c - t,  with  M = R(theta) Z(1 + k) H(phi):  a rotation by theta,
a zoom by 1 + k and a shear by phi, each drawn uniformly from +-the configured limit per image,
and t an integer shift drawn from {-shift, ..., shift} per axis. Image b of a step reads
element b of each slot: AUG_SLOTS below (a shift is (bits (2 shift + 1)) >> 32 - shift, exact
integers; an angle or zoom is limit (2u - 1) with u = bits 2^-32, in float64). An elastic distortion
(Simard et al. 2003) adds alpha * (G u G^T) to s, per axis: u is uniform noise in [-1, 1] per
pixel and G (H, H) a Gaussian blur of width sigma, so neighbouring pixels move together. With no
rotation, zoom, shear or elastic field the map is an exact shift and takes the cheaper
one-gather path.

Three refinements after Ciresan et al. (2010), each drawing nothing new unless asked, so a config
without them distorts exactly as before: per-class limits (images whose label is in
narrow_classes get rotation and shear limits times narrow_factor: a sheared 1 must not become a
7), per-axis zoom (Z = diag(1 + k_r, 1 + k_c) with k_r from the zoom slot and k_c from its own
slot, so M = R(theta) Z H(phi)), and an elastic strength drawn per image uniformly from
[alpha_lo, alpha_hi] and a width from [sigma_lo, sigma_hi] (a slot each; a per-image width
builds each image's blur matrices).
"""

from __future__ import annotations

import math

import numpy as np

from mlptrain.seeding import AUGMENT, random_bits, random_bits_of_slots, uniform

# counter slots of the AUGMENT stream (kernels.cu: AUG_SHIFT_R ... AUG_ELASTIC_C)
# (append only: a slot's numbers never change when another is added)
AUG_SLOTS = {"shift_r": 0, "shift_c": 1, "rotate": 2, "zoom": 3, "shear": 4, "elastic_r": 5,
             "elastic_c": 6, "zoom_c": 7, "elastic_alpha": 8, "elastic_sigma": 9}


def value_range(value) -> tuple[float, float]:
    """(lo, hi) of a per-image range: a number x is (x, x), a list [lo, hi] is itself."""
    if isinstance(value, (list, tuple)):
        return float(value[0]), float(value[1])
    return float(value), float(value)


class Augmenter:
    def __init__(self, shape: tuple[int, int], seed: int, shift: int = 0,
                 rotate: float = 0.0, scale: float = 0.0, shear: float = 0.0,
                 elastic=0.0, elastic_sigma: float = 4.0, scale_x: float = 0.0,
                 scale_y: float = 0.0, narrow_classes=(), narrow_factor: float = 0.5):
        """elastic, elastic_sigma: a number, or [lo, hi] for a value drawn per image.
        scale_x / scale_y (either set) replace `scale` per axis. narrow_classes: labels whose
        rotation and shear limits are multiplied by narrow_factor (the call then needs the
        batch's labels)."""
        self.height, self.width = shape
        self.seed, self.shift = int(seed), int(shift)
        self.rotate, self.scale, self.shear = math.radians(rotate), scale, math.radians(shear)
        self.per_axis = bool(scale_x or scale_y)
        # zoom limits (rows, cols): one factor for both axes unless per-axis limits are given
        self.scale_r, self.scale_c = (scale_y, scale_x) if self.per_axis else (scale, scale)
        lo, hi = value_range(elastic)
        self.elastic = lo if lo == hi else (lo, hi)  # a number keeps today's arithmetic exactly
        elastic_on = bool(hi)
        lo, hi = value_range(elastic_sigma)
        self.elastic_sigma = lo if lo == hi else (lo, hi)
        self.narrow_classes = np.asarray(sorted(set(narrow_classes)), dtype=np.int64)
        self.narrow_factor = float(narrow_factor)
        self.affine = bool(rotate or scale or shear or scale_x or scale_y or elastic_on)
        # padding: the shift path reads up to `shift` pixels outside; the affine path clips its
        # source points to one pixel outside and reads the bilinear neighbour one further
        self.pad = 2 if self.affine else self.shift
        rows, cols = np.indices(shape)
        self._rows, self._cols = rows.ravel(), cols.ravel()  # (H*W,) output pixel coordinates
        self._buffers: dict[int, dict[str, np.ndarray]] = {}

    @property
    def padded_shape(self) -> tuple[int, int]:
        return self.height + 2 * self.pad, self.width + 2 * self.pad

    def _bits(self, slot: str, step: int, n: int) -> np.ndarray:
        return random_bits(AUGMENT, self.seed, AUG_SLOTS[slot], step, n)

    def __call__(self, x: np.ndarray, step: int, labels=None) -> np.ndarray:
        """Distorts the batch x (B, H*W) of global step `step` in place and returns it.
        labels (B,): the batch's classes, needed only with narrow_classes."""
        if not (self.shift or self.affine):
            return x
        buf = self._buffers_for(x.shape[0], x.dtype)
        padded, (hp, wp) = buf["padded"], self.padded_shape
        p = self.pad
        padded[:, p:p + self.height, p:p + self.width] = x.reshape(-1, self.height, self.width)
        bits = self._draw(x.shape[0], step)
        shifts = self._draw_shifts(bits)  # (B, 2)
        if self.affine:
            return self._affine(x, buf, shifts, step, bits, labels)
        # out[b, r, c] = image[b, r - dy_b, c - dx_b]: one flat gather from the padded batch
        offset = (np.arange(x.shape[0]) * (hp * wp)
                  + (p - shifts[:, 0]) * wp + (p - shifts[:, 1]))  # (B,)
        np.add(buf["base"], offset[:, None], out=buf["index"])  # (B, H*W) flat source indices
        # mode="clip": the default ("raise") makes np.take buffer `out`; indices are in range
        return np.take(padded.ravel(), buf["index"], out=x, mode="clip")

    def _draw(self, B: int, step: int) -> np.ndarray:
        """(slots, B) uint32: the bits of the shift, rotate, zoom and shear slots (and the
        per-axis zoom's and the elastic strength's when asked), in one call; row i is slot i."""
        slots = 5
        if self.per_axis:
            slots = AUG_SLOTS["zoom_c"] + 1
        if isinstance(self.elastic, tuple):
            slots = AUG_SLOTS["elastic_alpha"] + 1
        if self.elastic and isinstance(self.elastic_sigma, tuple):
            slots = AUG_SLOTS["elastic_sigma"] + 1
        return random_bits_of_slots(AUGMENT, self.seed, range(slots), step, B)

    def _draw_shifts(self, bits: np.ndarray) -> np.ndarray:
        """(B, 2) integer shifts (rows, cols) in [-shift, shift]: (bits (2 s + 1)) >> 32 - s."""
        span = np.uint64(2 * self.shift + 1)
        rows_cols = bits[[AUG_SLOTS["shift_r"], AUG_SLOTS["shift_c"]]].astype(np.uint64)
        return ((rows_cols * span >> np.uint64(32)).astype(np.int64) - self.shift).T

    def _affine(self, x, buf, shifts, step, bits, labels):
        B, (hp, wp), p = x.shape[0], self.padded_shape, self.pad
        theta, (zoom_r, zoom_c), phi = self._draw_affine(bits, labels)
        cos, sin, tan = np.cos(theta), np.sin(theta), np.tan(phi)  # (B,) each
        # M = R(theta) diag(zoom_r, zoom_c) H(phi) on (row, col) offsets, H = [[1, tan phi],
        # [0, 1]]; with zoom_r = zoom_c this is exactly the single-zoom product it always was
        cr, sr, cc, sc = cos * zoom_r, sin * zoom_r, cos * zoom_c, sin * zoom_c
        m = np.stack([cr, cr * tan - sc, sr, sr * tan + cc], axis=1).astype(x.dtype)
        centre = np.array([(self.height - 1) / 2, (self.width - 1) / 2])
        origin = (centre - shifts).astype(x.dtype)  # (B, 2): c - t
        dr, dc = buf["dr"], buf["dc"]  # (H*W,) output offsets from the centre
        fr, fc, low, a, b = (buf[k] for k in ("frac_r", "frac_c", "floor", "a", "b"))
        for out, row, col in ((fr, 0, 1), (fc, 2, 3)):  # s = M (p - c) + c - t, (B, H*W)
            np.multiply(m[:, row:row + 1], dr, out=out)
            np.multiply(m[:, col:col + 1], dc, out=a)
            out += a
            out += origin[:, row // 2:row // 2 + 1]
        if self.elastic:
            du_r, du_c = self._draw_elastic(B, step, buf, bits)  # (B, H*W) each, pixels
            fr += du_r
            fc += du_c
        # beyond one pixel outside the image only padding is read: clip to keep indices valid
        np.clip(fr, -1, self.height, out=fr)
        np.clip(fc, -1, self.width, out=fc)
        index = buf["index"]  # flat index of each source point's top-left neighbour
        np.floor(fr, out=low)
        fr -= low  # fractional row
        np.multiply(low, wp, out=a)
        np.floor(fc, out=low)
        fc -= low  # fractional column
        a += low
        np.copyto(index, a, casting="unsafe")  # r0 wp + c0: small whole numbers, exact
        index += (np.arange(B) * (hp * wp) + p * wp + p)[:, None]
        flat = buf["padded"].ravel()
        # bilinear: top = g00 + fc (g01 - g00), bottom = g10 + fc (g11 - g10),
        #           out = top + fr (bottom - top)
        take = lambda out: np.take(flat, index, out=out, mode="clip")  # noqa: E731 (see above)
        take(a)  # g00
        index += 1
        take(b)  # g01
        b -= a
        b *= fc
        a += b  # top
        index += wp
        take(b)  # g11
        index -= 1
        take(x)  # g10
        b -= x
        b *= fc
        x += b  # bottom
        x -= a
        x *= fr
        x += a
        return x

    def _draw_affine(self, bits: np.ndarray, labels=None):
        """theta, (zoom_r, zoom_c), phi: (B,) each, float64, = limit (2u - 1) (+ 1 for a zoom);
        the rotation and shear limits of a narrowed class are times narrow_factor."""
        signed = lambda slot: 2.0 * uniform(bits[AUG_SLOTS[slot]]) - 1.0  # noqa: E731
        rotate, shear = self._limits(labels, bits.shape[1])
        zoom_r = 1.0 + self.scale_r * signed("zoom")
        zoom_c = 1.0 + self.scale_c * signed("zoom_c") if self.per_axis else zoom_r
        return rotate * signed("rotate"), (zoom_r, zoom_c), shear * signed("shear")

    def _limits(self, labels, B: int):
        """(rotate, shear) limits in radians: numbers, or (B,) arrays with narrowed classes."""
        if not self.narrow_classes.size:
            return self.rotate, self.shear
        if labels is None or len(labels) != B:
            raise ValueError(f"narrow_classes needs the batch's {B} labels")
        narrow = np.isin(np.asarray(labels).reshape(-1), self.narrow_classes)  # (B,)
        return (np.where(narrow, self.rotate * self.narrow_factor, self.rotate),
                np.where(narrow, self.shear * self.narrow_factor, self.shear))

    def alphas(self, bits: np.ndarray) -> np.ndarray:
        """(B,) float64 elastic strengths lo + (hi - lo) u, u from the elastic_alpha slot."""
        lo, hi = self.elastic
        return lo + (hi - lo) * uniform(bits[AUG_SLOTS["elastic_alpha"]])

    def sigmas(self, bits: np.ndarray) -> np.ndarray:
        """(B,) float64 elastic widths lo + (hi - lo) u, u from the elastic_sigma slot."""
        lo, hi = self.elastic_sigma
        return lo + (hi - lo) * uniform(bits[AUG_SLOTS["elastic_sigma"]])

    def _draw_elastic(self, B: int, step: int, buf, bits=None):
        """alpha * G u G^T for u = 2 U - 1 of shape (B, H, W), once per axis; pixel p of image
        b is element b H W + p of the axis's slot."""
        fields = []
        blur_rows, blur_cols = buf.get("blur_rows"), buf.get("blur_cols")  # (H, H), (W, W)
        if isinstance(self.elastic_sigma, tuple):  # each image its own: (B, H, H), (B, W, W)
            sigma, dtype = self.sigmas(bits), buf["blurred"].dtype
            blur_rows = gaussian_blur_matrix(self.height, sigma, dtype)
            blur_cols = gaussian_blur_matrix(self.width, sigma, dtype).transpose(0, 2, 1)
        strength = self.elastic  # a number, or one per image (B, 1, 1), both axes alike
        if isinstance(strength, tuple):
            strength = self.alphas(bits).astype(buf["blurred"].dtype)[:, None, None]
        for name in ("elastic_r", "elastic_c"):
            u, smooth = buf[name], buf["blurred"]  # (B, H, W) each
            noise = 2.0 * uniform(self._bits(name, step, u.size)) - 1.0
            u[...] = noise.reshape(u.shape)  # rounded to the batch's dtype, as the kernel does
            np.matmul(blur_rows, u, out=smooth)  # G u: blur along the rows
            np.matmul(smooth, blur_cols, out=u)  # (G u) G^T: and along the columns
            u *= strength
            fields.append(u.reshape(B, -1))
        return fields

    def _buffers_for(self, batch: int, dtype) -> dict[str, np.ndarray]:
        key = (batch, np.dtype(dtype).str)
        if key not in self._buffers:
            hp, wp = self.padded_shape
            n = self.height * self.width
            buf = {"padded": np.zeros((batch, hp, wp), dtype),  # the border stays 0
                   "index": np.empty((batch, n), np.intp),
                   "base": self._rows * wp + self._cols}  # (H*W,) r W' + c
            if self.affine:
                buf["dr"] = (self._rows - (self.height - 1) / 2).astype(dtype)
                buf["dc"] = (self._cols - (self.width - 1) / 2).astype(dtype)
                for name in ("frac_r", "frac_c", "floor", "a", "b"):
                    buf[name] = np.empty((batch, n), dtype)
            if self.elastic:
                for name in ("elastic_r", "elastic_c", "blurred"):
                    buf[name] = np.empty((batch, self.height, self.width), dtype)
                if not isinstance(self.elastic_sigma, tuple):  # one blur for every image
                    buf["blur_rows"] = gaussian_blur_matrix(self.height, self.elastic_sigma, dtype)
                    buf["blur_cols"] = gaussian_blur_matrix(self.width, self.elastic_sigma,
                                                            dtype).T
            self._buffers[key] = buf
        return self._buffers[key]


def gaussian_blur_matrix(n: int, sigma, dtype) -> np.ndarray:
    """G (n, n) with (G v)_i = sum_j g(i - j) v_j: a Gaussian kernel of width sigma that sums to
    one, zero beyond the edges (as a convolution with zero padding). sigma (B,): one G per
    width, (B, n, n) (kernels.cu: gauss_weight computes the same element by element)."""
    if np.ndim(sigma):
        sigma = np.asarray(sigma, dtype=np.float64)[:, None, None]  # (B, 1, 1)
        offsets = np.arange(n)[:, None] - np.arange(n)[None, :]
        g = np.exp(-0.5 * (offsets / sigma) ** 2)  # (B, n, n)
        full = np.exp(-0.5 * (np.arange(-3 * n, 3 * n + 1) / sigma[:, 0]) ** 2).sum(axis=1)
        return (g / full[:, None, None]).astype(dtype)
    offsets = np.arange(n)[:, None] - np.arange(n)[None, :]
    g = np.exp(-0.5 * (offsets / sigma) ** 2)
    full = np.exp(-0.5 * (np.arange(-3 * n, 3 * n + 1) / sigma) ** 2).sum()  # whole kernel
    return (g / full).astype(dtype)
