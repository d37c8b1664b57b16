"""Aggregation formulas against values worked out by hand."""

import numpy as np
import pytest

from llmiqa.aggregate import ensemble, local_score, model_score, readout


def test_expected_readout_is_the_mean_level():
    probs = np.array([[0.5, 0.5, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0.25, 0.75]])
    np.testing.assert_allclose(readout(probs, "expected"), [1.5, 6.75])


def test_argmax_readout_is_the_most_likely_digit_ties_to_the_lower():
    probs = np.array([[0.1, 0.6, 0.3], [0.4, 0.2, 0.4]])
    np.testing.assert_array_equal(readout(probs, "argmax"), [2, 1])


def test_readouts_work_on_any_leading_shape():
    probs = np.full((2, 3, 5), 0.2)
    assert readout(probs).shape == (2, 3)
    np.testing.assert_allclose(readout(probs), 3.0)


def test_area_weighting_uses_the_mask_areas():
    # (6*300 + 2*100) / 400 = 5.0, while the plain mean is 4.0
    assert local_score([6, 2], [300, 100], "area") == pytest.approx(5.0)
    assert local_score([6, 2], [300, 100], "mean") == pytest.approx(4.0)


def test_no_regions_gives_nan_and_the_global_score_stands_alone():
    s_local = local_score([], [], "area")
    assert np.isnan(s_local)
    assert model_score(4.5, s_local, lam=1.0) == 4.5


@pytest.mark.parametrize(
    ("lam", "view", "expected"),
    [
        (1.0, "both", 4.0),
        (3.0, "both", 4.5),
        (0.0, "both", 3.0),
        (1.0, "global", 3.0),
        (1.0, "local", 5.0),
    ],
)
def test_global_and_local_mix(lam, view, expected):
    # (3 + lam * 5) / (1 + lam)
    assert model_score(3.0, 5.0, lam, view) == pytest.approx(expected)


def test_the_papers_sum_ranks_exactly_like_our_mean():
    rng = np.random.default_rng(0)
    s_global, s_local = rng.uniform(1, 7, 50), rng.uniform(1, 7, 50)
    ours = [model_score(g, loc) for g, loc in zip(s_global, s_local, strict=True)]
    assert np.argsort(ours).tolist() == np.argsort(s_global + s_local).tolist()


def test_ensemble_is_the_mean_over_models():
    assert ensemble([4.0, 5.0, 6.5]) == pytest.approx(5.1666666)


@pytest.mark.parametrize(
    "call",
    [
        lambda: readout(np.ones((1, 3)) / 3, "median"),
        lambda: local_score([1, 2], [0, 0]),
        lambda: local_score([1, 2], [1]),
        lambda: local_score([1, 2], [1, 1], "max"),
        lambda: model_score(1, 2, lam=-1),
        lambda: model_score(1, 2, view="neither"),
        lambda: ensemble([]),
    ],
)
def test_bad_choices_are_refused(call):
    with pytest.raises(ValueError):
        call()
