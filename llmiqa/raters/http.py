"""A small JSON-over-HTTP client for inference servers, on the standard library alone.

What a long rating run needs from it: one keep-alive connection per worker thread (many
requests in flight without a pool library), retries with exponential backoff on what is
worth retrying (429, 5xx, time-outs, refused or dropped connections, honouring
Retry-After), and one-line errors that never contain the API key.
"""

from __future__ import annotations

import http.client
import json
import random
import ssl
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

RETRYABLE = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
MAX_BACKOFF_S = 30.0


class HttpError(Exception):
    """A request that did not give a JSON answer. `status` is the HTTP status (None when
    no answer came at all); `retryable` says whether trying again could help."""

    def __init__(
        self,
        message: str,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.retryable, self.retry_after = status, retryable, retry_after


@dataclass(frozen=True)
class Endpoint:
    """Where a server listens: scheme, host, port and path prefix of its URL."""

    scheme: str
    host: str
    port: int
    prefix: str  # the URL's path, without a trailing slash

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url}: not an http(s) URL")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{self.prefix}"


class JsonClient:
    """POST/GET JSON to one server from many threads; thread-safe, one connection each."""

    def __init__(
        self,
        endpoint: Endpoint,
        api_key: str | None = None,
        timeout: float = 120.0,
        retries: int = 6,
        backoff: float = 0.5,
    ) -> None:
        self.endpoint, self.timeout, self.retries, self.backoff = (
            endpoint,
            timeout,
            retries,
            backoff,
        )
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        self._key = api_key
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._local = threading.local()

    def get(self, path: str, stop: threading.Event | None = None) -> object:
        return self.call("GET", path, None, stop)

    def post(self, path: str, body: dict, stop: threading.Event | None = None) -> object:
        return self.call("POST", path, body, stop)

    def call(
        self, method: str, path: str, body: dict | None, stop: threading.Event | None = None
    ) -> object:
        """The decoded JSON answer, retrying what is retryable; HttpError otherwise.

        Setting `stop` ends the retries of calls in flight (their caller has given up).
        """
        payload = None if body is None else json.dumps(body).encode()
        stop = stop or threading.Event()
        for attempt in range(self.retries + 1):
            try:
                return self._once(method, path, payload)
            except HttpError as error:
                delay = self._delay(attempt, error.retry_after)
                if error.retryable and attempt < self.retries and not stop.wait(delay):
                    continue
                if error.retryable:
                    message = f"{error} (after {attempt + 1} tries)"
                    raise HttpError(message, error.status, True) from None
                raise
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, 2 * MAX_BACKOFF_S)
        return min(self.backoff * 2**attempt, MAX_BACKOFF_S) * random.uniform(0.75, 1.25)

    def _once(self, method: str, path: str, payload: bytes | None) -> object:
        connection = self._connection()
        try:
            connection.request(method, self.endpoint.prefix + path, payload, self._headers)
            response = connection.getresponse()
            data = response.read()
        except TimeoutError:
            self._drop()
            raise HttpError(f"no answer within {self.timeout:g} s", None, True) from None
        except (OSError, http.client.HTTPException) as error:
            self._drop()
            why = type(error).__name__ if isinstance(error, http.client.HTTPException) else error
            raise HttpError(f"connection failed ({why})", None, True) from None
        if response.getheader("Connection", "").lower() == "close":
            self._drop()
        if response.status >= 400:
            raise HttpError(
                f"HTTP {response.status}: {self._scrub(_server_message(data))}",
                response.status,
                response.status in RETRYABLE,
                _seconds(response.getheader("Retry-After")),
            )
        try:
            return json.loads(data)
        except ValueError:
            snippet = data[:80].decode("utf-8", "replace").replace("\n", " ")
            raise HttpError(
                f"malformed JSON in the answer ({snippet!r})", response.status
            ) from None

    def _scrub(self, text: str) -> str:
        """A server may echo the key in an error message: never pass it on."""
        return text.replace(self._key, "***") if self._key else text

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            host, port = self.endpoint.host, self.endpoint.port
            if self.endpoint.scheme == "https":
                context = ssl.create_default_context()
                connection = http.client.HTTPSConnection(
                    host, port, timeout=self.timeout, context=context
                )
            else:
                connection = http.client.HTTPConnection(host, port, timeout=self.timeout)
            self._local.connection = connection
        return connection

    def _drop(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None


def _server_message(data: bytes) -> str:
    """The error message in an OpenAI-style error body, else the body's first line."""
    try:
        body = json.loads(data)
        error = body.get("error", body) if isinstance(body, dict) else body
        message = error.get("message", error) if isinstance(error, dict) else error
        text = str(message)
    except ValueError:
        text = data.decode("utf-8", "replace")
    lines = text.strip().splitlines()
    return (lines[0] if lines else "no message")[:300]


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: use our own backoff
