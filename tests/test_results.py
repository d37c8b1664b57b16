"""ImageResult: every aggregation recomputed from the stored probabilities alone."""

import json

import numpy as np
import pytest

from llmiqa.results import Aggregation, ImageResult, RegionResult


def onehot(level: int, k: int = 7) -> list[float]:
    p = np.zeros(k)
    p[level - 1] = 1.0
    return p


@pytest.fixture
def rated() -> ImageResult:
    """Two models; an object (3/4 of the image) and the complement (1/4)."""
    regions = (
        RegionResult("object", (0, 0, 30, 40), 900, 0.75, np.array([onehot(6), onehot(4)])),
        RegionResult("complement", (30, 0, 40, 40), 300, 0.25, np.array([onehot(2), onehot(2)])),
    )
    raw = ImageResult(
        "a.png", ("m1", "m2"), "digest", (40, 30), np.array([onehot(5), onehot(3)]), regions
    )
    return raw.rescored(Aggregation())


def test_the_papers_formulas_by_hand(rated):
    # model 1: s_local = (6*900 + 2*300)/1200 = 5, s_model = (5 + 5)/2 = 5
    # model 2: s_local = (4*900 + 2*300)/1200 = 3.5, s_model = (3 + 3.5)/2 = 3.25
    np.testing.assert_allclose(rated.s_local, [5.0, 3.5])
    np.testing.assert_allclose(rated.s_model, [5.0, 3.25])
    assert rated.score == pytest.approx(4.125)
    assert [r.score for r in rated.regions] == [5.0, 2.0]


def test_aggregation_variants(rated):
    mean = rated.rescored(Aggregation(weighting="mean"))  # s_local = 4 and 3
    np.testing.assert_allclose(mean.s_model, [4.5, 3.0])
    no_complement = rated.rescored(Aggregation(complement=False))  # s_local = 6 and 4
    np.testing.assert_allclose(no_complement.s_model, [5.5, 3.5])
    local = rated.rescored(Aggregation(view="local"))
    np.testing.assert_allclose(local.s_model, [5.0, 3.5])
    heavy = rated.rescored(Aggregation(lam=3.0))  # (5 + 15)/4 = 5, (3 + 10.5)/4 = 3.375
    np.testing.assert_allclose(heavy.s_model, [5.0, 3.375])


def test_one_model_of_an_ensemble(rated):
    second = rated.only_model(1)
    assert second.models == ("m2",) and second.score == pytest.approx(3.25)


def test_json_round_trip_keeps_every_probability(rated):
    text = json.dumps(rated.to_dict(), allow_nan=False)
    again = ImageResult.from_dict(json.loads(text))
    np.testing.assert_array_equal(again.global_probs, rated.global_probs)
    assert again.score == rated.score and again.regions[1].kind == "complement"


def test_without_regions_the_global_score_stands_and_json_says_null():
    raw = ImageResult("b.png", ("m",), "d", (8, 8), np.array([onehot(2)]))
    result = raw.rescored(Aggregation())
    assert result.score == 2.0
    assert json.loads(json.dumps(result.to_dict(), allow_nan=False))["s_local"] == [None]


def test_failed_results_carry_only_their_error():
    failed = ImageResult("c.png", error="c.png: no such file").rescored(Aggregation("argmax"))
    assert not failed.ok and failed.to_dict() == {"name": "c.png", "error": "c.png: no such file"}
