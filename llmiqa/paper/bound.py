"""Table 1: how well a scorer limited to K integer levels could at best track MOS.

The paper quantizes the MOS itself and correlates the levels with the MOS: no model can
beat a perfect rater that is forced onto the same levels. Three quantizations:

- "printed": Equation (1) as printed, ŝ = Round(K (s − Min) / (Max − Min)). It gives
  K + 1 levels 0..K, although the text says {0, …, K − 1}.
- "code": the released code (gt_srcc_plcc.py), ŝ = Round(K s / (Max − Min)), with no
  minimum subtracted. This is what produced the paper's table: it reproduces every
  printed cell of SPAQ, KonIQ-10k (its `MOS` column), LIVE Challenge (all 1,169 images)
  and KADID-10k to 3 decimals; no formula reproduces AGIQA-3k's row.
- "strict": exactly K levels, ŝ = Round((K − 1)(s − Min) / (Max − Min)).

Round is numpy's, half to even, as the released code's np.round.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmiqa.evaluation import correlation

# Table 1 as the paper prints it: (SRCC + PLCC) / 2 for K = 3, 5, 7, 9 (LIVE Challenge on
# all 1,169 images, training images included; KonIQ-10k on its 1-5 MOS).
TABLE_1 = {
    "spaq": {3: 0.912, 5: 0.968, 7: 0.983, 9: 0.990},
    "koniq10k": {3: 0.830, 5: 0.946, 7: 0.967, 9: 0.979},
    "livec": {3: 0.915, 5: 0.964, 7: 0.982, 9: 0.989},
    "agiqa3k": {3: 0.923, 5: 0.973, 7: 0.986, 9: 0.991},
    "kadid10k": {3: 0.942, 5: 0.980, 7: 0.988, 9: 0.993},
}

FORMULAS = {
    "printed": "Equation (1) as printed, K + 1 levels",
    "code": "the released code, round(K s / (max - min))",
    "strict": "exactly K levels",
}


@dataclass(frozen=True)
class Bound:
    """Agreement of the K-level quantized MOS with the MOS itself."""

    k: int
    formula: str
    srcc: float
    plcc: float
    mean: float  # (SRCC + PLCC) / 2, the number Table 1 prints


def levels(mos: np.ndarray, k: int, *, formula: str = "code") -> np.ndarray:
    """The MOS quantized onto K integer levels by `formula` (see FORMULAS)."""
    mos = np.asarray(mos, dtype=np.float64)
    if k < 2:
        raise ValueError(f"need K >= 2 levels, got {k}")
    if formula not in FORMULAS:
        raise ValueError(f"unknown formula {formula!r}; choose one of {list(FORMULAS)}")
    if reason := correlation.problem(mos, mos):
        raise ValueError(f"cannot quantize this MOS: {reason}")
    span = mos.max() - mos.min()
    if formula == "code":
        return np.round(mos / span * k)
    top = k - 1 if formula == "strict" else k
    return np.round(top * (mos - mos.min()) / span)


def upper_bound(mos: np.ndarray, k: int, *, formula: str = "code") -> Bound:
    """SRCC and PLCC between the quantized levels and the MOS, and their mean."""
    quantized = levels(mos, k, formula=formula)
    srcc = correlation.srcc(quantized, mos)
    plcc = correlation.plcc(quantized, mos)
    return Bound(k, formula, srcc, plcc, (srcc + plcc) / 2)
