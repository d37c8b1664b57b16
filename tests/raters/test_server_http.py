"""The server rater's HTTP behaviour against a small stdlib OpenAI-style server.

These cases need no model: authentication, time-outs, retries, malformed or incomplete
answers, bounded concurrency, lossless images, the identity and its canary guard (kept in
the run's store). The
agreement with the transformers rater is tested against a real `vllm serve`
(tests/vllm/test_server.py).
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from llmiqa.method.standards import Standard
from llmiqa.raters import server as server_module
from llmiqa.raters.base import ModelLoadError, RatingFailure, RatingRequest
from llmiqa.raters.server import ServerRater, png_data_url
from llmiqa.raters.spec import RaterSpec
from llmiqa.scoring.caching import CachingRater, Usage
from llmiqa.scoring.store import Store, StoreError

KEY = "sk-test-0123456789abcdef"
# A model's answer as a server returns it: the sampled token first, then the top list.
FULL = [("5", -0.4), ("4", -1.6), ("6", -2.2), ("The", -2.9), ("3", -3.3)]
FULL += [("7", -4.1), ("2", -4.8), ("1", -6.0), (" 5", -6.5)]


class FakeServer(ThreadingHTTPServer):
    """An OpenAI-compatible server whose answers the test scripts."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.model, self.answer, self.tokens = "fake-vlm", "ok", list(FULL)
        self.statuses: list[int] = []  # answered first, one per chat request, then "ok"
        self.delay, self.echo_key, self.answered_as = 0.0, False, "fake-vlm"
        self.bodies: list[dict] = []
        self.headers_seen: list[dict] = []
        self.active = self.peak = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class Handler(BaseHTTPRequestHandler):
    server: FakeServer

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": self.server.model}]})
        else:
            self._json(404, {"error": {"message": "no such route"}})

    def do_POST(self) -> None:
        server = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with server.lock:
            server.bodies.append(body)
            server.headers_seen.append(dict(self.headers))
            server.active += 1
            server.peak = max(server.peak, server.active)
            status = server.statuses.pop(0) if server.statuses else 200
        try:
            time.sleep(server.delay)
        finally:
            # no longer counted once the answer goes out: the client may send its next
            # request as soon as it has read this one, before this thread ends
            with server.lock:
                server.active -= 1
        self._answer(status, body)

    def _answer(self, status: int, body: dict) -> None:
        server = self.server
        if status != 200:
            key = self.headers.get("Authorization", "") if server.echo_key else ""
            self._json(status, {"error": {"message": f"refused {key}".strip()}})
        elif server.answer == "malformed":
            self._raw(200, b'{"choices": [')
        elif server.answer == "nologprobs":
            self._json(200, {"model": server.answered_as, "choices": [{"logprobs": None}]})
        else:
            tokens = server.tokens[: 1 + body.get("top_logprobs", 0)]
            entry = {"token": tokens[0][0], "logprob": tokens[0][1]}
            entry["top_logprobs"] = [{"token": t, "logprob": p} for t, p in tokens[1:]]
            choice = {"index": 0, "logprobs": {"content": [entry]}}
            self._json(200, {"model": server.answered_as, "choices": [choice]})

    def _json(self, status: int, data: dict) -> None:
        self._raw(status, json.dumps(data).encode())

    def _raw(self, status: int, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def fake(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMIQA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LLMIQA_API_KEY", KEY)
    monkeypatch.setenv("LLMIQA_HTTP_RETRIES", "3")
    server_module.identified.cache_clear()
    server = FakeServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def requests() -> list[RatingRequest]:
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (40 + i, 60, 3), np.uint8)) for i in range(6)]
    prompt = Standard().prompt()
    return [RatingRequest.of(image, prompt, 7) for image in images]


def load(fake: FakeServer, **options) -> ServerRater:
    return RaterSpec(fake.model, server=fake.url, **options).load()


def cache(fake: FakeServer, store: Store) -> CachingRater:
    """The server's model behind a run's store, as a Scorer puts it (its canary checked)."""
    return CachingRater(RaterSpec(fake.model, server=fake.url), store, Usage())


def test_a_full_answer_gives_every_digit_and_the_best_other_token(fake, requests):
    rater = load(fake)
    ratings = dict(rater.rate(requests))
    assert sorted(ratings) == list(range(len(requests)))
    rating = ratings[0]
    expected = {"1": -6.0, "2": -4.8, "3": -3.3, "4": -1.6, "5": -0.4, "6": -2.2, "7": -4.1}
    np.testing.assert_array_equal(rating.logprobs, [expected[str(k)] for k in range(1, 8)])
    assert (rating.other_logprob, rating.other_value, rating.incomplete) == (-2.9, None, False)
    body = fake.bodies[-1]
    assert (body["max_tokens"], body["logprobs"], body["top_logprobs"]) == (1, True, 20)
    assert body["temperature"] == 0 and "logprob_token_ids" not in body  # not a vLLM server


def test_a_digit_missing_from_the_top_list_is_nan_and_flagged_never_renormalised(fake, requests):
    rater = load(fake)
    fake.tokens = [("The", -0.1), ("5", -2.5), ("7", -3.0), (" 5", -3.2)]
    rating = next(iter(rater.rate(requests[:1])))[1]
    assert rating.incomplete
    assert np.isnan(rating.logprobs[[0, 1, 2, 3, 5]]).all()
    assert rating.logprobs[4] == -2.5 and rating.logprobs[6] == -3.0
    assert np.isnan(rating.probs()).all()  # no silent softmax over the two digits seen
    assert (rating.other_logprob, rating.other_value) == (-0.1, None)


def test_a_token_that_is_an_integer_but_not_a_digit_token_is_the_other_answer(fake, requests):
    rater = load(fake)
    fake.tokens = [(" 5", -0.2), *FULL[:-1]]
    rating = next(iter(rater.rate(requests[:1])))[1]
    assert (rating.other_logprob, rating.other_value) == (-0.2, 5)


def test_images_travel_as_lossless_png_data_urls(fake, requests):
    rater = load(fake)
    list(rater.rate(requests[:1]))
    part = next(p for p in fake.bodies[-1]["messages"][-1]["content"] if p["type"] == "image_url")
    header, data = part["image_url"]["url"].split(",", 1)
    assert header == "data:image/png;base64"
    sent = Image.open(io.BytesIO(base64.b64decode(data)))
    assert sent.format == "PNG"
    np.testing.assert_array_equal(np.asarray(sent), np.asarray(requests[0].pixels))


def test_the_messages_carry_the_standard_as_the_system_turn(fake, requests):
    rater = load(fake)
    list(rater.rate(requests[:1]))
    system, user = fake.bodies[-1]["messages"]
    prompt = requests[0].prompt
    assert system == {"role": "system", "content": prompt.system}
    assert user["content"][-1] == {"type": "text", "text": prompt.after_image}
    assert json.loads(rater.render(prompt))[0] == system


def test_the_key_is_sent_as_a_bearer_token_and_appears_nowhere_else(
    fake, requests, monkeypatch, tmp_path
):
    rater = load(fake)
    list(rater.rate(requests[:1]))
    assert fake.headers_seen[-1]["Authorization"] == f"Bearer {KEY}"
    assert KEY not in rater.identity and KEY not in rater.render(requests[0].prompt)
    store = Store(tmp_path / "s.sqlite")
    list(cache(fake, store).rate(requests[:1]))
    store.close()
    assert KEY.encode() not in b"".join(f.read_bytes() for f in tmp_path.glob("s.sqlite*"))
    monkeypatch.delenv("LLMIQA_API_KEY")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-other")
    server_module.identified.cache_clear()
    list(load(fake).rate(requests[:1]))
    assert fake.headers_seen[-1]["Authorization"] == "Bearer sk-other"


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_is_one_line_without_the_key(fake, status):
    fake.statuses, fake.echo_key = [status] * 10, True
    with pytest.raises(ModelLoadError) as caught:
        load(fake)
    message = str(caught.value)
    assert f"HTTP {status}" in message and "LLMIQA_API_KEY or OPENAI_API_KEY" in message
    assert KEY not in message and "\n" not in message
    assert len(fake.bodies) == 1  # an auth error is not retried


def test_429_and_503_are_retried_with_backoff_then_succeed(fake, requests):
    rater = load(fake)
    fake.statuses = [429, 503]
    started = time.monotonic()
    ratings = dict(rater.rate(requests[:1]))
    assert not ratings[0].incomplete and len(fake.bodies) == 1 + 3  # canary + 3 tries
    assert time.monotonic() - started >= 0.5 * 0.75 + 1.0 * 0.75  # two backoffs


def test_a_slow_server_times_out_and_stops_the_run_in_one_line(fake, requests, monkeypatch):
    monkeypatch.setenv("LLMIQA_HTTP_TIMEOUT", "0.2")
    monkeypatch.setenv("LLMIQA_HTTP_RETRIES", "1")
    rater = load(fake)
    fake.delay = 1.0
    with pytest.raises(ModelLoadError) as caught:
        list(rater.rate(requests[:1]))
    message = str(caught.value)
    assert "stopped answering" in message and "no answer within 0.2 s (after 2 tries)" in message
    assert "run again" in message and "\n" not in message


def test_persistent_500s_stop_the_run_in_one_line(fake, requests, monkeypatch):
    rater = load(fake)
    monkeypatch.setattr(rater.server.client, "backoff", 0.05)
    fake.statuses = [500] * 10
    with pytest.raises(ModelLoadError, match=r"keeps failing: HTTP 500: refused \(after 4 tries\)"):
        list(rater.rate(requests[:1]))


@pytest.mark.parametrize(
    ("answer", "expected"),
    [("nologprobs", "carries no token logprobs"), ("malformed", "malformed JSON")],
)
def test_an_answer_without_logprobs_or_with_broken_json_is_one_line(fake, answer, expected):
    fake.answer = answer
    with pytest.raises(ModelLoadError, match=expected) as caught:
        load(fake)
    assert "\n" not in str(caught.value)


def test_a_request_the_server_refuses_fails_alone(fake, requests):
    rater = load(fake)
    fake.statuses = [400]
    outcomes = dict(rater.rate(requests[:1]))
    assert isinstance(outcomes[0], RatingFailure) and "HTTP 400" in outcomes[0].error
    assert not dict(rater.rate(requests[1:2]))[0].incomplete


def test_requests_in_flight_are_bounded_and_concurrent(fake, requests):
    rater = load(fake, max_in_flight=3)
    fake.delay = 0.2
    started = time.monotonic()
    assert len(dict(rater.rate(requests))) == 6
    assert fake.peak == 3
    assert time.monotonic() - started < 6 * 0.2  # not one by one


def test_ratings_are_yielded_as_they_arrive(fake, requests):
    rater = load(fake, max_in_flight=2)
    fake.delay = 0.3
    arrivals = []
    started = time.monotonic()
    for index, _ in rater.rate(requests[:4]):
        arrivals.append((index, time.monotonic() - started))
    assert arrivals[0][1] < 0.55 and arrivals[-1][1] > 0.55  # the first before the last


def test_an_unknown_model_name_is_one_line(fake):
    with pytest.raises(ModelLoadError, match=r"serves no model 'other' \(it has: fake-vlm\)"):
        RaterSpec("other", server=fake.url).load()


def test_an_unreachable_server_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMIQA_HTTP_RETRIES", "1")
    server_module.identified.cache_clear()
    with pytest.raises(ModelLoadError, match=r"stopped answering: connection failed"):
        RaterSpec("m", server="http://127.0.0.1:9").load()


def test_the_identity_names_the_model_and_what_the_server_answers_as(fake):
    fake.answered_as = "fake-vlm-2024-08-06"
    spec = RaterSpec(fake.model, server=fake.url)
    assert spec.identity == "server:fake-vlm|as=fake-vlm-2024-08-06"
    assert spec.runs_on is ServerRater
    with pytest.raises(ModelLoadError, match="--revision"):
        _ = RaterSpec(fake.model, server=fake.url, revision="abc").runs_on


def test_a_model_changed_under_the_same_name_is_refused_by_the_store(fake, requests, tmp_path):
    store = Store(tmp_path / "s.sqlite")
    cache(fake, store)  # records the canary
    fake.tokens = [("The", -0.3), *[(str(k), -1.0 - k) for k in range(1, 8)]]
    server_module.identified.cache_clear()
    with pytest.raises(ModelLoadError, match=r"changed under the same name") as caught:
        cache(fake, store)
    assert str(store.path) in str(caught.value) and "\n" not in str(caught.value)
    cache(fake, Store())  # a store with no ratings of the old model takes it
    fake.tokens = [(t, p + 0.01) for t, p in FULL]  # numerical noise only: accepted
    server_module.identified.cache_clear()
    assert not dict(cache(fake, store).rate(requests[:1]))[0].incomplete


def test_a_server_that_changes_its_model_mid_run_stops_the_run(fake, requests):
    rater = load(fake, max_in_flight=1)
    fake.delay = 0.2
    ratings = rater.rate(requests)
    first = next(ratings)
    fake.answered_as = "another-model"
    with pytest.raises(ModelLoadError, match=r"now answers as another-model"):
        list(ratings)
    assert first[0] in range(6)


def test_png_data_urls_round_trip_exactly():
    image = Image.fromarray(np.arange(3 * 50 * 70, dtype=np.uint32).reshape(50, 70, 3).astype("u1"))
    data = base64.b64decode(png_data_url(image).split(",", 1)[1])
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), np.asarray(image))


def test_a_damaged_canary_record_is_refused_not_trusted(fake, tmp_path):
    store = Store(tmp_path / "s.sqlite")
    cache(fake, store)  # records the canary
    (logprobs,) = store.db.execute("SELECT logprobs FROM canaries").fetchone()
    changed = np.frombuffer(logprobs, "<f8") + np.eye(1, 7)[0] * 0.5  # a plausible other one
    store.db.execute("UPDATE canaries SET logprobs = ?", (changed.tobytes(),))
    with pytest.raises(StoreError, match="is damaged") as caught:
        cache(fake, store)
    assert str(store.path) in str(caught.value) and "\n" not in str(caught.value)
