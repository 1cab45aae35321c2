"""A local HTTP double that answers each path from scripted replies: what fake_github and
fake_broker share.

Each request is recorded, then answered from the path's queue of scripted replies, then
by the double's own logic (`_answer_otherwise`, e.g. a stateful responder), then from the
path's default, and last with the double's "nothing scripted" reply.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from collections.abc import Callable

from local_server import LocalServer, QuietHandler, send_json


@dataclass
class Reply:
    """One scripted answer.

    `body` is sent as JSON unless it is `str` or `bytes` (sent as is) or None (no body).
    `delay` holds the answer back that many seconds; a delay longer than the client's
    timeout makes the server look hung. `action` runs before the answer goes out, e.g.
    to rotate a token file in between two requests.
    """

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    action: Callable[[], None] | None = None


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

    @property
    def bearer(self) -> str | None:
        scheme, _, credential = self.headers.get("authorization", "").partition(" ")
        return credential if scheme == "Bearer" else None


class ScriptedServer(LocalServer):
    """Scripting (`script`, `default`) and the record of requests (`requests`, `requests_to`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, deque[Reply]] = defaultdict(deque)
        self._defaults: dict[str, Reply] = {}
        self._requests: list[Request] = []

    def script(self, path: str, *replies: Reply) -> None:
        """Queue replies for `path`, answered in order, one per request."""
        with self._lock:
            self._queues[path].extend(replies)

    def default(self, path: str, reply: Reply) -> None:
        """The reply for `path` once its queue is empty."""
        with self._lock:
            self._defaults[path] = reply

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    # ------------------------------------------------- what a double may change --

    def _answer_otherwise(self, request: Request) -> Reply | None:  # noqa: ARG002 - for subclasses
        """An answer after the scripted queue and before the default; None: go on."""
        return None

    def _unscripted(self, path: str) -> Reply:
        raise NotImplementedError

    def _send(self, handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        send_json(handler, reply.status, reply.body, reply.headers)

    # ---------------------------------------------------------------- answering --

    def _next_reply(self, request: Request) -> Reply:
        with self._lock:
            queue = self._queues.get(request.path)
            if queue:
                return queue.popleft()
        # Outside the lock: a double's own logic may script or inspect.
        answer = self._answer_otherwise(request)
        if answer is not None:
            return answer
        with self._lock:
            default = self._defaults.get(request.path)
        return default if default is not None else self._unscripted(request.path)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        double = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                path, _, query = self.path.partition("?")
                request = Request(
                    self.command, path, self.lowered_headers(), self.read_body(), time.monotonic(), time.time(), query
                )
                with double._lock:
                    double._requests.append(request)
                reply = double._next_reply(request)
                if reply.action is not None:
                    reply.action()
                if reply.delay and double._stopping.wait(reply.delay):
                    return
                double._send(self, reply)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

        return Handler
