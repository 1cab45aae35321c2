"""The broker's HTTP servers, built to be hard to knock over.

Each connection carries one request and has a deadline for the whole exchange, reading
included, so a slow client holds its slot for that long at most. A request's line and
headers are read within a byte budget (MAX_HEADER_BYTES, MAX_LINE_BYTES) and its body
within MAX_BODY_BYTES, so no client makes the broker hold more than that for it. A
client address gets at most `per_client` connections at once and everyone together
`max_connections`; the rest are answered 503 by the `Bouncer`, without a thread of their
own. The routes (`routes`) say what each path answers; errors become statuses here alone
(`status_for`), as {"error": "..."}.
"""

from __future__ import annotations

import io
import json
import re
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from runner_broker.config import Address
from runner_broker.errors import Failure, Refusal
from runner_broker.http import deadline_at
from runner_broker.bouncer import Bouncer
from runner_broker.logs import log, log_unexpected

MAX_LINE_BYTES = 8 << 10
MAX_HEADER_BYTES = 16 << 10
"""The request line and every header together."""
MAX_HEADERS = 64
MAX_BODY_BYTES = 64 << 10
REPLY_TIMEOUT_SECONDS = 5.0
TURNED_AWAY_LOG_SECONDS = 10.0
"""Connections turned away are logged once in this while, with their count: an attack does not flood the log."""


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    """Names lower-cased."""
    body: bytes
    client: str


Answer = tuple[int, dict, dict[str, str]]


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Hangup(Exception):
    """The client went away, or ran out of time, before its request was whole: no answer is owed."""


def status_for(error: Exception) -> int:
    """The HTTP status of a failed request: the only place errors become statuses."""
    return error.status if isinstance(error, (Refusal, Failure)) else 500


def answer(route: Callable[[Request], Answer], request: Request) -> Answer:
    """The route's answer, or the error it raised as a status and message."""
    try:
        return route(request)
    except (Refusal, Failure) as error:
        return status_for(error), {"error": str(error)}, {}
    except Exception as error:  # noqa: BLE001 - every request still gets an answer
        log_unexpected(request.path[:100], error)
        return 500, {"error": "internal error"}, {}


# ---------------------------------------------------------------- one exchange --


class _DeadlineReader(io.RawIOBase):
    """A connection's bytes until its deadline, however slowly they trickle in."""

    def __init__(self, connection: socket.socket, deadline: float) -> None:
        super().__init__()
        self._connection = connection
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request was not read before its deadline")
        self._connection.settimeout(left)
        return self._connection.recv_into(buffer)


def read_request(stream: io.BufferedReader, client: str) -> Request:
    """One request, within the byte budgets; HttpError for one the broker will not read, Hangup if it ends."""
    budget = MAX_HEADER_BYTES
    line = stream.readline(MAX_LINE_BYTES + 1)
    if not line:
        raise Hangup("no request")
    if len(line) > MAX_LINE_BYTES or not line.endswith(b"\n"):
        raise HttpError(414, f"the request line is longer than {MAX_LINE_BYTES} bytes")
    budget -= len(line)
    parts = line.decode("latin-1").rstrip("\r\n").split(" ")
    if len(parts) != 3 or not re.fullmatch(r"HTTP/1\.[01]", parts[2]) or not parts[1].startswith("/"):
        raise HttpError(400, "a request line is METHOD /path HTTP/1.1")
    method, target = parts[0], parts[1]
    headers: dict[str, str] = {}
    while True:
        limit = min(MAX_LINE_BYTES, budget)
        line = stream.readline(limit + 1)
        if not line:
            raise Hangup("the headers did not end")
        if len(line) > limit or not line.endswith(b"\n"):
            raise HttpError(
                431,
                f"the request's headers are longer than {MAX_HEADER_BYTES} bytes, or one of them than {MAX_LINE_BYTES}",
            )
        budget -= len(line)
        if line in (b"\r\n", b"\n"):
            break
        if len(headers) >= MAX_HEADERS:
            raise HttpError(431, f"more than {MAX_HEADERS} request headers")
        name, colon, value = line.decode("latin-1").partition(":")
        if not colon or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
            raise HttpError(400, "a malformed header line")
        name = name.lower()
        if name in headers and name in ("authorization", "content-length", "transfer-encoding", "host"):
            raise HttpError(400, f"the {name} header twice")
        headers[name] = value.strip()
    if "transfer-encoding" in headers:
        raise HttpError(411, "give the body's Content-Length; no Transfer-Encoding")
    length = headers.get("content-length", "0")
    if not re.fullmatch("[0-9]{1,9}", length):
        raise HttpError(400, "a bad Content-Length")
    if int(length) > MAX_BODY_BYTES:
        raise HttpError(413, f"a body larger than {MAX_BODY_BYTES} bytes")
    body = stream.read(int(length)) if int(length) else b""
    if len(body) < int(length):
        raise Hangup("the body did not come whole")
    return Request(method, target.split("?", 1)[0], headers, body, client)


def reply(connection: socket.socket, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
    payload = json.dumps(body).encode()
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    head = [
        f"HTTP/1.1 {status} {phrase}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
        "Cache-Control: no-store",
        "Connection: close",
    ]  # no-store: a 201 carries a JIT config
    head += [f"{name}: {value}" for name, value in (headers or {}).items()]
    try:
        connection.settimeout(REPLY_TIMEOUT_SECONDS)
        connection.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload)
    except OSError:
        pass  # the caller gave up waiting; it will ask again


def exchange(
    connection: socket.socket, client: str, route: Callable[[Request], Answer], deadline_seconds: float
) -> None:
    """Read one request, answer it, all by the deadline."""
    deadline = time.monotonic() + deadline_seconds
    stream = io.BufferedReader(_DeadlineReader(connection, deadline), buffer_size=4096)
    try:
        request = read_request(stream, client)
    except HttpError as error:
        reply(connection, error.status, {"error": str(error)})
        return
    except (Hangup, TimeoutError, OSError) as error:
        log("connection", decision="dropped", client=client, reason=type(error).__name__)
        return
    with deadline_at(deadline):
        status, body, headers = answer(route, request)
    reply(connection, status, body, headers)


# -------------------------------------------------------------------- listener --


class Listener(socketserver.TCPServer):
    """Serves `route` on `address`, a thread a connection, within the connection caps."""

    allow_reuse_address = True
    request_queue_size = 128  # every base runner may ask at once (a rollout, a node pool coming up)

    def __init__(
        self,
        address: Address,
        route: Callable[[Request], Answer],
        *,
        name: str,
        max_connections: int,
        per_client: int,
        deadline_seconds: float,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
        self.name = name
        self.route = route
        self.max_connections = max_connections
        self.per_client = per_client
        self.deadline_seconds = deadline_seconds
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._by_client: dict[str, int] = {}
        self._open = 0
        self._turned_away = 0
        self._turned_away_logged = 0.0
        self._bouncer = Bouncer(max_bytes=MAX_HEADER_BYTES + MAX_BODY_BYTES)
        super().__init__((address.host, address.port), None)  # type: ignore[arg-type] - we handle requests

    @property
    def address(self) -> Address:
        host, port = self.server_address[:2]
        return Address(str(host), int(port))

    def process_request(self, request: Any, client_address: Any) -> None:
        client = str(client_address[0])
        with self._lock:
            admitted = self._open < self.max_connections and self._by_client.get(client, 0) < self.per_client
            if admitted:
                self._open += 1
                self._by_client[client] = self._by_client.get(client, 0) + 1
        if not admitted:
            self._turn_away(request, client)
            return
        thread = threading.Thread(target=self._serve, args=(request, client), name=f"{self.name}-{client}", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: as if over the cap
            self._release(client)
            self._turn_away(request, client)

    def _serve(self, connection: socket.socket, client: str) -> None:
        try:
            exchange(connection, client, self.route, self.deadline_seconds)
        except Exception as error:  # noqa: BLE001 - a connection's trouble is its own
            log_unexpected(self.name, error)
        finally:
            self.shutdown_request(connection)
            self._release(client)

    def _release(self, client: str) -> None:
        with self._lock:
            self._open -= 1
            left = self._by_client[client] - 1
            if left:
                self._by_client[client] = left
            else:
                del self._by_client[client]
            self._idle.notify_all()

    def _turn_away(self, connection: socket.socket, client: str) -> None:
        """503 without a thread of its own: the caller asks again later."""
        self._bouncer.bounce(connection)
        now = time.monotonic()
        with self._lock:
            self._turned_away += 1
            if now - self._turned_away_logged < TURNED_AWAY_LOG_SECONDS:
                return
            count, self._turned_away, self._turned_away_logged = self._turned_away, 0, now
        log(
            "busy",
            decision="refused",
            status=503,
            listener=self.name,
            client=client,
            connections=count,
            reason=f"over {self.per_client} connections from one address or {self.max_connections} in all",
        )

    def server_close(self) -> None:
        super().server_close()
        self._bouncer.close()

    def drain(self, until: float) -> bool:
        """Wait, until `until` (time.monotonic()) at most, for the connections in flight; whether they all ended."""
        with self._lock:
            while self._open:
                left = until - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def handle_error(self, request: Any, client_address: Any) -> None:  # noqa: ARG002 - the stdlib's signature
        log("connection", decision="dropped", listener=self.name, reason="error while accepting")
