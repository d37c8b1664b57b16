"""SAM2 automatic-mask-generation settings: every knob that changes the masks.

Kept apart from the generator (segment.py) so that options, presets and the CLI can
name them without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmiqa.settings import option


@dataclass(frozen=True)
class MaskSettings:
    """Tuned COARSE by default: a handful of regions per photo.

    The paper tunes SAM2 to 7.22 masks per SPAQ image on average without publishing the
    values; each default below moves one of SAM2's (32 points per side, IoU 0.8, stability
    0.95, NMS 0.7) toward fewer, larger masks. A threshold of 0 keeps every candidate.
    """

    # 8x8 prompts instead of 32x32: every region wider than 1/8 of the image still gets a
    # point, smaller ones are what Algorithm 1's area threshold drops, and 16x fewer decodes.
    points_per_side: int = field(default=8, metadata=option("SAM2 prompt grid n x n"))
    # Prompts decoded per model call: memory and speed only. SAM2's value, sized for a GPU.
    points_per_batch: int = field(default=64, metadata=option("SAM2 prompts per decoder call"))
    # The model's own estimate of a mask's IoU; SAM2 keeps >= 0.8, SAM 1 kept >= 0.88.
    pred_iou_thresh: float = field(default=0.88, metadata=option("min predicted mask IoU"))
    # Stability is about 1 - (boundary band / area), so raising it above SAM2's 0.95 drops
    # small and thin masks first and keeps large smooth regions.
    stability_score_thresh: float = field(default=0.97, metadata=option("min mask stability"))
    # Half-width of the logit band the stability score measures (SAM2's default).
    stability_score_offset: float = field(
        default=1.0, metadata=option("logit offset of the stability score")
    )
    # Box IoU above which the less confident mask goes (SAM2: 0.7). Part, object and whole
    # masks of one thing overlap heavily, so a lower cut keeps one of them; pixels no kept
    # mask covers still reach the MLLM through Algorithm 1's complement region.
    box_nms_thresh: float = field(
        default=0.5, metadata=option("box IoU above which NMS drops a mask")
    )
    # The logit cut between inside and outside that SAM2 was trained for.
    mask_threshold: float = 0.0

    def __post_init__(self) -> None:
        if self.points_per_side < 1 or self.points_per_batch < 1:
            raise ValueError(
                f"points_per_side ({self.points_per_side}) and points_per_batch "
                f"({self.points_per_batch}) must be at least 1"
            )
