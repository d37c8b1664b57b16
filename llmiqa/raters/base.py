"""The rater contract every MLLM backend fulfils, and the digit read-out they share.

A rater has one job: images plus a standard in, a probability over the K levels out for
each image. Everything model-specific (chat templates, processors, devices) stays behind
it, so the pipeline, the store and the aggregation never see a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from llmiqa.errors import ModelLoadError
from llmiqa.standards import Standard

__all__ = ["DigitRater", "ModelLoadError", "Rater", "digit_token_ids", "level_probabilities"]


class Rater(Protocol):
    identity: str
    """Model id + revision (+ options that change outputs): part of every store key."""

    def render_prompt(self, standard: Standard) -> str:
        """The exact text the model reads before the answer (a store key part)."""
        ...

    def rate(self, images: Sequence[Image.Image], standard: Standard) -> np.ndarray:
        """One forward pass per batch; returns (len(images), K) probabilities, rows sum to 1."""
        ...


class DigitRater:
    """What every backend shares: prompt and digit ids worked out once per standard, then
    one forward pass per batch and a softmax over the K digits. A backend sets `name`,
    `tokenizer` and `identity` and supplies the two methods below."""

    name: str
    identity: str

    def _render_prompt(self, standard: Standard) -> str:
        raise NotImplementedError

    def _last_logits(self, images: Sequence[Image.Image], standard: Standard) -> torch.Tensor:
        """(N, vocabulary) next-token logits at the answer position."""
        raise NotImplementedError

    def render_prompt(self, standard: Standard) -> str:
        prompts = self.__dict__.setdefault("_prompts", {})
        if standard not in prompts:
            prompts[standard] = self._render_prompt(standard)
        return prompts[standard]

    def digit_ids(self, standard: Standard) -> list[int]:
        found = self.__dict__.setdefault("_digit_ids", {})
        if standard not in found:
            prompt = self.render_prompt(standard)
            found[standard] = digit_token_ids(self.tokenizer, prompt, standard.levels, self.name)
        return found[standard]

    @torch.inference_mode()
    def rate(self, images: Sequence[Image.Image], standard: Standard) -> np.ndarray:
        if not images:
            return np.zeros((0, standard.levels))
        digit_ids = self.digit_ids(standard)  # refuses a tokenizer without digit tokens first
        return level_probabilities(self._last_logits(images, standard), digit_ids)


def digit_token_ids(tokenizer, prompt: str, levels: int, model: str) -> list[int]:
    """Token ids of the answers "1".."K" as they would follow `prompt`.

    The paper's insight 1 needs each score to be ONE token; we check it in context (prompt
    + digit must add exactly one token) so tokenizers that merge a digit with the text
    before it, or lack digit tokens, are refused instead of read wrongly.
    """
    base = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    unknown = getattr(tokenizer, "unk_token_id", None)
    ids = []
    for level in range(1, levels + 1):
        digit = str(level)
        extended = tokenizer(prompt + digit, add_special_tokens=False)["input_ids"]
        added = extended[len(base) :]
        if extended[: len(base)] != base or len(added) != 1 or added[0] == unknown:
            pieces = tokenizer.convert_ids_to_tokens(added) if added else []
            raise ModelLoadError(
                f"{model}: the tokenizer does not encode the score {digit!r} as one token after "
                f"the prompt (got {pieces}); single-token digits 1..{levels} are required"
            )
        if tokenizer.decode(added).strip() != digit:
            raise ModelLoadError(
                f"{model}: token {added[0]} decodes to {tokenizer.decode(added)!r}, not {digit!r}"
            )
        ids.append(added[0])
    return ids


def level_probabilities(last_logits: torch.Tensor, digit_ids: Sequence[int]) -> np.ndarray:
    """Softmax over the K digit logits only, in float64 so each row sums to 1 exactly."""
    restricted = last_logits[:, list(digit_ids)].double()
    return torch.softmax(restricted, dim=-1).cpu().numpy()
