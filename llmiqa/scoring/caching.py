"""The store in front of the models: a rater and a segmenter that never compute twice.

As lm-evaluation-harness's CachingLM wraps any model, one `Cache` wraps any model behind
its spec (loaded on first need): `CachingRater` any rater and `CachingSegmenter` any
segmenter, each doing the job of the thing it wraps, keyed by what the result depends on.
Their seam is public and is the only way results enter or leave the store, whoever
computes them:

    missing(requests)   what the store lacks, each key once, in the order to rate it
    commit(request, x)  one result, as it arrives (a failure is remembered, not stored)
    rate(requests)      the Rater contract: stored results served, the rest computed

A Scorer rates through `rate`; the Ray driver (llmiqa.distributed) plans with `missing`
and commits what its workers send, then the Scorer collects through `rate` with models
switched off. Usage counts what came from where, once. A rater whose identity is only a
server's name for its model is checked against the canary the store recorded for it.
"""

from __future__ import annotations

import copy
import logging
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Self

import numpy as np

from llmiqa.errors import ModelLoadError, UsageError
from llmiqa.inputs.images import LoadedImage
from llmiqa.raters.base import CANARY_TOLERANCE, Outcome, Rating, RatingFailure, RatingRequest
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
    """A cache asked for a result it lacks while its model is switched off."""


class Cache:
    """One model behind the store, loaded on the first result the store lacks (the base of
    CachingRater and CachingSegmenter, as CachingLM is one cache for every model).

    What this process committed is counted as computed once (`fresh`); what the model
    could not compute is remembered here (`failures`, retried by the next run, never
    stored). `computes` False (`offline()`) serves what is stored or committed and loads
    nothing: the Ray driver's collect pass, after its workers committed everything.
    """

    def __init__(self, spec: RaterSpec | SegmenterSpec, store: Store, usage: Usage) -> None:
        self.spec, self.store, self.usage = spec, store, usage
        self.identity = spec.identity
        self.failures: dict = {}  # key: why the model could not compute it
        self.fresh: set[str] = set()  # keys this process committed (counted as computed)
        self.computes = True
        self._model = None

    def offline(self) -> Self:
        """The same cache (store, usage, failures and commits shared) with its model off."""
        twin = copy.copy(self)
        twin.computes = False
        return twin

    def _first_commit(self, key: str) -> bool:
        """Note `key` as committed by this process: True the first time (count it then)."""
        if key in self.fresh:
            return False
        self.fresh.add(key)
        return True

    def _from_store(self, key: str) -> bool:
        """Whether a stored result counts as coming from the store: offline, what this
        process committed (its Ray workers' results) was counted as computed already."""
        return self.computes or key not in self.fresh

    def _loaded(self, what: str, missing: str):
        """The model (`what` it is, announced when it loads); offline, NoModels(missing)."""
        if not self.computes:
            raise NoModels(missing)
        if self._model is None:
            announce(self.spec.model, what)
            with self.usage.timed("load models"):
                self._model = self.spec.load()
            self.usage.loaded.append(self.spec.model)
        return self._model


class CachingRater(Cache):
    """One MLLM behind the store, under its identity (checked against the store's canary
    when the identity is only a server's name for its model)."""

    spec: RaterSpec
    failures: dict[str, RatingFailure]

    def __init__(self, spec: RaterSpec, store: Store, usage: Usage) -> None:
        super().__init__(spec, store, usage)
        check_canary(spec, store)

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
        if self._first_commit(request.key):
            self.usage.rated += 1

    def rate(self, requests: Sequence[RatingRequest]) -> Iterator[tuple[int, Outcome]]:
        """The Rater contract: (index, outcome) for every request, duplicates included."""
        where: dict[str, list[int]] = defaultdict(list)
        for index, request in enumerate(requests):
            where[request.key].append(index)
        first = [requests[indices[0]] for indices in where.values()]
        found = self._lookup(first)
        self.usage.from_store += sum(map(self._from_store, found))
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
        rater = self._rater(
            f"rating {todo[0].key} is missing from the store after the Ray phases (the store "
            "lost it, or another process changed it); rerun the same command"
        )
        with self.usage.timed("rate"):
            for index, outcome in rater.rate(todo):
                self.commit(todo[index], outcome)
                yield from ((i, outcome) for i in where[todo[index].key])

    def direction(self, positive: str, negative: str) -> np.ndarray:
        """SeP-IQA's weight of every token for these word lists: from the store, else
        computed once from the model's input embeddings (no image) and stored."""
        cosines = self.store.direction(self.identity, f"{positive}\x1f{negative}")
        if cosines is None:
            rater = self._rater(
                f"{self.spec.model}: SeP-IQA's token weights are missing from the store (a "
                "run stopped between its ratings and them): run the same command once "
                "without --ray to compute them (one load of the model, no image)"
            )
            cosines = rater.token_cosines(positive, negative)
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

    def _rater(self, missing: str):
        return self._loaded(f"{self.spec.runs_on.name} backend", missing)


def check_canary(spec: RaterSpec, store: Store) -> None:
    """Record the canary of an identity the store sees for the first time; refuse, before
    any work, a model whose canary differs from the recorded one: another model answering
    under the same name, whose ratings must not join the stored ones."""
    canary = spec.canary()
    if canary is None:
        return
    recorded = store.canary(spec.identity)
    if recorded is None:
        store.put_canary(spec.identity, canary)
        return
    distance = recorded.distance(canary)
    if distance > CANARY_TOLERANCE:
        raise ModelLoadError(
            f"{spec.identity}: rates the canary image differently from when its first "
            f"ratings in {store.path} were made (max |Δ log p| = {distance:.3g} > "
            f"{CANARY_TOLERANCE}; fingerprint then {recorded.fingerprint}, now "
            f"{canary.fingerprint}): the served model changed under the same name. Serve "
            "it under another name, or pass another --store"
        )


class CachingSegmenter(Cache):
    """SAM2 behind the store, under its identity."""

    spec: SegmenterSpec
    failures: dict[str, str]

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
        if self._first_commit(digest):
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
            if self._from_store(image.digest):
                self.usage.masks_from_store += 1
            return masks
        segmenter = self._loaded(
            "SAM2",
            f"masks of {image.name} are missing from the store after the Ray phases; rerun "
            "the same command",
        )
        with self.usage.timed("segment"):
            masks = segmenter.masks(image.image)
        self.commit(image.digest, (image.image.height, image.image.width), masks)
        return masks
