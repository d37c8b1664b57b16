"""The mask bookkeeping of SAM2's automatic mask generator, as small pure functions.

They reproduce `SAM2AutomaticMaskGenerator` of sam2 1.1.0 for one crop layer without the
mask-to-mask refinement (`crop_n_layers=0`, `use_m2m=False`): the same prompt grid, the same
low-resolution clean-up that `min_mask_region_area` switches on, stability at the image's own
resolution, inclusive boxes and torchvision's NMS. `Segmenter.generate` chains them; each one
is tested against the original code's outputs (tests/golden/sam2).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from scipy import ndimage

# At most this many bytes of full-resolution float logits are held at once (at least one
# mask): SAM2 resizes a whole batch of candidates, 9 GB for 64 points on a 12-megapixel photo.
FULL_RES_BYTES = 1 << 27

# Eight-connectivity, as sam2's connected-components kernel (and OpenCV's default) use.
_EIGHT = np.ones((3, 3), dtype=bool)


def point_grid(points_per_side: int) -> np.ndarray:
    """(n*n, 2) prompts (x, y) in [0, 1], row by row: the cell centres of an n x n grid.

    float64 from `np.linspace`, as sam2's `build_point_grid`: the prompts must match it to the
    last bit, since the decoder sees them.
    """
    offset = 1 / (2 * points_per_side)
    side = np.linspace(offset, 1 - offset, points_per_side)
    x = np.tile(side[None, :], (points_per_side, 1))
    y = np.tile(side[:, None], (1, points_per_side))
    return np.stack([x, y], axis=-1).reshape(-1, 2)


def prompt_points(
    points_per_side: int, width: int, height: int, side: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The grid in image pixels and in the model's square input frame, both float32.

    Computed in the original's order of operations: grid x (width, height) in float64, cast to
    float32, divided by the size and multiplied by the input side in float32.
    """
    pixels = torch.as_tensor(point_grid(points_per_side) * np.array([[width, height]]))
    pixels = pixels.to(torch.float32)
    frame = pixels.clone()
    frame[:, 0] = frame[:, 0] / width
    frame[:, 1] = frame[:, 1] / height
    return pixels, frame * side


def small_regions(mask: np.ndarray, max_area: int) -> np.ndarray:
    """The True pixels of a 2-D boolean array whose 8-connected component has <= max_area pixels."""
    labels, _ = ndimage.label(mask, structure=_EIGHT)
    areas = np.bincount(labels.ravel())
    areas[0] = max_area + 1  # background: never small
    return areas[labels] <= max_area


def remove_small_regions(logits: torch.Tensor, max_area: int, threshold: float) -> torch.Tensor:
    """SAM2's `min_mask_region_area` clean-up of (N, h, w) LOW-RESOLUTION logits.

    As sam2's `SAM2Transforms.postprocess_masks` (max_hole_area = max_sprinkle_area = the
    setting): background components of <= max_area low-res pixels become threshold + 10 (holes
    filled), then foreground components of <= max_area pixels become threshold - 10 (islands
    removed), both found on the logits as the decoder gave them, before upsampling. A mask
    made only of small islands becomes empty. (sam2 runs this with its CUDA extension and
    silently skips it when the extension is missing: then use max_area = 0.)
    """
    if max_area <= 0 or len(logits) == 0:
        return logits
    values = logits.detach().cpu().numpy()
    holes = np.stack([small_regions(plane <= threshold, max_area) for plane in values])
    islands = np.stack([small_regions(plane > threshold, max_area) for plane in values])
    filled = torch.where(torch.from_numpy(holes).to(logits.device), threshold + 10.0, logits)
    return torch.where(torch.from_numpy(islands).to(logits.device), threshold - 10.0, filled)


def upscale(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, h, w) low-res logits resized bilinearly to (N, H, W), exactly as SAM2 does it.

    Each map is resized on its own, so any chunking gives the same values as SAM2's batch.
    """
    return F.interpolate(logits[:, None], size, mode="bilinear", align_corners=False)[:, 0]


def stability_score(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """IoU of each (..., H, W) logit map cut at threshold + offset and at threshold - offset.

    A mask whose outline barely moves when the cut moves is one the model is sure of. The high
    cut lies inside the low one, so the IoU is a ratio of pixel counts: NaN when both are
    empty, as in SAM2 (NaN passes no threshold).
    """
    inner = count(logits > threshold + offset)
    outer = count(logits > threshold - offset)
    return inner.to(torch.float32) / outer.to(torch.float32)


def count(masks: torch.Tensor) -> torch.Tensor:
    """True pixels of each (..., H, W) boolean map (int32 sums: a third faster than int64)."""
    return masks.flatten(-2).sum(-1, dtype=torch.int32)


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, 4) float boxes (x0, y0, x1, y1) of (N, H, W) boolean masks, SAM2's convention:
    x1, y1 INCLUSIVE (the last pixel), and (0, 0, 0, 0) for an empty mask."""
    boxes = torch.zeros(len(masks), 4, device=masks.device)
    filled = masks.flatten(1).any(dim=1)
    if filled.any():
        boxes[filled] = torchvision.ops.masks_to_boxes(masks[filled]).to(boxes.dtype)
    return boxes


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_thresh: float) -> torch.Tensor:
    """Indices of the boxes that greedy NMS keeps, best score first: torchvision's
    `batched_nms` called exactly as SAM2 calls it (one category, float boxes).

    Box areas are (x1 - x0) * (y1 - y0) of the inclusive boxes, as in SAM2; equal scores keep
    the order that `torch.sort` gives on that device (not necessarily the index order on a
    CPU), so the same inputs in the same order give SAM2's result.
    """
    categories = torch.zeros(len(boxes), dtype=torch.int64, device=boxes.device)
    return torchvision.ops.batched_nms(boxes.float(), scores, categories, iou_thresh)


def chunks(count: int, size: tuple[int, int], budget: int | None = None) -> Iterator[slice]:
    """Slices of range(count) holding at most `budget` (default FULL_RES_BYTES) bytes of
    float32 (H, W) maps each, and at least one map."""
    step = max(1, (budget or FULL_RES_BYTES) // (4 * size[0] * size[1]))
    for start in range(0, count, step):
        yield slice(start, min(start + step, count))


def measure(
    logits: torch.Tensor, size: tuple[int, int], threshold: float, offset: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stability, inclusive box and area of each (N, h, w) low-res map at the image's (H, W).

    What SAM2 computes on its full-size batch, here a few maps at a time.
    """
    parts = []
    for part in chunks(len(logits), size):
        full = upscale(logits[part], size)
        masks = full > threshold
        stability = stability_score(full, threshold, offset)
        parts.append((stability, mask_boxes(masks), count(masks)))
        del full, masks
    if not parts:
        empty = logits.new_zeros(0)
        return empty, logits.new_zeros(0, 4), empty.int()
    stability, boxes, areas = zip(*parts, strict=True)
    return torch.cat(stability), torch.cat(boxes), torch.cat(areas)
