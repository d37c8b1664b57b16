"""Named configurations (pyiqa's named configs): the paper's text, the authors' released
code, and other training-free protocols; `resolve` lays explicit values over a preset over
the defaults of the options table (llmiqa.scoring.knobs)."""

from __future__ import annotations

from llmiqa.errors import UsageError
from llmiqa.method.standards import QUESTIONS
from llmiqa.scoring.knobs import GROUPS, build, defaults, values_of
from llmiqa.segmenters.masks import DOGIQA_MASKS

PRESETS: dict[str, dict[str, object]] = {
    # The paper's text (Section 4.1): mPLUG-Owl3 + SAM2, K = 7 words as a system turn, one
    # greedy digit (argmax), bbox sub-images, area weights, s = s_global + s_local.
    "paper": {
        "model": ["mPLUG/mPLUG-Owl3-7B-240728"],
        # "pre-trained SAM2", its largest model (Table 5); the transformers-format release
        "segmenter": "facebook/sam2.1-hiera-large",
        "levels": 7,
        "kind": "word",
        "wording": "paper",
        "readout": "argmax",
        "region_mode": "bbox",
        "weighting": "area",
        "global_weight": 1.0,
        "lam": 1.0,
        "count_weight": 0.0,
        "normalize": False,
        "cut": True,
    },
    # The released evaluation code (sjtuzzq/Dog-IQA, branch zzq), which produced the
    # paper's numbers: its prompt strings, the full-vocabulary greedy token, SAM 2.0
    # hiera-large with its generator settings (segmenters.masks.DOGIQA_MASKS), t = 1000 px,
    # its complement weight and s = s_local + 0.1 N + 0.5 s_global, in fp16.
    "dogiqa": {
        "model": ["mPLUG/mPLUG-Owl3-7B-240728"],
        # the authors' exact file (sam2_hiera_large.pt, built with sam2_hiera_l.yaml), in
        # float32 as build_sam2 loads it, while mPLUG-Owl3 runs in float16
        "segmenter": "facebook/sam2-hiera-large/sam2_hiera_large.pt",
        "segmenter_dtype": "float32",
        "levels": 7,
        "kind": "word",
        "wording": "dogiqa",
        "readout": "greedy",
        "region_mode": "bbox",
        "min_area": 1000.0,
        "complement_area": "remainder",
        "weighting": "area",
        "global_weight": 0.5,
        "lam": 1.0,
        "count_weight": 0.1,
        "normalize": False,
        "cut": True,
        "dtype": "float16",
        **values_of(DOGIQA_MASKS),
    },
    # Other training-free protocols, on whatever model is given: each one's question, its
    # opened answer and its readout, whole image only as their originals (add
    # --region-mode bbox or mask for a mix-grained variant). Every word run keeps what all
    # three readouts need, so `llmiqa ablate` gives the other two with no model call.
    **{
        question: {"kind": question, "levels": 5, "readout": question, "region_mode": "whole-only"}
        for question in QUESTIONS
    },
}


def resolve(explicit: dict[str, object], preset: str | None = None) -> dict[str, object]:
    """Explicit values (None = not given) over the preset over the defaults; validated."""
    if preset is not None and preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    known = defaults()
    unknown = sorted(set(explicit) - set(known))
    if unknown:
        raise UsageError(f"unknown option(s) {', '.join(unknown)}")
    chosen = PRESETS.get(preset or "", {})
    options = {
        key: explicit[key] if explicit.get(key) is not None else chosen.get(key, default)
        for key, default in known.items()
    }
    for cls in GROUPS:
        build(cls, options)  # raises on any value the settings refuse
    return options
