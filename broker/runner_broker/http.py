"""One HTTP exchange with the APIs the broker calls: bounded retries, each within the request's deadline.

Every request the broker serves has a deadline (`deadline_at`); each exchange inside it
gives up by then, whatever the other side does, so the caller always gets an answer.
"""

from __future__ import annotations

import http.client
import json
import math
import re
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

USER_AGENT = "gke-gpu-runners-broker"
MAX_ANSWER_BYTES = 8 << 20  # a page of runners or jobs is well below; a runaway answer stops here


@dataclass(frozen=True)
class RetryPolicy:
    retries: int
    """Attempts after the first."""
    timeout_seconds: float
    """Limit of one attempt's every wait on the network."""
    backoff_seconds: float
    """Wait before the first retry, doubled before each next one..."""
    backoff_max_seconds: float
    """...up to this. A server's Retry-After is waited in full, within the deadline."""

    def backoff(self, retry: int) -> float:
        return min(self.backoff_seconds * 2**retry, self.backoff_max_seconds)


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    headers: dict[str, str]
    """Names lower-cased."""
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None


class Unanswered(Exception):
    """No useful answer within the retries or before the deadline; the message says what happened last."""


_deadline: ContextVar[float] = ContextVar("deadline", default=math.inf)


@contextmanager
def deadline_at(moment: float) -> Iterator[None]:
    """Every exchange inside gives up by `moment` (time.monotonic()): someone is waiting for the answer."""
    token = _deadline.set(moment)
    try:
        yield
    finally:
        _deadline.reset(token)


def seconds_left() -> float:
    return _deadline.get() - time.monotonic()


def exchange(
    method: str,
    url: str,
    *,
    headers: dict[str, str],
    body: bytes | None,
    policy: RetryPolicy,
    tls: ssl.SSLContext | None,
) -> HttpAnswer:
    """One HTTP request, repeated while it fails in a way worth waiting out (no answer, 5xx, 429, a spent
    rate limit), within the policy's retries and the current deadline."""
    problem = ""
    for attempt in range(policy.retries + 1):
        left = seconds_left()
        if left <= 0:
            raise Unanswered(f"{problem or 'no attempt'}; the request's deadline has passed")
        try:
            answer = _send(method, url, headers, body, min(policy.timeout_seconds, left), tls)
        except Unanswered as error:
            problem, asked = str(error), None
        else:
            limited = rate_limited(answer)
            if answer.status < 500 and answer.status != 429 and not limited:
                return answer
            problem, asked = f"HTTP {answer.status}" + (" (rate limited)" if limited else ""), asked_wait(answer)
        if attempt == policy.retries:
            break
        wait = policy.backoff(attempt) if asked is None else asked
        if time.monotonic() + wait >= _deadline.get():
            asked_for = " as asked" if asked is not None else ""
            raise Unanswered(f"{problem}; waiting {wait:.3g}s{asked_for} would pass the request's deadline")
        time.sleep(wait)
    raise Unanswered(f"{problem} (after {policy.retries + 1} attempts)")


def _send(
    method: str, url: str, headers: dict[str, str], body: bytes | None, timeout: float, tls: ssl.SSLContext | None
) -> HttpAnswer:
    parts = urlsplit(url)
    if parts.scheme == "https":
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=timeout, context=tls
        )
    else:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request(method, target, body=body, headers=headers)
        response = connection.getresponse()
        payload = response.read(MAX_ANSWER_BYTES + 1)
        if len(payload) > MAX_ANSWER_BYTES:
            raise Unanswered(f"an answer larger than {MAX_ANSWER_BYTES} bytes")
        return HttpAnswer(response.status, {k.lower(): v for k, v in response.getheaders()}, payload)
    except TimeoutError:
        raise Unanswered(f"no answer within {timeout:.3g}s") from None
    except (OSError, http.client.HTTPException) as error:
        # Only the error's class and the OS's words: never a header, so never a token.
        raise Unanswered(f"{type(error).__name__}: {getattr(error, 'strerror', None) or error}") from None
    finally:
        connection.close()


def rate_limited(answer: HttpAnswer) -> bool:
    return answer.status in (403, 429) and (
        answer.headers.get("x-ratelimit-remaining") == "0" or "retry-after" in answer.headers
    )


def asked_wait(answer: HttpAnswer, now: float | None = None) -> float | None:
    """The seconds a server asks for: Retry-After, or until a spent rate limit resets; None when it says nothing."""
    retry_after = answer.headers.get("retry-after", "").strip()
    if re.fullmatch("[0-9]{1,9}", retry_after):
        return float(retry_after)
    reset = answer.headers.get("x-ratelimit-reset", "").strip()
    if answer.headers.get("x-ratelimit-remaining") == "0" and re.fullmatch("[0-9]{1,12}", reset):
        return max(0.0, int(reset) - (time.time() if now is None else now))
    return None
