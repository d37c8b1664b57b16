"""Declaring a setting once: its default, help and choices sit on the dataclass field.

The CLI, presets and run folders read them from there (see options.py), so a new knob is
one field. Kept free of heavy imports: `llmiqa --help` must not import torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import MISSING, Field, fields


def option(help: str, *, choices: Sequence | None = None, speed_only: bool = False) -> dict:
    """Field metadata that makes a dataclass field a user-facing option, named as the field
    (--field-name on the command line, field_name in presets and config.json).
    `speed_only`: it changes where and how fast models run, never a number (it is not part
    of a rating's identity in the store), so a rerun changing it is the same run."""
    return {"help": help, "choices": tuple(choices) if choices else None, "speed_only": speed_only}


def declared(cls: type) -> list[Field]:
    """The fields of a settings dataclass that carry option metadata, in order."""
    return [f for f in fields(cls) if "help" in f.metadata]


def default_of(field: Field):
    if field.default is not MISSING:
        return field.default
    return field.default_factory()
