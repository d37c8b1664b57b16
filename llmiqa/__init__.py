"""llmiqa: training-free image quality assessment with multimodal LLMs (LLM-IQA / Dog-IQA).

    from llmiqa import Scorer
    results = Scorer(["Qwen/Qwen2.5-VL-7B-Instruct"]).score(["photo.jpg"])

The names below are imported on first use, so `import llmiqa` stays light (no torch).
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

_EXPORTS = {
    "Scorer": "llmiqa.scoring.pipeline",
    "ImageResult": "llmiqa.method.results",
    "Aggregation": "llmiqa.method.aggregate",
    "Standard": "llmiqa.method.standards",
    "RegionSettings": "llmiqa.method.regions",
    "MaskSettings": "llmiqa.segmenters.masks",
    "create_metric": "llmiqa.integrations.pyiqa",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'llmiqa' has no attribute {name!r}")
