"""What a number depends on besides the code and its inputs: the machine and the packages.

Float kernels differ between CPUs (AVX2, AVX-512, ARM) and GPUs, so two machines can give
results a rounding apart; recording where a result was made tells a later difference in
the code from one in the machine. Recorded in metrics.json and with golden data.
"""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

# CPU features that decide which float kernels run (x86 SIMD, ARM's vector units).
KERNEL_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16",
                "asimd", "sve", "sve2")  # fmt: skip


def machine() -> dict:
    """The CPU (model, cores, kernel-relevant flags), torch's CPU kernel set and GPUs."""
    model, flags = _cpuinfo()
    described = {
        "cpu": model or platform.processor() or platform.machine(),
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "flags": [flag for flag in KERNEL_FLAGS if flag in flags],
    }
    try:
        import torch
    except ImportError:
        return described
    described["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    described["torch_threads"] = torch.get_num_threads()
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        described["gpus"] = [torch.cuda.get_device_name(i) for i in range(count)]
    return described


def versions(names: tuple[str, ...]) -> dict[str, str | None]:
    """Installed versions of these distributions (None: not installed)."""
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def _cpuinfo() -> tuple[str, set[str]]:
    """Model name and flags from /proc/cpuinfo (Linux; elsewhere nothing)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "", set()
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model") and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return model, flags
