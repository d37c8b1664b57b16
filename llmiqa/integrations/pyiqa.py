"""llmiqa as a pyiqa-style metric: `create_metric(...)` returns a callable with
`lower_better` and `score_range`, for code written against pyiqa's interface.

    metric = llmiqa.create_metric("Qwen/Qwen2.5-VL-7B-Instruct")   # or a preset name
    metric(torch.rand(2, 3, 224, 224))      # tensor([4.61, 4.58]): one score per image
    metric("photo.jpg"), metric([pil_image, "other.png"])

Tensors are (N, 3, H, W) or (3, H, W) floats in [0, 1] (one channel is repeated to three);
they are quantised to 8 bits, which is what a model's processor sees anyway, so a tensor
read from an 8-bit file scores exactly as the file does. `register_pyiqa()` makes the same
metric available through pyiqa's own `pyiqa.create_metric("llmiqa")`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from llmiqa.errors import UsageError
from llmiqa.inputs.images import ImageError
from llmiqa.method.aggregate import Aggregation, score_range
from llmiqa.scoring import knobs
from llmiqa.scoring.presets import PRESETS, resolve

if TYPE_CHECKING:
    import torch

    from llmiqa.method.results import ImageResult
    from llmiqa.scoring.pipeline import Scorer

PYIQA_NAME = "llmiqa"  # pyiqa.create_metric(PYIQA_NAME); "llmiqa-paper", "llmiqa-dogiqa" too


class Metric:
    """A no-reference quality metric: higher is better, one score per image."""

    lower_better = False
    metric_mode = "NR"

    def __init__(self, scorer: Scorer, options: dict[str, Any], errors: str = "raise") -> None:
        if errors not in ("raise", "nan"):
            raise UsageError(f"errors must be 'raise' or 'nan', got {errors!r}")
        self.scorer = scorer
        self.options = options
        self.errors = errors

    @property
    def score_range(self) -> tuple[float, float]:
        return score_range(self.scorer.aggregation, self.scorer.standard.levels)

    def results(self, images: Any) -> list[ImageResult]:
        """Full results (probabilities, regions, every partial score) of the same inputs."""
        return self.scorer.score(as_images(images))

    def __call__(self, images: Any) -> torch.Tensor:
        import torch

        scores = []
        for result in self.results(images):
            if not result.ok and self.errors == "raise":
                raise ImageError(result.error)
            scores.append(result.score if result.ok else math.nan)
        return torch.tensor(scores, dtype=torch.float64)  # exactly the scores llmiqa prints

    forward = __call__

    def __repr__(self) -> str:
        models = ", ".join(self.scorer.models)
        return f"llmiqa.Metric({models}, {self.scorer.standard}, range={self.score_range})"


def create_metric(
    preset_or_model: str | Sequence[str] | None = None,
    *,
    store: str | Path | None = None,
    progress: bool = False,
    errors: str = "raise",
    **options: Any,
) -> Metric:
    """A callable metric. `preset_or_model` is a preset name ("paper", "dogiqa") or a model
    (hub id, folder; a list for an ensemble); `options` are the CLI's options by key
    (levels=5, lam=2.0, region_mode="whole-only", device="cpu", ...), explicit ones winning
    over the preset. `store` caches masks and ratings in a SQLite file (default: memory).
    `errors="nan"` scores an unreadable image NaN instead of raising ImageError.
    """
    resolved = resolve_call(preset_or_model, options)
    from llmiqa.scoring.pipeline import Scorer

    return Metric(Scorer.from_options(resolved, store, progress), resolved, errors)


def resolve_call(
    preset_or_model: str | Sequence[str] | None, options: dict[str, Any]
) -> dict[str, object]:
    """The resolved options of a call `f(preset_or_model, **options)`: a preset name or a
    model (one or a list) first, the CLI's options by key winning over the preset."""
    preset = None
    if isinstance(preset_or_model, str) and preset_or_model in PRESETS:
        preset = preset_or_model
    elif preset_or_model is not None:
        if options.get("model") is not None:
            raise UsageError("give the model either as the first argument or as model=, not both")
        options = {**options, "model": preset_or_model}
    if isinstance(options.get("model"), str | Path):
        options = {**options, "model": [str(options["model"])]}
    return resolve(options, preset)


# ---- inputs -------------------------------------------------------------------------------


def as_images(images: Any) -> list[Image.Image | str | Path]:
    """Whatever a metric is called on, as the list of PIL images and paths a Scorer takes."""
    if _is_tensor(images):
        if images.ndim == 3:
            images = images.unsqueeze(0)
        if images.ndim != 4:
            shape = tuple(images.shape)
            raise UsageError(f"a tensor input must be (N, C, H, W) or (C, H, W), got {shape}")
        return [tensor_to_pil(image) for image in images]
    if isinstance(images, str | Path | Image.Image | np.ndarray):
        images = [images]
    out: list[Image.Image | str | Path] = []
    for item in images:
        if _is_tensor(item):
            out += as_images(item)
        elif isinstance(item, np.ndarray):
            out.append(Image.fromarray(item))
        elif isinstance(item, str | Path | Image.Image):
            out.append(item)
        else:
            kind = type(item).__name__
            raise UsageError(f"cannot score a {kind}: give tensors, PIL images or paths")
    return out


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """A (C, H, W) float tensor in [0, 1] as an 8-bit RGB image (round to nearest)."""
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        shape = tuple(image.shape)
        raise UsageError(f"an image tensor must be (3, H, W) or (1, H, W), got {shape}")
    if image.is_floating_point():
        low, high = float(image.min()), float(image.max())
        if low < -1e-6 or high > 1 + 1e-6:
            raise UsageError(f"image tensors must hold values in [0, 1], got {low:.4g}..{high:.4g}")
        image = (image.detach().float().clamp(0, 1) * 255).round()
    array = image.detach().to("cpu").numpy().astype(np.uint8)
    if array.shape[0] == 1:
        array = np.repeat(array, 3, axis=0)
    return Image.fromarray(np.ascontiguousarray(array.transpose(1, 2, 0)), "RGB")


def _is_tensor(value: Any) -> bool:
    module = type(value).__module__
    return module.startswith("torch") and hasattr(value, "ndim")


# ---- pyiqa ---------------------------------------------------------------------------------


def register_pyiqa() -> list[str]:
    """Make `pyiqa.create_metric("llmiqa")` (and "llmiqa-paper", "llmiqa-dogiqa") work.

    pyiqa looks a name up in its DEFAULT_CONFIGS dictionary and builds the network its
    `metric_opts["type"]` names from ARCH_REGISTRY; it offers no other registration, so we
    add an entry to both. Extra keyword arguments of pyiqa.create_metric reach
    `LLMIQA(**options)`, the network pyiqa wraps: the same options as llmiqa.create_metric.
    Returns the names registered; calling it twice is harmless.
    """
    try:
        from pyiqa.default_model_configs import DEFAULT_CONFIGS
        from pyiqa.utils.registry import ARCH_REGISTRY
    except ImportError:
        raise UsageError("pyiqa is not installed: pip install 'llmiqa[pyiqa]'") from None

    net = _pyiqa_net()
    if net.__name__ not in ARCH_REGISTRY:
        ARCH_REGISTRY.register(net)  # by its class name, as every pyiqa version does
    names = []
    for preset in (None, "paper", "dogiqa"):
        name = PYIQA_NAME if preset is None else f"{PYIQA_NAME}-{preset}"
        resolved = resolve({}, preset)
        low, high = score_range(knobs.build(Aggregation, resolved), int(resolved["levels"]))
        DEFAULT_CONFIGS[name] = {
            "metric_opts": {"type": net.__name__, "preset": preset},
            "metric_mode": "NR",
            "lower_better": False,
            "score_range": f"{low:g}, {'~' if math.isinf(high) else f'{high:g}'}",
        }
        names.append(name)
    return names


_NET: type | None = None


def _pyiqa_net() -> type:
    """The torch.nn.Module pyiqa's InferenceModel wraps (built on first use: torch is
    imported only when pyiqa is)."""
    global _NET
    if _NET is not None:
        return _NET
    import torch

    class LLMIQA(torch.nn.Module):
        """pyiqa calls .to(device) on its network: the device it chose (or was given)
        becomes the Scorer's, unless `device` was passed explicitly."""

        def __init__(self, preset: str | None = None, **options: Any) -> None:
            super().__init__()
            self.preset, self.options = preset, options
            self.metric = create_metric(preset, **options)

        @property
        def scorer(self) -> Scorer:
            return self.metric.scorer

        @property
        def score_range(self) -> tuple[float, float]:
            return self.metric.score_range

        def to(self, *args: Any, **kwargs: Any) -> LLMIQA:
            device = kwargs.get("device", args[0] if args else None)
            if isinstance(device, str | torch.device) and self.options.get("device") is None:
                device = torch.device(device)
                if self.metric.scorer.specs[0].torch_device != device:
                    self.options = {**self.options, "device": str(device)}
                    self.metric = create_metric(self.preset, **self.options)
            return self

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.metric(images)

    _NET = LLMIQA
    return LLMIQA
