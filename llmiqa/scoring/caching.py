"""The store in front of the models: a rater and a segmenter that never compute twice.

As lm-evaluation-harness's CachingLM wraps any model, `CachingRater` wraps any rater
(behind its spec, loaded on first need) and `CachingSegmenter` any segmenter: the same job
as the thing they wrap, keyed by what the result depends on. Their seam is public and is
the only way results enter or leave the store, whoever computes them:

    missing(requests)   what the store lacks, each key once, in the order to rate it
    commit(request, x)  one result, as it arrives (a failure is remembered, not stored)
    rate(requests)      the Rater contract: stored results served, the rest computed

A Scorer rates through `rate`; the Ray driver (llmiqa.distributed) plans with `missing`
and commits what its workers send, then the Scorer collects through `rate` with models
switched off. Usage counts what came from where, once.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from llmiqa.errors import UsageError
from llmiqa.inputs.images import LoadedImage
from llmiqa.raters.base import Outcome, Rating, RatingFailure, RatingRequest
from llmiqa.raters.spec import RaterSpec
from llmiqa.scoring.store import Store
from llmiqa.segmenters.spec import SegmenterSpec

NOTES_KEPT = 20  # refused-row messages kept verbatim; the rest are only counted


@dataclass
class Usage:
    """What a Scorer did, and where the time went."""

    rated: int = 0  # sub-images rated by a model
    from_store: int = 0  # sub-images whose rating the store held from before
    refused: int = 0  # stored rows refused as invalid or damaged (and computed again)
    segmented: int = 0  # images segmented by SAM2
    masks_from_store: int = 0  # images whose masks the store held from before
    failed: int = 0  # images that could not be scored
    loaded: list[str] = field(default_factory=list)  # models loaded, in order
    seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    notes: list[str] = field(default_factory=list)

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - started

    def note(self, message: str) -> None:
        if len(self.notes) < NOTES_KEPT:
            self.notes.append(message)

    def as_dict(self) -> dict:
        counts = {k: v for k, v in vars(self).items() if k not in ("seconds", "notes")}
        return {**counts, "seconds": dict(self.seconds), "notes": list(self.notes)}


def announce(model: str, what: str) -> None:
    """One line on logger "llmiqa" per model loaded (the command line shows it), instead of
    transformers' progress bars."""
    log = logging.getLogger("llmiqa")
    if log.isEnabledFor(logging.INFO):
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        log.info("loading %s (%s)", model, what)


class NoModels(UsageError):
    """A cache asked for a result it lacks while its models are switched off."""


class CachingRater:
    """One model behind the store; loads it on the first rating the store lacks."""

    def __init__(
        self, spec: RaterSpec, store: Store, usage: Usage, failures: dict | None = None
    ) -> None:
        self.spec, self.store, self.usage = spec, store, usage
        self.identity = spec.identity
        self.failures: dict[str, RatingFailure] = {} if failures is None else failures
        self.fresh: set[str] = set()  # keys this process committed (counted as rated)
        self.models = True  # False: serve what is stored or committed, load nothing
        self._rater = None

    def offline(self) -> CachingRater:
        """The same cache (store, usage, failures committed) with its model switched off."""
        twin = CachingRater(self.spec, self.store, self.usage, self.failures)
        twin.fresh, twin.models = self.fresh, False
        return twin

    def missing(self, requests: Sequence[RatingRequest]) -> list[RatingRequest]:
        """Each key the store lacks (or holds a refused row for) once, smallest sub-image
        first so that batches pad little; refused rows are counted and noted."""
        wanted = {r.key: r for r in requests if r.key not in self.failures}
        found = self._lookup(list(wanted.values()))
        return sorted((r for k, r in wanted.items() if k not in found), key=lambda r: r.cost)

    def commit(self, request: RatingRequest, outcome: Outcome) -> None:
        """Keep one outcome: a Rating in the store (counted as rated once), a failure in
        memory for this process's collect pass (it is retried by the next run)."""
        if isinstance(outcome, RatingFailure):
            self.failures[request.key] = outcome
            return
        self.store.put_rating(request, outcome)
        if request.key not in self.fresh:
            self.fresh.add(request.key)
            self.usage.rated += 1

    def rate(self, requests: Sequence[RatingRequest]) -> Iterator[tuple[int, Outcome]]:
        """The Rater contract: (index, outcome) for every request, duplicates included."""
        where: dict[str, list[int]] = defaultdict(list)
        for index, request in enumerate(requests):
            where[request.key].append(index)
        first = [requests[indices[0]] for indices in where.values()]
        found = self._lookup(first)
        # offline (collecting after Ray), what the workers committed was counted as rated
        self.usage.from_store += sum(1 for key in found if self.models or key not in self.fresh)
        todo = []
        for request in first:
            outcome = found.get(request.key) or self.failures.get(request.key)
            if outcome is None:
                todo.append(request)
            else:
                yield from ((index, outcome) for index in where[request.key])
        if not todo:
            return
        todo.sort(key=lambda r: r.cost)
        rater = self._load(todo[0])
        with self.usage.timed("rate"):
            for index, outcome in rater.rate(todo):
                self.commit(todo[index], outcome)
                yield from ((i, outcome) for i in where[todo[index].key])

    def direction(self, positive: str, negative: str) -> np.ndarray:
        """SeP-IQA's weight of every token for these word lists: from the store, else
        computed once from the model's input embeddings (no image) and stored."""
        cosines = self.store.direction(self.identity, f"{positive}\x1f{negative}")
        if cosines is None:
            cosines = self._load(None).token_cosines(positive, negative)
            self.commit_direction((positive, negative), cosines)
        return cosines

    def commit_direction(self, words: tuple[str, str], cosines: np.ndarray) -> None:
        """Keep SeP-IQA's token weights for these (positive, negative) word lists."""
        self.store.put_direction(self.identity, "\x1f".join(words), cosines)

    def _lookup(self, requests: Sequence[RatingRequest]) -> dict[str, Rating]:
        """Valid stored ratings by key (failures of this process are not looked up);
        refused rows count as missing, and are counted and noted."""
        found, refused = self.store.ratings(r for r in requests if r.key not in self.failures)
        self.usage.refused += len(refused)
        for message in refused:
            self.usage.note(message)
        return found

    def _load(self, request: RatingRequest | None):
        if not self.models:
            if request is None:
                raise NoModels(
                    f"{self.spec.model}: SeP-IQA's token weights are missing from the store "
                    "(a run stopped between its ratings and them): run the same command once "
                    "without --ray to compute them (one load of the model, no image)"
                )
            raise NoModels(
                f"rating {request.key} is missing from the store after the Ray phases (the "
                "store lost it, or another process changed it); rerun the same command"
            )
        if self._rater is None:
            announce(self.spec.model, f"{self.spec.runs_on.name} backend")
            with self.usage.timed("load models"):
                self._rater = self.spec.load()
            self.usage.loaded.append(self.spec.model)
        return self._rater


class CachingSegmenter:
    """SAM2 behind the store; loads it on the first image the store has no masks for."""

    def __init__(
        self, spec: SegmenterSpec, store: Store, usage: Usage, failures: dict | None = None
    ) -> None:
        self.spec, self.store, self.usage = spec, store, usage
        self.identity = spec.identity
        self.failures: dict[str, str] = {} if failures is None else failures
        self.fresh: set[str] = set()
        self.models = True
        self._segmenter = None

    def offline(self) -> CachingSegmenter:
        twin = CachingSegmenter(self.spec, self.store, self.usage, self.failures)
        twin.fresh, twin.models = self.fresh, False
        return twin

    def missing(self, digests: Sequence[str]) -> list[str]:
        """The images (by digest) whose masks the store lacks, each once, in order."""
        stored = self.store.segmented(digests, self.identity)
        return [d for d in dict.fromkeys(digests) if d not in stored and d not in self.failures]

    def commit(self, digest: str, shape: tuple[int, int], masks: list[np.ndarray] | str) -> None:
        """Keep one image's masks (counted as segmented once), or the error SAM2 met."""
        if isinstance(masks, str):
            self.failures[digest] = masks
            return
        self.store.put_masks(digest, self.identity, shape, masks)
        if digest not in self.fresh:
            self.fresh.add(digest)
            self.usage.segmented += 1

    def masks(self, image: LoadedImage) -> list[np.ndarray]:
        """The image's masks: stored, else computed and committed (an error SAM2 met on it
        earlier in this process is raised again)."""
        if image.digest in self.failures:
            raise RuntimeError(self.failures[image.digest])
        masks, refused = self.store.masks(image.digest, self.identity)
        if refused:
            self.usage.refused += 1
            self.usage.note(refused)
        if masks is not None:
            if self.models or image.digest not in self.fresh:
                self.usage.masks_from_store += 1
            return masks
        if not self.models:
            raise NoModels(
                f"masks of {image.name} are missing from the store after the Ray phases; "
                "rerun the same command"
            )
        if self._segmenter is None:
            announce(self.spec.model, "SAM2")
            with self.usage.timed("load models"):
                self._segmenter = self.spec.load()
            self.usage.loaded.append(self.spec.model)
        with self.usage.timed("segment"):
            masks = self._segmenter.masks(image.image)
        self.commit(image.digest, (image.image.height, image.image.width), masks)
        return masks
