"""ImageResult: every score recomputed from the stored ratings alone, through JSON too."""

import json

import numpy as np
import pytest

from llmiqa.method.aggregate import Aggregation
from llmiqa.method.results import ImageResult, stack


def logs(level: int, k: int = 7, mass: float = 0.9) -> np.ndarray:
    p = np.full(k, 1e-9)
    p[level - 1] = 1.0
    return np.log(p / p.sum() * mass)


@pytest.fixture
def rated() -> ImageResult:
    """Two models; an object (3/4 of a 40x30 image) and the complement (1/4)."""
    logprobs = np.array(
        [[logs(5), logs(3)], [logs(6), logs(4)], [logs(2), logs(2)]]  # whole, object, complement
    )
    return ImageResult(
        "a.png",
        ("m1", "m2"),
        "digest",
        (40, 30),
        kinds=("object", "complement"),
        boxes=((0, 0, 30, 40), (30, 0, 40, 40)),
        areas=(900, 300),
        logprobs=logprobs,
        other_logprob=np.full((3, 2), np.log(0.1)),
        other_value=np.full((3, 2), np.nan),
        aggregation=Aggregation(readout="argmax"),
    )


def test_the_papers_formulas_by_hand(rated):
    # model 1: s_local = (6*900 + 2*300)/1200 = 5, s_model = (5 + 5)/2 = 5
    # model 2: s_local = (4*900 + 2*300)/1200 = 3.5, s_model = (3 + 3.5)/2 = 3.25
    np.testing.assert_allclose(rated.s_local, [5.0, 3.5])
    np.testing.assert_allclose(rated.s_model, [5.0, 3.25])
    assert rated.score == pytest.approx(4.125)
    assert [r.score for r in rated.regions] == [5.0, 2.0]
    assert [r.area_fraction for r in rated.regions] == [0.75, 0.25]
    np.testing.assert_allclose(rated.valid_mass, 0.9)


def test_rescoring_needs_no_model_and_leaves_the_ratings_alone(rated):
    mean = rated.rescored(Aggregation(readout="argmax", weighting="mean"))
    np.testing.assert_allclose(mean.s_model, [4.5, 3.0])
    assert mean.logprobs is rated.logprobs
    greedy = rated.rescored(Aggregation(readout="greedy"))  # the digits beat "other" here
    assert greedy.score == rated.score


def test_one_model_of_an_ensemble(rated):
    second = rated.only_model(1)
    assert second.models == ("m2",) and second.score == pytest.approx(3.25)


def test_json_round_trip_keeps_every_rating(rated):
    text = json.dumps(rated.to_dict(), allow_nan=False)
    again = ImageResult.from_dict(json.loads(text))
    np.testing.assert_array_equal(again.logprobs, rated.logprobs)
    np.testing.assert_array_equal(again.other_value, rated.other_value)
    assert again.score == rated.score and again.regions[1].kind == "complement"
    assert again.aggregation == rated.aggregation


def test_without_regions_the_global_score_stands_and_json_says_null(rated):
    alone = ImageResult(
        "b.png", ("m",), "d", (8, 8), logprobs=np.array([[logs(2)]]),
        other_logprob=np.array([[-5.0]]), other_value=np.array([[np.nan]]),
        aggregation=Aggregation(readout="argmax"),
    )  # fmt: skip
    assert alone.score == 2.0
    assert json.loads(json.dumps(alone.to_dict(), allow_nan=False))["s_local"] == [None]
    arrays = stack([rated.only_model(0), alone])  # padded to the most views
    assert arrays.logprobs.shape == (2, 3, 1, 7)
    assert arrays.present.tolist() == [[True, True], [False, False]]
    assert np.isnan(arrays.logprobs[1, 1:]).all()
    with pytest.raises(ValueError, match="other models or other answers"):
        stack([rated, alone])


def test_failed_results_carry_only_their_error():
    failed = ImageResult("c.png", error="c.png: no such file")
    assert not failed.ok and failed.to_dict() == {"name": "c.png", "error": "c.png: no such file"}
    with pytest.raises(ValueError, match="no scores"):
        _ = failed.score
