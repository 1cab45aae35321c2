"""A scriptable stand-in for the runner broker's HTTP API, for tests of the runner entrypoint.

It binds 127.0.0.1 on a free port at once, so its URL is known, but it may start
listening later (`listening=False`, then `listen()`): until then a connection to it is
refused, as while the broker's pod starts. Each path answers from a queue of scripted
replies, then from that path's default; every request is recorded.

    with FakeBroker() as broker:
        broker.script("/v1/jitconfig", Reply(503), Reply(201, {...}))
        ... point RUNNER_BROKER_URL at broker.url ...
        assert [r.path for r in broker.requests] == ["/v1/jitconfig"] * 2
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable, Self

from local_server import LocalServer, QuietHandler, send_json

JITCONFIG = "/v1/jitconfig"
FINISHED = "/v1/finished"


@dataclass
class Reply:
    """One scripted answer: `body` goes out as JSON unless it is str/bytes (as is) or None (empty).

    `delay` holds the answer back (longer than the client's timeout: a hung broker);
    `action` runs before the answer goes out, e.g. to rotate a token file in between.
    """

    status: int
    body: Any = None
    delay: float = 0.0
    action: Callable[[], None] | None = None


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    """Names lower-cased."""
    body: bytes
    at: float
    """time.monotonic() on arrival."""
    wall: float
    """time.time() on arrival, comparable with timestamps other processes write."""

    @property
    def bearer(self) -> str | None:
        scheme, _, credential = self.headers.get("authorization", "").partition(" ")
        return credential if scheme == "Bearer" else None


class FakeBroker(LocalServer):
    thread_name = "fake-broker"

    def __init__(self, *, listening: bool = True) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, deque[Reply]] = defaultdict(deque)
        self._defaults: dict[str, Reply] = {}
        self._requests: list[Request] = []
        self._listening = listening

    # ------------------------------------------------------------ scripting --

    def script(self, path: str, *replies: Reply) -> None:
        """Queue replies for `path`, one per request, in order."""
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

    # ------------------------------------------------------------ lifecycle --

    def start(self) -> Self:
        """Bind the port; listen at once unless made with `listening=False` (then see `listen()`)."""
        return super().start(listening=self._listening)

    # -------------------------------------------------------------- private --

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        broker = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                path = self.path.split("?", 1)[0]
                broker._record(Request(self.command, path, self.lowered_headers(), self.read_body(),
                                       time.monotonic(), time.time()))
                reply = broker._next_reply(path)
                if reply.action is not None:
                    reply.action()
                if reply.delay and broker._stopping.wait(reply.delay):
                    return
                send_json(self, reply.status, reply.body)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

        return Handler

    def _record(self, request: Request) -> None:
        with self._lock:
            self._requests.append(request)

    def _next_reply(self, path: str) -> Reply:
        with self._lock:
            queue = self._queues.get(path)
            if queue:
                return queue.popleft()
            if path in self._defaults:
                return self._defaults[path]
        return Reply(404, {"error": f"the fake broker has no reply scripted for {path}"})
