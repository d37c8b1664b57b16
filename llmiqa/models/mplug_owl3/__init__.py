"""mPLUG-Owl3 (7B-240728 code family) without remote code: config, model, processor."""

from llmiqa.models.mplug_owl3.configuration import (
    CHECKPOINT_FILES,
    MplugOwl3Config,
    check_supported,
)
from llmiqa.models.mplug_owl3.modeling import MplugOwl3Model, MplugOwl3Output
from llmiqa.models.mplug_owl3.processing import MplugOwl3Processor

__all__ = [
    "CHECKPOINT_FILES",
    "MplugOwl3Config",
    "MplugOwl3Model",
    "MplugOwl3Output",
    "MplugOwl3Processor",
    "check_supported",
]
