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

The model calls live in two methods (`_embed`, `_decode`); the bookkeeping is in `amg`.
Checkpoints: a transformers folder or hub id, or an original SAM2 `.pt` (`original`); the
spec naming them is in `spec`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from PIL import Image

from llmiqa.errors import ModelLoadError, one_line
from llmiqa.method.regions import Box
from llmiqa.segmenters import amg
from llmiqa.segmenters.masks import MaskSettings
from llmiqa.segmenters.original import load_original

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
    """Candidates of the prompt grid in SAM2's order (point by point, three masks each),
    filtered together as SAM2's MaskData is; measured as SAM2 measures them once `measure`d.
    """

    points: torch.Tensor  # (N, 2) prompt (x, y) in image pixels
    logits: torch.Tensor | None  # (N, h, w) low-res mask logits (None once let go)
    predicted_iou: torch.Tensor  # (N,)
    stability_score: torch.Tensor | None = None  # (N,) after the min_mask_region_area clean-up
    boxes: torch.Tensor | None = None  # (N, 4) x0, y0, x1, y1, SAM2's inclusive convention
    areas: torch.Tensor | None = None  # (N,)

    def filter(self, keep: torch.Tensor) -> Candidates:
        return Candidates(*(None if v is None else v[keep] for v in vars(self).values()))

    @staticmethod
    def cat(parts: list[Candidates]) -> Candidates:
        columns = zip(*(vars(part).values() for part in parts), strict=True)
        return Candidates(*(None if c[0] is None else torch.cat(c) for c in columns))


class Segmenter:
    """A loaded Sam2Model as an automatic mask generator (segmenters.spec loads one)."""

    def __init__(self, model, settings: MaskSettings, device: torch.device) -> None:
        self.model = model.to(device).eval()
        self.settings, self.device = settings, device
        self.dtype = next(model.parameters()).dtype

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
        for batch in self._decoded(image):
            if settings.pred_iou_thresh > 0:
                batch = batch.filter(batch.predicted_iou > settings.pred_iou_thresh)
            batch = self._measure(batch, size)
            if settings.stability_score_thresh > 0:
                batch = batch.filter(batch.stability_score >= settings.stability_score_thresh)
            kept.append(batch)
        every = Candidates.cat(kept)
        order = amg.nms(every.boxes, every.predicted_iou, settings.box_nms_thresh).tolist()
        out = []
        for part in amg.chunks(len(order), size):
            chosen = order[part]
            masks = amg.upscale(every.logits[chosen], size) > settings.mask_threshold
            for i, mask in zip(chosen, masks.cpu().numpy(), strict=True):
                x0, y0, x1, y1 = (int(v) for v in every.boxes[i].tolist())
                area = int(every.areas[i])
                out.append(
                    GeneratedMask(
                        mask=mask,
                        predicted_iou=float(every.predicted_iou[i]),
                        stability_score=float(every.stability_score[i]),
                        area=area,
                        box=(x0, y0, x1 + 1, y1 + 1) if area > 0 else (0, 0, 0, 0),
                        point=(float(every.points[i, 0]), float(every.points[i, 1])),
                    )
                )
        return out

    def masks(self, image: Image.Image) -> list[np.ndarray]:
        """The boolean (H, W) masks of `generate`, in its order (predicted IoU, highest first)."""
        return [generated.mask for generated in self.generate(image)]

    @torch.inference_mode()
    def candidates(self, image: Image.Image) -> Candidates:
        """Every candidate of the grid, unfiltered and measured (its logits let go)."""
        size = (image.height, image.width)
        measured = [self._measure(batch, size) for batch in self._decoded(image)]
        return replace(Candidates.cat(measured), logits=None)

    def _measure(self, batch: Candidates, size: tuple[int, int]) -> Candidates:
        """SAM2's clean-up (min_mask_region_area) of the low-res logits, then stability, box
        and area of each candidate at the image's size."""
        settings = self.settings
        logits = amg.remove_small_regions(
            batch.logits, settings.min_mask_region_area, settings.mask_threshold
        )
        measured = amg.measure(
            logits, size, settings.mask_threshold, settings.stability_score_offset
        )
        return Candidates(batch.points, logits, batch.predicted_iou, *measured)

    def _decoded(self, image: Image.Image) -> Iterator[Candidates]:
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
            yield Candidates(points.to(self.device), logits, iou)

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


def load_model(kind: str, what, dtype: torch.dtype, name: str):
    """The Sam2Model of a resolved source (segmenters.spec): an original .pt file, or a
    transformers checkpoint; in `dtype`."""
    if kind == "pt":
        model, _ = load_original(what, dtype)
        return model
    from transformers import Sam2Model

    source = str(what.path) if what.path else what.source
    try:
        return Sam2Model.from_pretrained(source, revision=what.commit, dtype=dtype)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ModelLoadError(f"{name}: cannot load as SAM2 ({one_line(error)})") from None
