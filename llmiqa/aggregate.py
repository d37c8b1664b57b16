"""From per-level probabilities to one score: readout, local mix, global+local, ensemble.

Pure functions. Every ablation that changes only these choices is recomputed from stored
probabilities, never by running a model again.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

READOUTS = ("expected", "argmax")
WEIGHTINGS = ("area", "mean")
VIEWS = ("both", "global", "local")


def readout(probs: np.ndarray, how: str = "expected") -> np.ndarray:
    """Scores on 1..K from (..., K) probabilities.

    "argmax": the paper's single greedy token restricted to the K digits (ties go to the
    lower level). "expected": sum_k k * p_k, continuous, what Q-Align-style scorers use.
    """
    probs = np.asarray(probs, dtype=np.float64)
    levels = np.arange(1, probs.shape[-1] + 1)
    if how == "expected":
        return probs @ levels
    if how == "argmax":
        return (np.argmax(probs, axis=-1) + 1).astype(np.float64)
    raise ValueError(f"unknown readout {how!r}; choose one of {READOUTS}")


def local_score(scores: Sequence[float], areas: Sequence[float], weighting: str = "area") -> float:
    """s_local: the region scores weighted by mask area (the paper) or plainly averaged."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return float("nan")
    if weighting == "mean":
        return float(scores.mean())
    if weighting != "area":
        raise ValueError(f"unknown weighting {weighting!r}; choose one of {WEIGHTINGS}")
    weights = np.asarray(areas, dtype=np.float64)
    if weights.shape != scores.shape or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError("area weights must be non-negative, one per region, and not all zero")
    return float(weights @ scores / weights.sum())


def model_score(s_global: float, s_local: float, lam: float = 1.0, view: str = "both") -> float:
    """s_model = (s_global + lam * s_local) / (1 + lam), kept on the 1..K scale.

    The paper sums the two; dividing by 1 + lam changes no ranking. Without regions
    (s_local is NaN, e.g. whole-only mode) the global score stands alone.
    """
    if view == "global" or np.isnan(s_local):
        return float(s_global)
    if view == "local":
        return float(s_local)
    if view != "both":
        raise ValueError(f"unknown view {view!r}; choose one of {VIEWS}")
    if lam < 0:
        raise ValueError(f"lambda must be >= 0, got {lam}")
    return float((s_global + lam * s_local) / (1.0 + lam))


def ensemble(model_scores: Sequence[float]) -> float:
    """s_Dog: the mean of the models' scores."""
    if len(model_scores) == 0:
        raise ValueError("an ensemble needs at least one model score")
    return float(np.mean(model_scores))
