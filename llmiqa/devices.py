"""Where models run and in which precision, decided once for every model we load."""

from __future__ import annotations

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str | None = None) -> torch.device:
    """`None` or "auto": the first CUDA GPU if there is one, else Apple MPS, else the CPU."""
    if name and name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """`None` or "auto": bfloat16 on a GPU that has it, else float32 (CPUs are slow in half)."""
    if name and name != "auto":
        if name not in DTYPES:
            raise ValueError(f"unknown dtype {name!r}; choose one of {sorted(DTYPES)} or auto")
        return DTYPES[name]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def default_batch_size(device: torch.device) -> int:
    """On a CPU batching only adds padding (DESIGN.md §4); on a GPU it is the main lever."""
    return 1 if device.type == "cpu" else 8
