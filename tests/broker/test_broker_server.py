"""Hard to knock over: connection caps per client address and in all, byte budgets, a deadline per exchange,
and /healthz on its own listener. The broker in this process; clients bind to 127.0.0.x to play pods."""

from __future__ import annotations

import select
import socket
import struct
import time

import pytest
from broker_harness import slow_client, wait_until
from runner_broker.server import MAX_HEADER_BYTES

pytest_plugins = ["broker_fixtures"]  # setup, broker, make_setup


def closed_by_broker(connection: socket.socket, timeout: float = 5) -> bytes:
    """What the broker sent before closing the connection (b"" when it sent nothing)."""
    connection.settimeout(timeout)
    received = b""
    try:
        while chunk := connection.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def test_a_client_over_its_cap_is_turned_away_at_once_and_others_are_served(setup):
    broker = setup.start_in_process(BROKER_MAX_CONNECTIONS_PER_CLIENT="2", BROKER_REQUEST_DEADLINE_SECONDS="5")
    slow = [slow_client(broker.port, source="127.0.0.1") for _ in range(2)]
    wait_until(lambda: broker.service.api._open == 2, "two connections held")
    started = time.monotonic()

    turned_away = broker.request("GET", "/v1/anything", source="127.0.0.1")

    assert turned_away.status == 503 and "too many connections" in turned_away.body["error"], turned_away.raw
    assert time.monotonic() - started < 0.5 and turned_away.headers["retry-after"] == "1"
    other_pod = setup.cluster.base_runner_pod()
    assert broker.jitconfig(other_pod, source="127.0.0.2").status == 201
    broker.wait_for_log("busy", "status=503", "client=127.0.0.1")
    for connection in slow:
        connection.close()
    wait_until(lambda: broker.request("GET", "/v1/x", source="127.0.0.1").status == 404, "a free slot")


def test_all_clients_together_are_capped_too(setup):
    broker = setup.start_in_process(
        BROKER_MAX_CONNECTIONS="3", BROKER_MAX_CONNECTIONS_PER_CLIENT="2", BROKER_REQUEST_DEADLINE_SECONDS="5"
    )
    slow = [slow_client(broker.port, source=source) for source in ("127.0.0.1", "127.0.0.1", "127.0.0.2")]
    wait_until(lambda: broker.service.api._open == 3, "three connections held")

    assert broker.request("GET", "/v1/x", source="127.0.0.3").status == 503
    assert broker.health().status == 200  # the probes have their own listener
    for connection in slow:
        connection.close()


def test_health_answers_while_the_api_is_full(setup):
    broker = setup.start_in_process(
        BROKER_MAX_CONNECTIONS="4", BROKER_MAX_CONNECTIONS_PER_CLIENT="4", BROKER_REQUEST_DEADLINE_SECONDS="5"
    )
    slow = [slow_client(broker.port) for _ in range(8)]

    assert [broker.health().status for _ in range(5)] == [200] * 5
    for connection in slow:
        connection.close()


def test_oversized_headers_are_refused_without_reading_them_all(broker):
    connection = slow_client(broker.port, header_bytes=4 * MAX_HEADER_BYTES)

    answer = closed_by_broker(connection)

    assert answer.startswith(b"HTTP/1.1 431 ") and b"longer than 16384 bytes" in answer
    assert broker.health().status == 200


def test_a_header_line_too_long_is_refused_at_once(broker):
    connection = socket.create_connection(("127.0.0.1", broker.port))
    connection.sendall(b"POST /v1/jitconfig HTTP/1.1\r\nAuthorization: Bearer " + b"x" * 9000)

    assert closed_by_broker(connection).startswith(b"HTTP/1.1 431 ")


def test_a_request_read_slowly_is_cut_at_its_deadline(setup):
    broker = setup.start_in_process(BROKER_REQUEST_DEADLINE_SECONDS="0.5")
    started = time.monotonic()
    connection = slow_client(broker.port)
    for _ in range(40):  # a byte in time for any per-read timeout, never the whole request
        try:
            connection.sendall(b"a")
        except OSError:
            break
        if select.select([connection], [], [], 0.05)[0]:
            break
    closed_by_broker(connection)

    assert 0.45 < time.monotonic() - started < 1.5
    broker.wait_for_log("connection", "decision=dropped", "TimeoutError")
    assert broker.health().status == 200


def test_a_connection_reset_by_the_client_is_one_log_line(broker):
    connection = socket.create_connection(("127.0.0.1", broker.port))
    connection.sendall(b"POST /v1/jitconfig HTTP/1.1\r\nHost: broker\r\n")
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
    connection.close()

    broker.wait_for_log("connection", "decision=dropped")
    assert broker.health().status == 200
    assert "Traceback" not in broker.output


def test_turned_away_connections_are_counted_not_each_logged(setup):
    broker = setup.start_in_process(BROKER_MAX_CONNECTIONS_PER_CLIENT="1", BROKER_REQUEST_DEADLINE_SECONDS="5")
    held = slow_client(broker.port)
    wait_until(lambda: broker.service.api._open == 1, "a connection held")

    statuses = [broker.request("GET", "/v1/x").status for _ in range(20)]

    assert statuses == [503] * 20
    assert len(broker.log_lines("busy", "decision=refused")) == 1
    held.close()


@pytest.mark.parametrize("path", ["/healthz", "/v1/jitconfig"])
def test_the_health_listener_answers_health_alone(broker, path):
    answer = broker.request("GET" if path == "/healthz" else "POST", path, port=broker.health_port)
    assert answer.status == (200 if path == "/healthz" else 404)
