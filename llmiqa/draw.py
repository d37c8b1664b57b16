"""What the method looks at, drawn in the spirit of the paper's Figure 6.

Each region's mask is tinted and its box drawn, its score at the box's upper left and its
area fraction at the lower right; the final score sits in the image's upper-left corner.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from llmiqa.regions import Region
from llmiqa.results import ImageResult

PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
)
TINT = 0.4


def _font(image: Image.Image, share: float) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=max(10, int(min(image.size) * share)))


def _label(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, font, anchor: str) -> None:
    """Text on a dark plate so it reads on any background."""
    left, top, right, bottom = draw.textbbox(xy, text, font=font, anchor=anchor)
    draw.rectangle((left - 3, top - 2, right + 3, bottom + 2), fill=(0, 0, 0))
    draw.text(xy, text, fill=(255, 255, 255), font=font, anchor=anchor)


def draw_regions(
    image: Image.Image,
    regions: Sequence[Region],
    result: ImageResult,
    max_side: int | None = None,
) -> Image.Image:
    """`regions` are the Region objects behind `result.regions`, in the same order.

    With `max_side`, the drawing is made at that size: the image and masks are scaled
    down first, so a huge photo never needs a full-size canvas.
    """
    scored = result.regions
    if len(regions) != len(scored):
        raise ValueError(f"{len(regions)} regions for {len(scored)} region results")
    canvas = image.convert("RGB")
    scale = 1.0
    if max_side and max(canvas.size) > max_side:
        scale = max_side / max(canvas.size)
        size = (max(1, round(canvas.width * scale)), max(1, round(canvas.height * scale)))
        canvas = canvas.resize(size, Image.Resampling.LANCZOS)
    pixels = np.asarray(canvas, dtype=np.float64).copy()
    for index, region in enumerate(regions):
        mask = _fit(region.mask, canvas.size)
        color = np.array(PALETTE[index % len(PALETTE)], dtype=np.float64)
        pixels[mask] = (1 - TINT) * pixels[mask] + TINT * color
    canvas = Image.fromarray(pixels.round().astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    small = _font(canvas, 0.035)
    width = max(2, min(canvas.size) // 200)
    for index, (region, rated) in enumerate(zip(regions, scored, strict=True)):
        x0, y0, x1, y1 = (round(v * scale) for v in region.box)
        x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=PALETTE[index % len(PALETTE)], width=width)
        _label(draw, (x0 + width + 2, y0 + width + 2), f"{rated.score:.2f}", small, "lt")
        _label(draw, (x1 - width - 2, y1 - width - 2), f"{rated.area_fraction:.0%}", small, "rb")
    _label(draw, (6, 6), f"{result.score:.2f}", _font(canvas, 0.07), "lt")
    return canvas


def _fit(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A boolean mask at the canvas size (nearest neighbour)."""
    if mask.shape == (size[1], size[0]):
        return mask
    return np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST))
