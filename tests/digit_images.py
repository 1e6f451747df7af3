"""Digit images made the way a user would make them, never taken from MNIST: digits rendered in
TrueType fonts (matplotlib's bundled DejaVu and STIX, present wherever mlptrain installs) and
hand-drawn-like pen strokes, on paper-like gray backgrounds with uneven light, photo-like noise
and blur, thick and thin strokes, in both polarities. Deterministic for a seed.

    python tests/digit_images.py OUT_DIR [--per-kind N] [--seed S]

writes OUT_DIR/<kind>/<digit>_<i>.png and prints how many it wrote.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

SIDE = 160  # pixels of a generated image before the photo effects

FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf",
         "DejaVuSans-Oblique.ttf", "STIXGeneral.ttf")


def _arc(cx, cy, rx, ry, start, stop, n=24):
    """Points of an elliptic arc; angles in degrees, 0 = right, 90 = down (image axes)."""
    t = np.radians(np.linspace(start, stop, n))
    return list(zip(cx + rx * np.cos(t), cy + ry * np.sin(t)))


# each digit as pen strokes in a unit box (x right, y down), drawn roughly as people write
STROKES = {
    0: [_arc(0.5, 0.5, 0.28, 0.42, -90, 275)],
    1: [[(0.38, 0.22), (0.55, 0.08), (0.55, 0.92)]],
    2: [_arc(0.5, 0.32, 0.26, 0.24, 190, 380) + [(0.24, 0.9), (0.8, 0.9)]],
    3: [_arc(0.48, 0.3, 0.25, 0.21, 200, 450) + _arc(0.48, 0.7, 0.28, 0.22, 270, 520)[1:]],
    4: [[(0.62, 0.08), (0.2, 0.64), (0.84, 0.64)], [(0.64, 0.3), (0.64, 0.94)]],
    5: [[(0.78, 0.1), (0.3, 0.1), (0.26, 0.46)] + _arc(0.5, 0.66, 0.28, 0.26, 235, 505)],
    6: [[(0.7, 0.08), (0.42, 0.3)] + _arc(0.5, 0.66, 0.26, 0.26, 200, 560)],
    7: [[(0.2, 0.12), (0.8, 0.12), (0.42, 0.92)]],
    8: [_arc(0.5, 0.28, 0.22, 0.2, 90, 450), _arc(0.5, 0.7, 0.27, 0.22, -90, 270)],
    9: [_arc(0.48, 0.32, 0.24, 0.22, 0, 360), [(0.72, 0.32), (0.66, 0.92)]],
}


@dataclass
class Kind:
    """How one kind of image is made."""

    source: str  # "font" or "hand"
    paper: tuple[float, float]  # background gray level range (0 black .. 1 white)
    ink: tuple[float, float]  # ink gray level range
    width: tuple[float, float]  # pen width as a fraction of the digit's height (hand)
    gradient: float  # strength of the uneven light (0 = flat)
    noise: float  # photo noise, standard deviation in gray levels
    blur: float  # Gaussian blur radius in pixels


KINDS = {
    "font-paper": Kind("font", (0.85, 0.98), (0.0, 0.15), (0, 0), 0.0, 0.01, 0.0),
    "font-gray-uneven": Kind("font", (0.55, 0.75), (0.05, 0.25), (0, 0), 0.35, 0.03, 0.8),
    "hand-paper": Kind("hand", (0.88, 0.98), (0.0, 0.2), (0.07, 0.11), 0.0, 0.01, 0.5),
    "hand-gray-uneven": Kind("hand", (0.5, 0.75), (0.05, 0.25), (0.06, 0.1), 0.4, 0.03, 1.0),
    "hand-photo": Kind("hand", (0.45, 0.8), (0.05, 0.3), (0.06, 0.1), 0.5, 0.06, 1.8),
    "hand-thin": Kind("hand", (0.6, 0.9), (0.0, 0.25), (0.02, 0.035), 0.3, 0.02, 0.6),
    "hand-thick": Kind("hand", (0.6, 0.9), (0.0, 0.25), (0.14, 0.19), 0.3, 0.02, 0.8),
    "hand-chalk": Kind("hand", (0.1, 0.3), (0.8, 0.98), (0.06, 0.11), 0.3, 0.04, 1.0),
    "font-light-on-dark": Kind("font", (0.05, 0.3), (0.8, 1.0), (0, 0), 0.25, 0.03, 0.6),
}


def ink_mask(kind: Kind, digit: int, rng: np.random.Generator) -> np.ndarray:
    """(SIDE, SIDE) coverage in [0, 1] of the digit's ink, before paper and light."""
    scale = 4  # drawn large, then reduced: smooth edges
    canvas = Image.new("L", (SIDE * scale, SIDE * scale), 0)
    draw = ImageDraw.Draw(canvas)
    height = rng.uniform(0.45, 0.75) * SIDE * scale  # the digit's height in the image
    cx, cy = (rng.uniform(0.4, 0.6, 2) * SIDE * scale)
    if kind.source == "font":
        font_file = Path(_font_dir()) / FONTS[rng.integers(len(FONTS))]
        font = ImageFont.truetype(str(font_file), size=int(height * 1.35))
        draw.text((cx, cy), str(digit), fill=255, font=font, anchor="mm")
        angle = rng.uniform(-8, 8)
        return _reduce(canvas.rotate(angle, resample=Image.Resampling.BICUBIC), scale)
    width = max(1, int(rng.uniform(*kind.width) * height))
    angle, shear = np.radians(rng.uniform(-12, 12)), rng.uniform(-0.25, 0.15)
    aspect = rng.uniform(0.8, 1.15)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    for stroke in STROKES[digit]:
        pts = np.array(stroke, float) - 0.5  # centred unit box
        pts += rng.normal(0, 0.015, pts.shape)  # an unsteady hand
        pts[:, 0] = (pts[:, 0] + shear * pts[:, 1]) * aspect
        pts = pts @ rot.T * height + (cx, cy)
        draw.line([tuple(p) for p in pts], fill=255, width=width, joint="curve")
        for p in (pts[0], pts[-1]):  # round pen ends
            r = width / 2
            draw.ellipse([p[0] - r, p[1] - r, p[0] + r, p[1] + r], fill=255)
    return _reduce(canvas, scale)


def _reduce(canvas: Image.Image, scale: int) -> np.ndarray:
    small = canvas.resize((SIDE, SIDE), Image.Resampling.BOX)
    return np.asarray(small, np.float64) / 255.0


def _font_dir() -> str:
    import matplotlib

    return str(Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf")


def photograph(kind: Kind, coverage: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Ink on paper under uneven light, with sensor noise and a little defocus."""
    paper, ink = rng.uniform(*kind.paper), rng.uniform(*kind.ink)
    y, x = np.mgrid[0:SIDE, 0:SIDE] / SIDE - 0.5
    direction = rng.uniform(0, 2 * np.pi)
    ramp = (x * np.cos(direction) + y * np.sin(direction))  # a light gradient across the page
    vignette = -(x ** 2 + y ** 2)  # darker corners
    light = 1 + kind.gradient * (ramp + 0.8 * vignette)
    image = (paper + (ink - paper) * coverage) * light
    image = np.clip(image + rng.normal(0, kind.noise, image.shape), 0, 1)
    result = Image.fromarray(np.uint8(np.rint(image * 255)))
    if kind.blur:
        result = result.filter(ImageFilter.GaussianBlur(kind.blur))
    return result


def generate(per_kind: int = 10, seed: int = 0, kinds=tuple(KINDS)):
    """Yields (kind, digit, PIL image): per_kind images of each kind, digits 0-9 in turn."""
    rng = np.random.default_rng(seed)
    for name in kinds:
        for i in range(per_kind):
            digit = i % 10
            yield name, digit, photograph(KINDS[name], ink_mask(KINDS[name], digit, rng), rng)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-kind", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    count = 0
    for kind, digit, image in generate(args.per_kind, args.seed):
        folder = args.out / kind
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{digit}_{count:04d}.png")
        count += 1
    print(f"wrote {count} images into {args.out}")


if __name__ == "__main__":
    main()
