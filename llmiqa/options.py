"""Scoring options by name: one table derived from the settings dataclasses, presets, and
the Scorer an options dictionary describes.

Each option is declared once, on its dataclass field (standards.Standard,
regions.RegionSettings, aggregate.Aggregation, masks.MaskSettings) or in the backend
registry (raters.registry); the CLI, presets, run folders (config.json) and ablations
all read this table, so a new knob is one field. Nothing here imports torch.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmiqa.aggregate import Aggregation
from llmiqa.errors import UsageError
from llmiqa.masks import MaskSettings
from llmiqa.raters import ENGINES, registry
from llmiqa.regions import RegionSettings
from llmiqa.settings import declared, default_of
from llmiqa.standards import Standard

if TYPE_CHECKING:
    from llmiqa.pipeline import Scorer

DEFAULT_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
DEFAULT_SEGMENTER = "facebook/sam2.1-hiera-small"
TYPES = {"str": str, "int": int, "float": float, "bool": bool}  # annotations are strings here
GROUPS = {
    Standard: "standard",
    RegionSettings: "regions",
    Aggregation: "aggregation (recomputed from stored ratings, no model call)",
    MaskSettings: "SAM2 mask generation",
}


@dataclass(frozen=True)
class Knob:
    """One option: its key in options dictionaries (and --flag), default, type, help."""

    key: str
    default: object
    kind: type
    help: str
    choices: tuple | None = None
    group: str = "models"
    owner: type | None = None  # the settings dataclass it builds, if any
    field: str | None = None  # its field name there


def _knobs() -> tuple[Knob, ...]:
    top = (
        Knob("model", [DEFAULT_MODEL], list, "hub id (owner/name[@revision]) or local "
             "folder of an MLLM; repeat for an ensemble"),
        Knob("segmenter", DEFAULT_SEGMENTER, str, "SAM2 hub id[@revision], local folder or "
             "original .pt file"),
        Knob("backend", "transformers", str, "what runs a local checkpoint: transformers, or "
             "vLLM's engine in this process (needs vllm installed)", ENGINES),
        Knob("server", None, str, "URL of an OpenAI-compatible server to rate with; --model "
             "then names its model (API key from LLMIQA_API_KEY or OPENAI_API_KEY)"),
        Knob("max_in_flight", None, int, "requests a vLLM engine (default 64) or a server "
             "(default 16) holds at once"),
    )  # fmt: skip
    fields = tuple(
        Knob(
            (f.metadata.get("flag") or f.name).removeprefix("--").replace("-", "_"),
            default_of(f),
            TYPES[f.type] if isinstance(f.type, str) else f.type,
            f.metadata["help"],
            f.metadata.get("choices"),
            GROUPS[cls],
            cls,
            f.name,
        )
        for cls in GROUPS
        for f in declared(cls)
    )
    backends = tuple(
        Knob(name, o.default, o.kind, o.help, group="backends")
        for name, o in registry.OPTIONS.items()
    )
    runtime = (
        Knob("device", None, str, "cuda, cuda:1, cpu, mps (default: the best available)",
             group="runtime"),
        Knob("dtype", None, str, "float32, bfloat16, float16 (default: bfloat16 on a GPU, "
             "else float32)", ("auto", "float32", "bfloat16", "float16"), "runtime"),
        Knob("segmenter_dtype", None, str, "SAM2's dtype (default: as --dtype)",
             ("auto", "float32", "bfloat16", "float16"), "runtime"),
        Knob("batch_size", None, int, "sub-images per forward pass (default: 1 on CPU, 8 on "
             "GPU)", group="runtime"),
    )  # fmt: skip
    return top + fields + backends + runtime


KNOBS = _knobs()
DEFAULTS: dict[str, object] = {knob.key: knob.default for knob in KNOBS}

PRESETS: dict[str, dict[str, object]] = {
    # The paper's text (Section 4.1): mPLUG-Owl3 + SAM2, K = 7 words as a system turn, one
    # greedy digit (argmax), bbox sub-images, area weights, s = s_global + s_local.
    "paper": {
        "model": ["mPLUG/mPLUG-Owl3-7B-240728"],
        # "pre-trained SAM2", its largest model (Table 5); the transformers-format release
        "segmenter": "facebook/sam2.1-hiera-large",
        "levels": 7,
        "standard": "word",
        "wording": "paper",
        "readout": "argmax",
        "region_mode": "bbox",
        "aggregate": "area",
        "global_weight": 1.0,
        "lam": 1.0,
        "count_weight": 0.0,
        "normalize": False,
        "cut": True,
    },
    # The released evaluation code (sjtuzzq/Dog-IQA, branch zzq), which produced the
    # paper's numbers: its prompt strings, the full-vocabulary greedy token, SAM 2.0
    # hiera-large with its generator settings, t = 1000 px, its complement weight and
    # s = s_local + 0.1 N + 0.5 s_global, in fp16.
    "dogiqa": {
        "model": ["mPLUG/mPLUG-Owl3-7B-240728"],
        # the authors' exact file (sam2_hiera_large.pt, built with sam2_hiera_l.yaml), in
        # float32 as build_sam2 loads it, while mPLUG-Owl3 runs in float16
        "segmenter": "facebook/sam2-hiera-large/sam2_hiera_large.pt",
        "segmenter_dtype": "float32",
        "levels": 7,
        "standard": "word",
        "wording": "dogiqa",
        "readout": "greedy",
        "region_mode": "bbox",
        "min_area": 1000.0,
        "complement_area": "remainder",
        "aggregate": "area",
        "global_weight": 0.5,
        "lam": 1.0,
        "count_weight": 0.1,
        "normalize": False,
        "cut": True,
        "dtype": "float16",
        "points_per_side": 8,
        "points_per_batch": 128,
        "pred_iou_thresh": 0.9,
        "stability_score_thresh": 0.8,
        "stability_score_offset": 0.7,
        "box_nms_thresh": 0.9,
        # sam2 1.1.0 gives this to its predictor: holes and islands up to 1000 px of the
        # 256x256 low-res masks, cleaned when its CUDA extension is built (see README)
        "min_mask_region_area": 1000,
    },
}


def resolve(explicit: dict[str, object], preset: str | None = None) -> dict[str, object]:
    """Explicit values (None = not given) over the preset over the defaults; validated."""
    if preset is not None and preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    unknown = sorted(set(explicit) - set(DEFAULTS))
    if unknown:
        raise UsageError(f"unknown option(s) {', '.join(unknown)}")
    chosen = PRESETS.get(preset or "", {})
    options = {
        key: explicit[key] if explicit.get(key) is not None else chosen.get(key, default)
        for key, default in DEFAULTS.items()
    }
    for cls in GROUPS:
        build(cls, options)  # raises on any value the settings refuse
    return options


def build(cls: type, options: dict[str, object]):
    """The settings dataclass `cls` that an options dictionary describes."""
    values = {knob.field: options[knob.key] for knob in KNOBS if knob.owner is cls}
    try:
        return cls(**values)
    except ValueError as error:
        raise UsageError(str(error)) from None


def make_scorer(options: dict[str, object], store=None, progress: bool = False) -> Scorer:
    """The Scorer that a resolved options dictionary describes."""
    from llmiqa.pipeline import Scorer

    return Scorer(
        options["model"],
        standard=build(Standard, options),
        aggregation=build(Aggregation, options),
        regions=build(RegionSettings, options),
        segmenter=options["segmenter"],
        mask_settings=build(MaskSettings, options),
        device=options["device"],
        dtype=options["dtype"],
        segmenter_dtype=options["segmenter_dtype"],
        batch_size=options["batch_size"],
        rater_options=tuple((name, options[name]) for name in registry.OPTIONS),
        engine=options["backend"],
        server=options["server"],
        max_in_flight=options["max_in_flight"],
        store=store,
        progress=progress,
    )


def add_arguments(
    parser: argparse.ArgumentParser,
    only: tuple[str, ...] | None = None,
    restrict: dict[str, tuple] | None = None,
) -> None:
    """Every option (or `only` those) as a --flag, grouped, each showing its default;
    `restrict` narrows an option's choices for a command that accepts fewer."""
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), help="start from a named configuration: "
        "paper (the paper's text) or dogiqa (the authors' released code); flags still win"
    )  # fmt: skip
    groups: dict[str, argparse._ArgumentGroup] = {}
    for knob in KNOBS:
        if only is not None and knob.key not in only:
            continue
        if knob.group not in groups:
            groups[knob.group] = parser.add_argument_group(knob.group)
        group = groups[knob.group]
        flag = "--" + knob.key.replace("_", "-")
        shown = ", ".join(knob.default) if isinstance(knob.default, list) else knob.default
        text = knob.help if knob.default is None else f"{knob.help} (default: {shown})"
        if knob.kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, help=text)
        elif knob.kind is list:
            group.add_argument(flag, action="append", help=text)
        else:
            choices = (restrict or {}).get(knob.key, knob.choices)
            group.add_argument(flag, type=knob.kind, choices=choices, help=text)


def from_arguments(args: argparse.Namespace) -> dict[str, object]:
    """The resolved options of parsed arguments (absent flags take preset or default)."""
    explicit = {knob.key: getattr(args, knob.key, None) for knob in KNOBS}
    return resolve(explicit, getattr(args, "preset", None))
