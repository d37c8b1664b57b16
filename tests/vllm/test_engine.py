"""vLLM's in-process engine against the transformers rater on the same tiny checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("vllm")

from llmiqa.method.standards import Standard
from llmiqa.raters.base import RatingFailure, RatingRequest
from llmiqa.raters.spec import RaterSpec
from llmiqa.raters.vllm import VllmRater

TOLERANCE = 1e-4  # see tests/vllm/conftest.py


@pytest.fixture(scope="module")
def spec(checkpoint) -> RaterSpec:
    return RaterSpec(str(checkpoint), backend="vllm", max_in_flight=64)


@pytest.fixture(scope="module")
def rater(spec, requests) -> VllmRater:
    """Loaded, and its engine started by a first rating (it starts in the mode the first
    ratings need)."""
    loaded = spec.load()
    assert loaded.llm is None
    dict(loaded.rate(requests[:1]))
    return loaded


def test_the_engine_agrees_with_transformers_on_real_images_and_crops(rater, requests, reference):
    ratings = dict(rater.rate(requests))
    assert sorted(ratings) == list(range(len(requests))) and len(requests) >= 32
    worst = {"p": 0.0, "logprob": 0.0, "other": 0.0}
    for index, rating in ratings.items():
        expected = reference[requests[index].key]
        assert not rating.incomplete and rating.levels == expected.levels
        worst["p"] = max(worst["p"], np.abs(rating.probs() - expected.probs()).max())
        worst["logprob"] = max(worst["logprob"], np.abs(rating.logprobs - expected.logprobs).max())
        worst["other"] = max(worst["other"], abs(rating.other_logprob - expected.other_logprob))
        assert rating.other_value == expected.other_value
    print(f"vLLM engine vs transformers, max |Δ|: {worst}")
    assert max(worst.values()) < TOLERANCE, worst


def test_the_identity_names_the_backend(spec, checkpoint):
    plain = RaterSpec(str(checkpoint))
    assert spec.runs_on is VllmRater
    assert spec.identity == plain.identity.replace("backend=transformers", "backend=vllm")


def test_requests_go_in_through_a_bounded_window_and_come_out_as_they_finish(rater, requests):
    engine = rater.llm.llm_engine
    submitted, most = [], 0
    add = engine.add_request

    def counting(*args, **kwargs):
        nonlocal most
        submitted.append(args[0])
        result = add(*args, **kwargs)
        most = max(most, engine.get_num_unfinished_requests())
        return result

    engine.add_request = counting
    rater.max_in_flight = 3
    try:
        submitted_at_yield = [len(submitted) for _ in rater.rate(requests[:10])]
        assert len(submitted_at_yield) == 10 and len(submitted) == 10
        assert (
            most <= 3 and submitted_at_yield[0] <= 3
        )  # the first came out before the rest went in
    finally:
        engine.add_request, rater.max_in_flight = add, 64


def test_a_caller_that_stops_early_leaves_nothing_running(rater, requests):
    ratings = rater.rate(requests[:6])
    next(ratings)
    ratings.close()
    assert not rater.llm.llm_engine.has_unfinished_requests()


def test_a_request_the_processor_refuses_fails_alone(rater, requests):
    sliver = Image.new("RGB", (300, 1))  # Qwen-VL refuses aspect ratios over 200
    bad = RatingRequest.of(sliver, Standard().prompt(), 7)
    outcomes = dict(rater.rate([requests[0], bad, requests[1]]))
    assert isinstance(outcomes[1], RatingFailure) and "\n" not in outcomes[1].error
    assert not outcomes[0].incomplete and not outcomes[2].incomplete
