"""Where models run and in which precision, decided once, before any image is touched."""

from __future__ import annotations

import torch

from llmiqa.errors import UsageError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str | None = None) -> torch.device:
    """`None` or "auto": the first CUDA GPU if there is one, else Apple MPS, else the CPU.

    A device that this machine does not have is refused here, once, with what it has.
    """
    if not name or name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name}: not a device name (cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UsageError(f"--device {name}: torch sees no CUDA GPU here (use --device cpu)")
        if device.index is not None and device.index >= count:
            raise UsageError(f"--device {name}: only {count} CUDA GPU(s) visible (0..{count - 1})")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {name}: Apple MPS is not available here")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"--device {name}: unsupported device type (cpu, cuda, mps)")
    return device


def resolve_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """`None` or "auto": bfloat16 on a GPU that has it, else float32 (CPUs are slow in half)."""
    if name and name != "auto":
        if name not in DTYPES:
            raise UsageError(f"unknown dtype {name!r}; choose one of {sorted(DTYPES)} or auto")
        return DTYPES[name]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def default_batch_size(device: torch.device) -> int:
    """On a CPU batching only adds padding (DESIGN.md §4); on a GPU it is the main lever."""
    return 1 if device.type == "cpu" else 8
