"""What the method looks at, drawn in the spirit of the paper's Figure 6.

Each region's mask is tinted and its box drawn, its score near the box's upper left and
its area fraction near the lower right, the final score in the image's upper-left corner.
A label moves to another corner of its box when its place is taken, so that none overlaps
another (a box spanning the whole frame would otherwise put three in one corner). A
legend under the image says what each number and colour is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from llmiqa.method.regions import Region
from llmiqa.method.results import ImageResult

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
PLATE = (3, 2)  # the dark plate's margin around a label's text, x and y
Rect = tuple[float, float, float, float]


def _font(image: Image.Image, share: float) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=max(10, int(min(image.size) * share)))


def _plate(draw: ImageDraw.ImageDraw, xy, text: str, font, anchor: str) -> Rect:
    left, top, right, bottom = draw.textbbox(xy, text, font=font, anchor=anchor)
    return left - PLATE[0], top - PLATE[1], right + PLATE[0], bottom + PLATE[1]


def _overlap(a: Rect, b: Rect) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    return max(0.0, width) * max(0.0, height)


def place(
    draw: ImageDraw.ImageDraw, text: str, font, candidates, taken: list[Rect], size
) -> tuple[tuple, str]:
    """The first candidate (xy, anchor) whose plate lies in the image and overlaps no
    taken plate, else the one that overlaps least; its plate joins `taken`."""
    best = None
    for xy, anchor in candidates:
        plate = _plate(draw, xy, text, font, anchor)
        outside = plate[0] < 0 or plate[1] < 0 or plate[2] > size[0] or plate[3] > size[1]
        cost = sum(_overlap(plate, other) for other in taken) + (1e12 if outside else 0)
        if best is None or cost < best[0]:
            best = (cost, xy, anchor, plate)
        if cost == 0:
            break
    _, xy, anchor, plate = best
    taken.append(plate)
    return xy, anchor


def corners(box: Rect, inset: float, first: str, step: float, depth: int = 4) -> list[tuple]:
    """Anchored spots inside a box's corners, `first` ("lt", "rt", "lb", "rb") first, each
    corner also `step`, 2 `step`, ... further in (labels stack there), then its centre."""
    x0, y0, x1, y1 = box
    spots = {"lt": (x0 + inset, y0 + inset, 1), "rt": (x1 - inset, y0 + inset, 1),
             "lb": (x0 + inset, y1 - inset, -1), "rb": (x1 - inset, y1 - inset, -1)}  # fmt: skip
    order = [first, *(c for c in spots if c != first)]
    found = [((spots[c][0], spots[c][1] + k * step * spots[c][2]), c)
             for k in range(depth) for c in order]  # fmt: skip
    return [*found, (((x0 + x1) / 2, (y0 + y1) / 2), "mm")]


def _label(draw: ImageDraw.ImageDraw, xy, text: str, font, anchor: str, colour=None) -> None:
    """Text on a dark plate so it reads on any background, edged in its region's colour."""
    draw.rectangle(_plate(draw, xy, text, font, anchor), fill=(0, 0, 0), outline=colour)
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
    small, big = _font(canvas, 0.035), _font(canvas, 0.07)
    width = max(2, min(canvas.size) // 200)
    taken: list[Rect] = []
    final = f"{result.score:.2f}"
    labels = [(*place(draw, final, big, [((6, 6), "lt")], taken, canvas.size), final, big, None)]
    for index, (region, rated) in enumerate(zip(regions, scored, strict=True)):
        x0, y0, x1, y1 = (round(v * scale) for v in region.box)
        x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=PALETTE[index % len(PALETTE)], width=width)
        inset = width + 2 + PLATE[0]
        for text, first in ((f"{rated.score:.2f}", "lt"), (f"{rated.area_fraction:.0%}", "rb")):
            spots = corners((x0, y0, x1, y1), inset, first, small.size * 1.2 + 2 * PLATE[1])
            spot = place(draw, text, small, spots, taken, canvas.size)
            labels.append((*spot, text, small, PALETTE[index % len(PALETTE)]))
    for xy, anchor, text, font, colour in labels:  # boxes first, labels over them
        _label(draw, xy, text, font, anchor, colour)
    return _with_legend(canvas, scored, small)


def _with_legend(canvas: Image.Image, scored, font) -> Image.Image:
    """The drawing with a strip below: what the numbers are, and each colour's region."""
    entries = ["large: the image's score; per region, in its colour: score, % of the image"]
    entries += [f"#{i} {r.kind}: score {r.score:.2f}, area {r.area_fraction:.0%}"
                for i, r in enumerate(scored)]  # fmt: skip
    line = int(font.size * 1.4)
    out = Image.new("RGB", (canvas.width, canvas.height + line * len(entries) + 8), "white")
    out.paste(canvas, (0, 0))
    draw = ImageDraw.Draw(out)
    for row, text in enumerate(entries):
        y = canvas.height + 4 + row * line
        if row:
            colour = PALETTE[(row - 1) % len(PALETTE)]
            draw.rectangle((6, y + 2, 6 + font.size, y + font.size), fill=colour)
        draw.text((12 + font.size, y), text, fill=(0, 0, 0), font=font)
    return out


def _fit(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A boolean mask at the canvas size (nearest neighbour)."""
    if mask.shape == (size[1], size[0]):
        return mask
    return np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST))
