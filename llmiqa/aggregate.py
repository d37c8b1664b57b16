"""From ratings to scores: readout, local mix, global + local (+ region count), ensemble.

Pure functions on arrays of a whole run at once (images x views x models x K), so every
ablation that changes only these choices is recomputed from stored ratings in
milliseconds, never by running a model again. One image is the case N = 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from llmiqa.settings import option

READOUTS = ("expected", "argmax", "greedy")
WEIGHTINGS = ("area", "mean")


@dataclass(frozen=True)
class Aggregation:
    """The choices that turn ratings into a score; none of them needs a model.

    s_model = (g·s_global + λ·s_local + c·N) / (g + λ if normalize else 1), N the number of
    regions counted. The paper: g = λ = 1, c = 0 (it sums; normalizing keeps 1..K and
    changes no ranking). The released code: g = 0.5, λ = 1, c = 0.1, no normalizing.
    """

    readout: str = field(
        default="expected",
        metadata=option(
            "expected: sum k*p_k over the K digits; argmax: the most probable digit (the "
            "paper's one token); greedy: the full-vocabulary greedy token, 1 if not a number "
            "(the released code)",
            choices=READOUTS,
        ),
    )
    weighting: str = field(
        default="area",
        metadata=option(
            "region weights: mask area (the paper) or plain mean",
            choices=WEIGHTINGS,
        ),
    )
    global_weight: float = field(default=1.0, metadata=option("weight g of s_global"))
    lam: float = field(default=1.0, metadata=option("weight λ of s_local"))
    count_weight: float = field(
        default=0.0, metadata=option("weight c per counted region (the released code: 0.1)")
    )
    normalize: bool = field(
        default=True, metadata=option("divide by g + λ, keeping the score on 1..K")
    )
    complement: bool = field(
        default=True, metadata=option("count the complement region (off: Table 5's ablation)")
    )

    def __post_init__(self) -> None:
        if self.readout not in READOUTS:
            raise ValueError(f"unknown readout {self.readout!r}; choose one of {READOUTS}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {self.weighting!r}; choose one of {WEIGHTINGS}")
        if min(self.global_weight, self.lam) < 0:
            raise ValueError(f"weights must be >= 0, got g={self.global_weight}, λ={self.lam}")
        if self.normalize and self.global_weight + self.lam <= 0:
            raise ValueError("normalizing needs g + λ > 0")


@dataclass(frozen=True)
class RatingArrays:
    """Ratings of N images by M models, V views each: view 0 is the whole image, views
    1.. the regions (padded with NaN ratings and `present` False where an image has fewer).
    """

    logprobs: np.ndarray  # (N, V, M, K) full-vocabulary log-probabilities of the digits
    other_logprob: np.ndarray  # (N, V, M) best other token
    other_value: np.ndarray  # (N, V, M) its integer value, NaN when not an integer
    area: np.ndarray  # (N, V - 1) region weights
    complement: np.ndarray  # (N, V - 1) bool: the region is the complement
    present: np.ndarray  # (N, V - 1) bool: the region exists

    @cached_property
    def views(self) -> dict[str, np.ndarray]:
        """Each readout of every view, computed on first use: variants that share a
        readout (most ablations) share this work."""
        return {}

    def readout(self, how: str) -> np.ndarray:
        if how not in self.views:
            self.views[how] = readout(self.logprobs, how, self.other_logprob, self.other_value)
        return self.views[how]


@dataclass(frozen=True)
class Scores:
    view: np.ndarray  # (N, V, M) each view's readout
    s_global: np.ndarray  # (N, M)
    s_local: np.ndarray  # (N, M), NaN without regions
    s_model: np.ndarray  # (N, M)
    score: np.ndarray  # (N,) the ensemble: mean over models


def level_probs(logprobs: np.ndarray) -> np.ndarray:
    """Softmax over the K digits (last axis): exactly the softmax of their logits."""
    logprobs = np.asarray(logprobs, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        shifted = logprobs - np.max(logprobs, axis=-1, keepdims=True)
        weights = np.exp(shifted)
        return weights / weights.sum(axis=-1, keepdims=True)


def readout(logprobs: np.ndarray, how: str, other_logprob=None, other_value=None) -> np.ndarray:
    """Scores on the level scale from (..., K) digit log-probabilities.

    "argmax": the most probable of the K digits (ties to the lower level). "expected":
    sum_k k * p_k, continuous. "greedy": the released code's answer, the most probable
    token of the whole vocabulary: a digit k, else the other token's integer value, else 1.
    """
    probs = level_probs(logprobs)
    levels = np.arange(1, probs.shape[-1] + 1)
    if how == "expected":
        return probs @ levels
    best = (np.argmax(np.nan_to_num(probs, nan=-1.0), axis=-1) + 1).astype(np.float64)
    if how == "argmax":
        return np.where(np.isnan(probs).any(axis=-1), np.nan, best)
    if how != "greedy":
        raise ValueError(f"unknown readout {how!r}; choose one of {READOUTS}")
    logprobs = np.asarray(logprobs, dtype=np.float64)
    other = np.where(np.isnan(other_value), 1.0, other_value)
    with np.errstate(invalid="ignore"):
        digit_wins = np.max(logprobs, axis=-1) >= other_logprob
    unknown = np.isnan(logprobs).any(axis=-1) | np.isnan(other_logprob)
    return np.where(unknown, np.nan, np.where(digit_wins, best, other))


def valid_mass(logprobs: np.ndarray) -> np.ndarray:
    """The probability the model puts on the K digits at all: how well it follows the format."""
    return np.exp(np.asarray(logprobs, dtype=np.float64)).sum(axis=-1)


def scores(ratings: RatingArrays, aggregation: Aggregation) -> Scores:
    """Every score of every image under one aggregation."""
    view = ratings.readout(aggregation.readout)
    s_global = view[:, 0]
    counted = ratings.present & (aggregation.complement | ~ratings.complement)
    weights = ratings.area if aggregation.weighting == "area" else np.ones_like(ratings.area)
    weights = np.where(counted, weights, 0.0).astype(np.float64)[..., None]  # (N, R, 1)
    regional = np.where(counted[..., None], view[:, 1:], 0.0)
    total = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s_local = np.where(total > 0, (weights * regional).sum(axis=1) / total, np.nan)
    count = counted.sum(axis=1)[:, None]
    g, lam = aggregation.global_weight, aggregation.lam
    mixed = g * s_global + lam * np.nan_to_num(s_local) + aggregation.count_weight * count
    if aggregation.normalize:
        mixed = mixed / (g + lam)
    s_model = np.where(np.isnan(s_local), s_global, mixed)
    return Scores(view, s_global, s_local, s_model, s_model.mean(axis=1))
