"""MLLM backends behind one small contract (see base.Rater), chosen from a checkpoint's config."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from llmiqa.checkpoints import Checkpoint, resolve
from llmiqa.errors import ModelLoadError
from llmiqa.raters.base import Rater, Rating, RatingFailure, RatingRequest


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

    @cached_property
    def checkpoint(self) -> Checkpoint:
        return resolve(self.model, self.revision)

    @cached_property
    def backend(self) -> type:
        """The rater class for this checkpoint, chosen from config.json alone."""
        config = self.checkpoint.config
        model_type = config.get("model_type")
        if model_type is None:
            raise ModelLoadError(f"{self.model}: config.json has no model_type")
        if model_type == "mplugowl3":  # mPLUG-Owl3 ships remote code only: our own port
            from llmiqa.models.mplug_owl3 import check_supported
            from llmiqa.raters.mplug_owl3 import MplugOwl3Rater

            check_supported(config, self.model)  # before any weights are downloaded
            return MplugOwl3Rater
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
        parts = [self.checkpoint.identity, str(self.torch_dtype).removeprefix("torch.")]
        parts += [f"{key}={value}" for key, value in sorted(self.backend_options.items())]
        return "|".join(parts)

    @property
    def min_crop_side(self) -> int:
        """The narrowest sub-image this backend's processor accepts (crops are widened)."""
        return self.backend.min_crop_side

    def check(self) -> None:
        """Resolve everything that can be wrong without loading weights; raise if any is."""
        _ = self.identity, self.batch

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
