"""The rater backends and the options that change their outputs, declared without torch.

A backend class takes the options named for it here (`defaults`); RaterSpec puts their
values in the rater's identity, so ratings made with other values are never mixed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackendOption:
    default: object
    kind: type
    help: str
    backends: tuple[str, ...]


OPTIONS: dict[str, BackendOption] = {
    "max_pixels": BackendOption(
        None,
        int,
        "transformers models: downscale sub-images above this many pixels first (a cost "
        "cap; changes what the model sees)",
        ("transformers", "vllm"),
    ),
    "cut": BackendOption(
        True,
        bool,
        "mPLUG-Owl3: cut each sub-image into 384-px crops plus a global view (its default)",
        ("mplug_owl3",),
    ),
}


def defaults(backend: str) -> dict[str, object]:
    """The options a backend takes, with their defaults."""
    return {name: o.default for name, o in OPTIONS.items() if backend in o.backends}
