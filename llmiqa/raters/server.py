"""Any OpenAI-compatible chat-completions server that returns logprobs, as a rater.

Each rating is one chat completion of one token (`max_tokens=1`, greedy) with logprobs,
the sub-image sent as a lossless PNG data URL (a JPEG re-encode would change the pixels
and so the rating). Two ways to read it, chosen once per server:

- "vllm": a vLLM server (/v1/models says owned_by "vllm", /tokenize gives each digit as
  one token). vLLM's extra parameter `logprob_token_ids` returns the K digits' exact
  full-vocabulary log-probabilities and a -100 logit bias on them makes the sampled
  token the best OTHER token, whose log-probability is always returned: a complete,
  exact Rating from one request, as with the in-process engine (raters/vllm.py).
- "generic" (any other server): the top `TOP_N` log-probabilities. A digit missing from
  them is NaN and the rating `incomplete`; nothing is renormalised over fewer digits.

Identity and the guard against a server that changes its model under the same name:
the identity is the model name plus what the server reports (vLLM's `root`: the hub id
or path it loaded; the `model` a response names, e.g. a dated snapshot). A fixed canary
request (a synthetic image) is rated when the rater is identified, and the run's store
compares it with the canary it recorded the first time it saw this identity (base.Canary,
scoring.caching): a store copied to another machine carries its canaries, and another
model served under the name refuses the run rather than mixing its ratings with the
first one's. Every response's `system_fingerprint` and `model` must
also stay those seen at the start: a server restarted mid-run stops the run, and the
rerun checks the canary again. The API key (LLMIQA_API_KEY or OPENAI_API_KEY) is sent
as a bearer token and appears in no identity, message or file.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import math
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from PIL import Image

from llmiqa.errors import ModelLoadError
from llmiqa.method.standards import IMAGE, Prompt, Standard
from llmiqa.raters.base import (
    Backend,
    Canary,
    Rating,
    RatingFailure,
    RatingRequest,
    Spec,
    answer_value,
)
from llmiqa.raters.http import Endpoint, HttpError, JsonClient

KEY_VARIABLES = ("LLMIQA_API_KEY", "OPENAI_API_KEY")
TOP_N = 20  # OpenAI's and vLLM's default maximum of top_logprobs
DEFAULT_IN_FLIGHT = 16
_REFUSED_INPUT = frozenset({400, 413, 422})  # a problem with one request, not the server
_DIGITS = ("1", "2", "3", "4", "5", "6", "7", "8", "9")


def api_key() -> str | None:
    return next((os.environ[v] for v in KEY_VARIABLES if os.environ.get(v)), None)


def client_for(url: str) -> JsonClient:
    """A client for the server's root URL (a trailing /v1 is dropped: paths add it)."""
    try:
        endpoint = Endpoint.parse(url)
    except ValueError as error:
        raise ModelLoadError(f"--server {error}") from None
    prefix = endpoint.prefix.removesuffix("/v1")
    endpoint = Endpoint(endpoint.scheme, endpoint.host, endpoint.port, prefix)
    timeout = float(os.environ.get("LLMIQA_HTTP_TIMEOUT", "120"))
    retries = int(os.environ.get("LLMIQA_HTTP_RETRIES", "6"))
    return JsonClient(endpoint, api_key(), timeout=timeout, retries=retries)


def png_data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # lossless at any level; 1 is fast
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def chat_messages(prompt: Prompt, image_url: str) -> list[dict]:
    """OpenAI chat messages: the system turn as text, the image between the user texts."""
    parts = [
        {"type": "text", "text": prompt.before_image},
        {"type": "image_url", "image_url": {"url": image_url}},
        {"type": "text", "text": prompt.after_image},
    ]
    user = [part for part in parts if part.get("text") != ""]
    messages = [{"role": "user", "content": user}]
    if prompt.system is not None:
        messages.insert(0, {"role": "system", "content": prompt.system})
    return messages


def canary_request() -> RatingRequest:
    """A fixed request whose rating fingerprints the model behind a name: a synthetic
    image (gradients and a checkerboard) under the paper's K = 7 standard."""
    y, x = np.mgrid[0:96, 0:128]
    pixels = np.stack([x * 2, y * 2, (x // 16 + y // 16) % 2 * 255], axis=-1)
    image = Image.fromarray(pixels.astype(np.uint8), "RGB")
    return RatingRequest.of(image, Standard().prompt(), 7, model="canary")


@dataclass
class Server:
    """What was learnt about one server and model when they were identified."""

    url: str
    model: str
    client: JsonClient = field(repr=False)
    identity: str = ""
    digit_ids: list[int] | None = None  # ids of "1".."9" when vLLM's extras are used
    fingerprint: str | None = None  # system_fingerprint of the canary's answer
    answered_as: str | None = None  # `model` of the canary's answer
    canary: Canary | None = None

    @property
    def mode(self) -> str:
        return "vllm" if self.digit_ids else "generic"

    def body(self, request: RatingRequest, image_url: str, bias: bool = True) -> dict:
        """The chat-completion request: one greedy token and its log-probabilities."""
        body = {
            "model": self.model,
            "messages": chat_messages(request.prompt, image_url),
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": True,
            "top_logprobs": TOP_N,
        }
        if self.digit_ids:
            digits = self.digit_ids[: request.levels]
            body |= {
                "top_logprobs": len(digits),
                "logprob_token_ids": digits,
                "return_tokens_as_token_ids": True,
                # The server's generation_config defaults (e.g. a repetition penalty)
                # would change which other token is picked: neutral values, explicitly.
                "top_p": 1,
                "top_k": 0,
                "min_p": 0,
                "repetition_penalty": 1,
                "frequency_penalty": 0,
                "presence_penalty": 0,
            }
            if bias:
                body["logit_bias"] = {str(d): -100 for d in digits}
        return body

    def rating(self, answer: object, levels: int) -> Rating:
        """The Rating in an answer; ModelLoadError if the answer has no logprobs at all."""
        try:
            first = answer["choices"][0]["logprobs"]["content"][0]
            sampled = (first["token"], float(first["logprob"]))
            top = [(t["token"], float(t["logprob"])) for t in first.get("top_logprobs") or []]
        except (KeyError, IndexError, TypeError, ValueError):
            raise ModelLoadError(
                f"{self.url}: the answer for {self.model} carries no token logprobs (the "
                "server must support logprobs=true with top_logprobs)"
            ) from None
        if self.digit_ids:
            return self._exact(sampled, top, first.get("bytes"), levels)
        return _generic(sampled, top, levels)

    def _exact(self, sampled, top, text_bytes, levels: int) -> Rating:
        """vLLM mode: the digits by token id; the sampled token is the best other one."""
        names = {f"token_id:{d}": k for k, d in enumerate(self.digit_ids[:levels], 1)}
        digits = [math.nan] * levels
        for token, logprob in top:
            if token in names:
                digits[names[token] - 1] = logprob
        token, other = sampled
        if token in names:  # a digit beat every other token by more than the -100 bias
            return Rating(np.asarray(digits, dtype=np.float64), math.nan, None, True)
        # The sampled entry's `bytes` are its text (vLLM names the token by id here).
        text = bytes(text_bytes).decode("utf-8", "replace") if text_bytes else ""
        incomplete = any(math.isnan(d) for d in digits)
        return Rating(np.asarray(digits, dtype=np.float64), other, answer_value(text), incomplete)

    def check_answer(self, answer: object) -> None:
        """Every answer must name the model seen at the start, and a vLLM server's must
        carry its fingerprint (a hash of its configuration: a restart with another model
        or dtype changes it). Hosted APIs may vary theirs between replicas: not checked."""
        if not isinstance(answer, dict):
            raise ModelLoadError(f"{self.url}: the answer is not a JSON object")
        seen = (answer.get("model"), answer.get("system_fingerprint"))
        expected = (self.answered_as, self.fingerprint if self.digit_ids else seen[1])
        if seen != expected:
            raise ModelLoadError(
                f"{self.url}: {self.model} now answers as {seen[0]} with fingerprint "
                f"{seen[1]} (it was {self.answered_as}, {self.fingerprint}): the server was "
                "restarted or changed mid-run; the ratings received so far are kept, run "
                "again to check the model and rate the rest"
            )


class ServerRater(Backend):
    """Ratings from an OpenAI-compatible server, many requests in flight at once."""

    name: ClassVar[str] = "server"
    min_crop_side: ClassVar[int] = 28  # unknown model behind the name: Qwen-VL's minimum

    @classmethod
    def identify(cls, spec: Spec) -> str:
        """The identity of what the server serves under this name (contacts the server)."""
        return identified(spec.server, spec.model).identity

    @classmethod
    def render_for(cls, spec: Spec, prompt: Prompt) -> None:
        return None  # the server applies its own chat template to the turns

    @classmethod
    def canary(cls, spec: Spec) -> Canary:
        """The canary rated when the server was identified: a name is all the identity
        holds of the model."""
        return identified(spec.server, spec.model).canary

    def __init__(self, spec: Spec) -> None:
        self.server = identified(spec.server, spec.model)
        self.identity = spec.identity
        self.max_in_flight = spec.max_in_flight or DEFAULT_IN_FLIGHT

    def render(self, prompt: Prompt) -> str:
        """What the server reads: the chat messages (its own template renders them)."""
        return json.dumps(chat_messages(prompt, IMAGE), ensure_ascii=False)

    def rate(
        self, requests: Sequence[RatingRequest]
    ) -> Iterator[tuple[int, Rating | RatingFailure]]:
        """Up to `max_in_flight` requests at once; each rating is yielded as it arrives.

        Leaving early (an error, or the caller stops) cancels what has not been sent and
        ends the retries of what is in flight.
        """
        for request in requests:
            check_levels(self.server, request.levels)
        stop = threading.Event()
        pool = ThreadPoolExecutor(self.max_in_flight, thread_name_prefix="llmiqa-server")
        pending = {pool.submit(self._rate_one, r, stop): i for i, r in enumerate(requests)}
        try:
            for future in as_completed(pending):
                yield pending[future], future.result()
        finally:
            stop.set()
            pool.shutdown(wait=False, cancel_futures=True)

    def _rate_one(self, request: RatingRequest, stop: threading.Event) -> Rating | RatingFailure:
        server = self.server
        body = server.body(request, png_data_url(request.pixels.convert("RGB")))
        try:
            answer = server.client.post("/v1/chat/completions", body, stop)
        except HttpError as error:
            if error.status in _REFUSED_INPUT:
                return RatingFailure(f"the server refused this request ({error})")
            raise ModelLoadError(problem(server, error)) from None
        server.check_answer(answer)
        return server.rating(answer, request.levels)


def _generic(sampled: tuple[str, float], top: list[tuple[str, float]], levels: int) -> Rating:
    """Any server: digits by their text among the returned tokens, NaN where missing; the
    other token is the most probable returned one that is not a digit."""
    digits = [math.nan] * levels
    other, other_text = math.nan, None
    for token, logprob in [sampled, *top]:
        if token in _DIGITS[:levels]:
            level = int(token)
            if math.isnan(digits[level - 1]):
                digits[level - 1] = logprob
        elif math.isnan(other) or logprob > other:
            other, other_text = logprob, token
    value = None if other_text is None else answer_value(other_text)
    incomplete = any(math.isnan(d) for d in digits) or math.isnan(other)
    return Rating(np.asarray(digits, dtype=np.float64), other, value, incomplete)


def problem(server: Server, error: HttpError) -> str:
    """One line for an HTTP failure that stops the run, with what to do about it."""
    where = f"{server.url} ({server.model})"
    if error.status in (401, 403):
        variables = " or ".join(KEY_VARIABLES)
        return f"{where}: the server refused the API key ({error}); set {variables}"
    if error.status == 404:
        return f"{where}: not found ({error}); check --server and --model"
    if error.status is None and error.retryable:
        return (
            f"{where} stopped answering: {error}; the ratings received so far are kept, "
            "run again to rate the rest"
        )
    if error.retryable:
        return f"{where} keeps failing: {error}; the ratings received so far are kept"
    return f"{where}: {error}"


# ---- identifying a server ---------------------------------------------------------------


@functools.cache
def identified(url: str, model: str) -> Server:
    """The server and model, identified once per process (models, digits, canary): every
    spec naming them shares one client. `identified.cache_clear()` forgets them all."""
    return identify(url, model)


def identify(url: str, model: str) -> Server:
    server = Server(url, model, client_for(url))
    card = _model_card(server)
    if card.get("owned_by") == "vllm":
        server.digit_ids = _vllm_digits(server)
    request = canary_request()
    answer = _call(server, request)
    server.fingerprint = answer.get("system_fingerprint")
    server.answered_as = answer.get("model")
    server.canary = Canary(server.rating(answer, request.levels), server.fingerprint)
    if server.digit_ids:
        unbiased = server.rating(_call(server, request, bias=False), request.levels)
        if not np.allclose(server.canary.rating.logprobs, unbiased.logprobs, atol=1e-3):
            raise ModelLoadError(
                f"{url}: the digits' log-probabilities change with a logit bias, so this "
                "vLLM server reports processed logprobs; start it with the default "
                "--logprobs-mode raw_logprobs"
            )
    parts = [f"server:{model}"]
    if card.get("root") and card["root"] != model:
        parts.append(f"root={card['root']}")
    if server.answered_as and server.answered_as != model:
        parts.append(f"as={server.answered_as}")
    server.identity = "|".join(parts)
    return server


def _call(server: Server, request: RatingRequest, bias: bool = True) -> dict:
    body = server.body(request, png_data_url(request.pixels), bias)
    try:
        answer = server.client.post("/v1/chat/completions", body)
    except HttpError as error:
        raise ModelLoadError(problem(server, error)) from None
    if not isinstance(answer, dict):
        raise ModelLoadError(f"{server.url}: the answer is not a JSON object")
    return answer


def _model_card(server: Server) -> dict:
    """The server's /v1/models entry for the model ({} if the server lists none)."""
    try:
        listing = server.client.get("/v1/models")
    except HttpError as error:
        if error.status in (404, 405):
            return {}
        raise ModelLoadError(problem(server, error)) from None
    cards = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(cards, list):
        return {}
    names = [card.get("id") for card in cards if isinstance(card, dict)]
    if server.model not in names:
        shown = ", ".join(str(n) for n in names[:5]) + (", ..." if len(names) > 5 else "")
        raise ModelLoadError(f"{server.url} serves no model {server.model!r} (it has: {shown})")
    return next(card for card in cards if card.get("id") == server.model)


def _vllm_digits(server: Server) -> list[int] | None:
    """Token ids of "1".."9" from vLLM's /tokenize; None if any is not one token."""
    ids = []
    for digit in "123456789":
        try:
            answer = server.client.post(
                "/tokenize", {"model": server.model, "prompt": digit, "add_special_tokens": False}
            )
        except HttpError:
            return None
        tokens = answer.get("tokens") if isinstance(answer, dict) else None
        if not isinstance(tokens, list) or len(tokens) != 1:
            return None
        ids.append(int(tokens[0]))
    return ids


def check_levels(server: Server, levels: int) -> None:
    if not 1 <= levels <= 9:
        raise ModelLoadError(f"{server.url}: K = {levels} levels; single digits need 1..9")
