"""Scoring options by name: one table derived from the settings dataclasses, and presets.

Each option is declared once, on its dataclass field (runtime.Models, standards.Standard,
regions.RegionSettings, aggregate.Aggregation, segmenters.masks.MaskSettings,
runtime.Runtime) or by the backend that takes it (raters.registry); its name is the
field's, in options dictionaries, presets and config.json alike, and `--field-name` on
the command line. The CLI, presets, run folders and ablations all read this table, so a
new knob is one field. Nothing here imports torch.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, dataclass, fields
from typing import Any

from llmiqa.aggregate import Aggregation
from llmiqa.errors import UsageError
from llmiqa.raters import registry
from llmiqa.regions import RegionSettings
from llmiqa.runtime import Models, Runtime
from llmiqa.segmenters.masks import DOGIQA_MASKS, MaskSettings
from llmiqa.settings import declared, default_of
from llmiqa.standards import QUESTIONS, Standard

TYPES = {"str": str, "int": int, "float": float, "bool": bool, "tuple[str, ...]": list}
GROUPS = {
    Models: "models",
    Standard: "standard",
    RegionSettings: "regions",
    Aggregation: "aggregation (recomputed from stored ratings, no model call)",
    MaskSettings: "SAM2 mask generation",
    Runtime: "runtime",
}
STORE_HELP = "SQLite file caching masks and ratings across runs (default: in memory)"


@dataclass(frozen=True)
class Knob:
    """One option: its name (the field's), default, type, help, and where it is declared."""

    key: str
    default: object
    kind: type
    help: str
    choices: tuple | None = None
    group: str = "backends"
    owner: type | None = None  # the settings dataclass it builds; None: a backend option


def _kind(annotation: Any) -> type:
    """The option's type from the field's annotation (a string: annotations are lazy)."""
    text = annotation if isinstance(annotation, str) else annotation.__name__
    return TYPES[text.removesuffix(" | None")]


def knobs() -> tuple[Knob, ...]:
    """Every option, settings first, then the registered backends' (as of now)."""
    found = []
    for cls, group in GROUPS.items():
        for f in declared(cls):
            choices = f.metadata["choices"]
            if cls is Runtime and f.name == "backend":
                choices = registry.names()
            default = default_of(f)
            if isinstance(default, tuple):
                default = list(default)
            found.append(Knob(f.name, default, _kind(f.type), f.metadata["help"], choices,
                              group, cls))  # fmt: skip
    for name, option in registry.options().items():
        takers = ", ".join(registry.takers(name))
        found.append(Knob(name, option.default, option.kind, f"{takers}: {option.help}"))
    return tuple(found)


def defaults() -> dict[str, object]:
    return {knob.key: knob.default for knob in knobs()}


def values_of(settings) -> dict[str, object]:
    """The options entries of a settings dataclass (those declared as options)."""
    return {
        f.name: list(value) if isinstance(value := getattr(settings, f.name), tuple) else value
        for f in declared(type(settings))
    }


def flags_of(settings) -> list[str]:
    """The command-line flags that give a settings dataclass its values (defaults left out)."""
    flags = []
    for f in declared(type(settings)):
        value = getattr(settings, f.name)
        if value == default_of(f):
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        else:
            flags += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return flags


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


def build(cls: type, options: dict[str, object]):
    """The settings dataclass `cls` that an options dictionary describes."""
    values = {}
    for f in fields(cls):
        if f.name not in options:
            if f.default is MISSING and f.default_factory is MISSING:
                raise UsageError(f"option {f.name} is missing")
            continue
        value = options[f.name]
        values[f.name] = tuple(value) if isinstance(value, list) else value
    try:
        return cls(**values)
    except ValueError as error:
        raise UsageError(str(error)) from None


def backend_options(options: dict[str, object]) -> dict[str, object]:
    """The backends' own options in an options dictionary (each backend takes its own)."""
    return {name: options[name] for name in registry.options() if name in options}


def add_arguments(
    parser: argparse.ArgumentParser,
    only: tuple[str, ...] | None = None,
    restrict: dict[str, tuple] | None = None,
    preset: bool = True,
) -> None:
    """Every option (or `only` those) as a --flag, grouped, each showing its default;
    `restrict` narrows an option's choices for a command that accepts fewer; `preset`
    offers --preset."""
    if preset:
        parser.add_argument(
            "--preset", choices=sorted(PRESETS), help="start from a named configuration: "
            "paper (the paper's text), dogiqa (the authors' released code), or another "
            "training-free protocol: sepiqa (SeP-IQA), qalign (Q-Align's readout), qbench "
            "(Q-Bench's); flags still win"
        )  # fmt: skip
    groups: dict[str, argparse._ArgumentGroup] = {}
    for knob in knobs():
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


def add_store(parser: argparse.ArgumentParser, help: str = STORE_HELP) -> None:
    """--store, the same knob on every command that reads or fills a store."""
    parser.add_argument("--store", help=help)


def explicit_options(args: argparse.Namespace) -> dict[str, object]:
    """The options a command line gave (None: not given)."""
    return {knob.key: getattr(args, knob.key, None) for knob in knobs()}


def from_arguments(args: argparse.Namespace) -> dict[str, object]:
    """The resolved options of parsed arguments (absent flags take preset or default)."""
    return resolve(explicit_options(args), getattr(args, "preset", None))
