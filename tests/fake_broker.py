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

import json
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

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


class FakeBroker:
    def __init__(self, *, listening: bool = True) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, deque[Reply]] = defaultdict(deque)
        self._defaults: dict[str, Reply] = {}
        self._requests: list[Request] = []
        self._stopping = threading.Event()
        self._listening = listening
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

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

    @property
    def url(self) -> str:
        assert self._server is not None, "the fake broker is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # ------------------------------------------------------------ lifecycle --

    def start(self) -> "FakeBroker":
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler(), bind_and_activate=False)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._server.server_bind()  # bound, not listening: connections are refused
        if self._listening:
            self._listening = False
            self.listen()
        return self

    def listen(self) -> None:
        """Start accepting connections (once)."""
        assert self._server is not None and not self._listening
        self._listening = True
        self._server.server_activate()
        # A short poll keeps stop() from adding half a second to every test.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="fake-broker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            if self._thread is not None:
                self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "FakeBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -------------------------------------------------------------- private --

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        broker = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                broker._record(Request(self.command, path, {k.lower(): v for k, v in self.headers.items()},
                                       body, time.monotonic(), time.time()))
                reply = broker._next_reply(path)
                if reply.action is not None:
                    reply.action()
                if reply.delay and broker._stopping.wait(reply.delay):
                    return
                if reply.body is None:
                    payload = b""
                elif isinstance(reply.body, (str, bytes)):
                    payload = reply.body.encode() if isinstance(reply.body, str) else reply.body
                else:
                    payload = json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped waiting, as a timing-out client does

            do_GET = do_POST = do_PUT = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                pass

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
