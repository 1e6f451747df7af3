"""A photo or scan of one digit made to look like an MNIST digit: light ink on black, 28x28.

The steps, each undoing one way a user's picture differs from MNIST:
1. work at a bounded size (WORK_SIDE): a 12-megapixel photo and a 64-pixel drawing alike;
2. polarity: the ink is whatever lies farther from the border's level (the border is paper);
3. uneven light: the paper's level is estimated block by block from the paper side of each
   block's values and smoothed into an illumination map; ink is the distance below (or above)
   it, so a gradient or a vignette no longer reads as ink;
4. contrast: Otsu's threshold splits ink from paper; ink levels are stretched so solid ink is 1
   and paper 0, keeping the soft edges that MNIST's anti-aliased digits have;
5. framing as LeCun et al. did: the ink's box (robust to stray specks: the bounds hold 99% of
   the ink mass) is fitted into 20x20 and centred by its centre of mass in 28x28.
Nothing here needs SciPy: Pillow's filters and NumPy suffice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

WORK_SIDE = 160  # pixels on the longer side while cleaning (a digit needs no more)
BLOCKS = 6  # the illumination map's resolution: blocks per side
MNIST_SIDE, MNIST_BOX = 28, 20  # MNIST digits fill a 20x20 box inside the 28x28 image
MIN_CONTRAST = 0.08  # ink must differ from its paper by this much (of the gray range) to count
SPECK = 0.05  # an ink component lighter than this fraction of the largest one is a speck
MASS_KEPT = 0.99  # the crop keeps the rows/columns that hold this much of the ink mass


@dataclass
class Cleaned:
    pixels: np.ndarray  # (28, 28) in [0, 1], light ink on black
    inverted: bool  # dark ink was turned light
    notes: list[str] = field(default_factory=list)


def clean_digit(gray: np.ndarray, invert: bool | None = None) -> Cleaned:
    """gray (H, W) in [0, 1] -> an MNIST-like digit. invert: None decides from the image;
    True: the ink is dark (on paper); False: the ink is already light."""
    from PIL import Image

    work = _resize(gray, _work_shape(gray.shape), Image)
    dark_ink = _ink_is_dark(work) if invert is None else invert
    signal = (1.0 - work) if dark_ink else work  # ink is now the brighter side
    ink = signal - _illumination(signal)  # how far each pixel stands out from its paper
    ink = _keep_the_digit(_stretch(ink))
    notes = [("inverted it (dark ink on a light background" + (", decided from the border)"
              if invert is None else ", as --invert says)")) if dark_ink else
             "kept its polarity (light ink on a dark background)",
             "removed the uneven background light and stretched the ink to full contrast"]
    if not (ink > 0.5).any():
        return Cleaned(np.zeros((MNIST_SIDE, MNIST_SIDE)), dark_ink,
                       notes + ["found no ink: the image is blank after cleaning"])
    framed = frame_like_mnist(ink, Image)
    notes.append("fitted the digit into 20x20 and centred it by mass in 28x28, as MNIST is")
    return Cleaned(framed, dark_ink, notes)


def _work_shape(shape) -> tuple[int, int]:
    h, w = shape
    scale = WORK_SIDE / max(h, w)
    return max(8, round(h * scale)), max(8, round(w * scale))


def _border(pixels: np.ndarray) -> np.ndarray:
    return np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])


def _ink_is_dark(pixels: np.ndarray) -> bool:
    """The paper is what the border mostly shows; the ink lies farther from it on one side."""
    paper = np.median(_border(pixels))
    low, high = np.percentile(pixels, [1, 99])
    return bool((paper - low) > (high - paper))


def _illumination(signal: np.ndarray) -> np.ndarray:
    """The paper's level under each pixel (ink brighter than paper in `signal`): per block a
    low percentile (paper, even where strokes cross the block), then a smooth upsampling."""
    from PIL import Image

    h, w = signal.shape
    rows = np.array_split(np.arange(h), BLOCKS)
    cols = np.array_split(np.arange(w), BLOCKS)
    grid = np.array([[np.percentile(signal[np.ix_(r, c)], 30) for c in cols] for r in rows])
    # a block that is mostly ink would read too bright: no block may sit above its neighbours'
    # median by more than the spread of the blocks
    padded = np.pad(grid, 1, mode="edge")
    neighbours = np.median(np.stack([padded[i:i + BLOCKS, j:j + BLOCKS]
                                     for i in range(3) for j in range(3)]), axis=0)
    grid = np.minimum(grid, neighbours)
    image = Image.fromarray(grid.astype(np.float32), mode="F")
    smooth = image.resize((w, h), Image.Resampling.BICUBIC)
    return gaussian_blur(np.asarray(smooth, np.float64), max(h, w) / BLOCKS / 2)


def _stretch(ink: np.ndarray) -> np.ndarray:
    """Paper -> 0, solid ink -> 1, by Otsu's threshold t on a lightly smoothed copy: values
    below t/2 are paper (noise), the median ink level is full ink, edges in between stay soft."""
    smooth = gaussian_blur(ink, 1.0)  # photo noise averages out; strokes are wider
    t = otsu_threshold(smooth)
    strokes = smooth[smooth > t]
    if strokes.size == 0 or t <= 0:
        return np.zeros_like(ink)
    full = np.median(strokes)
    if full < MIN_CONTRAST:  # nothing stands out from the paper: no ink, only its texture
        return np.zeros_like(ink)
    low = t / 2
    return np.clip((smooth - low) / max(full - low, 1e-6), 0.0, 1.0)


def gaussian_blur(pixels: np.ndarray, sigma: float) -> np.ndarray:
    """A separable Gaussian blur (edges repeated), in float64."""
    radius = max(1, int(3 * sigma))
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-x ** 2 / (2 * sigma ** 2))
    kernel /= kernel.sum()
    out = np.pad(pixels, radius, mode="edge")
    out = np.apply_along_axis(np.convolve, 0, out, kernel, mode="valid")
    return np.apply_along_axis(np.convolve, 1, out, kernel, mode="valid")


def _keep_the_digit(ink: np.ndarray) -> np.ndarray:
    """Zeroes the specks: ink components (8-connected, of pixels > 0) that touch the image's
    edge (shadows, a corner of the page) or hold under SPECK of the largest one's mass, unless
    that would leave nothing."""
    labels, count = _components(ink > 0)
    if count <= 1:
        return ink
    mass = np.bincount(labels.ravel(), weights=ink.ravel(), minlength=count + 1)[1:]
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    keep = mass >= SPECK * mass.max()
    keep[edge[edge > 0] - 1] = False
    if not keep.any():
        keep[np.argmax(mass)] = True
    return np.where(np.concatenate([[False], keep])[labels], ink, 0.0)


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected component labels (0 = background, 1..n) by union-find over runs of rows."""
    h, w = mask.shape
    parent = list(range(h * w + 1))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    index = np.arange(1, h * w + 1).reshape(h, w) * mask
    for dy, dx in ((0, 1), (1, -1), (1, 0), (1, 1)):  # each neighbour pair once
        a = index[:h - dy, max(0, -dx):w - max(0, dx)]  # a pixel ...
        b = index[dy:, max(0, dx):w - max(0, -dx)]  # ... and its neighbour at (dy, dx)
        both = (a > 0) & (b > 0)
        for i, j in zip(a[both].tolist(), b[both].tolist()):
            ri, rj = find(i), find(j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
    roots = np.array([find(i) for i in range(h * w + 1)])
    labels = roots[index]
    _, dense = np.unique(labels, return_inverse=True)
    dense = dense.reshape(h, w)
    return dense, int(dense.max())


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """The threshold that maximises the between-class variance of the values (Otsu 1979)."""
    v = values.ravel()
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return hi
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(counts)  # pixels at or below each bin
    w1 = w0[-1] - w0
    m0 = np.cumsum(counts * centres)
    mean0 = m0 / np.maximum(w0, 1)
    mean1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return float(edges[1:][np.argmax(between)])


def frame_like_mnist(pixels: np.ndarray, Image) -> np.ndarray:
    """pixels (H, W), light ink on black -> (28, 28): the ink's box fitted into 20x20 (aspect
    kept) and shifted so that the centre of mass is the image's centre."""
    top, bottom = _mass_bounds(pixels.sum(axis=1))
    left, right = _mass_bounds(pixels.sum(axis=0))
    box = pixels[top:bottom + 1, left:right + 1]
    scale = MNIST_BOX / max(box.shape)
    h, w = max(1, round(box.shape[0] * scale)), max(1, round(box.shape[1] * scale))
    digit = np.clip(_resize(box, (h, w), Image), 0.0, 1.0)
    if digit.max() > 0:
        digit /= digit.max()  # thin strokes shrink to gray: the darkest ink is full ink again
    framed = np.zeros((MNIST_SIDE, MNIST_SIDE))
    y0, x0 = (MNIST_SIDE - h) // 2, (MNIST_SIDE - w) // 2
    framed[y0:y0 + h, x0:x0 + w] = digit
    mass = framed.sum()
    centre = (MNIST_SIDE - 1) / 2
    cy = framed.sum(axis=1) @ np.arange(MNIST_SIDE) / mass
    cx = framed.sum(axis=0) @ np.arange(MNIST_SIDE) / mass
    dy = int(np.clip(round(centre - cy), -y0, MNIST_SIDE - y0 - h))
    dx = int(np.clip(round(centre - cx), -x0, MNIST_SIDE - x0 - w))
    return np.roll(framed, (dy, dx), axis=(0, 1))


def _mass_bounds(profile: np.ndarray) -> tuple[int, int]:
    """First and last index between which MASS_KEPT of the profile's mass lies."""
    cumulative = np.cumsum(profile) / profile.sum()
    tail = (1 - MASS_KEPT) / 2
    first = int(np.searchsorted(cumulative, tail))
    last = int(np.searchsorted(cumulative, 1 - tail))
    return first, min(last, len(profile) - 1)


def _resize(pixels: np.ndarray, shape, Image) -> np.ndarray:
    """Float pixels resized with Lanczos (area-averaging when shrinking a lot)."""
    image = Image.fromarray(np.asarray(pixels, np.float32), mode="F")
    resized = image.resize((shape[1], shape[0]), Image.Resampling.LANCZOS, reducing_gap=2.0)
    return np.asarray(resized, np.float64)
