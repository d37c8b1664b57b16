"""The rater contract every MLLM backend fulfils: requests in, ratings out, as plain data.

A rater reads ONE next-token distribution per request (the answer position after the
prompt) and reports what every readout needs, so that no readout ever runs a model again:
the log-probabilities of the K digit tokens under the FULL vocabulary, and the most
probable token that is not one of them (the released code's greedy answer can be that
token). Everything model-specific (chat templates, processors, devices, HTTP) stays
behind the contract, so the pipeline, the store and the aggregation never see a model.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image

from llmiqa.errors import ModelLoadError
from llmiqa.standards import Prompt

__all__ = [
    "ModelLoadError",
    "Rater",
    "Rating",
    "RatingFailure",
    "RatingRequest",
    "answer_value",
    "digit_token_ids",
]


@dataclass(frozen=True)
class RatingRequest:
    """One sub-image to rate: its pixels, the prompt, K, and the store key naming all three."""

    key: str
    image: Image.Image
    prompt: Prompt
    levels: int


@dataclass(frozen=True)
class Rating:
    """What one forward pass says about the answer token.

    logprobs[k - 1] is log P("k") under the model's full next-token distribution.
    `other_logprob` is the log-probability of the most probable token that is not one of
    the K digits and `other_value` what the released code's int() makes of it (None: not
    an integer, which that code scores as 1). A backend that cannot see a quantity (a
    server returning only its top-n tokens) writes NaN there and sets `incomplete`.
    """

    logprobs: np.ndarray  # (K,) float64
    other_logprob: float
    other_value: int | None
    incomplete: bool = False

    @property
    def levels(self) -> int:
        return int(self.logprobs.shape[0])

    def probs(self) -> np.ndarray:
        """Softmax over the K digits only: exactly the softmax of their logits."""
        shifted = self.logprobs - np.max(self.logprobs)
        weights = np.exp(shifted)
        return weights / weights.sum()


@dataclass(frozen=True)
class RatingFailure:
    """A request that could not be rated (e.g. a crop the processor refuses); one line."""

    error: str


class Rater(Protocol):
    """A loaded MLLM. `identity` names model, revision and every option that changes outputs."""

    identity: str

    def render(self, prompt: Prompt) -> str:
        """The exact text the model reads before its answer (chat template applied)."""
        ...

    def rate(
        self, requests: Sequence[RatingRequest]
    ) -> Iterator[tuple[int, Rating | RatingFailure]]:
        """Rate every request, yielding (index into requests, outcome) as each is done.

        Backends batch or keep requests in flight as they see fit; the caller commits each
        rating as it arrives. A problem with the whole model (it cannot load, the server
        refuses the key) raises ModelLoadError instead of failing every request.
        """
        ...


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


def answer_value(text: str) -> int | None:
    """The released code's reading of a generated answer: int(text.strip()), else None."""
    try:
        return int(text.strip())
    except ValueError:
        return None
