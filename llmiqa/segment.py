"""SAM2 automatic mask generation: the raw masks Algorithm 1 (`regions.select_regions`) filters.

`Segmenter.generate` is SAM2's own `SAM2AutomaticMaskGenerator.generate` (sam2 1.1.0) for one
crop layer without mask-to-mask refinement, the configuration the Dog-IQA authors ran, on
transformers' Sam2Model: a grid of one-point prompts is decoded against ONE image embedding,
each point giving three nested candidates; candidates whose predicted IoU is not above its
threshold go, the `min_mask_region_area` clean-up runs on the low-res logits, the rest are
resized to the image, their stability measured there, and box NMS keeps the best of
overlapping ones. tests/golden/sam2 holds the original code's outputs it is checked against.

Unlike SAM2 it never holds a whole batch of candidates at full resolution: candidates are
filtered by predicted IoU on the cheap outputs first, the survivors are resized a few at a
time (`amg.FULL_RES_BYTES`), and only the low-res logits are kept until NMS has chosen.

The model calls live in two methods (`_embed`, `_decode`); the bookkeeping is in `llmiqa.amg`.
Checkpoints: a transformers folder or hub id, or an original SAM2 `.pt` (`sam2_original`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from llmiqa import amg
from llmiqa.checkpoints import Checkpoint, resolve
from llmiqa.devices import resolve_device, resolve_dtype
from llmiqa.errors import ModelLoadError, one_line
from llmiqa.masks import MaskSettings
from llmiqa.regions import Box
from llmiqa.sam2_original import (
    hub_has_config,
    is_original_checkpoint,
    load_original,
    resolve_hub_checkpoint,
)

# The facebook/sam2.1-hiera-* repos are "sam2_video" (one checkpoint serves images and
# videos); Sam2Model loads both kinds.
SAM2_MODEL_TYPES = ("sam2", "sam2_video")

# SAM2's input normalisation (sam2.utils.transforms.SAM2Transforms): ImageNet statistics.
PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class GeneratedMask:
    """One output of the generator, with SAM2's per-mask record."""

    mask: np.ndarray = field(repr=False, compare=False)  # bool (H, W), the image's size
    predicted_iou: float
    stability_score: float  # NaN for an empty mask (only when the stability filter is off)
    area: int  # pixels of `mask`
    box: Box  # x0, y0, x1, y1 with x1, y1 exclusive; (0, 0, 0, 0) for an empty mask
    point: tuple[float, float]  # the prompt (x, y) in image pixels


@dataclass(frozen=True)
class Candidates:
    """Every candidate of the prompt grid before any filter, in SAM2's order (point by point,
    three masks each), measured as SAM2 measures them: for stage-by-stage checks."""

    points: torch.Tensor  # (N, 2) prompt (x, y) in image pixels
    predicted_iou: torch.Tensor  # (N,)
    stability_score: torch.Tensor  # (N,) after the min_mask_region_area clean-up
    boxes: torch.Tensor  # (N, 4) x0, y0, x1, y1, SAM2's inclusive convention
    areas: torch.Tensor  # (N,)


def segmenter_identity(checkpoint: str, dtype: torch.dtype, settings: MaskSettings) -> str:
    """The store's name for masks: checkpoint identity, dtype and every setting that changes
    them. Computable before loading, so stored masks need no model."""
    knobs = ",".join(
        f"{name}={value}"
        for name, value in asdict(settings).items()
        if name != "points_per_batch"  # speed and memory only (float rounding aside)
    )
    return f"{checkpoint}|{str(dtype).removeprefix('torch.')}|sam2-amg-1.1.0:{knobs}"


@dataclass(frozen=True)
class SegmenterSpec:
    """A segmenter named before loading: stored masks are keyed by `identity`, so masks
    already in the store need no SAM2 at all; resolving it raises every problem early.

    `model`: a transformers folder or hub id (`facebook/sam2.1-hiera-large`), an original
    `.pt` file (`sam2_hiera_large.pt`), or a hub file `owner/name/file.pt`. A hub repo that
    holds no transformers config but an original checkpoint (the facebook/sam2-hiera-* repos
    as first released) loads through its `.pt`.
    """

    model: str
    settings: MaskSettings = MaskSettings()
    device: str | None = None
    dtype: str | None = None
    revision: str | None = None

    @cached_property
    def source(self) -> tuple[str, Path | Checkpoint, str]:
        """(kind, what to load, checkpoint identity): kind "pt" (an original checkpoint file)
        or "transformers" (a resolved transformers checkpoint)."""
        return _resolve(self.model, self.revision)

    @cached_property
    def torch_device(self) -> torch.device:
        return resolve_device(self.device)

    @cached_property
    def torch_dtype(self) -> torch.dtype:
        return resolve_dtype(self.dtype, self.torch_device)

    @cached_property
    def identity(self) -> str:
        return segmenter_identity(self.source[2], self.torch_dtype, self.settings)

    def load(self) -> Segmenter:
        return Segmenter(self)


class Segmenter:
    """A SAM2 checkpoint as an automatic mask generator (see SegmenterSpec for sources)."""

    def __init__(self, spec: SegmenterSpec) -> None:
        self.device, self.dtype = spec.torch_device, spec.torch_dtype
        self.settings = spec.settings
        self.model = _load(spec).to(self.device).eval()
        self.identity = spec.identity

    @torch.inference_mode()
    def generate(self, image: Image.Image) -> list[GeneratedMask]:
        """SAM2's automatic masks of an image, in SAM2's output order: the order box NMS keeps
        them, i.e. by predicted IoU, highest first.

        No image is too small: SAM2 stretches every image to its square input. An image with no
        pixels gets no mask.
        """
        if image.width == 0 or image.height == 0:
            return []
        settings = self.settings
        size = (image.height, image.width)
        kept = []
        for points, logits, iou in self._candidates(image):
            if settings.pred_iou_thresh > 0:
                keep = iou > settings.pred_iou_thresh
                points, logits, iou = points[keep], logits[keep], iou[keep]
            logits = amg.remove_small_regions(
                logits, settings.min_mask_region_area, settings.mask_threshold
            )
            stability, boxes, areas = amg.measure(
                logits, size, settings.mask_threshold, settings.stability_score_offset
            )
            if settings.stability_score_thresh > 0:
                keep = stability >= settings.stability_score_thresh
                points, logits, iou = points[keep], logits[keep], iou[keep]
                stability, boxes, areas = stability[keep], boxes[keep], areas[keep]
            kept.append((points, logits, iou, stability, boxes, areas))
        points, logits, iou, stability, boxes, areas = (
            torch.cat(part) for part in zip(*kept, strict=True)
        )
        order = amg.nms(boxes, iou, settings.box_nms_thresh).tolist()
        out = []
        for part in amg.chunks(len(order), size):
            chosen = order[part]
            masks = amg.upscale(logits[chosen], size) > settings.mask_threshold
            for i, mask in zip(chosen, masks.cpu().numpy(), strict=True):
                x0, y0, x1, y1 = (int(v) for v in boxes[i].tolist())
                out.append(
                    GeneratedMask(
                        mask=mask,
                        predicted_iou=float(iou[i]),
                        stability_score=float(stability[i]),
                        area=int(areas[i]),
                        box=(x0, y0, x1 + 1, y1 + 1) if areas[i] > 0 else (0, 0, 0, 0),
                        point=(float(points[i, 0]), float(points[i, 1])),
                    )
                )
        return out

    def masks(self, image: Image.Image) -> list[np.ndarray]:
        """The boolean (H, W) masks of `generate`, in its order (predicted IoU, highest first)."""
        return [generated.mask for generated in self.generate(image)]

    @torch.inference_mode()
    def candidates(self, image: Image.Image) -> Candidates:
        """Every candidate of the grid, unfiltered, with SAM2's measures (see Candidates)."""
        settings = self.settings
        size = (image.height, image.width)
        parts = []
        for points, logits, iou in self._candidates(image):
            logits = amg.remove_small_regions(
                logits, settings.min_mask_region_area, settings.mask_threshold
            )
            measured = amg.measure(
                logits, size, settings.mask_threshold, settings.stability_score_offset
            )
            parts.append((points, iou, *measured))
        return Candidates(*(torch.cat(values) for values in zip(*parts, strict=True)))

    def _candidates(self, image: Image.Image):
        """Per batch of prompts: their points in image pixels, low-res logits and predicted
        IoUs, three candidates per point, all float32 (N, ...)."""
        embeddings = self._embed(image)
        side = self.model.config.prompt_encoder_config.image_size
        pixels, frame = amg.prompt_points(
            self.settings.points_per_side, image.width, image.height, side
        )
        for start in range(0, len(frame), self.settings.points_per_batch):
            batch = frame[start : start + self.settings.points_per_batch].to(self.device)
            logits, iou = self._decode(embeddings, batch)
            points = pixels[start : start + len(batch)].repeat_interleave(3, dim=0)
            yield points.to(self.device), logits, iou

    def _embed(self, image: Image.Image) -> list[torch.Tensor]:
        """The image embedding, preprocessed as SAM2's predictor does: RGB in [0, 1], resized
        to the square input bilinearly with antialiasing, ImageNet-normalised."""
        from torchvision.transforms import functional as TF

        side = self.model.config.prompt_encoder_config.image_size
        rgb = np.asarray(image.convert("RGB"))
        pixels = torch.from_numpy(rgb.transpose(2, 0, 1).copy()).float().div(255)
        pixels = TF.resize(pixels, [side, side], antialias=True)
        pixels = TF.normalize(pixels, PIXEL_MEAN, PIXEL_STD)[None]
        return self.model.get_image_embeddings(pixels.to(self.device, self.dtype))

    def _decode(
        self, embeddings: list[torch.Tensor], points: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-res logits (3B, h, w), 256x256 for real checkpoints, and predicted IoUs (3B,) of
        B one-point prompts (in the model's input frame): three candidates per point."""
        labels = torch.ones(1, len(points), 1, dtype=torch.long, device=self.device)
        output = self.model(  # float32 points, as SAM2's; the model casts after normalising
            image_embeddings=embeddings,
            input_points=points[None, :, None, :],
            input_labels=labels,
            multimask_output=True,
        )
        return output.pred_masks[0].flatten(0, 1).float(), output.iou_scores[0].flatten().float()


def sam2_checkpoint_identity(source: str, revision: str | None = None) -> str:
    """The checkpoint part of `segmenter_identity` for any source `Segmenter` takes, without
    loading the model (an original .pt on the hub is downloaded, as loading would)."""
    return _resolve(source, revision)[2]


def _resolve(source: str, revision: str | None) -> tuple[str, Path | Checkpoint, str]:
    """(kind, what, identity) of a segmenter source: see SegmenterSpec.source."""
    if is_original_checkpoint(source):
        if Path(source).is_file():
            checkpoint = resolve(source, revision, config=False)
            return "pt", checkpoint.path, checkpoint.identity
        path, commit, name = resolve_hub_checkpoint(source, revision)
        return "pt", path, f"{name}@{commit}"
    hub_id = not Path(source).exists() and source.count("/") == 1
    if hub_id and not hub_has_config(source, revision):
        # A hub repo without a transformers config: its original .pt, if it has one.
        path, commit, name = resolve_hub_checkpoint(source, revision)
        return "pt", path, f"{name}@{commit}"
    checkpoint = resolve(source, revision)
    model_type = checkpoint.config.get("model_type")
    if model_type not in SAM2_MODEL_TYPES:
        raise ModelLoadError(
            f"{source}: not a SAM2 checkpoint (model_type {model_type!r}, "
            f"expected one of {', '.join(SAM2_MODEL_TYPES)})"
        )
    return "transformers", checkpoint, checkpoint.identity


def _load(spec: SegmenterSpec):
    """The Sam2Model of any supported source, in the spec's dtype."""
    kind, what, _ = spec.source
    if kind == "pt":
        model, _ = load_original(what, spec.torch_dtype)
        return model
    from transformers import Sam2Model

    source = str(what.path) if what.path else what.source
    try:
        return Sam2Model.from_pretrained(source, revision=what.commit, dtype=spec.torch_dtype)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ModelLoadError(f"{spec.model}: cannot load as SAM2 ({one_line(error)})") from None
