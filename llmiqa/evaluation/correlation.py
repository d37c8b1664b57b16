"""Agreement between predicted scores and MOS: SRCC, KRCC, PLCC, fitted PLCC/RMSE, bootstrap CIs.

Pure functions on two equal-length 1-D arrays. The paper reports SRCC and PLCC without
saying whether PLCC is raw or taken after the usual logistic fit, so both are reported.
A metric that is undefined on its inputs (too few pairs, a constant side, non-finite
values, a fit that fails) is NaN, and `evaluate` says why; nothing is dropped silently.

The correlations are written with numpy (scipy.stats's definitions: average ranks for
ties, Kendall's tau-b; tests hold them to scipy's values): importing scipy.stats costs
about a second, which every zero-call `llmiqa ablate` would pay.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np

METRICS = ("srcc", "krcc", "plcc", "plcc_fit", "rmse_fit")
MIN_PAIRS = 3  # below this a correlation says nothing
MIN_PAIRS_FIT = 5  # the logistic has 4 parameters: fit only with more points than that
MAX_FEV = 10_000  # pyiqa's budget for the fit


def _pair(pred: np.ndarray, mos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    mos = np.asarray(mos, dtype=np.float64)
    if pred.ndim != 1 or pred.shape != mos.shape:
        raise ValueError(
            f"pred and mos must be 1-D of equal length, got {pred.shape} and {mos.shape}"
        )
    return pred, mos


def problem(pred: np.ndarray, mos: np.ndarray, min_pairs: int = MIN_PAIRS) -> str | None:
    """Why a correlation of pred with mos is undefined, or None when it is defined."""
    pred, mos = _pair(pred, mos)
    for name, values in (("pred", pred), ("mos", mos)):
        bad = int(np.count_nonzero(~np.isfinite(values)))
        if bad:
            return f"{name} has {bad} non-finite value(s)"
    if pred.size < min_pairs:
        return f"only {pred.size} pair(s), need at least {min_pairs}"
    for name, values in (("pred", pred), ("mos", mos)):
        if np.ptp(values) == 0:
            return f"{name} is constant"
    return None


def srcc(pred: np.ndarray, mos: np.ndarray) -> float:
    """Spearman rank correlation (ties get average ranks); NaN when undefined."""
    if problem(pred, mos):
        return float("nan")
    return _pearson(rankdata(pred), rankdata(mos))


def krcc(pred: np.ndarray, mos: np.ndarray) -> float:
    """Kendall rank correlation, tau-b (corrects for ties); NaN when undefined."""
    if problem(pred, mos):
        return float("nan")
    return _kendall_tau_b(np.asarray(pred, np.float64), np.asarray(mos, np.float64))


def plcc(pred: np.ndarray, mos: np.ndarray) -> float:
    """Pearson linear correlation of the raw scores; NaN when undefined."""
    if problem(pred, mos):
        return float("nan")
    return _pearson(np.asarray(pred, np.float64), np.asarray(mos, np.float64))


def rankdata(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their average rank (scipy.stats.rankdata's default)."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    counts = np.diff(np.r_[starts, values.size])
    group = np.repeat(np.arange(starts.size), counts)
    ranks = np.empty(values.size)
    ranks[order] = (starts + (counts + 1) / 2.0)[group]
    return ranks


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    value = float(x @ y / np.sqrt((x @ x) * (y @ y)))
    return max(-1.0, min(1.0, value))


def _dense(values: np.ndarray) -> np.ndarray:
    """0-based dense ranks of sorted values."""
    return np.r_[0, np.cumsum(values[1:] != values[:-1])]


def _kendall_tau_b(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b as scipy computes it: discordant pairs counted as the inversions of
    y once the pairs are sorted by (x, y), ties in x, in y and in both subtracted."""
    order = np.lexsort((y, x))
    x, y = x[order], y[order]
    xs = _dense(x)
    y_order = np.argsort(y, kind="mergesort")
    ys = np.empty(y.size, dtype=np.int64)
    ys[y_order] = _dense(y[y_order])
    discordant = _inversions(ys)
    joint = np.diff(np.flatnonzero(np.r_[True, (xs[1:] != xs[:-1]) | (ys[1:] != ys[:-1]), True]))
    ties = [int((c * (c - 1) // 2).sum()) for c in (joint, np.bincount(xs), np.bincount(ys))]
    both, x_ties, y_ties = ties
    total = y.size * (y.size - 1) // 2
    numerator = total - x_ties - y_ties + both - 2 * discordant
    return numerator / np.sqrt(total - x_ties) / np.sqrt(total - y_ties)


def _inversions(values: np.ndarray) -> int:
    """Pairs i < j with values[i] > values[j] (non-negative integers): a bottom-up merge
    sort whose every level is one vectorized step (O(n log² n), no Python loop over n)."""
    size = 1 << max(0, int(values.size - 1).bit_length())
    top = int(values.max()) + 1 if values.size else 1
    merged = np.full(size, top, dtype=np.int64)  # padding at the end adds no inversion
    merged[: values.size] = values
    count, width = 0, 1
    while width < size:
        blocks = merged.reshape(-1, 2, width)
        offset = (np.arange(blocks.shape[0]) * (top + 1))[:, None]  # keeps blocks apart
        left = (blocks[:, 0] + offset).ravel()
        right = (blocks[:, 1] + offset).ravel()
        placed = np.searchsorted(left, right, side="right")  # left elements <= each right one
        placed -= np.repeat(np.arange(blocks.shape[0]) * width, width)
        count += int((width - placed).sum())
        merged = np.sort(blocks.reshape(-1, 2 * width), axis=1).ravel()
        width *= 2
    return count


def logistic(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """VQEG 4-parameter logistic, f(x) = (b1 - b2) / (1 + exp(-(x - b3) / b4)) + b2.

    The same function as pyiqa's `logistic_4params`: b1 and b2 are the upper and lower
    asymptotes (on the MOS scale), b3 the midpoint and b4 the width on the pred scale.
    Written with tanh, which equals 1 / (1 + exp(-t)) without overflowing.
    """
    return (b1 - b2) * _expit((np.asarray(x, dtype=np.float64) - b3) / b4) + b2


def _expit(t: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-t)) without overflow (as scipy.special.expit)."""
    return 0.5 * (1.0 + np.tanh(0.5 * t))


def _logistic_jacobian(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """(n, 4) derivatives of `logistic` by b1..b4: exact, so the fit needs no finite
    differences (about 3x fewer evaluations; the same optimum)."""
    t = (np.asarray(x, dtype=np.float64) - b3) / b4
    s = _expit(t)
    slope = (b1 - b2) * s * (1 - s)
    return np.stack([s, 1 - s, -slope / b4, -slope * t / b4], axis=1)


def fit_logistic(pred: np.ndarray, mos: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """Least-squares parameters (b1, b2, b3, b4) of `logistic` mapping pred onto mos.

    Starts from pyiqa's guess [max(mos), min(mos), mean(pred), std(pred) / 4] unless
    `start` is given (the bootstrap starts each resample from the full-sample fit).
    Raises RuntimeError when the inputs are degenerate or the fit does not converge.
    """
    pred, mos = _pair(pred, mos)
    reason = problem(pred, mos, MIN_PAIRS_FIT)
    if reason:
        raise RuntimeError(reason)
    from scipy import optimize  # only fits pay for importing it

    if start is None:
        start = np.array([mos.max(), mos.min(), pred.mean(), pred.std() / 4])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optimize.OptimizeWarning)  # covariance is unused
        betas, _ = optimize.curve_fit(
            logistic, pred, mos, p0=start, maxfev=MAX_FEV, jac=_logistic_jacobian
        )
    if not np.all(np.isfinite(betas)):
        raise RuntimeError("logistic fit gave non-finite parameters")
    return betas


def _fitted(pred: np.ndarray, mos: np.ndarray, betas: np.ndarray) -> tuple[float, float]:
    """PLCC and RMSE of the logistic-mapped pred against mos."""
    mapped = logistic(pred, *betas)
    return plcc(mapped, mos), float(np.sqrt(np.mean((mapped - mos) ** 2)))


def _resample(pred: np.ndarray, mos: np.ndarray, start: np.ndarray | None) -> list[float]:
    """Every metric of METRICS in order on one bootstrap draw, NaN where undefined."""
    fitted = (float("nan"), float("nan"))
    if start is not None:
        with contextlib.suppress(RuntimeError):  # a draw the fit fails on is left out
            fitted = _fitted(pred, mos, fit_logistic(pred, mos, start))
    return [srcc(pred, mos), krcc(pred, mos), plcc(pred, mos), *fitted]


STEP_SHARE = 0.1  # fewer predictions than this on the fitted curve's slope: a step


def fit_warning(pred: np.ndarray, mos: np.ndarray, betas: np.ndarray) -> str | None:
    """Why PLCC after the logistic fit misleads, or None. A fitted curve that FALLS as the
    prediction rises turns a negative correlation into a positive fitted PLCC; one that is
    a step (almost every prediction on its flat parts, where it is within 2 % of an
    asymptote: |pred - b3| >= 4 |b4|) splits the predictions into two groups, and the fitted
    PLCC then measures that split, not the scores' linearity."""
    b1, b2, b3, b4 = (float(b) for b in betas)
    problems = []
    if (b1 - b2) * b4 < 0:
        problems.append(
            "the fitted logistic decreases: a positive PLCC after the fit hides "
            f"a negative correlation (raw PLCC {plcc(pred, mos):.3g})"
        )
    on_slope = float(np.mean(np.abs(np.asarray(pred) - b3) < 4 * abs(b4)))
    if on_slope < STEP_SHARE:
        problems.append(
            f"the logistic fit is a step ({on_slope:.0%} of the predictions on its "
            f"slope, width {abs(b4):.3g}): PLCC after the fit is inflated"
        )
    return "; ".join(problems) or None


def evaluate(
    pred: np.ndarray,
    mos: np.ndarray,
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """All metrics with percentile-bootstrap intervals, as plain JSON-ready Python values.

    Returns {"n", "resamples", "seed", "level", "logistic": [b1..b4] or None,
    "fit_warning": why the fit is a step or None, and for each
    name in METRICS: {"value", "ci": [lo, hi], "ci_resamples", "reason"}}. "reason" is None
    when the value is defined, else why it is NaN. The bootstrap draws `resamples` sets of
    n (pred, mos) pairs with replacement (seeded, the same draws for every metric) and
    refits the logistic on each; "ci_resamples" counts the draws on which the metric was
    defined, the interval comes from those. resamples=0 skips the bootstrap (ci is NaN).
    NaN values are written by json.dumps as NaN, which Python reads back.
    """
    pred, mos = _pair(pred, mos)
    if resamples < 0 or not 0 < level < 1:
        raise ValueError(f"need resamples >= 0 and 0 < level < 1, got {resamples} and {level}")
    reason = problem(pred, mos)
    betas, fitted = None, (float("nan"), float("nan"))
    fit_reason = problem(pred, mos, MIN_PAIRS_FIT)
    if fit_reason is None:
        try:
            betas = fit_logistic(pred, mos)
            fitted = _fitted(pred, mos, betas)
        except RuntimeError as error:  # curve_fit's "Optimal parameters not found: ..."
            fit_reason = f"logistic fit failed: {error}"
        if np.isnan(fitted[0]):
            fit_reason = fit_reason or "logistic fit is constant"
    values = [srcc(pred, mos), krcc(pred, mos), plcc(pred, mos), *fitted]
    reasons = [reason] * 3 + [fit_reason] * 2

    rng = np.random.default_rng(seed)
    draws = np.full((resamples, len(METRICS)), np.nan)
    for row in draws:
        pick = rng.integers(0, pred.size, pred.size)
        row[:] = _resample(pred[pick], mos[pick], betas)

    tail = 100 * (1 - level) / 2
    result: dict = {
        "n": int(pred.size),
        "resamples": resamples,
        "seed": seed,
        "level": level,
        "logistic": None if betas is None else [float(b) for b in betas],
        "fit_warning": None if betas is None else fit_warning(pred, mos, betas),
    }
    for name, value, why, column in zip(METRICS, values, reasons, draws.T, strict=True):
        finite = column[np.isfinite(column)]
        ci = np.percentile(finite, [tail, 100 - tail]) if finite.size else [np.nan, np.nan]
        result[name] = {
            "value": float(value),
            "ci": [float(c) for c in ci],
            "ci_resamples": int(finite.size),
            "reason": why if np.isnan(value) else None,
        }
    return result
