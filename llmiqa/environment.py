"""What a number depends on besides the code and its inputs: the machine and the packages.

Float kernels differ between CPUs (AVX2, AVX-512, ARM) and GPUs, so two machines can give
results a rounding apart; recording where a result was made tells a later difference in
the code from one in the machine. Recorded in metrics.json and with golden data.
"""

from __future__ import annotations

import os
import platform
import re
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


def broken_dependency(error: BaseException) -> str | None:
    """One line for an error whose root is a dependency that does not import (a torchvision
    built for another torch, a package missing or half-installed), naming the versions
    installed and what to do; None for any other error.

    transformers imports lazily, so a torchvision that does not match torch shows up as
    "Could not import module 'Qwen2_5_VLForConditionalGeneration'" with the real cause
    ("operator torchvision::nms does not exist") two exceptions down."""
    chain, seen = [], error
    while seen is not None and len(chain) < 20:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    imports = [e for e in chain if isinstance(e, ImportError)]
    mismatch = any("torchvision::" in str(e) for e in chain)
    if not mismatch and (not imports or (imports[-1].name or "").startswith("llmiqa")):
        return None  # not an import, or llmiqa's own: a bug, not an install
    root = chain[-1]
    cause = (
        f"{type(root).__name__}: {str(root).strip().splitlines()[0] if str(root).strip() else '?'}"
    )
    found = versions(("torch", "torchvision", "transformers"))
    torch, vision = found["torch"], found["torchvision"]
    wanted = torchvision_for(torch)
    if wanted is not None and vision != wanted:
        plain = [v.split("+")[0] for v in (torch, wanted)]
        pins = f"torch=={plain[0]} torchvision=={plain[1]}"
        return (
            f"torch {torch} and torchvision {vision} do not go together ({cause}); torch "
            f"{torch} needs torchvision {wanted}: pip install {pins} (from the same index; "
            f'with make: TORCH="{pins} ..." rebuilds .venv)'
        )
    installed = ", ".join(f"{name} {found[name] or 'not installed'}" for name in found)
    return (
        f"a dependency does not import ({cause}; installed: {installed}); reinstall "
        "llmiqa's dependencies: pip install -e . (with make: delete .venv and run make again)"
    )


def torchvision_for(torch: str | None) -> str | None:
    """The torchvision built for an installed torch: 0.(Y+15).Z with 2.Y.Z (0.15 with 2.0,
    ..., 0.29 with 2.14), with the same build label (+cpu, +cu130) from the same index."""
    match = re.fullmatch(r"2\.(\d+)\.(\d+)(\+\w+)?", torch or "")
    if match is None:
        return None
    return f"0.{int(match[1]) + 15}.{match[2]}{match[3] or ''}"
