"""From ratings to scores: readout, local mix, global + local (+ region count), ensemble.

Pure functions on arrays of a whole run at once (images x views x models x K), so every
ablation that changes only these choices is recomputed from stored ratings in
milliseconds, never by running a model again. One image is the case N = 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from llmiqa.settings import option

# Readouts of digit answers, of answer words (another protocol's question), and of both.
DIGIT_READOUTS = ("expected", "argmax", "greedy")
WORD_READOUTS = ("qalign", "qbench", "sepiqa")
READOUTS = (*DIGIT_READOUTS, *WORD_READOUTS)
WEIGHTINGS = ("area", "mean")
# Q-Bench's A3 readout: P(good) of the two-way softmax of the good and poor logits divided
# by 100 (Q-Future/Q-Bench, a3_assessment_all.py and its leaderboard notebook).
QBENCH_TEMPERATURE = 100.0
GOOD, POOR = 3, 1  # their places among the answer words, worst first (standards.ANSWER_WORDS)


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
            "expected: sum k*p_k over the K answers; argmax: the most probable (the paper's "
            "one token); greedy: the full-vocabulary greedy token, 1 if not a number (the "
            "released code). Of answer words: qalign (expected over bad..excellent, 1..5), "
            "qbench (P(good) against poor, logits / 100), sepiqa (top raw logits weighted by "
            "their embedding's cosine with good minus bad)",
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


def _none() -> np.ndarray:
    return np.zeros((0, 0, 0, 0))


def allowed_readouts(words: bool, top: bool) -> tuple[str, ...]:
    """Readouts of digit answers, or of answer words (SeP-IQA's only with top raw logits)."""
    if not words:
        return DIGIT_READOUTS
    return ("qalign", "qbench", "argmax", *(("sepiqa",) if top else ()))


@dataclass(frozen=True)
class RatingArrays:
    """Ratings of N images by M models, V views each: view 0 is the whole image, views
    1.. the regions (padded with NaN ratings and `present` False where an image has fewer).

    `words` says what the K answers are: the digits 1..K (empty), or the answer words of
    another protocol's question, worst first. `top_logits` holds the T top raw logits of
    each view and `top_weights` their tokens' SeP-IQA weights (T = 0 when none were kept).
    """

    logprobs: np.ndarray  # (N, V, M, K) full-vocabulary log-probabilities of the answers
    other_logprob: np.ndarray  # (N, V, M) best other token
    other_value: np.ndarray  # (N, V, M) its integer value, NaN when not an integer
    area: np.ndarray  # (N, V - 1) region weights
    complement: np.ndarray  # (N, V - 1) bool: the region is the complement
    present: np.ndarray  # (N, V - 1) bool: the region exists
    words: np.ndarray = field(default_factory=lambda: np.array([], dtype=str))  # (K,) or (0,)
    top_logits: np.ndarray = field(default_factory=_none)  # (N, V, M, T)
    top_weights: np.ndarray = field(default_factory=_none)  # (N, V, M, T)

    @cached_property
    def views(self) -> dict[str, np.ndarray]:
        """Each readout of every view, computed on first use: variants that share a
        readout (most ablations) share this work."""
        return {}

    @property
    def readouts(self) -> tuple[str, ...]:
        """The readouts these ratings allow (what was stored decides, never a model)."""
        kept = bool(self.top_logits.size) and bool(np.isfinite(self.top_weights).any())
        return allowed_readouts(bool(self.words.size), kept)

    def readout(self, how: str) -> np.ndarray:
        if how not in self.readouts:
            answers = f"the answer words {list(self.words)}" if self.words.size else "digits"
            raise ValueError(
                f"readout {how}: ratings of {answers} allow {', '.join(self.readouts)}"
            )
        if how not in self.views:
            if how == "sepiqa":
                self.views[how] = sep_iqa(self.top_logits, self.top_weights)
            else:
                self.views[how] = readout(self.logprobs, how, self.other_logprob, self.other_value)
        return self.views[how]

    def spread(self, how: str) -> np.ndarray:
        """(N, V, M): each view's standard deviation on the readout's scale, where its
        answer distribution defines one (NaN for qbench and sepiqa)."""
        if how in ("qbench", "sepiqa"):
            return np.full(self.other_logprob.shape, np.nan)
        return level_spread(self.logprobs)


@dataclass(frozen=True)
class Scores:
    view: np.ndarray  # (N, V, M) each view's readout
    s_global: np.ndarray  # (N, M)
    s_local: np.ndarray  # (N, M), NaN without regions
    s_model: np.ndarray  # (N, M)
    score: np.ndarray  # (N,) the ensemble: mean over models
    spread: np.ndarray  # (N,) its standard deviation (see `scores`), NaN where undefined


def level_probs(logprobs: np.ndarray) -> np.ndarray:
    """Softmax over the K digits (last axis): exactly the softmax of their logits."""
    logprobs = np.asarray(logprobs, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        shifted = logprobs - np.max(logprobs, axis=-1, keepdims=True)
        weights = np.exp(shifted)
        return weights / weights.sum(axis=-1, keepdims=True)


def level_spread(logprobs: np.ndarray) -> np.ndarray:
    """Standard deviation of the level distribution (levels 1..K): sqrt(sum_k p_k (k - mu)^2)."""
    probs = level_probs(logprobs)
    levels = np.arange(1, probs.shape[-1] + 1)
    mean = probs @ levels
    return np.sqrt(np.maximum(probs @ levels**2 - mean**2, 0.0))


def sep_iqa(top_logits: np.ndarray, top_weights: np.ndarray) -> np.ndarray:
    """SeP-IQA's score: sum over the kept top tokens of raw logit x the cosine of the
    token's input embedding with the direction mean(E[positive]) - mean(E[negative])."""
    with np.errstate(invalid="ignore"):
        return np.nansum(top_logits * top_weights, axis=-1) + np.where(
            np.isnan(top_weights).all(axis=-1), np.nan, 0.0
        )


def readout(logprobs: np.ndarray, how: str, other_logprob=None, other_value=None) -> np.ndarray:
    """Scores on the level scale from (..., K) answer log-probabilities.

    "argmax": the most probable of the K answers (ties to the lower level). "expected"
    (and "qalign", over the five answer words): sum_k k * p_k, continuous. "greedy": the
    released code's answer, the most probable token of the whole vocabulary: a digit k,
    else the other token's integer value, else 1. "qbench": P(good) of the softmax of the
    good and poor logits divided by QBENCH_TEMPERATURE (a difference of log-probabilities
    is a difference of logits).
    """
    if how == "qbench":
        logprobs = np.asarray(logprobs, dtype=np.float64)
        gap = (logprobs[..., GOOD] - logprobs[..., POOR]) / QBENCH_TEMPERATURE
        return 1.0 / (1.0 + np.exp(-gap))
    probs = level_probs(logprobs)
    levels = np.arange(1, probs.shape[-1] + 1)
    if how in ("expected", "qalign"):
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
    """Every score of every image under one aggregation.

    The spread treats the views' readouts as independent variables, each with its answer
    distribution's standard deviation σ, and the region weights as fixed: s_model is then
    linear in them, so Var(s_model) = (g² σ_global² + λ² Σ_i w_i² σ_i²) / d², with w_i the
    normalised region weights and d = g + λ (1 without normalizing); the ensemble mean of
    M models has variance Σ_m Var(s_m) / M².
    """
    view = ratings.readout(aggregation.readout)
    spread = ratings.spread(aggregation.readout)
    s_global = view[:, 0]
    counted = ratings.present & (aggregation.complement | ~ratings.complement)
    weights = ratings.area if aggregation.weighting == "area" else np.ones_like(ratings.area)
    weights = np.where(counted, weights, 0.0).astype(np.float64)[..., None]  # (N, R, 1)
    regional = np.where(counted[..., None], view[:, 1:], 0.0)
    total = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s_local = np.where(total > 0, (weights * regional).sum(axis=1) / total, np.nan)
        shares = np.where(total[:, None] > 0, weights / total[:, None], 0.0)  # (N, R, 1)
    local_var = (shares**2 * np.where(counted[..., None], spread[:, 1:] ** 2, 0.0)).sum(axis=1)
    count = counted.sum(axis=1)[:, None]
    g, lam = aggregation.global_weight, aggregation.lam
    mixed = g * s_global + lam * np.nan_to_num(s_local) + aggregation.count_weight * count
    mixed_var = g**2 * spread[:, 0] ** 2 + lam**2 * local_var
    if aggregation.normalize:
        mixed, mixed_var = mixed / (g + lam), mixed_var / (g + lam) ** 2
    s_model = np.where(np.isnan(s_local), s_global, mixed)
    model_var = np.where(np.isnan(s_local), spread[:, 0] ** 2, mixed_var)
    models = s_model.shape[1]
    ensemble_spread = np.sqrt(model_var.sum(axis=1)) / models
    return Scores(view, s_global, s_local, s_model, s_model.mean(axis=1), ensemble_spread)


def score_range(aggregation: Aggregation, levels: int) -> tuple[float, float]:
    """The (min, max) a score can take, from K and the aggregation.

    Each view scores in [1, K]; s_model = (g·s_global + λ·s_local + c·N) / D with D = g + λ
    when normalised (then the range is exactly (1, K)) and D = 1 when not; an image without
    regions scores s_global. The count term c·N grows with the number N of regions, which
    has no fixed bound: with c > 0 the maximum is infinite (pyiqa writes such a range
    "1, ~"). The dogiqa preset (g = 0.5, λ = 1, c = 0.1, not normalised) thus spans
    1 .. 10.5 + 0.1·N, e.g. up to 11.2 with 7 regions; the paper preset (g = λ = 1, summed)
    spans (1, 2K). The "greedy" readout can return another integer token (e.g. 0 or 10)
    where the model answers outside 1..K: the range assumes it answers a digit.
    """
    g, lam, c = aggregation.global_weight, aggregation.lam, aggregation.count_weight
    divisor = g + lam if aggregation.normalize else 1.0
    low = min(1.0, (g + lam) / divisor + c) if c >= 0 else -math.inf
    high = max(float(levels), (g + lam) * levels / divisor) if c <= 0 else math.inf
    return low, high
