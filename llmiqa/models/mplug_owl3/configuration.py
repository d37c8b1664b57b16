"""The official mPLUG-Owl3 config.json, where to find a checkpoint, and which releases we support.

Only the 7B-240728 code family is implemented. Every later release also says
`"model_type": "mplugowl3"`, so the family is told apart by what its config.json
changes (seen on the hub, 2024 releases):

- 7B-241101 (fused hyper-attention, `<|start_cut|>` media template, list media_offset):
  `vision_config.image_size` 378 instead of 384 (and vocab_size 151651, hyper_layers
  [7, 15, 23, 26]).
- 1B/2B-241014 (Qwen2-0.5B/1.5B): `tie_word_embeddings` true; their hyper layers use a
  static gate (`self_attn.gate`) instead of 240728's `self_attn.gate_proj`.

Both are refused from config.json alone, before any weights are downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

from huggingface_hub.dataclasses import strict
from transformers import Qwen2Config, SiglipVisionConfig

from llmiqa.errors import ModelLoadError

CROP_SIZE = 384  # the 240728 image processor cuts 384 x 384 crops; 241101 uses 378

# The 7B-240728 vision tower (SigLIP so400m, 384 px), the official default.
SO400M = {
    "hidden_size": 1152,
    "image_size": CROP_SIZE,
    "intermediate_size": 4304,
    "num_attention_heads": 16,
    "num_hidden_layers": 27,
    "patch_size": 14,
}

# What the hub snapshot of an official checkpoint needs; its remote *.py code is never fetched.
CHECKPOINT_FILES = ("*.json", "*.safetensors", "*.txt")


@strict
class MplugOwl3Config(Qwen2Config):
    """A Qwen2 config plus the hyper layers and the SigLIP vision tower, as in config.json."""

    model_type = "mplugowl3"
    sub_configs_defaults: ClassVar[dict] = {"vision_config": SiglipVisionConfig}

    hyper_layers: list[int] | None = None  # 1-based decoder layers with cross-attention
    vision_config: dict | SiglipVisionConfig | None = None

    def __post_init__(self, **kwargs) -> None:
        if self.hyper_layers is None:
            self.hyper_layers = [1, 9, 17, 25]  # 7B-240728
        if self.vision_config is None:
            self.vision_config = dict(SO400M)  # the base class turns dicts into SiglipVisionConfig
        super().__post_init__(**kwargs)


def check_supported(config: dict, source: str) -> None:
    """Refuse, from config.json alone, mPLUG-Owl3 releases of another code family."""
    image_size = (config.get("vision_config") or {}).get("image_size", CROP_SIZE)
    if image_size != CROP_SIZE:
        raise ModelLoadError(
            f"{source}: vision image_size {image_size} (240728: {CROP_SIZE}) marks the "
            "mPLUG-Owl3-241101 family (fused hyper-attention, <|start_cut|> media template); "
            "not supported yet: only the 7B-240728 code family is implemented"
        )
    if config.get("tie_word_embeddings"):
        raise ModelLoadError(
            f"{source}: tied word embeddings mark the mPLUG-Owl3-1B/2B-241014 family "
            "(static hyper-attention gate self_attn.gate instead of gate_proj); "
            "not supported yet: only the 7B-240728 code family is implemented"
        )


def load_config(folder: Path, source: str) -> MplugOwl3Config:
    """config.json of a checkpoint folder, refused early if it is not a supported mPLUG-Owl3."""
    try:
        raw = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{source}: unreadable config.json ({error})") from None
    if raw.get("model_type") != MplugOwl3Config.model_type:
        raise ModelLoadError(
            f"{source}: model_type {raw.get('model_type')!r} is not mplugowl3 (mPLUG-Owl3)"
        )
    check_supported(raw, source)
    return MplugOwl3Config.from_dict(raw)
