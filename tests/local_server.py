"""The HTTP scaffolding that the test doubles serving on 127.0.0.1 share.

A double (fake_github, fake_kubernetes, fake_broker, fake_compute, fake_token_services)
mixes in `LocalServer` and makes its request handler class in `_handler()`; it gets a
server on a free port of 127.0.0.1, served from a daemon thread, with `start`, `stop`,
`with` and `url`. Its handler derives from `QuietHandler` and answers with `send_json`.

    class FakeThing(LocalServer):
        thread_name = "fake-thing"

        def _handler(self) -> type[BaseHTTPRequestHandler]:
            class Handler(QuietHandler):
                def do_GET(self) -> None:  # noqa: N802 - stdlib name
                    send_json(self, 200, {"ok": True})
            return Handler
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class _Server(ThreadingHTTPServer):
    # Room for many clients connecting at once (the default backlog is 5): a
    # dropped connection costs a second's retransmission and would skew timings.
    request_queue_size = 128
    daemon_threads = True
    block_on_close = False


class LocalServer:
    """Mixin: serves the handler class `_handler()` makes, on 127.0.0.1, from a daemon thread.

    `start(listening=False)` binds the port, so `url` is known, but refuses connections
    until `listen()`. `stop()` first sets `_stopping`, which a handler holding an
    answer back waits on, so that no answer outlives the server.
    """

    thread_name = "local-server"
    """The name of the thread that serves."""
    _stopping: threading.Event
    _http: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    @property
    def url(self) -> str:
        assert self._http is not None, f"{type(self).__name__} is not started"
        host, port = self._http.server_address[:2]
        return f"http://{host}:{port}"

    def start(self, *, listening: bool = True) -> Self:
        self._stopping = threading.Event()
        self._http = _Server(("127.0.0.1", 0), self._handler(), bind_and_activate=False)
        self._http.server_bind()  # bound, not listening: connections are refused
        self._thread = None
        if listening:
            self.listen()
        return self

    def listen(self) -> None:
        """Start accepting connections (once)."""
        assert self._http is not None and self._thread is None, "listen() comes once, after start()"
        self._http.server_activate()
        # A short poll keeps stop() from adding half a second to every test.
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.02}, name=self.thread_name, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._http is None:
            return
        self._stopping.set()
        if self._thread is not None:
            self._http.shutdown()
        self._http.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that logs nothing (the doubles keep their own record) and reads bodies."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def lowered_headers(self) -> dict[str, str]:
        """The request's headers, names lower-cased."""
        return {name.lower(): value for name, value in self.headers.items()}


def send_json(
    handler: BaseHTTPRequestHandler,
    status: int,
    body: Any,
    headers: dict[str, str] | None = None,
    *,
    content_type: str | None = "application/json",
) -> None:
    """Answer `handler`'s request with `status` and `body`.

    `body` goes out as JSON, unless it is str or bytes (sent as is) or None (no body).
    The headers are Content-Type (none when `content_type` is None), then `headers`, then
    Content-Length. A client that hung up before the answer (as a timing-out client
    does) is no error.
    """
    if body is None:
        payload = b""
    elif isinstance(body, bytes):
        payload = body
    elif isinstance(body, str):
        payload = body.encode()
    else:
        payload = json.dumps(body).encode()
    try:
        handler.send_response(status)
        if content_type is not None:
            handler.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)
    except (BrokenPipeError, ConnectionResetError):
        pass
