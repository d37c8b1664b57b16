"""The null backend of the collection benchmarks: a fixed rating for every request, at
once, no model, so what they measure is llmiqa's own work. A process registers it with
`import null_rater; null_rater.register()` (benchmarks/ on its path); a Ray worker through
the setup hook `null_rater.register` (benchmarks/ray_scale.py --collection)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import ClassVar

import numpy as np

from llmiqa.raters import registry
from llmiqa.raters.base import Backend, Rating


class NullRater(Backend):
    """A fixed rating for every request, at once: no model."""

    name: ClassVar[str] = "null"
    min_crop_side: ClassVar[int] = 1

    def __init__(self, spec) -> None:
        self.identity = spec.identity

    @classmethod
    def identify(cls, spec) -> str:
        return f"null:{spec.model}"

    @classmethod
    def render_for(cls, spec, prompt) -> str:
        return prompt.user

    def render(self, prompt) -> str:
        return prompt.user

    def rate(self, requests: Sequence) -> Iterator:
        for index, request in enumerate(requests):
            probs = np.full(request.levels, 0.5 / (request.levels - 1))
            probs[request.levels // 2] = 0.5
            yield index, Rating(np.log(probs * 0.9), np.log(0.1), None)


def register() -> None:
    if NullRater.name not in registry.names():
        registry.register(NullRater)
