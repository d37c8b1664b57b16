"""Readouts and the aggregation formulas, on whole-run arrays worked out by hand."""

import numpy as np
import pytest

from llmiqa.method.aggregate import (
    Aggregation,
    RatingArrays,
    level_probs,
    readout,
    scores,
    valid_mass,
)


def logs(probs, mass: float = 1.0) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(np.asarray(probs, dtype=np.float64) * mass)


def test_digit_probabilities_are_the_softmax_of_their_log_probabilities():
    # the digits carry half of the full distribution; restricted to them it sums to 1
    logprobs = logs([0.1, 0.3, 0.6], mass=0.5)
    np.testing.assert_allclose(level_probs(logprobs), [0.1, 0.3, 0.6])
    np.testing.assert_allclose(valid_mass(logprobs), 0.5)


def test_expected_readout_is_the_mean_level():
    logprobs = logs([[0.5, 0.5, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0.25, 0.75]])
    np.testing.assert_allclose(readout(logprobs, "expected"), [1.5, 6.75])


def test_argmax_readout_is_the_most_likely_digit_ties_to_the_lower():
    logprobs = logs([[0.1, 0.6, 0.3], [0.4, 0.2, 0.4]])
    np.testing.assert_array_equal(readout(logprobs, "argmax"), [2, 1])


def test_greedy_readout_is_the_released_codes_full_vocabulary_answer():
    digits = logs([[0.1, 0.6, 0.3]] * 4, mass=0.5)  # best digit "2" at log(0.3)
    other = np.log([0.2, 0.4, 0.4, 0.4])  # a non-digit token below, then above "2"
    value = np.array([np.nan, np.nan, 9.0, 0.0])  # "9" and "0" are integers too
    np.testing.assert_array_equal(readout(digits, "greedy", other, value), [2, 1, 9, 0])


def test_readouts_work_on_any_leading_shape():
    logprobs = logs(np.full((2, 3, 5), 0.2))
    assert readout(logprobs, "expected").shape == (2, 3)
    np.testing.assert_allclose(readout(logprobs, "expected"), 3.0)


def onehot(level: int, k: int = 7) -> np.ndarray:
    p = np.full(k, 1e-12)
    p[level - 1] = 1.0
    return p / p.sum()


def arrays(*images) -> RatingArrays:
    """images: (global level, [(level, area, is_complement), ...]); one model, K = 7."""
    views = 1 + max(len(regions) for _, regions in images)
    n = len(images)
    logprobs = np.full((n, views, 1, 7), np.nan)
    area = np.zeros((n, views - 1))
    complement = np.zeros((n, views - 1), bool)
    present = np.zeros((n, views - 1), bool)
    for i, (level, regions) in enumerate(images):
        logprobs[i, 0, 0] = logs(onehot(level))
        for j, (region_level, weight, is_complement) in enumerate(regions):
            logprobs[i, j + 1, 0] = logs(onehot(region_level))
            area[i, j], complement[i, j], present[i, j] = weight, is_complement, True
    other = np.full((n, views, 1), -50.0)
    return RatingArrays(logprobs, other, np.full_like(other, np.nan), area, complement, present)


# image 0: global 3; an object at 6 (300 px) and the complement at 2 (100 px)
# image 1: global 5; no regions
RUN = arrays((3, [(6, 300, False), (2, 100, True)]), (5, []))


def test_the_papers_area_weighted_local_score_and_mean_with_the_global():
    out = scores(RUN, Aggregation(readout="argmax"))
    np.testing.assert_allclose(out.s_local[:, 0], [(6 * 300 + 2 * 100) / 400, np.nan])
    np.testing.assert_allclose(out.s_model[:, 0], [(3 + 5.0) / 2, 5.0])  # no regions: global
    np.testing.assert_allclose(out.score, out.s_model[:, 0])


@pytest.mark.parametrize(
    ("change", "first"),
    [
        ({"weighting": "mean"}, (3 + 4.0) / 2),
        ({"lam": 3.0}, (3 + 3 * 5.0) / 4),
        ({"lam": 0.0}, 3.0),  # the global view alone (Table 3, exp. 6)
        ({"global_weight": 0.0}, 5.0),  # the local view alone (exp. 7)
        ({"complement": False}, (3 + 6.0) / 2),  # Table 5
        ({"normalize": False}, 3 + 5.0),  # the paper's plain sum
        # the released code: s_local + 0.1 N + 0.5 s_global
        ({"global_weight": 0.5, "count_weight": 0.1, "normalize": False}, 5.0 + 0.2 + 1.5),
    ],
)
def test_every_aggregation_choice(change, first):
    out = scores(RUN, Aggregation(readout="argmax", **change))
    assert out.score[0] == pytest.approx(first)
    assert out.score[1] == pytest.approx(5.0)


def test_the_ensemble_is_the_mean_of_the_models():
    two = RatingArrays(
        np.stack([RUN.logprobs[:, :, 0], np.roll(RUN.logprobs[:, :, 0], 1, axis=-1)], axis=2),
        np.repeat(RUN.other_logprob, 2, axis=2),
        np.repeat(RUN.other_value, 2, axis=2),
        RUN.area,
        RUN.complement,
        RUN.present,
    )
    out = scores(two, Aggregation(readout="argmax"))
    np.testing.assert_allclose(out.score, out.s_model.mean(axis=1))
    np.testing.assert_allclose(out.s_model[:, 1], [(4 + (7 * 300 + 3 * 100) / 400) / 2, 6.0])


@pytest.mark.parametrize(
    "change",
    [{"readout": "median"}, {"weighting": "max"}, {"lam": -1.0},
     {"global_weight": 0.0, "lam": 0.0}],
)  # fmt: skip
def test_bad_choices_are_refused(change):
    with pytest.raises(ValueError):
        Aggregation(**change)


# ---- answer words: Q-Align, Q-Bench, SeP-IQA; and the spread ---------------------------

WORDS = np.array(["bad", "poor", "fair", "good", "excellent"])


def word_arrays(probs, top_logits=None, top_weights=None) -> RatingArrays:
    """One image, one model, whole image only, rated over the five answer words."""
    top = {}
    if top_logits is not None:
        top = dict(top_logits=np.array(top_logits, float).reshape(1, 1, 1, -1),
                   top_weights=np.array(top_weights, float).reshape(1, 1, 1, -1))  # fmt: skip
    return RatingArrays(
        logs([[[probs]]], mass=0.8), np.full((1, 1, 1), np.log(0.1)), np.full((1, 1, 1), np.nan),
        np.zeros((1, 0)), np.zeros((1, 0), bool), np.zeros((1, 0), bool), WORDS, **top,
    )  # fmt: skip


def test_qalign_is_the_expected_word_level_and_qbench_p_good_at_temperature_100():
    ratings = word_arrays([0.1, 0.2, 0.3, 0.3, 0.1])
    assert ratings.readout("qalign")[0, 0, 0] == pytest.approx(
        1 * 0.1 + 2 * 0.2 + 3 * 0.3 + 4 * 0.3 + 5 * 0.1
    )
    gap = (np.log(0.3) - np.log(0.2)) / 100  # log P(good) - log P(poor): their logit gap
    assert ratings.readout("qbench")[0, 0, 0] == pytest.approx(1 / (1 + np.exp(-gap)))


def test_sep_iqa_sums_top_raw_logits_weighted_by_cosines():
    ratings = word_arrays([0.2] * 5, top_logits=[9.0, 7.0, 4.0], top_weights=[0.5, -1.0, 0.25])
    assert ratings.readout("sepiqa")[0, 0, 0] == pytest.approx(9 * 0.5 - 7 + 4 * 0.25)


def test_the_stored_quantities_decide_the_readouts_allowed():
    assert word_arrays([0.2] * 5).readouts == ("qalign", "qbench", "argmax")
    kept = word_arrays([0.2] * 5, top_logits=[1.0], top_weights=[0.1])
    assert kept.readouts == ("qalign", "qbench", "argmax", "sepiqa")
    digits = arrays((3, []))
    assert digits.readouts == ("expected", "argmax", "greedy")
    with pytest.raises(ValueError, match="allow expected, argmax, greedy"):
        digits.readout("qbench")


def test_the_spread_of_one_view_is_its_level_distributions_standard_deviation():
    ratings = word_arrays([0.0, 0.5, 0.0, 0.5, 0.0])  # levels 2 and 4, equally likely
    found = scores(ratings, Aggregation(readout="qalign"))
    assert found.score[0] == pytest.approx(3.0) and found.spread[0] == pytest.approx(1.0)
    assert np.isnan(scores(ratings, Aggregation(readout="qbench")).spread[0])


def test_the_aggregated_spread_follows_the_stated_formula():
    """Whole image at level 2 or 4 (σ = 1), regions of areas 3 and 1 at 1 or 3 (σ = 1) and
    certain (σ = 0): with g = λ = 1 normalised, Var = (1 + (3/4)²·1 + (1/4)²·0) / 2²."""
    split, sure = np.array([0.5, 0, 0.5, 0, 0, 0, 0]), onehot(5)
    ratings = RatingArrays(
        logs([[[np.roll(split, 1)], [split], [sure]]]), np.full((1, 3, 1), -30.0),
        np.full((1, 3, 1), np.nan), np.array([[3.0, 1.0]]), np.zeros((1, 2), bool),
        np.ones((1, 2), bool),
    )  # fmt: skip
    found = scores(ratings, Aggregation())
    assert found.spread[0] == pytest.approx(np.sqrt(1 + 0.75**2) / 2)
    unnormalised = scores(ratings, Aggregation(normalize=False, lam=2.0))
    assert unnormalised.spread[0] == pytest.approx(np.sqrt(1 + 4 * 0.75**2))
