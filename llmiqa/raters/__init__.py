"""MLLM backends behind one small contract (see base.Rater); `load_rater` picks the backend."""

from __future__ import annotations

from llmiqa.checkpoints import read_config
from llmiqa.raters.base import ModelLoadError, Rater


def load_rater(
    model: str, device: str | None = None, dtype: str | None = None, revision: str | None = None
) -> Rater:
    """Load a rater by hub id or local folder, choosing the backend from its config.json."""
    config = read_config(model, revision)
    model_type = config.get("model_type")
    if model_type is None:
        raise ModelLoadError(
            f"{model}: config.json has no model_type; not a transformers checkpoint"
        )
    from llmiqa.raters.hf import TransformersRater

    return TransformersRater(model, device=device, dtype=dtype, revision=revision)


__all__ = ["ModelLoadError", "Rater", "load_rater"]
