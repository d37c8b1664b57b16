"""A rater backend with no model, for collection tests and their subprocesses: each image's
rating follows its pixels' digest (so scores differ from image to image and are known
without a model), at once or, with LLMIQA_TEST_DELAY, that many seconds per request. With
LLMIQA_TEST_CRASH naming a file, an image whose digest that file holds kills its process
(a Ray worker, in the tests of `score --ray`): a poison input.

A subprocess registers it with `sys.path.insert(0, FOLDER); import digest_rater;
digest_rater.register()`."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from llmiqa.method.standards import Prompt
from llmiqa.raters import registry
from llmiqa.raters.base import Backend, Rating, RatingRequest, Spec


def probs_of(digest: str, levels: int) -> np.ndarray:
    """The level probabilities the digest gives: a peak at one level, the rest spread."""
    peak = int(digest[:8], 16) % levels
    probs = np.full(levels, 0.2 / (levels - 1))
    probs[peak] = 0.8
    return probs


class DigestRater(Backend):
    name: ClassVar[str] = "digest"
    min_crop_side: ClassVar[int] = 1
    calls = 0  # requests rated in this process

    def __init__(self, spec: Spec) -> None:
        self.identity = spec.identity

    @classmethod
    def identify(cls, spec: Spec) -> str:
        return f"digest:{spec.model}"

    @classmethod
    def render_for(cls, spec: Spec, prompt: Prompt) -> str:
        return f"{prompt.system}\n{prompt.user}"

    def render(self, prompt: Prompt) -> str:
        return f"{prompt.system}\n{prompt.user}"

    def rate(self, requests: Sequence[RatingRequest]) -> Iterator[tuple[int, Rating]]:
        delay = float(os.environ.get("LLMIQA_TEST_DELAY", "0"))
        poison = Path(os.environ.get("LLMIQA_TEST_CRASH", "/nonexistent"))
        for index, request in enumerate(requests):
            if poison.is_file() and request.image in poison.read_text().split():
                os._exit(9)
            time.sleep(delay)
            DigestRater.calls += 1
            probs = probs_of(request.image + request.view.geometry, request.levels)
            yield index, Rating(np.log(probs * 0.9), np.log(0.1), None)


def register() -> None:
    if "digest" not in registry.names():
        registry.register(DigestRater)
