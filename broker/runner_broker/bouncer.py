"""Connections over the caps, answered 503 from one thread, so that turning them away costs the broker next
to nothing and a well-behaved caller still reads why."""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import threading
import time

BUSY = json.dumps({"error": "the broker is busy: too many connections at once; ask again"}).encode()
BUSY_ANSWER = (
    f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {len(BUSY)}"
    f"\r\nConnection: close\r\nRetry-After: 1\r\n\r\n"
).encode() + BUSY
BOUNCE_SECONDS = 1.0
MAX_BOUNCING = 256
READ_BYTES = 8 << 10


class Bouncer:
    """Answers the connections turned away 503, all from one thread: it reads (and drops) what each has sent,
    answers, and closes once the client has read the answer or BOUNCE_SECONDS have passed, so that a
    well-behaved caller reads a 503 rather than a reset. Beyond MAX_BOUNCING at once, a connection is just
    closed: a flood costs the broker no more than that."""

    def __init__(self, *, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        """What a request may hold: a client sending more after its answer is just cut off."""
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._incoming: list[socket.socket] = []
        self._held = 0
        self._closed = False
        self._waker_read, self._waker_write = socket.socketpair()
        self._waker_read.setblocking(False)
        self._waker_write.setblocking(False)
        self._selector.register(self._waker_read, selectors.EVENT_READ, None)
        self._deadlines: dict[socket.socket, float] = {}
        """Only the bouncer's thread touches these and the selector."""
        self._thread = threading.Thread(target=self._run, name="bouncer", daemon=True)
        self._thread.start()

    def bounce(self, connection: socket.socket) -> None:
        with self._lock:
            if self._closed or self._held >= MAX_BOUNCING:
                _close(connection)
                return
            self._held += 1
            self._incoming.append(connection)
        self._wake()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._wake()
        self._thread.join(timeout=5)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # already awake: its buffer is full of wake-ups
            self._waker_write.send(b"x")

    def _run(self) -> None:
        while True:
            with self._lock:
                closed, incoming, self._incoming = self._closed, self._incoming, []
            for connection in incoming:
                connection.setblocking(False)
                self._deadlines[connection] = time.monotonic() + BOUNCE_SECONDS
                self._selector.register(connection, selectors.EVENT_READ, None)  # None: not answered yet
            if closed:
                break
            timeout = max(0.0, min(self._deadlines.values(), default=time.monotonic() + 1) - time.monotonic())
            for key, _ in self._selector.select(timeout):
                if key.fileobj is self._waker_read:
                    with contextlib.suppress(OSError):
                        self._waker_read.recv(4096)
                else:
                    self._readable(key.fileobj, key.data)  # type: ignore[arg-type]
            now = time.monotonic()
            for connection, until in list(self._deadlines.items()):
                if until <= now:
                    self._forget(connection)
        for connection in list(self._deadlines):
            self._forget(connection)
        self._selector.close()
        self._waker_read.close()
        self._waker_write.close()

    def _readable(self, connection: socket.socket, received_before: int | None) -> None:
        """`received_before`: None until answered, then how many bytes the client has sent in all."""
        try:
            received = connection.recv(READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            received = b""
        if not received:  # the client has read the answer and closed, or gone
            self._forget(connection)
            return
        if received_before is not None:
            # The rest of a request, read and dropped; beyond what a request may hold, the client is sending
            # for the sake of it, and gets no more of the broker's time.
            if received_before + len(received) > self._max_bytes:
                self._forget(connection)
            else:
                self._selector.modify(connection, selectors.EVENT_READ, received_before + len(received))
            return
        try:
            connection.send(BUSY_ANSWER)  # fits any socket buffer
            connection.shutdown(socket.SHUT_WR)
        except OSError:
            self._forget(connection)
            return
        self._selector.modify(connection, selectors.EVENT_READ, len(received))

    def _forget(self, connection: socket.socket) -> None:
        if self._deadlines.pop(connection, None) is None:
            return
        self._selector.unregister(connection)
        _close(connection)
        with self._lock:
            self._held -= 1


def _close(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):
        connection.close()
