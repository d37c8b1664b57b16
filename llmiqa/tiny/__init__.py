"""Tiny random checkpoints, built offline from real configs: for trying llmiqa without a
hub (`llmiqa tiny`, `make try`) and for its tests. Random weights prove the plumbing,
never accuracy."""

from llmiqa.tiny.builders import (
    LLAVA_TEMPLATE,
    PERMISSIVE_MASK_FLAGS,
    PERMISSIVE_MASKS,
    QWEN_SPECIALS,
    QWEN_TEMPLATE,
    build_llava,
    build_mplug_owl3,
    build_qwen2_vl,
    build_sam2,
    byte_tokenizer,
    hub_layout,
    retokenized_mplug_owl3,
    template,
)

__all__ = [
    "LLAVA_TEMPLATE",
    "PERMISSIVE_MASKS",
    "PERMISSIVE_MASK_FLAGS",
    "QWEN_SPECIALS",
    "QWEN_TEMPLATE",
    "build_llava",
    "build_mplug_owl3",
    "build_qwen2_vl",
    "build_sam2",
    "byte_tokenizer",
    "hub_layout",
    "retokenized_mplug_owl3",
    "template",
]
