"""The agent's /metrics listener against slow clients: a connection that sends nothing, or its
request a byte at a time, is closed within REQUEST_SECONDS of opening while scrapes are
answered; past MAX_CONNECTIONS held at once, more are closed unanswered and, once the held ones
are let go, served again. (The standard library's server has no bound: each such connection
held a thread for ever.)"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry

from stella_bundle.agent import endpoint
from stella_bundle.agent.endpoint import HealthState, MetricsServer

SECONDS = 1.5
SLACK = 8  # what a loaded machine may add


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[MetricsServer]:
    monkeypatch.setattr(endpoint, "REQUEST_SECONDS", SECONDS)
    monkeypatch.setattr(endpoint, "MAX_CONNECTIONS", 4)
    listener = MetricsServer("127.0.0.1:0", CollectorRegistry(), HealthState(30.0))
    try:
        yield listener
    finally:
        listener.close()


def _closed_after(conn: socket.socket, dribble: bytes = b"") -> float:
    """Seconds until the server closes `conn`, sending `dribble` a byte every 0.2 s."""
    opened = time.monotonic()
    conn.settimeout(0.2)
    with contextlib.suppress(OSError):
        for index in range(len(dribble)):
            conn.sendall(dribble[index : index + 1])
            with contextlib.suppress(TimeoutError):
                if not conn.recv(65536):
                    return time.monotonic() - opened
    conn.settimeout(60)
    with contextlib.suppress(OSError):
        while conn.recv(65536):
            pass
    return time.monotonic() - opened


def test_slow_clients_are_closed_while_scrapes_are_answered(server: MetricsServer) -> None:
    url = f"http://127.0.0.1:{server.port}"
    times: dict[str, float] = {}
    silent = socket.create_connection(("127.0.0.1", server.port))
    slow = socket.create_connection(("127.0.0.1", server.port))
    workers = [
        threading.Thread(target=lambda: times.setdefault("silent", _closed_after(silent))),
        threading.Thread(
            target=lambda: times.setdefault(
                "slow", _closed_after(slow, b"GET /metrics HTTP/1.1\r\nX-Slow: " + b"s" * 200)
            )
        ),
    ]
    for worker in workers:
        worker.start()
    while any(worker.is_alive() for worker in workers):
        assert httpx.get(url + "/healthz", timeout=30).status_code == 200
        time.sleep(0.2)
    for name in ("silent", "slow"):
        assert SECONDS - 0.3 < times[name] < SECONDS + SLACK, times
    silent.close()
    slow.close()


def test_past_max_connections_more_are_closed_then_served_again(server: MetricsServer) -> None:
    url = f"http://127.0.0.1:{server.port}"
    held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(4)]
    try:
        time.sleep(0.3)  # each has its thread
        extra = socket.create_connection(("127.0.0.1", server.port))
        with extra:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            extra.settimeout(30)
            with contextlib.suppress(ConnectionResetError):
                assert extra.recv(65536) == b""  # closed unanswered
    finally:
        for conn in held:
            conn.close()
    deadline = time.monotonic() + SECONDS + SLACK
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/healthz", timeout=5).status_code == 200:
                return
        time.sleep(0.2)
    raise AssertionError("not served again")
