"""Scoring options by name: one table derived from the settings dataclasses, and presets.

Each option is declared once, on its dataclass field (runtime.Models, standards.Standard,
regions.RegionSettings, aggregate.Aggregation, segmenters.masks.MaskSettings,
runtime.Runtime) or by the backend that takes it (raters.registry); its name is the
field's, in options dictionaries, presets and config.json alike, and `--field-name` on
the command line. The CLI, presets, run folders and ablations all read this table, so a
new knob is one field. Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from typing import Any

from llmiqa.errors import UsageError
from llmiqa.loading.runtime import Models, Runtime
from llmiqa.method.aggregate import Aggregation
from llmiqa.method.regions import RegionSettings
from llmiqa.method.standards import Standard
from llmiqa.raters import registry
from llmiqa.segmenters.masks import MaskSettings
from llmiqa.settings import declared, default_of

TYPES = {"str": str, "int": int, "float": float, "bool": bool, "tuple[str, ...]": list}
GROUPS = {
    Models: "models",
    Standard: "standard",
    RegionSettings: "regions",
    Aggregation: "aggregation (recomputed from stored ratings, no model call)",
    MaskSettings: "SAM2 mask generation",
    Runtime: "runtime",
}


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


def speed_only() -> frozenset[str]:
    """The options that change no number, only where and how fast models run (device,
    batch size, requests in flight): the store's identity of a rating leaves them out, and
    so does what tells one run from another."""
    return frozenset(
        f.name for cls in GROUPS for f in declared(cls) if f.metadata.get("speed_only")
    )


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
