"""Correlation metrics against scipy, the logistic fit, bootstrap intervals, degenerate inputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from llmiqa.evaluation.correlation import (
    METRICS,
    evaluate,
    fit_logistic,
    fit_warning,
    krcc,
    logistic,
    plcc,
    srcc,
)

# Fixed vectors with ties on both sides.
PRED = np.array([3.1, 1.0, 4.2, 4.2, 2.5, 6.0, 5.1, 2.5, 7.0, 0.3])
MOS = np.array([55.0, 20.0, 61.0, 70.0, 40.0, 82.0, 66.0, 35.0, 90.0, 20.0])
TRUE_BETAS = (4.5, 1.2, 0.3, 0.8)  # asymptotes 4.5 and 1.2, midpoint 0.3, width 0.8


def curve(n: int = 400, noise: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """pred on a wide range and MOS = logistic(pred) with TRUE_BETAS, plus optional noise."""
    rng = np.random.default_rng(seed)
    pred = rng.uniform(-4, 4, n)
    return pred, logistic(pred, *TRUE_BETAS) + rng.normal(0, noise, n)


def test_correlations_match_scipy():
    assert srcc(PRED, MOS) == pytest.approx(stats.spearmanr(PRED, MOS).statistic, abs=1e-12)
    assert krcc(PRED, MOS) == pytest.approx(stats.kendalltau(PRED, MOS).statistic, abs=1e-12)
    assert plcc(PRED, MOS) == pytest.approx(stats.pearsonr(PRED, MOS).statistic, abs=1e-12)
    assert srcc(PRED, -MOS) == pytest.approx(-srcc(PRED, MOS))


def test_logistic_is_the_vqeg_four_parameter_curve():
    b1, b2, b3, b4 = TRUE_BETAS
    assert logistic(b3, *TRUE_BETAS) == pytest.approx((b1 + b2) / 2)
    x = np.array([-2.0, 0.0, 1.5])
    assert logistic(x, *TRUE_BETAS) == pytest.approx((b1 - b2) / (1 + np.exp(-(x - b3) / b4)) + b2)
    assert logistic(np.array([-1e6, 1e6]), *TRUE_BETAS) == pytest.approx([b2, b1])  # no overflow


def test_fit_recovers_known_parameters():
    pred, mos = curve()
    assert fit_logistic(pred, mos) == pytest.approx(TRUE_BETAS, rel=1e-6)
    noisy_pred, noisy_mos = curve(n=2000, noise=0.1)
    assert fit_logistic(noisy_pred, noisy_mos) == pytest.approx(TRUE_BETAS, rel=0.1)


def test_evaluate_fits_away_the_nonlinearity():
    pred, mos = curve(noise=0.05)
    result = evaluate(pred, mos, resamples=50)
    assert result["plcc_fit"]["value"] > result["plcc"]["value"]
    assert result["plcc_fit"]["value"] == pytest.approx(0.998, abs=0.002)
    assert result["rmse_fit"]["value"] == pytest.approx(0.05, abs=0.01)  # the noise level
    assert result["logistic"] == pytest.approx(TRUE_BETAS, rel=0.05)
    assert result["srcc"]["value"] == pytest.approx(srcc(pred, mos))


def test_evaluate_is_json_ready_and_complete():
    result = evaluate(PRED, MOS, resamples=100, seed=3)
    assert json.loads(json.dumps(result)) == result
    assert (result["n"], result["resamples"], result["seed"], result["level"]) == (10, 100, 3, 0.95)
    for name in METRICS:
        entry = result[name]
        assert entry["reason"] is None
        assert entry["ci"][0] <= entry["value"] <= entry["ci"][1]
        assert 0 < entry["ci_resamples"] <= 100


def test_bootstrap_is_seeded_and_narrows_with_n():
    pred, mos = curve(n=2000, noise=1.0)
    first = evaluate(pred[:50], mos[:50], resamples=100, seed=1)
    assert evaluate(pred[:50], mos[:50], resamples=100, seed=1) == first
    assert evaluate(pred[:50], mos[:50], resamples=100, seed=2)["srcc"]["ci"] != first["srcc"]["ci"]
    wide, narrow = first["srcc"]["ci"], evaluate(pred, mos, resamples=100)["srcc"]["ci"]
    assert narrow[1] - narrow[0] < (wide[1] - wide[0]) / 3


def test_no_resamples_means_no_interval():
    entry = evaluate(PRED, MOS, resamples=0)["srcc"]
    assert math.isnan(entry["ci"][0]) and math.isnan(entry["ci"][1])
    assert entry["ci_resamples"] == 0


@pytest.mark.parametrize(
    ("pred", "mos", "reason"),
    [
        ([1.0, 2.0], [1.0, 3.0], "only 2 pair(s)"),
        ([], [], "only 0 pair(s)"),
        ([2.0, 2.0, 2.0, 2.0, 2.0, 2.0], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "pred is constant"),
        ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [3.0] * 6, "mos is constant"),
        (
            [1.0, np.nan, 3.0, 4.0, 5.0, 6.0],
            [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            "pred has 1 non-finite",
        ),
        ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [1.0, 2.0, np.inf, 4.0, 5.0, np.nan], "mos has 2"),
    ],
)
def test_degenerate_inputs_give_nan_and_why(pred, mos, reason):
    result = evaluate(pred, mos, resamples=20)
    for name in METRICS:
        assert math.isnan(result[name]["value"])
        assert result[name]["reason"].startswith(reason)
    assert result["logistic"] is None


def test_too_few_pairs_for_the_fit_still_gives_correlations():
    result = evaluate([1.0, 2.0, 4.0, 3.0], [1.0, 2.0, 3.0, 4.0], resamples=0)
    assert result["srcc"]["value"] == pytest.approx(0.8)
    assert result["plcc_fit"]["reason"] == "only 4 pair(s), need at least 5"
    assert math.isnan(result["rmse_fit"]["value"])


def test_a_fit_that_does_not_converge_is_reported():
    # MOS jumps once, between the two highest predictions: the best logistic is a step,
    # which least squares only approaches, and scipy gives up after its evaluation budget.
    result = evaluate([0.0, 2.0, 0.0, 1.0, 1.0], [2.0, 4.0, 2.0, 2.0, 2.0], resamples=0)
    assert result["plcc_fit"]["reason"].startswith("logistic fit failed: Optimal parameters")
    assert math.isnan(result["rmse_fit"]["value"]) and result["logistic"] is None
    assert result["srcc"]["value"] == pytest.approx(
        stats.spearmanr([0, 2, 0, 1, 1], [2, 4, 2, 2, 2])[0]
    )


def test_mismatched_inputs_are_a_caller_error():
    with pytest.raises(ValueError, match="equal length"):
        evaluate([1.0, 2.0, 3.0], [1.0, 2.0])


def test_a_falling_or_step_fit_is_flagged_and_the_raw_plcc_stays_beside_it():
    """The sweep's case: on 96 DIBR images a tiny random model gave SRCC -0.045 and raw
    PLCC -0.031, yet PLCC 0.21 after a fit that falls as a step; the fit is flagged."""
    rng = np.random.default_rng(0)
    pred = rng.normal(4.0, 0.05, 96)
    mos = rng.uniform(1, 4.4, 96) - 0.5 * (pred > 4.05)  # a little lower above one cut
    result = evaluate(pred, mos, resamples=0)
    assert result["plcc"]["value"] < 0  # raw: negative
    warning = result["fit_warning"]
    assert "decreases" in warning and f"{result['plcc']['value']:.3g}" in warning
    assert fit_warning(pred, mos, np.array([1.6, 2.3, 4.05, 2e-6])).count("step") == 1
    good = fit_warning(pred, 2 * pred, np.array([10.0, 6.0, 4.0, 0.05]))
    assert good is None  # rising, with the predictions on its slope
