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


def draw_regions(image: Image.Image, regions: Sequence[Region], result: ImageResult) -> Image.Image:
    """`regions` are the Region objects behind `result.regions`, in the same order."""
    if len(regions) != len(result.regions):
        raise ValueError(f"{len(regions)} regions for {len(result.regions)} region results")
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64).copy()
    for index, region in enumerate(regions):
        color = np.array(PALETTE[index % len(PALETTE)], dtype=np.float64)
        pixels[region.mask] = (1 - TINT) * pixels[region.mask] + TINT * color
    canvas = Image.fromarray(pixels.round().astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    small = _font(canvas, 0.035)
    width = max(2, min(canvas.size) // 200)
    for index, (region, scored) in enumerate(zip(regions, result.regions, strict=True)):
        x0, y0, x1, y1 = region.box
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=PALETTE[index % len(PALETTE)], width=width)
        _label(draw, (x0 + width + 2, y0 + width + 2), f"{scored.score:.2f}", small, "lt")
        _label(draw, (x1 - width - 2, y1 - width - 2), f"{scored.area_fraction:.0%}", small, "rb")
    _label(draw, (6, 6), f"{result.score:.2f}", _font(canvas, 0.07), "lt")
    return canvas
