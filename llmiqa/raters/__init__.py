"""MLLM backends behind one small contract (see base.Rater), chosen from a checkpoint's config."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from llmiqa.checkpoints import checkpoint_identity, read_config
from llmiqa.devices import resolve_device, resolve_dtype
from llmiqa.raters.base import ModelLoadError, Rater


@dataclass(frozen=True)
class RaterSpec:
    """A rater to load, named before loading: the store keys ratings by `identity`, so a
    run whose ratings are all stored never loads a model at all."""

    model: str
    device: str | None = None
    dtype: str | None = None
    revision: str | None = None
    options: tuple[tuple[str, object], ...] = ()  # backend options that change outputs

    @cached_property
    def config(self) -> dict:
        return self._config_and_commit[0]

    @cached_property
    def _config_and_commit(self) -> tuple[dict, str | None]:
        return read_config(self.model, self.revision)

    @cached_property
    def backend(self) -> type:
        """The rater class for this checkpoint, chosen from config.json alone."""
        model_type = self.config.get("model_type")
        if model_type is None:
            raise ModelLoadError(f"{self.model}: config.json has no model_type")
        if model_type == "mplugowl3":  # mPLUG-Owl3 ships remote code only: our own port
            from llmiqa.models.mplug_owl3 import check_supported
            from llmiqa.raters.mplug_owl3 import MplugOwl3Rater

            check_supported(self.config, self.model)  # before any weights are downloaded
            return MplugOwl3Rater
        from llmiqa.raters.hf import TransformersRater

        return TransformersRater

    @cached_property
    def backend_options(self) -> dict[str, object]:
        """The backend's own defaults, overridden by the options that apply to it (an
        ensemble passes every model the same options; each takes what it knows)."""
        defaults = self.backend.options
        return {**defaults, **{k: v for k, v in self.options if k in defaults}}

    @cached_property
    def identity(self) -> str:
        dtype = resolve_dtype(self.dtype, resolve_device(self.device))
        parts = [checkpoint_identity(self.model, self._config_and_commit[1])]
        parts.append(str(dtype).removeprefix("torch."))
        parts += [f"{key}={value}" for key, value in sorted(self.backend_options.items())]
        return "|".join(parts)

    def load(self) -> Rater:
        rater = self.backend(
            self.model, self.device, self.dtype, self.revision, **self.backend_options
        )
        rater.identity = self.identity
        return rater


def load_rater(
    model: str, device: str | None = None, dtype: str | None = None, revision: str | None = None
) -> Rater:
    """Load a rater by hub id or local folder, choosing the backend from its config.json."""
    return RaterSpec(model, device, dtype, revision).load()


__all__ = ["ModelLoadError", "Rater", "RaterSpec", "load_rater"]
