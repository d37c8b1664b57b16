"""MLLM backends behind one small contract (see base.Rater), chosen from a checkpoint's config."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from llmiqa.checkpoints import Checkpoint, resolve
from llmiqa.errors import ModelLoadError
from llmiqa.raters.base import Rater, Rating, RatingFailure, RatingRequest

ENGINES = ("transformers", "vllm")


@dataclass(frozen=True)
class RaterSpec:
    """A rater to load, named before loading: the store keys ratings by `identity`, so a
    run whose ratings are all stored never loads a model at all. Resolving the spec (its
    checkpoint, backend, device) is cheap and raises every problem before work starts."""

    model: str
    device: str | None = None
    dtype: str | None = None
    revision: str | None = None
    batch_size: int | None = None
    options: tuple[tuple[str, object], ...] = ()  # backend options that change outputs
    engine: str = "transformers"  # who runs a local checkpoint: "transformers" or "vllm"
    server: str | None = None  # an OpenAI-compatible server's URL; `model` is its name there
    max_in_flight: int | None = None  # requests a vllm engine or a server holds at once

    @cached_property
    def checkpoint(self) -> Checkpoint:
        if self.server:
            raise ModelLoadError(f"{self.model}: served by {self.server}, not a checkpoint here")
        return resolve(self.model, self.revision)

    @cached_property
    def backend(self) -> type:
        """The rater class: a server's, or the engine's for this checkpoint's config.json."""
        if self.server:
            from llmiqa.raters.server import ServerRater

            if self.revision:
                raise ModelLoadError("--revision names a checkpoint's; a server serves its own")
            return ServerRater
        if self.engine not in ENGINES:
            raise ModelLoadError(f"unknown engine {self.engine!r}; choose one of {ENGINES}")
        config = self.checkpoint.config
        model_type = config.get("model_type")
        if model_type is None:
            raise ModelLoadError(f"{self.model}: config.json has no model_type")
        if model_type == "mplugowl3":  # mPLUG-Owl3 ships remote code only: our own port
            from llmiqa.models.mplug_owl3 import check_supported
            from llmiqa.raters.mplug_owl3 import MplugOwl3Rater

            if self.engine != "transformers":
                raise ModelLoadError(f"{self.model}: mPLUG-Owl3 runs on transformers only")
            check_supported(config, self.model)  # before any weights are downloaded
            return MplugOwl3Rater
        if self.engine == "vllm":
            from llmiqa.raters.vllm import VllmRater

            return VllmRater
        from llmiqa.raters.hf import TransformersRater

        return TransformersRater

    @cached_property
    def torch_device(self):
        from llmiqa.devices import resolve_device

        return resolve_device(self.device)

    @cached_property
    def torch_dtype(self):
        from llmiqa.devices import resolve_dtype

        return resolve_dtype(self.dtype, self.torch_device)

    @cached_property
    def batch(self) -> int:
        from llmiqa.devices import default_batch_size

        return self.batch_size or default_batch_size(self.torch_device)

    @cached_property
    def backend_options(self) -> dict[str, object]:
        """The backend's own defaults, overridden by the options that apply to it (an
        ensemble passes every model the same options; each takes what it knows)."""
        defaults = self.backend.options
        return {**defaults, **{k: v for k, v in self.options if k in defaults}}

    @cached_property
    def identity(self) -> str:
        """Checkpoint, dtype, engine (other than transformers) and output-changing options;
        a server's is what the server reports about itself (see ServerRater.identify)."""
        if self.server:
            return self.backend.identify(self)
        parts = [self.checkpoint.identity, str(self.torch_dtype).removeprefix("torch.")]
        if self.engine != "transformers":
            parts.append(f"engine={self.engine}")
        parts += [f"{key}={value}" for key, value in sorted(self.backend_options.items())]
        return "|".join(parts)

    @property
    def min_crop_side(self) -> int:
        """The narrowest sub-image this backend's processor accepts (crops are widened)."""
        return self.backend.min_crop_side

    def check(self) -> None:
        """Resolve everything that can be wrong without loading weights; raise if any is."""
        _ = self.identity
        if not self.server:
            _ = self.batch

    def load(self) -> Rater:
        return self.backend(self)


def load_rater(model: str, **options) -> Rater:
    """Load a rater by hub id or local folder, choosing the backend from its config.json."""
    return RaterSpec(model, **options).load()


__all__ = [
    "ModelLoadError",
    "Rater",
    "RaterSpec",
    "Rating",
    "RatingFailure",
    "RatingRequest",
    "load_rater",
]
