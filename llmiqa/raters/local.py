"""The contract of an in-process backend, and the batching the torch ones share.

`LocalRater` is what a backend that runs a checkpoint in this process holds (transformers,
the mPLUG-Owl3 port, vLLM's engine): the model's name and identity, its tokenizer, the
prompts rendered and the answers' token ids, each worked out once, and SeP-IQA's token
weights from its input embeddings.

`BatchedRater` runs a torch model one forward pass per batch. As in transformers
pipelines, preprocessing (processor, crops, tokens: CPU work) is kept apart from the
forward pass, and the next batch is prepared in a background thread while the current
one runs. One forward pass per batch gives the next-token logits at the answer position;
a float64 log-softmax over the full vocabulary then gives every number a Rating holds.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from llmiqa.background import one_ahead
from llmiqa.errors import ModelLoadError, one_line
from llmiqa.method.standards import Prompt
from llmiqa.raters.base import (
    Backend,
    Rating,
    RatingFailure,
    RatingRequest,
    Spec,
    answer_token_ids,
    answer_value,
)

if TYPE_CHECKING:
    import torch


class LocalRater(Backend):
    """A backend that runs the checkpoint its spec names in this process. A subclass loads
    its model and tokenizer, calls `LocalRater.__init__`, and implements `_render` (its chat
    template), `input_embeddings` and `rate`."""

    reads_checkpoint = True
    reads_words = True

    model_name: str  # as the user named it, for messages
    identity: str
    tokenizer: Any  # the checkpoint's (transformers) tokenizer

    def __init__(self, spec: Spec, tokenizer: Any) -> None:
        self.model_name, self.identity, self.tokenizer = spec.model, spec.identity, tokenizer
        self._rendered: dict[Prompt, str] = {}
        self._answer_ids: dict[tuple[Prompt, tuple[str, ...]], list[int]] = {}

    @classmethod
    def identify(cls, spec: Spec) -> str:
        """The checkpoint's content, the dtype, this backend and every option that changes
        its outputs."""
        parts = [spec.checkpoint.identity, str(spec.torch_dtype).removeprefix("torch.")]
        parts.append(f"backend={cls.name}")
        parts += [f"{key}={value}" for key, value in sorted(spec.backend_options.items())]
        return "|".join(parts)

    @abc.abstractmethod
    def _render(self, prompt: Prompt) -> str:
        """The text the model reads before its answer (`render` keeps it per prompt)."""

    @abc.abstractmethod
    def input_embeddings(self) -> torch.Tensor:
        """(vocabulary, hidden): the model's input embedding table."""

    def render(self, prompt: Prompt) -> str:
        if prompt not in self._rendered:
            self._rendered[prompt] = self._render(prompt)
        return self._rendered[prompt]

    def answer_ids(self, request: RatingRequest) -> list[int]:
        """Token ids of the request's K answers after its prompt (checked once per prompt)."""
        asked = (request.prompt, request.answers)
        if asked not in self._answer_ids:
            self._answer_ids[asked] = answer_token_ids(
                self.tokenizer, self.render(request.prompt), request.answers, self.model_name
            )
        return self._answer_ids[asked]

    def token_cosines(self, positive: str, negative: str) -> np.ndarray:
        """SeP-IQA's weight of every token: each word string tokenised whole, as its
        get_embed does (with the tokenizer's special tokens, if it adds any)."""
        ids = [self.tokenizer(text)["input_ids"] for text in (positive, negative)]
        return direction_cosines(self.input_embeddings(), *ids)


class BatchedRater(LocalRater):
    """A local rater whose model is a torch module: one forward pass per batch of
    `batch_size` requests. A subclass implements `prepare` and `forward`."""

    model: torch.nn.Module
    batch_size: int

    def __init__(self, spec: Spec, tokenizer: Any, model: torch.nn.Module) -> None:
        super().__init__(spec, tokenizer)
        self.model, self.batch_size = model, spec.batch
        self._said_unbatched = False

    @abc.abstractmethod
    def prepare(self, requests: Sequence[RatingRequest]) -> object:
        """CPU work for one batch: whatever `forward` needs, on the model's device."""

    @abc.abstractmethod
    def forward(self, prepared: object) -> torch.Tensor:
        """(N, vocabulary) next-token logits at the answer position."""

    def input_embeddings(self) -> torch.Tensor:
        return self.model.get_input_embeddings().weight

    def rate(
        self, requests: Sequence[RatingRequest]
    ) -> Iterator[tuple[int, Rating | RatingFailure]]:
        """Batches in the given order; batch i + 1 is prepared while batch i runs.

        A batch that fails is retried one request at a time, so one bad crop fails alone.
        """
        for request in requests:  # refuses a tokenizer without answer tokens before any work
            self.answer_ids(request)
        starts = range(0, len(requests), self.batch_size)
        batches = [list(range(s, min(s + self.batch_size, len(requests)))) for s in starts]
        prepared = one_ahead(lambda batch: (batch, self._prepare(requests, batch)), batches)
        for batch, inputs in prepared:
            yield from self._run(requests, batch, inputs)

    def _batch_refused(self, size: int, error: Exception) -> None:
        """Say once that a batch failed although each of its requests rates alone: the model
        is then rated one request at a time (each batch prepared twice), which is slow."""
        if not self._said_unbatched:
            self._said_unbatched = True
            logging.getLogger("llmiqa").warning(
                "%s: a batch of %d failed although each request rates alone (%s); its "
                "batches are rated one by one, slowly",
                self.model_name,
                size,
                one_line(error),
            )

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
                alone = [
                    outcome
                    for index in batch
                    for outcome in self._run(requests, [index], self._prepare(requests, [index]))
                ]
                if not any(isinstance(rating, RatingFailure) for _, rating in alone):
                    self._batch_refused(len(batch), error)
                yield from alone
                return
            yield batch[0], RatingFailure(f"rating failed ({one_line(error)})")
            return
        chosen = [requests[i] for i in batch]
        ratings = ratings_from_logits(
            logits, [self.answer_ids(r) for r in chosen], [r.top for r in chosen], self.tokenizer
        )
        yield from zip(batch, ratings, strict=True)


def direction_cosines(
    table: torch.Tensor, positive: Sequence[int], negative: Sequence[int]
) -> np.ndarray:
    """(vocabulary,) float32: the cosine of each token's input embedding with the direction
    mean(E[positive]) - mean(E[negative]), over every token id listed (repeats count), as
    SeP-IQA computes it (float32 here; it ran bf16)."""
    import torch

    with torch.inference_mode():
        table = table.detach().float().cpu()
        direction = table[list(positive)].mean(dim=0) - table[list(negative)].mean(dim=0)
        return torch.nn.functional.cosine_similarity(table, direction[None, :], dim=-1).numpy()


def ratings_from_logits(
    logits: torch.Tensor, answer_ids: Sequence[Sequence[int]], tops: Sequence[int], tokenizer
) -> list[Rating]:
    """Ratings from (N, vocabulary) logits, in float64: the answers' full-vocabulary
    log-probabilities and the most probable other token, read as the released code does
    (its text, stripped, through int()); and, where asked, the top raw logits and the
    row's log-sum-exp."""
    import torch

    raw = logits.float()
    exact = raw.double()
    lse = torch.logsumexp(exact, dim=-1)
    logprobs = exact - lse[:, None]
    ratings = []
    for i, (ids, top) in enumerate(zip(answer_ids, tops, strict=True)):
        others = logprobs[i].clone()
        others[list(ids)] = -torch.inf
        best = int(others.argmax())
        kept = {}
        if top:
            values, indices = torch.topk(raw[i], min(top, raw.shape[-1]))
            kept = dict(
                top_ids=indices.cpu().numpy().astype(np.int64),
                top_logits=values.cpu().numpy().astype(np.float32),
                lse=float(lse[i]),
            )
        ratings.append(
            Rating(
                logprobs=logprobs[i, list(ids)].cpu().numpy(),
                other_logprob=float(others[best]),
                other_value=answer_value(tokenizer.decode([best])),
                **kept,
            )
        )
    return ratings
