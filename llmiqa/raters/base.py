"""The rater contract every MLLM backend fulfils: requests in, ratings out, as plain data.

A rater reads ONE next-token distribution per request (the answer position after the
prompt) and reports what every readout needs, so that no readout ever runs a model again:
the log-probabilities of the K digit tokens under the FULL vocabulary, and the most
probable token that is not one of them (the released code's greedy answer can be that
token). Everything model-specific (chat templates, processors, devices, HTTP) stays
behind the contract, so the pipeline, the store and the aggregation never see a model.

A backend is a subclass of `Backend` registered by name (raters.registry): what the class
offers before any weights are loaded, and what a loaded one does. `Rater` is what anything
that rates does: a loaded backend, or the store in front of one.
"""

from __future__ import annotations

import abc
import hashlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np
from PIL import Image

from llmiqa.errors import ModelLoadError
from llmiqa.inputs.images import pixel_hash
from llmiqa.method.regions import View
from llmiqa.method.standards import Prompt

if TYPE_CHECKING:
    from llmiqa.loading.checkpoints import Checkpoint

__all__ = [
    "CANARY_TOLERANCE",
    "Backend",
    "BackendOption",
    "Canary",
    "ModelLoadError",
    "Rater",
    "Rating",
    "RatingFailure",
    "RatingRequest",
    "Spec",
    "answer_token_ids",
    "answer_value",
    "key_of",
]


def key_of(*parts: str) -> str:
    """The store's name for what these parts identify (16 bytes of blake2b, hex)."""
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()


@dataclass(frozen=True, kw_only=True)
class RatingRequest:
    """One rating to obtain, as plain data (lm-evaluation-harness's Instance): which model
    rates which view of which image, asked how and read out over how many levels.

    `key` names it in the store and is computed once; `source`, the whole image's pixels
    when they are at hand, is no part of it: a request planned without pixels (another
    process decodes them) names the same rating.
    """

    model: str  # the rater's identity (RaterSpec.identity)
    image: str  # digest of the whole image's decoded pixels
    size: tuple[int, int]  # (width, height) of the whole image
    view: View
    prompt: Prompt
    levels: int
    source: Image.Image | None = field(default=None, compare=False, repr=False)
    words: tuple[str, ...] = ()  # answers read, worst first; () for the digits 1..levels
    top: int = 0  # raw logits to keep: the N most probable tokens (0: none)
    key: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.words and len(self.words) != self.levels:
            raise ValueError(f"{len(self.words)} answer words for {self.levels} levels")
        parts = [self.model, self.prompt.text, str(self.levels), self.image, self.view.geometry]
        if self.words or self.top:  # digit requests keep the keys they always had
            parts += [" ".join(self.words), str(self.top)]
        object.__setattr__(self, "key", key_of(*parts))

    @classmethod
    def of(
        cls,
        pixels: Image.Image,
        prompt: Prompt,
        levels: int,
        model: str = "",
        view=View(),
        words: tuple[str, ...] = (),
        top: int = 0,
    ) -> RatingRequest:
        """A request for these pixels (the whole image unless `view` says otherwise)."""
        return cls(
            model=model, image=pixel_hash(pixels), size=pixels.size, view=view, prompt=prompt,
            levels=levels, source=pixels, words=words, top=top,
        )  # fmt: skip

    @property
    def answers(self) -> tuple[str, ...]:
        """The texts whose first token is read, level 1 first: " word" or the digit."""
        if self.words:
            return tuple(f" {word}" for word in self.words)
        return tuple(str(level) for level in range(1, self.levels + 1))

    @property
    def pixels(self) -> Image.Image:
        """What the model sees: the view cut from the source image."""
        if self.source is None:
            raise ValueError(f"request {self.key} carries no pixels")
        return self.view.pixels(self.source)

    @property
    def cost(self) -> int:
        """Pixels shown: sorting by it keeps a batch's padding small."""
        return self.view.area(self.size)


@dataclass(frozen=True)
class Rating:
    """What one forward pass says about the answer token.

    logprobs[k - 1] is log P(answer k) under the model's full next-token distribution: the
    digit "k", or the token that starts the k-th answer word. `other_logprob` is the
    log-probability of the most probable token that is not one of the K answers and
    `other_value` what the released code's int() makes of it (None: not an integer, which
    that code scores as 1). A backend that cannot see a quantity (a server returning only
    its top-n tokens) writes NaN there and sets `incomplete`.

    When the request asked for `top` raw logits: the N most probable tokens' ids and raw
    logits (before any softmax: SeP-IQA sums them), most probable first, and `lse`, the
    log-sum-exp of the whole row (a raw logit minus it is its log-probability).
    """

    logprobs: np.ndarray  # (K,) float64
    other_logprob: float
    other_value: int | None
    incomplete: bool = False
    top_ids: np.ndarray | None = None  # (N,) int64
    top_logits: np.ndarray | None = None  # (N,) float32
    lse: float = math.nan

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


Outcome = Rating | RatingFailure


class Rater(Protocol):
    """A loaded MLLM. `identity` names model, revision and every option that changes outputs."""

    identity: str

    def render(self, prompt: Prompt) -> str:
        """The exact text the model reads before its answer (chat template applied)."""
        ...

    def rate(self, requests: Sequence[RatingRequest]) -> Iterator[tuple[int, Outcome]]:
        """Rate every request, yielding (index into requests, outcome) as each is done.

        Backends batch or keep requests in flight as they see fit; the caller commits each
        rating as it arrives. A problem with the whole model (it cannot load, the server
        refuses the key) raises ModelLoadError instead of failing every request.
        """
        ...


@dataclass(frozen=True)
class BackendOption:
    """An option a backend takes that changes its outputs (so it is part of the identity)."""

    default: object
    kind: type
    help: str


class Spec(Protocol):
    """What a backend may read of the spec it is given (raters.spec.RaterSpec): the model,
    where it runs and its options, all resolved before any weights are loaded."""

    model: str  # hub id or path; a server's name for its model
    server: str | None  # an OpenAI-compatible server's URL, for the server backend
    max_in_flight: int | None  # requests an engine or a server holds at once

    @property
    def checkpoint(self) -> Checkpoint: ...

    @property
    def torch_device(self): ...

    @property
    def torch_dtype(self): ...

    @property
    def batch(self) -> int: ...

    @property
    def backend_options(self) -> dict[str, object]: ...

    @property
    def identity(self) -> str: ...


# Ratings of one fixed request by one model differ by batch noise (bf16) well below this
# many nats in log-probability; another model's differ by more.
CANARY_TOLERANCE = 0.25


@dataclass(frozen=True)
class Canary:
    """The rating of a fixed request that fingerprints the model behind an identity which
    cannot name the model's content (a server's name for its model). The run's store keeps
    the first one per identity; a later one further than CANARY_TOLERANCE from it is another
    model under the same name, refused rather than its ratings mixed (scoring.caching)."""

    rating: Rating
    fingerprint: str | None = None  # what the backend reported beside it (shown, not compared)

    def distance(self, other: Canary) -> float:
        """Largest log-probability difference between the two ratings (inf if they do not
        even see the same tokens)."""
        a = np.append(self.rating.logprobs, self.rating.other_logprob)
        b = np.append(other.rating.logprobs, other.rating.other_logprob)
        if a.shape != b.shape or not np.array_equal(np.isnan(a), np.isnan(b)):
            return math.inf
        seen = ~np.isnan(a)
        return float(np.max(np.abs(a[seen] - b[seen]), initial=0.0))


class Backend(abc.ABC):
    """A rater class, registered under `name` (raters.registry): the word --backend,
    RaterSpec.backend and the store identity use. Its class attributes and class methods
    are known before any weights are loaded; `cls(spec)` loads it, and the instance is a
    Rater. A backend subclasses this and implements the abstract methods; registering a
    class that does not is refused."""

    name: ClassVar[str]
    # the options it takes that change ratings, with their defaults (CLI flags, identity)
    options: ClassVar[Mapping[str, BackendOption]] = {}
    # the narrowest sub-image its processor accepts (thinner crops are widened)
    min_crop_side: ClassVar[int]
    # config.json model types that `--backend auto` gives to it (a native port)
    model_types: ClassVar[tuple[str, ...]] = ()
    # it loads the checkpoint the spec names (so a native port's claim on its type applies)
    reads_checkpoint: ClassVar[bool] = False
    # it reads answer words (another protocol's question), not only digits: it holds the
    # tokenizer that says which token starts each word
    reads_words: ClassVar[bool] = False

    identity: str

    @classmethod
    @abc.abstractmethod
    def identify(cls, spec: Spec) -> str:
        """What names its ratings: checkpoint, dtype, options (a server: what it reports)."""

    @classmethod
    @abc.abstractmethod
    def render_for(cls, spec: Spec, prompt: Prompt) -> str | None:
        """The text the model would read, without loading weights (None: a server applies
        its own template, unseen here)."""

    @classmethod
    def canary(cls, spec: Spec) -> Canary | None:
        """The canary of the model behind `spec.identity` when the identity cannot name the
        model's content (a server's model name); None when it does (a checkpoint's hash)."""
        return None

    @abc.abstractmethod
    def render(self, prompt: Prompt) -> str:
        """The exact text the model reads before its answer (chat template applied)."""

    @abc.abstractmethod
    def rate(self, requests: Sequence[RatingRequest]) -> Iterator[tuple[int, Outcome]]:
        """As Rater.rate."""


def answer_token_ids(tokenizer, prompt: str, answers: Sequence[str], model: str) -> list[int]:
    """Token ids of each answer as it would follow `prompt`: its first token.

    The paper's insight 1 needs each digit to be ONE token; we check it in context (prompt
    + digit must add exactly one token) so tokenizers that merge a digit with the text
    before it, or lack digit tokens, are refused instead of read wrongly. An answer word
    (" good") is read at the token that starts it, as Q-Align and Q-Bench read them; two
    words that start with the same token cannot be told apart and are refused.
    """
    base = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    unknown = getattr(tokenizer, "unk_token_id", None)
    ids = []
    for answer in answers:
        extended = tokenizer(prompt + answer, add_special_tokens=False)["input_ids"]
        added = extended[len(base) :]
        digit = answer.isdigit()
        if (
            extended[: len(base)] != base
            or not added
            or added[0] == unknown
            or (digit and len(added) != 1)
        ):
            pieces = tokenizer.convert_ids_to_tokens(added) if added else []
            needed = f"single-token digits 1..{len(answers)} are" if digit else "a known token is"
            raise ModelLoadError(
                f"{model}: the tokenizer does not encode the answer {answer!r} as one token "
                f"after the prompt (got {pieces}); {needed} required"
            )
        if digit and tokenizer.decode(added).strip() != answer:
            raise ModelLoadError(
                f"{model}: token {added[0]} decodes to {tokenizer.decode(added)!r}, not {answer!r}"
            )
        ids.append(added[0])
    if len(set(ids)) < len(ids):
        pieces = tokenizer.convert_ids_to_tokens(ids)
        raise ModelLoadError(
            f"{model}: the answers {list(answers)} start with the same tokens {pieces} in its "
            "tokenizer: they cannot be told apart"
        )
    return ids


def answer_value(text: str) -> int | None:
    """The released code's reading of a generated answer: int(text.strip()), else None."""
    try:
        return int(text.strip())
    except ValueError:
        return None
