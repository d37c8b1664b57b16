"""Algorithm 1 of the paper and the sub-images it yields: pure functions on arrays.

Areas are pixel counts of the MASK (never of its box); the area threshold t is given as a
fraction of the image's pixels so one default suits every resolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

REGION_MODES = ("bbox", "mask", "whole-only")
# Crops narrower than this are widened (with original pixels) so every processor accepts
# them; Qwen-VL refuses sides under 28 px at extreme aspect ratios.
MIN_CROP_SIDE = 28

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 with x1, y1 exclusive


@dataclass(frozen=True)
class Region:
    box: Box
    area: int  # pixels of the mask
    kind: str  # "object" (a kept SAM2 mask) or "complement" (pixels no kept mask covers)
    mask: np.ndarray = field(repr=False, compare=False)  # bool (H, W), image-sized

    def area_fraction(self) -> float:
        return self.area / self.mask.size


def mask_box(mask: np.ndarray) -> Box:
    """Tight box of the True pixels of a non-empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def select_regions(
    masks: Sequence[np.ndarray], shape: tuple[int, int], min_area: float
) -> list[Region]:
    """Algorithm 1: keep masks of area >= t, then add the complement if its area >= t.

    `shape` is (height, width) of the image; `min_area` is t as a fraction of its pixels.
    With no mask kept, the complement is the whole image.
    """
    threshold = min_area * shape[0] * shape[1]
    regions = []
    covered = np.zeros(shape, dtype=bool)
    for mask in masks:
        if mask.shape != shape:
            raise ValueError(f"mask of shape {mask.shape} for an image of shape {shape}")
        area = int(mask.sum())
        if area > 0 and area >= threshold:
            regions.append(Region(mask_box(mask), area, "object", mask))
            covered |= mask
    remain = ~covered
    area = int(remain.sum())
    if area > 0 and area >= threshold:
        regions.append(Region(mask_box(remain), area, "complement", remain))
    return regions


def widen_box(box: Box, size: tuple[int, int], min_side: int = MIN_CROP_SIDE) -> Box:
    """Grow a box symmetrically to at least `min_side` per side, within a (width, height) image."""
    x0, x1 = _widen(box[0], box[2], size[0], min_side)
    y0, y1 = _widen(box[1], box[3], size[1], min_side)
    return x0, y0, x1, y1


def _widen(lo: int, hi: int, limit: int, min_side: int) -> tuple[int, int]:
    side = min(min_side, limit)
    if hi - lo >= side:
        return lo, hi
    lo = max(0, min(lo - (side - (hi - lo)) // 2, limit - side))
    return lo, lo + side


def crop_box(region: Region, image_size: tuple[int, int]) -> Box:
    """The box actually cut out for a region: its mask box, widened if too thin."""
    return widen_box(region.box, image_size)


def sub_image(image: Image.Image, region: Region, mode: str) -> Image.Image:
    """What the MLLM sees for a region.

    "bbox" (the paper's choice): the box of the ORIGINAL pixels. "mask": the same box with
    every pixel outside the mask set to zero (the ablation the paper shows is worse).
    """
    box = crop_box(region, image.size)
    if mode == "bbox":
        return image.crop(box)
    if mode == "mask":
        x0, y0, x1, y1 = box
        pixels = np.asarray(image)[y0:y1, x0:x1].copy()
        pixels[~region.mask[y0:y1, x0:x1]] = 0
        return Image.fromarray(pixels)
    raise ValueError(f"unknown region mode {mode!r}; choose one of {REGION_MODES[:2]}")
