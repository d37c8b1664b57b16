"""Which models rate and what runs them: settings declared like the others (see settings.py),
so the CLI, presets and run folders derive them too. Free of heavy imports.

The default MLLM is Qwen2.5-VL-7B-Instruct: open weights under Apache-2.0, native in
transformers (no remote code) and in vLLM, about 16 GB in bf16 (one 24 GB GPU with SAM2),
and the most used open 7B VLM in the IQA literature of 2025-2026, so numbers made with it
compare with others'. The paper's mPLUG-Owl3 is one `--preset paper` away. The default
SAM2 is the 2.1 "small" model: a quarter of large's parameters, and Algorithm 1 only
needs coarse masks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property

from llmiqa.settings import option

DEFAULT_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
DEFAULT_SEGMENTER = "facebook/sam2.1-hiera-small"
DTYPES = ("auto", "float32", "bfloat16", "float16")
MAX_DECODERS = 8  # decoding threads by default: more cores than this feed any model


def default_decoders() -> int:
    """One decoding thread per CPU core this process may use, at most MAX_DECODERS."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, MAX_DECODERS))


@dataclass(frozen=True)
class Models:
    """Which MLLMs rate (several: an ensemble, the mean of their scores) and which SAM2
    finds the regions."""

    model: tuple[str, ...] = field(
        default=(DEFAULT_MODEL,),
        metadata=option(
            "hub id (owner/name[@revision]) or local folder of an MLLM; repeat for an ensemble"
        ),
    )
    segmenter: str = field(
        default=DEFAULT_SEGMENTER,
        metadata=option("SAM2 hub id[@revision], local folder or original .pt file"),
    )

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("at least one model is needed")


@dataclass(frozen=True)
class Runtime:
    """What runs the models and where. Only the backend and the dtypes change a rating's
    numbers (both are part of its identity in the store); the options marked `speed_only`
    are speed and memory alone."""

    backend: str = field(
        default="auto",
        metadata=option(
            "what runs each model: auto (llmiqa's own port of a checkpoint when it has one, "
            "else transformers; server with --server), or a backend by name"
        ),
    )
    server: str | None = field(
        default=None,
        metadata=option(
            "URL of an OpenAI-compatible server to rate with; --model then names its model "
            "(API key from LLMIQA_API_KEY or OPENAI_API_KEY)"
        ),
    )
    device: str | None = field(
        default=None,
        metadata=option("cuda, cuda:1, cpu, mps (default: the best available)", speed_only=True),
    )
    dtype: str | None = field(
        default=None,
        metadata=option(
            "the MLLMs' dtype (default: bfloat16 on a GPU, else float32)", choices=DTYPES
        ),
    )
    segmenter_dtype: str | None = field(
        default=None, metadata=option("SAM2's dtype (default: as --dtype)", choices=DTYPES)
    )
    batch_size: int | None = field(
        default=None,
        metadata=option(
            "sub-images per forward pass (default: 1 on CPU, 8 on GPU)", speed_only=True
        ),
    )
    max_in_flight: int | None = field(
        default=None,
        metadata=option(
            "requests a vLLM engine (default 64) or a server (default 16) holds at once",
            speed_only=True,
        ),
    )

    decoders: int | None = field(
        default=None,
        metadata=option(
            "images decoded and hashed at once, each on a thread (default: one per CPU core "
            f"this process may use, at most {MAX_DECODERS})",
            speed_only=True,
        ),
    )

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_in_flight", "decoders"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")


class TorchDevice:
    """The torch device and dtype of a spec's `device` and `dtype` fields, resolved on first
    use: torch is imported then, not when the spec is made."""

    device: str | None
    dtype: str | None

    @cached_property
    def torch_device(self):
        from llmiqa.loading.devices import resolve_device

        return resolve_device(self.device)

    @cached_property
    def torch_dtype(self):
        from llmiqa.loading.devices import resolve_dtype

        return resolve_dtype(self.dtype, self.torch_device)
