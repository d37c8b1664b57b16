"""Table 1: how well a scorer limited to K integer levels could at best track MOS.

The paper quantizes the MOS itself with its Equation (1) and correlates the levels with
the MOS: no model can beat a perfect rater that is forced onto the same levels.

Equation (1) as printed, ŝ = Round(K (s − Min) / (Max − Min)), gives K + 1 levels 0..K,
although the text says it scales to {0, …, K − 1}. `strict=True` gives exactly K levels:
ŝ = Round((K − 1)(s − Min) / (Max − Min)), levels 0..K − 1. Only the printed formula
reproduces the paper's numbers (SPAQ, KonIQ-10k and KADID-10k within 0.01 at every K);
the strict one is 0.02-0.09 lower at K = 3.

Round is numpy's, half to even, as torch.round (the paper's code is PyTorch). A tie
needs the scaled MOS at exactly .5; of the five datasets only SPAQ (integer MOS) has
any, and they move no Table 1 value by more than 0.001 against rounding half up.

KonIQ-10k must be read on its `MOS` column (1-5): `MOS_zscore` gives 0.851 at K = 3
where the paper prints 0.830 (`MOS`: 0.826).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmiqa import metrics


@dataclass(frozen=True)
class Bound:
    """Agreement of the K-level quantized MOS with the MOS itself."""

    k: int
    strict: bool
    srcc: float
    plcc: float
    mean: float  # (SRCC + PLCC) / 2, the number Table 1 prints


def levels(mos: np.ndarray, k: int, *, strict: bool = False) -> np.ndarray:
    """Equation (1): the MOS rescaled by its own min and max onto 0..K (strict: 0..K−1)."""
    mos = np.asarray(mos, dtype=np.float64)
    if k < 2:
        raise ValueError(f"need K >= 2 levels, got {k}")
    if reason := metrics.problem(mos, mos):
        raise ValueError(f"cannot quantize this MOS: {reason}")
    top = k - 1 if strict else k
    return np.round(top * (mos - mos.min()) / (mos.max() - mos.min()))


def upper_bound(mos: np.ndarray, k: int, *, strict: bool = False) -> Bound:
    """SRCC and PLCC between Equation (1)'s levels and the MOS, and their mean."""
    quantized = levels(mos, k, strict=strict)
    srcc = metrics.srcc(quantized, mos)
    plcc = metrics.plcc(quantized, mos)
    return Bound(k, strict, srcc, plcc, (srcc + plcc) / 2)
