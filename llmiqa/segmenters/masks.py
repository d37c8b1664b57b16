"""SAM2 automatic-mask-generation settings: every knob that changes the masks.

Kept apart from the generator (segment.py) so that options, presets and the CLI can
name them without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmiqa.settings import option


@dataclass(frozen=True)
class MaskSettings:
    """SAM2's names and meanings; defaults tuned COARSE: a handful of regions per photo.

    The paper tunes SAM2 to 7.22 masks per SPAQ image on average without publishing the
    values; each default below moves one of SAM2's (32 points per side, IoU 0.8, stability
    0.95, NMS 0.7) toward fewer, larger masks. As in SAM2, a threshold of 0 (or below) turns
    its filter off. `DOGIQA_MASKS` holds the authors' released values.
    """

    # 8x8 prompts instead of 32x32: every region wider than 1/8 of the image still gets a
    # point, smaller ones are what Algorithm 1's area threshold drops, and 16x fewer decodes.
    points_per_side: int = field(default=8, metadata=option("SAM2 prompt grid n x n"))
    # Prompts decoded per model call: memory and speed only. SAM2's value, sized for a GPU.
    points_per_batch: int = field(default=64, metadata=option("SAM2 prompts per decoder call"))
    # A candidate stays when the model's own estimate of its IoU is ABOVE this (SAM2: 0.8).
    pred_iou_thresh: float = field(
        default=0.88, metadata=option("predicted mask IoU a candidate must exceed")
    )
    # Stability is about 1 - (boundary band / area), so raising it above SAM2's 0.95 drops
    # small and thin masks first and keeps large smooth regions.
    stability_score_thresh: float = field(default=0.97, metadata=option("min mask stability"))
    # Half-width of the logit band the stability score measures (SAM2's default; the
    # authors used 0.7, a narrower band, so more masks count as stable).
    stability_score_offset: float = field(
        default=1.0, metadata=option("logit offset of the stability score")
    )
    # Box IoU above which the less confident mask goes (SAM2: 0.7). Part, object and whole
    # masks of one thing overlap heavily, so a lower cut keeps one of them; pixels no kept
    # mask covers still reach the MLLM through Algorithm 1's complement region.
    box_nms_thresh: float = field(
        default=0.5, metadata=option("box IoU above which NMS drops a mask")
    )
    # SAM2's clean-up (0 = off): holes and islands of at most this many pixels OF THE 256x256
    # LOW-RES LOGITS are filled / removed before resizing (see amg.remove_small_regions).
    min_mask_region_area: int = field(
        default=0,
        metadata=option("SAM2 clean-up: holes and islands up to this size on the 256x256 "
                        "low-res masks (0 = off)"),
    )  # fmt: skip
    # The logit cut between inside and outside that SAM2 was trained for.
    mask_threshold: float = 0.0

    def __post_init__(self) -> None:
        if self.points_per_side < 1 or self.points_per_batch < 1:
            raise ValueError(
                f"points_per_side ({self.points_per_side}) and points_per_batch "
                f"({self.points_per_batch}) must be at least 1"
            )
        if self.min_mask_region_area < 0:
            raise ValueError(f"min_mask_region_area must be >= 0, got {self.min_mask_region_area}")


# The Dog-IQA authors' generator (sjtuzzq/Dog-IQA, branch zzq, dogiqa/eval.py), with
# crop_n_layers=0 and use_m2m=False as they set them (their crop_n_points_downscale_factor
# acts on crop layers only, so it changes nothing).
DOGIQA_MASKS = MaskSettings(
    points_per_side=8,
    points_per_batch=128,
    pred_iou_thresh=0.9,
    stability_score_thresh=0.8,
    stability_score_offset=0.7,
    box_nms_thresh=0.9,
    min_mask_region_area=1000,
)
