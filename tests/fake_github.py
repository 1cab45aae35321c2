"""A scriptable stand-in for GitHub's REST API, for tests of the runner entrypoint.

It listens on 127.0.0.1 on a free port, answers each path from a queue of scripted
responses (then from that path's default, if any), and logs every request it sees.

    with FakeGitHub() as github:
        github.script(REGISTRATION, Reply(500), Reply(201, {"token": "t"}))
        ... point GITHUB_API_URL at github.url ...
        assert [r.path for r in github.requests] == [REGISTRATION, REGISTRATION]

A path can also be answered by a function of the request (`respond`), for doubles
that keep state, such as the runner registry in github_runners.py.
"""

from __future__ import annotations

import re
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable

from local_server import LocalServer, QuietHandler, send_json


@dataclass
class Reply:
    """One scripted answer.

    `body` is sent as JSON unless it is `str` or `bytes` (sent as is) or None
    (no body). `delay` holds the answer back that many seconds; a delay longer
    than the client's timeout makes the server look hung.
    """

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    """Header names lower-cased."""
    body: bytes
    at: float
    """time.monotonic() when the request arrived."""
    wall: float
    """time.time() when the request arrived, to order it against other processes' clocks."""
    query: str = ""
    """The query string, without its `?`."""


Responder = Callable[[Request, "re.Match[str]"], Reply]


class FakeGitHub(LocalServer):
    thread_name = "fake-github"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, deque[Reply]] = defaultdict(deque)
        self._defaults: dict[str, Reply] = {}
        self._responders: list[tuple[str, re.Pattern[str], Responder]] = []
        self._requests: list[Request] = []

    # ------------------------------------------------------------- scripting --

    def script(self, path: str, *replies: Reply) -> None:
        """Queue replies for `path`, answered in order, one per request."""
        with self._lock:
            self._queues[path].extend(replies)

    def default(self, path: str, reply: Reply) -> None:
        """The reply for `path` once its queue is empty."""
        with self._lock:
            self._defaults[path] = reply

    def respond(self, method: str, path_pattern: str, responder: Responder) -> None:
        """Answer `method` requests whose whole path matches the regex `path_pattern` with
        `responder(request, match)`, once the path's scripted queue is empty (before its default)."""
        with self._lock:
            self._responders.append((method, re.compile(path_pattern), responder))

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    # -------------------------------------------------------------- answering --

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                path, _, query = self.path.partition("?")
                request = Request(self.command, path, self.lowered_headers(), self.read_body(),
                                  time.monotonic(), time.time(), query)
                fake._record(request)
                reply = fake._next_reply(request)
                if reply.delay and fake._stopping.wait(reply.delay):
                    return
                send_json(self, reply.status, reply.body, reply.headers,
                          content_type=None if reply.body is None else "application/json; charset=utf-8")

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

        return Handler

    # --------------------------------------------------------------- private --

    def _record(self, request: Request) -> None:
        with self._lock:
            self._requests.append(request)

    def _next_reply(self, request: Request) -> Reply:
        path = request.path
        with self._lock:
            queue = self._queues.get(path)
            if queue:
                return queue.popleft()
            responders = list(self._responders)
        for method, pattern, responder in responders:
            match = pattern.fullmatch(path)
            if match and method == request.method:
                return responder(request, match)  # outside the lock: a responder may script or inspect
        with self._lock:
            if path in self._defaults:
                return self._defaults[path]
        # 418: a status the entrypoint neither retries nor mistakes for success.
        return Reply(418, {"message": f"the fake GitHub has no reply scripted for {path}"})


def runners_path(repository: str, kind: str) -> str:
    """The API path of a runner token request: kind is registration-token or remove-token."""
    return f"/repos/{repository}/actions/runners/{kind}"
