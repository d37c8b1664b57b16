"""Scoring options by name: defaults, presets, and the Scorer they describe.

The CLI, run folders (config.json) and ablations all speak this one dictionary, so a
run can be rebuilt exactly from what it wrote down.
"""

from __future__ import annotations

from llmiqa.pipeline import DEFAULT_MIN_AREA, DEFAULT_MODEL, DEFAULT_SEGMENTER, Scorer
from llmiqa.results import Aggregation
from llmiqa.segment import MaskSettings
from llmiqa.standards import Standard

DEFAULTS: dict[str, object] = {
    "model": [DEFAULT_MODEL],
    "levels": 7,
    "standard": "word",
    "readout": "expected",
    "region_mode": "bbox",
    "aggregate": "area",
    "lam": 1.0,
    "min_area": DEFAULT_MIN_AREA,
    "segmenter": DEFAULT_SEGMENTER,
    # SAM2 automatic mask generation (see segment.MaskSettings for why these values)
    "points_per_side": MaskSettings.points_per_side,
    "points_per_batch": MaskSettings.points_per_batch,
    "pred_iou_thresh": MaskSettings.pred_iou_thresh,
    "stability_score_thresh": MaskSettings.stability_score_thresh,
    "box_nms_thresh": MaskSettings.box_nms_thresh,
    # mPLUG-Owl3 only: cut images into 384-px crops plus a global view (its own default)
    "cut": True,
    # transformers backends only: downscale sub-images above this many pixels first
    "max_pixels": None,
    "device": None,
    "dtype": None,
    "batch_size": None,
}

PRESETS: dict[str, dict[str, object]] = {
    # The paper's exact configuration (Section 4.1): mPLUG-Owl3 + SAM2, K = 7 words,
    # one greedy token (argmax), bbox sub-images, area weights, s = s_global + s_local.
    "paper": {
        "model": ["mPLUG/mPLUG-Owl3-7B-240728"],
        # The paper names "pre-trained SAM2" (largest model, Table 5); the original SAM2
        # repos hold only .pt files, so this is the transformers-format 2.1 release.
        "segmenter": "facebook/sam2.1-hiera-large",
        "levels": 7,
        "standard": "word",
        "readout": "argmax",
        "region_mode": "bbox",
        "aggregate": "area",
        "lam": 1.0,
        "cut": True,
    },
}


def resolve(explicit: dict[str, object], preset: str | None = None) -> dict[str, object]:
    """Explicit values (None = not given) over the preset over the defaults."""
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    chosen = PRESETS.get(preset or "", {})
    return {
        name: explicit[name] if explicit.get(name) is not None else chosen.get(name, default)
        for name, default in DEFAULTS.items()
    }


def make_scorer(options: dict[str, object], store=None, progress: bool = False) -> Scorer:
    """The Scorer that a resolved options dictionary describes."""
    return Scorer(
        options["model"],
        standard=Standard(options["standard"], options["levels"]),
        aggregation=Aggregation(options["readout"], options["aggregate"], options["lam"]),
        region_mode=options["region_mode"],
        min_area=options["min_area"],
        segmenter=options["segmenter"],
        mask_settings=MaskSettings(
            points_per_side=options["points_per_side"],
            points_per_batch=options["points_per_batch"],
            pred_iou_thresh=options["pred_iou_thresh"],
            stability_score_thresh=options["stability_score_thresh"],
            box_nms_thresh=options["box_nms_thresh"],
        ),
        device=options["device"],
        dtype=options["dtype"],
        batch_size=options["batch_size"],
        rater_options=(("cut", options["cut"]), ("max_pixels", options["max_pixels"])),
        store=store,
        progress=progress,
    )
