"""Algorithm 1 of the paper and the sub-images it yields: pure functions on arrays.

A region's weight is its MASK area (never its box's). The area threshold t is a fraction
of the image's pixels (below 1, so one default suits every resolution) or a pixel count
(1 and above, as the released code's t = 1000 px).

The complement (pixels no kept mask covers) becomes one more region. Its pixels are
always exactly the uncovered ones; its weight and whether it is kept differ between the
paper's reading ("uncovered": the number of those pixels) and the released code's
("remainder": H·W minus the SUM of kept areas, so overlaps are subtracted twice).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from llmiqa.settings import option

REGION_MODES = ("bbox", "mask", "whole-only")
COMPLEMENT_RULES = ("uncovered", "remainder")

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 with x1, y1 exclusive


@dataclass(frozen=True)
class RegionSettings:
    """How masks become regions and regions become sub-images."""

    region_mode: str = field(
        default="bbox",
        metadata=option(
            "bbox: box crops of the original image (the paper); mask: the mask with zero "
            "padding (its worse ablation); whole-only: no regions",
            choices=REGION_MODES,
        ),
    )
    min_area: float = field(
        default=0.01,
        metadata=option("Algorithm 1's threshold t: below 1 a fraction of the image, else pixels"),
    )
    complement_area: str = field(
        default="uncovered",
        metadata=option(
            "complement weight: uncovered pixels (the paper), or H*W minus the sum of kept "
            "areas (remainder, the released code)",
            choices=COMPLEMENT_RULES,
        ),
    )

    def __post_init__(self) -> None:
        if self.region_mode not in REGION_MODES:
            raise ValueError(
                f"unknown region mode {self.region_mode!r}; choose one of {REGION_MODES}"
            )
        if self.complement_area not in COMPLEMENT_RULES:
            raise ValueError(
                f"unknown complement rule {self.complement_area!r}; "
                f"choose one of {COMPLEMENT_RULES}"
            )
        if not self.min_area > 0:
            raise ValueError(
                f"min_area must be > 0 (a fraction below 1, or pixels), got {self.min_area}"
            )

    def threshold(self, shape: tuple[int, int]) -> float:
        """t in pixels for an image of (height, width)."""
        return self.min_area * shape[0] * shape[1] if self.min_area < 1 else self.min_area


@dataclass(frozen=True)
class Region:
    box: Box  # the mask's tight box
    area: int  # its weight: mask pixels (the complement: see COMPLEMENT_RULES)
    kind: str  # "object" (a kept SAM2 mask) or "complement" (pixels no kept mask covers)
    mask: np.ndarray = field(repr=False, compare=False)  # bool (H, W), image-sized

    def area_fraction(self) -> float:
        return self.area / self.mask.size


def mask_box(mask: np.ndarray) -> Box:
    """Tight box of the True pixels of a non-empty mask: the union of its components' boxes."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def select_regions(
    masks: Sequence[np.ndarray], shape: tuple[int, int], settings: RegionSettings
) -> list[Region]:
    """Algorithm 1: keep masks of area >= t, then add the complement if its weight >= t.

    `shape` is (height, width) of the image. With no mask kept, the complement is the
    whole image.
    """
    threshold = settings.threshold(shape)
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
    uncovered = int(remain.sum())
    if settings.complement_area == "uncovered":
        weight = uncovered
    else:
        weight = shape[0] * shape[1] - sum(region.area for region in regions)
    if uncovered > 0 and weight > 0 and weight >= threshold:
        regions.append(Region(mask_box(remain), weight, "complement", remain))
    return regions


def widen_box(box: Box, size: tuple[int, int], min_side: int) -> Box:
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


@dataclass(frozen=True)
class View:
    """What a model sees of an image, as plain data: the whole image, a box of its
    original pixels, or (mask mode) that box with every pixel outside the mask set to 0.

    Hashable and small (the mask travels as packed bits of the box), so a request naming
    it can be keyed, deduplicated and sent to another process without pixels.
    """

    box: Box | None = None  # None: the whole image
    mask: bytes | None = field(default=None, repr=False)  # bits of the mask inside `box`

    @property
    def geometry(self) -> str:
        """Names the sub-image in the store: "whole", "bbox:x0,y0,x1,y1" or "mask:...:hash"."""
        if self.box is None:
            return "whole"
        coords = ",".join(map(str, self.box))
        if self.mask is None:
            return f"bbox:{coords}"
        return f"mask:{coords}:{hashlib.blake2b(self.mask, digest_size=8).hexdigest()}"

    def area(self, size: tuple[int, int]) -> int:
        """Pixels shown, for an image of (width, height)."""
        if self.box is None:
            return size[0] * size[1]
        x0, y0, x1, y1 = self.box
        return (x1 - x0) * (y1 - y0)

    def pixels(self, image: Image.Image) -> Image.Image:
        if self.box is None:
            return image
        if self.mask is None:
            return image.crop(self.box)
        x0, y0, x1, y1 = self.box
        pixels = np.asarray(image)[y0:y1, x0:x1].copy()
        inside = np.unpackbits(np.frombuffer(self.mask, np.uint8))[: (y1 - y0) * (x1 - x0)]
        pixels[~inside.reshape(y1 - y0, x1 - x0).astype(bool)] = 0
        return Image.fromarray(pixels)


def region_view(region: Region, size: tuple[int, int], mode: str, min_side: int) -> View:
    """What the MLLM sees of a region in `mode`: its box of the original pixels ("bbox",
    the paper's choice), widened to `min_side` (with original pixels) for processors that
    refuse thinner images, or in "mask" mode the same box zeroed outside the mask. A box
    crop covering the whole image IS the whole image (rated once)."""
    if mode not in REGION_MODES[:2]:
        raise ValueError(f"unknown region mode {mode!r}; choose one of {REGION_MODES[:2]}")
    box = widen_box(region.box, size, min_side)
    if mode == "bbox":
        return View() if box == (0, 0, *size) else View(box)
    x0, y0, x1, y1 = box
    return View(box, np.packbits(region.mask[y0:y1, x0:x1]).tobytes())
