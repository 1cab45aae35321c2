"""The edges in one place: secrets that never print, one bounded exchange with retries, and reading a request
within its byte budgets."""

from __future__ import annotations

import io
import pickle
import time

import pytest
from fake_github import FakeGitHub, Reply
from runner_broker import http as broker_http
from runner_broker.http import HttpAnswer, RetryPolicy, Unanswered, deadline_at, exchange
from runner_broker.model import JitConfig
from runner_broker.secrets import Secret, bearer_token
from runner_broker.server import (
    MAX_BODY_BYTES,
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    MAX_LINE_BYTES,
    Hangup,
    HttpError,
    read_request,
)


def test_secrets_never_print():
    token = Secret("ghp_FAKE-never-printed")
    jit = JitConfig(7, Secret("FAKE-JIT-never-printed"))
    for text in (
        str(token),
        repr(token),
        f"{token}",
        f"{token:>40}",
        repr(jit),
        str(jit),
        repr([token]),
        "%s" % (token,),  # noqa: UP031 - the old way to format must not print it either
    ):
        assert "never-printed" not in text
    with pytest.raises(TypeError):
        pickle.dumps(token)
    assert bearer_token("Bearer abc").reveal() == "abc"
    assert bearer_token("bearer  abc ").reveal() == "abc"
    assert bearer_token("Basic abc") is None and bearer_token(None) is None and bearer_token("Bearer ") is None


def test_backoff_doubles_and_is_capped_while_a_servers_wait_is_taken_as_asked():
    policy = RetryPolicy(retries=4, timeout_seconds=1, backoff_seconds=1, backoff_max_seconds=10)
    assert [policy.backoff(n) for n in range(5)] == [1, 2, 4, 8, 10]

    def asked(status=429, **headers):
        return broker_http.asked_wait(HttpAnswer(status, headers, b""), now=1000.0)

    assert asked(**{"retry-after": "30"}) == 30 and asked(**{"retry-after": " 7 "}) == 7
    assert asked() is None and asked(**{"retry-after": "soon"}) is None
    assert asked(**{"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None  # the HTTP-date form: not read
    assert asked(403, **{"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1120"}) == 120
    assert asked(403, **{"x-ratelimit-remaining": "5", "x-ratelimit-reset": "1120"}) is None
    assert broker_http.rate_limited(HttpAnswer(403, {"x-ratelimit-remaining": "0"}, b""))
    assert not broker_http.rate_limited(HttpAnswer(403, {}, b""))  # a refusal, not a limit


QUICK = RetryPolicy(retries=2, timeout_seconds=1, backoff_seconds=0.01, backoff_max_seconds=0.02)


@pytest.fixture
def server():
    with FakeGitHub() as github:
        yield github


@pytest.mark.parametrize(
    "replies, status, attempts",
    [
        ([Reply(500), Reply(200, {"ok": 1})], 200, 2),
        ([Reply(429), Reply(502), Reply(200, {})], 200, 3),
        ([Reply(403, headers={"x-ratelimit-remaining": "0", "retry-after": "0"}), Reply(200, {})], 200, 2),
        ([Reply(404)], 404, 1),  # an answer, not a failure: the client says what it means
        ([Reply(401)], 401, 1),
    ],
)
def test_exchange_retries_what_is_worth_waiting_out(server, replies, status, attempts):
    server.script("/x", *replies)
    answer = exchange("GET", f"{server.url}/x", headers={}, body=None, policy=QUICK, tls=None)
    assert answer.status == status and len(server.requests_to("/x")) == attempts


def test_exchange_gives_up_after_its_retries_and_says_what_happened_last(server):
    server.script("/x", Reply(503), Reply(503), Reply(503))
    with pytest.raises(Unanswered, match=r"HTTP 503 \(after 3 attempts\)"):
        exchange("GET", f"{server.url}/x", headers={}, body=None, policy=QUICK, tls=None)


def test_exchange_never_waits_past_the_deadline(server):
    server.script("/x", Reply(200, {}, delay=3))
    started = time.monotonic()
    with deadline_at(time.monotonic() + 0.3), pytest.raises(Unanswered, match="deadline|no answer"):
        exchange("GET", f"{server.url}/x", headers={}, body=None, policy=QUICK, tls=None)
    assert time.monotonic() - started < 1.5


def test_a_wait_asked_for_beyond_the_deadline_is_not_waited(server):
    server.script("/x", Reply(429, headers={"retry-after": "60"}))
    started = time.monotonic()
    with deadline_at(time.monotonic() + 5), pytest.raises(Unanswered, match="waiting 60s as asked"):
        exchange("GET", f"{server.url}/x", headers={}, body=None, policy=QUICK, tls=None)
    assert time.monotonic() - started < 1


def test_no_header_reaches_an_error_message():
    with pytest.raises(Unanswered) as error:
        exchange(
            "GET",
            "http://127.0.0.1:1/x",
            headers={"Authorization": "Bearer FAKE-secret-header"},
            body=None,
            policy=RetryPolicy(0, 1, 0, 0),
            tls=None,
        )
    assert "FAKE-secret-header" not in str(error.value) and "ConnectionRefusedError" in str(error.value)


# ------------------------------------------------------------- reading requests --


def read(raw: bytes):
    return read_request(io.BufferedReader(io.BytesIO(raw)), "127.0.0.9")


def test_a_request_is_read_whole():
    request = read(
        b"POST /v1/gpu-runners?x=1 HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer t\r\nContent-Length: 2\r\n\r\n{}"
    )
    assert (request.method, request.path, request.body, request.client) == (
        "POST",
        "/v1/gpu-runners",
        b"{}",
        "127.0.0.9",
    )
    assert request.headers == {"host": "b", "authorization": "Bearer t", "content-length": "2"}


def headers_of(total: int, line: int = 1000) -> bytes:
    count = total // (line + 2) + 1
    return b"".join(b"X-%d: " % n + b"a" * (line - 8) + b"\r\n" for n in range(count))


@pytest.mark.parametrize(
    "raw, status",
    [
        (b"GET /" + b"a" * MAX_LINE_BYTES + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * MAX_LINE_BYTES + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\n" + headers_of(MAX_HEADER_BYTES) + b"\r\n", 431),
        (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: a\r\n" % n for n in range(MAX_HEADERS + 1)) + b"\r\n", 431),
        (b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY_BYTES + 1), 413),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411),
        (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"GET /\r\n\r\n", 400),
        (b"GET / SPDY/3\r\n\r\n", 400),
        (b"GET http://elsewhere/ HTTP/1.1\r\n\r\n", 400),
    ],
)
def test_what_is_not_read(raw, status):
    with pytest.raises(HttpError) as error:
        read(raw)
    assert error.value.status == status


def test_what_is_just_within_the_budgets_is_read():
    near = headers_of(MAX_HEADER_BYTES - 2 * 1002 - 100)
    request = read(b"GET / HTTP/1.1\r\n" + near + b"\r\n")
    assert len(request.headers) == near.count(b"\r\n")


@pytest.mark.parametrize(
    "raw", [b"", b"GET / HTTP/1.1\r\nHost: b\r\n", b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\n{}"]
)
def test_a_request_cut_short_owes_no_answer(raw):
    with pytest.raises(Hangup):
        read(raw)
