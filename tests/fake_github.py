"""A scriptable stand-in for GitHub's REST API, for tests of the runner entrypoint.

It listens on 127.0.0.1 on a free port, answers each path from a queue of scripted
responses (then from that path's default, if any), and logs every request it sees.

    with FakeGitHub() as github:
        github.script(REGISTRATION, Reply(500), Reply(201, {"token": "t"}))
        ... point GITHUB_API_URL at github.url ...
        assert [r.path for r in github.requests] == [REGISTRATION, REGISTRATION]
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


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


class FakeGitHub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, deque[Reply]] = defaultdict(deque)
        self._defaults: dict[str, Reply] = {}
        self._requests: list[Request] = []
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------- scripting --

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

    @property
    def url(self) -> str:
        assert self._server is not None, "the fake server is not running"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # ------------------------------------------------------------- lifecycle --

    def start(self) -> "FakeGitHub":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                fake._record(Request(self.command, path, {k.lower(): v for k, v in self.headers.items()},
                                     body, time.monotonic(), time.time()))
                reply = fake._next_reply(path)
                if reply.delay and fake._stopping.wait(reply.delay):
                    return
                if reply.body is None:
                    payload = b""
                elif isinstance(reply.body, bytes):
                    payload = reply.body
                elif isinstance(reply.body, str):
                    payload = reply.body.encode()
                else:
                    payload = json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    if reply.body is not None:
                        self.send_header("Content-Type", "application/json; charset=utf-8")
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting, as a timing-out client does

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.block_on_close = False
        self._server = server
        # A short poll keeps stop() from adding half a second to every test.
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="fake-github", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "FakeGitHub":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --------------------------------------------------------------- private --

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
        # 418: a status the entrypoint neither retries nor mistakes for success.
        return Reply(418, {"message": f"the fake GitHub has no reply scripted for {path}"})


def runners_path(repository: str, kind: str) -> str:
    """The API path of a runner token request: kind is registration-token or remove-token."""
    return f"/repos/{repository}/actions/runners/{kind}"
