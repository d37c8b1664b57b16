"""The store in front of the models: a rater and a segmenter that never compute twice.

As lm-evaluation-harness's CachingLM wraps any model, `CachingRater` wraps any rater
(behind its spec, loaded on first need) and `CachingSegmenter` any segmenter: same job as
the thing they wrap, keyed by what the result depends on. Stored results are served
(after validation), the rest is computed, and each new result is committed as it
arrives. Usage counts what came from where.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from llmiqa.images import LoadedImage
from llmiqa.raters import RaterSpec
from llmiqa.raters.base import Rating, RatingFailure, RatingRequest
from llmiqa.regions import Crop
from llmiqa.segment import SegmenterSpec
from llmiqa.standards import Prompt
from llmiqa.store import RatingKey, Store

NOTES_KEPT = 20  # refused-row messages kept verbatim; the rest are only counted


@dataclass
class Usage:
    """What a Scorer did, and where the time went."""

    rated: int = 0  # sub-images rated by a model
    from_store: int = 0  # sub-images whose rating the store held
    refused: int = 0  # stored ratings refused as invalid (and rated again)
    segmented: int = 0  # images segmented by SAM2
    masks_from_store: int = 0  # images whose masks the store held
    failed: int = 0  # images that could not be scored
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


def prompt_text(prompt: Prompt) -> str:
    """The prompt as one string for the store key: both turns, told apart."""
    return f"{prompt.system}\x1e{prompt.user}" if prompt.system is not None else prompt.user


@dataclass(frozen=True)
class Pending:
    """A rating to obtain: its key, and how to cut its sub-image should it be rated."""

    key: RatingKey
    image: Image.Image
    crop: Crop | None  # None: the whole image
    prompt: Prompt

    def request(self) -> RatingRequest:
        pixels = self.image if self.crop is None else self.crop.pixels(self.image)
        return RatingRequest(self.key.key, pixels, self.prompt, self.key.levels)

    def cost(self) -> int:
        if self.crop is None:
            return self.image.width * self.image.height
        x0, y0, x1, y1 = self.crop.box
        return (x1 - x0) * (y1 - y0)


class CachingRater:
    """One model behind the store; loads it on the first rating the store lacks."""

    def __init__(self, spec: RaterSpec, store: Store, usage: Usage) -> None:
        self.spec, self.store, self.usage = spec, store, usage
        self.identity = spec.identity
        self.loaded = None

    def rater(self):
        if self.loaded is None:
            with self.usage.timed("load models"):
                self.loaded = self.spec.load()
        return self.loaded

    def rate(self, pending: Sequence[Pending]) -> dict[RatingKey, Rating | RatingFailure]:
        """Every distinct key once: stored ratings served, the others rated (smallest
        sub-images first, so batches pad little) and committed one by one."""
        wanted = {p.key: p for p in pending}
        found, refused = self.store.ratings(wanted)
        self.usage.from_store += len(found)
        self.usage.refused += len(refused)
        for message in refused:
            self.usage.note(message)
        missing = sorted((p for k, p in wanted.items() if k not in found), key=Pending.cost)
        outcomes: dict[RatingKey, Rating | RatingFailure] = dict(found)
        if not missing:
            return outcomes
        rater = self.rater()
        with self.usage.timed("rate"):
            requests = [p.request() for p in missing]
            for index, outcome in rater.rate(requests):
                key = missing[index].key
                if isinstance(outcome, Rating):
                    self.store.put_rating(key, outcome)
                    self.usage.rated += 1
                outcomes[key] = outcome
        return outcomes


class CachingSegmenter:
    """SAM2 behind the store; loads it on the first image the store has no masks for."""

    def __init__(self, spec: SegmenterSpec, store: Store, usage: Usage) -> None:
        self.spec, self.store, self.usage = spec, store, usage
        self.identity = spec.identity
        self.loaded = None

    def masks(self, image: LoadedImage) -> list[np.ndarray]:
        masks = self.store.masks(image.digest, self.identity)
        if masks is not None:
            self.usage.masks_from_store += 1
            return masks
        if self.loaded is None:
            with self.usage.timed("load models"):
                self.loaded = self.spec.load()
        with self.usage.timed("segment"):
            masks = self.loaded.masks(image.image)
        shape = (image.image.height, image.image.width)
        self.store.put_masks(image.digest, self.identity, shape, masks)
        self.usage.segmented += 1
        return masks
