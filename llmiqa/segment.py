"""SAM2 automatic mask generation: the raw masks Algorithm 1 (`regions.select_regions`) filters.

As in SAM2's own generator, a grid of one-point prompts is decoded against ONE image
embedding, each point giving three nested candidate masks; candidates the model itself
doubts (predicted IoU, stability) are dropped and overlapping ones removed by box NMS.
The model calls live in one method (`Segmenter._predict`); the bookkeeping is pure functions.

Unlike SAM2, candidates are scored and de-duplicated on the decoder's 256x256 logits and
only the survivors are resized to the image. Stability and box IoU are ratios of areas,
which the bilinear resize keeps up to the size of one low-res pixel (on synthetic masks
over a tenth of the image, stability moved by at most 0.0025), and time and memory no
longer grow with the photo: SAM2 resizes every candidate first, 9 GB of float logits per
batch of 64 points for a 12-megapixel photo.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from llmiqa.checkpoints import Checkpoint, resolve
from llmiqa.devices import resolve_device, resolve_dtype
from llmiqa.errors import ModelLoadError, one_line
from llmiqa.masks import MaskSettings

# The facebook/sam2.1-hiera-* repos are "sam2_video" (one checkpoint serves images and
# videos); Sam2Model loads both kinds.
SAM2_MODEL_TYPES = ("sam2", "sam2_video")


def point_grid(points_per_side: int) -> torch.Tensor:
    """(n*n, 2) prompt points (x, y) in [0, 1]: the cell centres of an n x n grid, row by row.

    Centres rather than corners, so no prompt sits on the image border.
    """
    centres = (torch.arange(points_per_side, dtype=torch.float32) + 0.5) / points_per_side
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    return torch.stack([x.flatten(), y.flatten()], dim=1)


def stability_score(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """IoU of each (..., H, W) logit map cut at threshold + offset and at threshold - offset.

    A mask whose outline barely moves when the cut moves is one the model is sure of. The
    high cut lies inside the low one, so the IoU is a ratio of areas; 0 when both are empty.
    """
    inner = (logits > threshold + offset).sum(dim=(-2, -1))
    outer = (logits > threshold - offset).sum(dim=(-2, -1))
    return inner / outer.clamp(min=1)


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, 4) tight boxes (x0, y0, x1, y1), x1 and y1 exclusive as in `regions.Box`, of
    (N, H, W) boolean masks; (0, 0, 0, 0) for an empty mask."""
    x0, x1 = _span(masks.any(dim=-2))
    y0, y1 = _span(masks.any(dim=-1))
    return torch.stack([x0, y0, x1, y1], dim=-1)


def _span(hits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First index and last index + 1 of the True entries of each row; (0, 0) for none."""
    size = hits.shape[-1]
    index = torch.arange(size, device=hits.device)
    first = torch.where(hits, index, size).amin(dim=-1)
    end = torch.where(hits, index + 1, 0).amax(dim=-1)
    return first.masked_fill(end == 0, 0), end


def box_iou(boxes: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """(N, M) IoU of integer pixel boxes (x0, y0, x1, y1 exclusive); 0 where both are empty."""
    low = torch.maximum(boxes[:, None, :2], others[None, :, :2])
    high = torch.minimum(boxes[:, None, 2:], others[None, :, 2:])
    inter = (high - low).clamp(min=0).prod(dim=-1)
    union = _area(boxes)[:, None] + _area(others)[None, :] - inter
    return inter / union.clamp(min=1)


def _area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2:] - boxes[:, :2]).clamp(min=0).prod(dim=-1)


def box_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_thresh: float) -> torch.Tensor:
    """Greedy non-maximum suppression: indices of the boxes kept, best score first.

    A box goes when its IoU with a better kept box exceeds `iou_thresh`; of equal scores the
    earlier box counts as better, so the result never depends on sorting noise.
    """
    order = torch.sort(scores, descending=True, stable=True).indices
    overlaps = (box_iou(boxes[order], boxes[order]) > iou_thresh).cpu().numpy()
    suppressed = np.zeros(len(order), dtype=bool)
    kept = []
    for rank in range(len(order)):
        if not suppressed[rank]:
            kept.append(rank)
            suppressed |= overlaps[rank]
    return order[kept]


def keep_candidates(
    logits: torch.Tensor, iou_scores: torch.Tensor, settings: MaskSettings
) -> torch.Tensor:
    """Which of N candidate (N, H, W) logit maps to keep: predicted IoU and stability at or
    above their thresholds, and not empty."""
    stable = stability_score(logits, settings.mask_threshold, settings.stability_score_offset)
    filled = (logits > settings.mask_threshold).flatten(1).any(dim=1)
    confident = iou_scores >= settings.pred_iou_thresh
    return confident & (stable >= settings.stability_score_thresh) & filled


def upscale_mask(logits: torch.Tensor, size: tuple[int, int], threshold: float) -> np.ndarray:
    """A low-res (h, w) logit map resized bilinearly to (H, W) and cut, as SAM2 does."""
    resized = F.interpolate(logits[None, None], size=size, mode="bilinear", align_corners=False)
    return (resized[0, 0] > threshold).cpu().numpy()


def segmenter_identity(checkpoint: str, dtype: torch.dtype, settings: MaskSettings) -> str:
    """The store's name for masks: checkpoint identity, dtype and every setting that changes
    them. Computable before loading, so stored masks need no model."""
    knobs = ",".join(
        f"{name}={value}"
        for name, value in asdict(settings).items()
        if name != "points_per_batch"  # speed and memory only (float rounding aside)
    )
    return f"{checkpoint}|{str(dtype).removeprefix('torch.')}|sam2-amg:{knobs}"


@dataclass(frozen=True)
class SegmenterSpec:
    """A segmenter named before loading: stored masks are keyed by `identity`, so masks
    already in the store need no SAM2 at all; resolving it raises every problem early."""

    model: str
    settings: MaskSettings = MaskSettings()
    device: str | None = None
    dtype: str | None = None
    revision: str | None = None

    @cached_property
    def checkpoint(self) -> Checkpoint:
        checkpoint = resolve(self.model, self.revision)
        model_type = checkpoint.config.get("model_type")
        if model_type not in SAM2_MODEL_TYPES:
            raise ModelLoadError(
                f"{self.model}: not a SAM2 checkpoint (model_type {model_type!r}, "
                f"expected one of {', '.join(SAM2_MODEL_TYPES)})"
            )
        return checkpoint

    @cached_property
    def torch_dtype(self) -> torch.dtype:
        return resolve_dtype(self.dtype, resolve_device(self.device))

    @cached_property
    def identity(self) -> str:
        return segmenter_identity(self.checkpoint.identity, self.torch_dtype, self.settings)

    def load(self) -> Segmenter:
        return Segmenter(self)


class Segmenter:
    """A SAM2 checkpoint as a coarse automatic mask generator."""

    def __init__(self, spec: SegmenterSpec) -> None:
        from transformers import Sam2ImageProcessor, Sam2Model

        checkpoint = spec.checkpoint
        source = str(checkpoint.path) if checkpoint.path else checkpoint.source
        self.device = resolve_device(spec.device)
        self.dtype = spec.torch_dtype
        try:
            self.processor = Sam2ImageProcessor.from_pretrained(source, revision=checkpoint.commit)
            self.model = Sam2Model.from_pretrained(
                source, revision=checkpoint.commit, dtype=self.dtype
            )
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ModelLoadError(f"{spec.model}: cannot load as SAM2 ({one_line(error)})") from None
        self.model.to(self.device).eval()
        self.settings = spec.settings
        self.identity = spec.identity

    @torch.inference_mode()
    def masks(self, image: Image.Image) -> list[np.ndarray]:
        """Boolean (H, W) masks at the image's own resolution, largest first.

        No image is too small: SAM2 stretches every image to its square input, so even a
        1-pixel-high strip is segmented; a mask left with no pixel at the image's resolution
        is dropped, so tiny images may get none. An image with no pixels gets none.
        """
        if image.width == 0 or image.height == 0:
            return []
        settings = self.settings
        logits, scores = [], []
        for batch_logits, batch_scores in self._predict(image):
            keep = keep_candidates(batch_logits, batch_scores, settings)
            logits.append(batch_logits[keep])
            scores.append(batch_scores[keep])
        candidates = torch.cat(logits)
        boxes = mask_boxes(candidates > settings.mask_threshold)
        kept = box_nms(boxes, torch.cat(scores), settings.box_nms_thresh)
        size = (image.height, image.width)
        masks = [upscale_mask(candidates[i], size, settings.mask_threshold) for i in kept]
        return sorted((m for m in masks if m.any()), key=np.count_nonzero, reverse=True)

    def _predict(self, image: Image.Image) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The model calls: embed the image once, then decode the point grid batch by batch.

        Yields float32 low-res logits (N, h, w), 256x256 for real checkpoints, and predicted
        IoUs (N,): three nested candidates per point.
        """
        pixels = self.processor(images=image, return_tensors="pt")["pixel_values"]
        embeddings = self.model.get_image_embeddings(pixels.to(self.device, self.dtype))
        side = self.model.config.prompt_encoder_config.image_size  # the prompts' frame
        points = point_grid(self.settings.points_per_side).to(self.device) * side
        for batch in points.split(self.settings.points_per_batch):
            labels = torch.ones(1, len(batch), 1, dtype=torch.long, device=self.device)
            output = self.model(
                image_embeddings=embeddings,
                input_points=batch[None, :, None, :],
                input_labels=labels,
                multimask_output=True,
            )
            yield output.pred_masks[0].flatten(0, 1).float(), output.iou_scores[0].flatten().float()
