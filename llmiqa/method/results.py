"""What scoring one image yields: its ratings, and the scores derived from them.

An ImageResult keeps every rating (full-vocabulary digit log-probabilities and the best
other token, per view and model), so any aggregation choice is a pure recomputation:
`result.rescored(Aggregation(...))`. Scores are computed on first use, through the same
array code that aggregates whole runs (`aggregate.scores`); `stack` turns many results
into those arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np

from llmiqa.method import aggregate
from llmiqa.method.aggregate import Aggregation, RatingArrays
from llmiqa.method.regions import Box


@dataclass(frozen=True)
class RegionResult:
    kind: str  # "object" or "complement"
    box: Box  # the mask's box (x0, y0, x1, y1), original pixels
    area: int  # its weight in the area-weighted mean (mask pixels)
    area_fraction: float
    probs: np.ndarray = field(repr=False)  # (models, K) softmax over the K digits
    scores: np.ndarray = field(repr=False)  # (models,) under the result's aggregation

    @property
    def score(self) -> float:
        return float(np.mean(self.scores))


@dataclass(frozen=True)
class ImageResult:
    """One image: view 0 of the rating arrays is the whole image, views 1.. its regions."""

    name: str
    models: tuple[str, ...] = ()
    digest: str | None = None  # hash of the decoded pixels
    size: tuple[int, int] | None = None  # (width, height)
    kinds: tuple[str, ...] = ()  # per region: "object" or "complement"
    boxes: tuple[Box, ...] = ()
    areas: tuple[int, ...] = ()
    logprobs: np.ndarray | None = field(default=None, repr=False)  # (views, models, K)
    other_logprob: np.ndarray | None = field(default=None, repr=False)  # (views, models)
    other_value: np.ndarray | None = field(default=None, repr=False)  # NaN: not an integer
    error: str | None = None
    aggregation: Aggregation = Aggregation()
    words: tuple[str, ...] = ()  # the K answers: () digits, else words worst first
    # (views, models, T): top raw logits, and their tokens' SeP-IQA weights (None: not kept)
    top_logits: np.ndarray | None = field(default=None, repr=False)
    top_weights: np.ndarray | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    def rescored(self, aggregation: Aggregation) -> ImageResult:
        """The same ratings, aggregated another way (no model involved)."""
        return replace(self, aggregation=aggregation)

    def only_model(self, index: int) -> ImageResult:
        """This result as if only model `index` had rated (for ensemble ablations)."""
        if not self.ok:
            return self
        pick = slice(index, index + 1)
        top = {}
        if self.top_logits is not None:
            top = dict(top_logits=self.top_logits[:, pick], top_weights=self.top_weights[:, pick])
        return replace(
            self,
            models=self.models[pick],
            logprobs=self.logprobs[:, pick],
            other_logprob=self.other_logprob[:, pick],
            other_value=self.other_value[:, pick],
            **top,
        )

    @cached_property
    def _scores(self) -> aggregate.Scores:
        if not self.ok:
            raise ValueError(f"{self.name} has no scores: {self.error}")
        return aggregate.scores(stack([self]), self.aggregation)

    @property
    def score(self) -> float:
        """The final score: the mean over models of s_model."""
        return float(self._scores.score[0])

    @property
    def spread(self) -> float:
        """The score's standard deviation if its views were independent draws from their
        answer distributions (aggregate.scores); NaN for readouts without one."""
        return float(self._scores.spread[0])

    @property
    def s_global(self) -> np.ndarray:
        return self._scores.s_global[0]

    @property
    def s_local(self) -> np.ndarray:
        """(models,), NaN without regions."""
        return self._scores.s_local[0]

    @property
    def s_model(self) -> np.ndarray:
        return self._scores.s_model[0]

    @property
    def global_probs(self) -> np.ndarray:
        """(models, K): each model's distribution over the K levels for the whole image."""
        return aggregate.level_probs(self.logprobs[0])

    @property
    def probs(self) -> np.ndarray:
        """Whole-image probabilities over the K levels, averaged over the models."""
        return self.global_probs.mean(axis=0)

    @property
    def valid_mass(self) -> np.ndarray:
        """(views, models): probability the model put on the K digits at all."""
        return aggregate.valid_mass(self.logprobs)

    @property
    def regions(self) -> tuple[RegionResult, ...]:
        view = self._scores.view[0]
        pixels = self.size[0] * self.size[1]
        return tuple(
            RegionResult(kind, box, area, area / pixels, aggregate.level_probs(lp), scores)
            for kind, box, area, lp, scores in zip(
                self.kinds, self.boxes, self.areas, self.logprobs[1:], view[1:], strict=True
            )
        )

    def to_dict(self) -> dict:
        """JSON-ready: the ratings that rebuild the result (see from_dict), and its scores."""
        if not self.ok:
            return {"name": self.name, "error": self.error}
        spread = self.spread
        ratings = {
            "logprobs": self.logprobs.tolist(),
            "other_logprob": self.other_logprob.tolist(),
            "other_value": [
                [None if np.isnan(v) else int(v) for v in row] for row in self.other_value
            ],
        }
        if self.top_logits is not None:
            ratings["top_logits"] = _nullable(self.top_logits)
            ratings["top_weights"] = _nullable(self.top_weights)
        return {
            "name": self.name,
            "score": self.score,
            "spread": None if np.isnan(spread) else spread,
            "levels": int(self.logprobs.shape[-1]),
            "words": list(self.words),
            "probs": self.probs.tolist(),
            "models": list(self.models),
            "digest": self.digest,
            "size": list(self.size),
            "s_global": self.s_global.tolist(),
            "s_local": [None if np.isnan(v) else v for v in self.s_local.tolist()],
            "s_model": self.s_model.tolist(),
            "aggregation": vars(self.aggregation),
            "regions": [
                {
                    "kind": r.kind,
                    "box": list(r.box),
                    "area": r.area,
                    "area_fraction": r.area_fraction,
                    "score": r.score,
                }
                for r in self.regions
            ],
            "ratings": ratings,
        }

    @classmethod
    def from_dict(cls, data: dict) -> ImageResult:
        if data.get("error"):
            return cls(name=data["name"], error=data["error"])
        ratings = data["ratings"]
        return cls(
            name=data["name"],
            models=tuple(data["models"]),
            digest=data["digest"],
            size=tuple(data["size"]),
            kinds=tuple(r["kind"] for r in data["regions"]),
            boxes=tuple(tuple(r["box"]) for r in data["regions"]),
            areas=tuple(r["area"] for r in data["regions"]),
            logprobs=np.asarray(ratings["logprobs"], dtype=np.float64),
            other_logprob=np.asarray(ratings["other_logprob"], dtype=np.float64),
            other_value=np.array(ratings["other_value"], dtype=np.float64),  # None -> NaN
            aggregation=Aggregation(**data["aggregation"]),
            words=tuple(data.get("words", ())),
            top_logits=_array(ratings.get("top_logits")),
            top_weights=_array(ratings.get("top_weights")),
        )


def _nullable(array: np.ndarray) -> list:
    """Nested lists with None for NaN (strict JSON)."""
    return np.where(np.isnan(array), None, array).tolist()


def _array(values: list | None) -> np.ndarray | None:
    return None if values is None else np.array(values, dtype=np.float64)  # None -> NaN


def stack(results: Sequence[ImageResult]) -> RatingArrays:
    """The ratings of scored results as one padded array set (failed results excluded)."""
    ok = [r for r in results if r.ok]
    if not ok:
        raise ValueError("no scored result to aggregate")
    views = max(r.logprobs.shape[0] for r in ok)
    models, levels = ok[0].logprobs.shape[1:]
    n = len(ok)
    logprobs = np.full((n, views, models, levels), np.nan)
    other = np.full((n, views, models), np.nan)
    value = np.full((n, views, models), np.nan)
    area = np.zeros((n, views - 1))
    complement = np.zeros((n, views - 1), dtype=bool)
    present = np.zeros((n, views - 1), dtype=bool)
    kept = max((r.top_logits.shape[-1] for r in ok if r.top_logits is not None), default=0)
    top_logits = np.full((n, views, models, kept), np.nan)
    top_weights = np.full((n, views, models, kept), np.nan)
    for i, r in enumerate(ok):
        if r.logprobs.shape[1:] != (models, levels) or r.words != ok[0].words:
            raise ValueError(f"{r.name}: rated by other models or other answers than the rest")
        v = r.logprobs.shape[0]
        logprobs[i, :v], other[i, :v], value[i, :v] = r.logprobs, r.other_logprob, r.other_value
        area[i, : v - 1] = r.areas
        complement[i, : v - 1] = [kind == "complement" for kind in r.kinds]
        present[i, : v - 1] = True
        if r.top_logits is not None:
            t = r.top_logits.shape[-1]
            top_logits[i, :v, :, :t], top_weights[i, :v, :, :t] = r.top_logits, r.top_weights
    words = np.array(ok[0].words, dtype=str)
    return RatingArrays(
        logprobs, other, value, area, complement, present, words, top_logits, top_weights
    )
