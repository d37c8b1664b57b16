"""What every in-process (torch) backend shares: batches prepared apart from the forward.

As in transformers pipelines, preprocessing (processor, crops, tokens: CPU work) is kept
apart from the forward pass, and the next batch is prepared in a background thread while
the current one runs. One forward pass per batch gives the next-token logits at the
answer position; a float64 log-softmax over the full vocabulary then gives every number a
Rating holds.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, ClassVar

from llmiqa.background import one_ahead
from llmiqa.errors import ModelLoadError, one_line
from llmiqa.raters.base import (
    Rating,
    RatingFailure,
    RatingRequest,
    Spec,
    answer_value,
    digit_token_ids,
)
from llmiqa.standards import Prompt

if TYPE_CHECKING:
    import torch


class LocalRater:
    """A backend that runs a checkpoint in this process. It sets `model_name`, `identity`,
    `tokenizer` and `batch_size` and implements `_render`, `prepare` and `forward`."""

    model_types: ClassVar[tuple[str, ...]] = ()  # none claimed: `auto` never picks it
    model_name: str
    identity: str
    tokenizer: object
    batch_size: int

    @classmethod
    def identify(cls, spec: Spec) -> str:
        """The checkpoint's content, the dtype, this backend and every option that changes
        its outputs."""
        parts = [spec.checkpoint.identity, str(spec.torch_dtype).removeprefix("torch.")]
        parts.append(f"backend={cls.name}")
        parts += [f"{key}={value}" for key, value in sorted(spec.backend_options.items())]
        return "|".join(parts)

    def _render(self, prompt: Prompt) -> str:
        raise NotImplementedError

    def prepare(self, requests: Sequence[RatingRequest]) -> object:
        """CPU work for one batch: whatever `forward` needs, on the model's device."""
        raise NotImplementedError

    def forward(self, prepared: object) -> torch.Tensor:
        """(N, vocabulary) next-token logits at the answer position."""
        raise NotImplementedError

    def render(self, prompt: Prompt) -> str:
        rendered = self.__dict__.setdefault("_rendered", {})
        if prompt not in rendered:
            rendered[prompt] = self._render(prompt)
        return rendered[prompt]

    def digit_ids(self, prompt: Prompt, levels: int) -> list[int]:
        found = self.__dict__.setdefault("_digit_ids", {})
        if (prompt, levels) not in found:
            found[prompt, levels] = digit_token_ids(
                self.tokenizer, self.render(prompt), levels, self.model_name
            )
        return found[prompt, levels]

    def rate(
        self, requests: Sequence[RatingRequest]
    ) -> Iterator[tuple[int, Rating | RatingFailure]]:
        """Batches in the given order; batch i + 1 is prepared while batch i runs.

        A batch that fails is retried one request at a time, so one bad crop fails alone.
        """
        for request in requests:  # refuses a tokenizer without digit tokens before any work
            self.digit_ids(request.prompt, request.levels)
        starts = range(0, len(requests), self.batch_size)
        batches = [list(range(s, min(s + self.batch_size, len(requests)))) for s in starts]
        prepared = one_ahead(lambda batch: (batch, self._prepare(requests, batch)), batches)
        for batch, inputs in prepared:
            yield from self._run(requests, batch, inputs)

    def _prepare(self, requests: Sequence[RatingRequest], batch: list[int]) -> object:
        try:
            return self.prepare([requests[i] for i in batch])
        except ModelLoadError:
            raise
        except Exception as error:  # rated one by one below, to find the culprit
            return error

    def _run(
        self, requests: Sequence[RatingRequest], batch: list[int], prepared: object
    ) -> Iterator[tuple[int, Rating | RatingFailure]]:
        try:
            if isinstance(prepared, Exception):
                raise prepared
            import torch

            with torch.inference_mode():
                logits = self.forward(prepared)
        except ModelLoadError:
            raise
        except Exception as error:
            if len(batch) > 1:
                for index in batch:
                    yield from self._run(requests, [index], self._prepare(requests, [index]))
                return
            yield batch[0], RatingFailure(f"rating failed ({one_line(error)})")
            return
        chosen = [self.digit_ids(requests[i].prompt, requests[i].levels) for i in batch]
        yield from zip(batch, ratings_from_logits(logits, chosen, self.tokenizer), strict=True)


def ratings_from_logits(
    logits: torch.Tensor, digit_ids: Sequence[Sequence[int]], tokenizer
) -> list[Rating]:
    """Ratings from (N, vocabulary) logits, in float64: the digits' full-vocabulary
    log-probabilities and the most probable other token, read as the released code does
    (its text, stripped, through int())."""
    import torch

    logprobs = torch.log_softmax(logits.double(), dim=-1)
    ratings = []
    for row, ids in zip(logprobs, digit_ids, strict=True):
        digits = row[list(ids)]
        others = row.clone()
        others[list(ids)] = -torch.inf
        best = int(others.argmax())
        ratings.append(
            Rating(
                logprobs=digits.cpu().numpy(),
                other_logprob=float(others[best]),
                other_value=answer_value(tokenizer.decode([best])),
            )
        )
    return ratings
