"""Slow clients of a real `stella serve` (slowloris): a connection that sends nothing, a head or
a body a byte at a time, is let go within the documented time (408 when a request had begun)
while other clients are served; an upload that is slow but steady completes; past
--max-connections requests are answered 503, and served again once connections close."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_support import Server

from stella_bundle.store import open_store

HEAD_SECONDS = 2
BODY_SECONDS = 2
MAX_CONNECTIONS = 12
# Beyond the bound, what a loaded machine may add before the server's timer runs.
SLACK = 8


@pytest.fixture(params=[1, 2], ids=["one-worker", "two-workers"])
def server(request: pytest.FixtureRequest, test_keys: Any, tmp_path: Path) -> Iterator[Server]:
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    open_store(url, initialise=True).close()
    started = Server(
        "--trust-root",
        test_keys.trust_root,
        "--store",
        url,
        "--workers",
        request.param,
        "--header-timeout",
        HEAD_SECONDS,
        "--body-timeout",
        BODY_SECONDS,
        "--max-connections",
        MAX_CONNECTIONS,
    )
    try:
        started.start()  # inside: a start that times out is stopped too, not left running
        yield started
    finally:
        started.stop()


class Dribbler(threading.Thread):
    """Opens a connection, sends `first` at once and then `trickle` a byte every 0.2 s; records
    when the server closed it and what it answered."""

    def __init__(self, port: int, first: bytes, trickle: bytes) -> None:
        super().__init__(daemon=True)
        self.conn = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.first, self.trickle = first, trickle
        self.opened = time.monotonic()
        self.closed_after: float | None = None
        self.answer = b""

    def run(self) -> None:
        with self.conn:
            self.conn.settimeout(0.2)
            try:
                self.conn.sendall(self.first)
                for index in range(len(self.trickle)):
                    self.conn.sendall(self.trickle[index : index + 1])
                    with contextlib.suppress(TimeoutError):
                        data = self.conn.recv(65536)
                        self.answer += data
                        if not data:
                            break
            except OSError:
                pass
            self.conn.settimeout(60)
            with contextlib.suppress(OSError):
                while data := self.conn.recv(65536):
                    self.answer += data
        self.closed_after = time.monotonic() - self.opened


def test_slow_clients_are_let_go_while_others_are_served(server: Server) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"s" * 200 + b"\r\n\r\n"
    body_head = (
        b"POST /api/v1/evidence HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000\r\n\r\n"
    )
    silent = Dribbler(server.port, b"", b"")
    slow_head = Dribbler(server.port, b"", head)
    slow_body = Dribbler(server.port, body_head, b'{"records": [' + b" " * 5000)
    for dribbler in (silent, slow_head, slow_body):
        dribbler.start()
    # Others are served meanwhile, at once.
    while slow_head.is_alive() or slow_body.is_alive():
        started = time.monotonic()
        assert httpx.get(server.url + "/healthz", timeout=30).status_code == 200
        assert time.monotonic() - started < SLACK
        time.sleep(0.3)
    silent.join(timeout=60)
    for dribbler, bound in ((silent, HEAD_SECONDS), (slow_head, HEAD_SECONDS)):
        assert dribbler.closed_after is not None
        assert bound - 0.5 < dribbler.closed_after < bound + SLACK, dribbler.closed_after
    assert silent.answer == b""  # nothing asked, nothing answered
    assert slow_head.answer.startswith(b"HTTP/1.1 408 "), slow_head.answer[:200]
    assert b"request line and headers not received within 2 s" in slow_head.answer
    assert slow_body.closed_after is not None
    # The body's 20-odd bytes bought no time worth counting (500 bytes a second).
    assert BODY_SECONDS - 0.5 < slow_body.closed_after < BODY_SECONDS + SLACK
    assert slow_body.answer.startswith(b"HTTP/1.1 408 "), slow_body.answer[:200]
    assert b"request body not received within 2 s" in slow_body.answer


def test_a_slow_but_steady_upload_completes(server: Server) -> None:
    """6,000 bytes over ~4 s, past the body time: each 500 bytes bought a second."""
    body = b'{"records": [], "pad": "' + b"p" * 5970 + b'"}'
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as conn:
        conn.sendall(
            b"POST /api/v1/evidence HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
        )
        for offset in range(0, len(body), 1000):
            conn.sendall(body[offset : offset + 1000])
            time.sleep(0.7)
        answer = b""
        while data := conn.recv(65536):
            answer += data
    assert answer.startswith(b"HTTP/1.1 ") and not answer.startswith(b"HTTP/1.1 408"), answer
    assert answer.startswith(b"HTTP/1.1 4") or answer.startswith(b"HTTP/1.1 2")


def test_past_max_connections_requests_are_503_until_they_close(server: Server) -> None:
    answers: list[int] = []
    # Each attempt's idle connections are fresh: the head time (2 s) lets older ones go, and
    # a loaded machine may take that long between opening them and asking.
    for _ in range(10):
        idle = [
            socket.create_connection(("127.0.0.1", server.port), timeout=60)
            for _ in range(2 * MAX_CONNECTIONS)  # two workers: each may take half
        ]
        try:
            time.sleep(0.2)  # accepted by the workers
            answers.append(httpx.get(server.url + "/healthz", timeout=30).status_code)
        finally:
            for conn in idle:
                conn.close()
        if answers[-1] == 503:
            break
    assert 503 in answers, answers
    deadline = time.monotonic() + SLACK
    while time.monotonic() < deadline:
        if httpx.get(server.url + "/healthz", timeout=30).status_code == 200:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("not served again after the idle connections closed")


@pytest.mark.parametrize(
    "option, value, words",
    [
        ("--header-timeout", "nan", "expected seconds in (0, 3600], got nan"),
        ("--header-timeout", "0", "expected seconds in (0, 3600], got 0.0"),
        ("--body-timeout", "inf", "expected seconds in (0, 3600], got inf"),
        ("--body-timeout", "-1", "expected seconds in (0, 3600], got -1.0"),
        ("--max-connections", "0", "expected 1 to 1000000 connections, got 0"),
        ("--max-connections", "99999999999999999999", "expected 1 to 1000000 connections"),
    ],
)
def test_the_limits_are_checked_before_the_server_starts(
    run_cli: Any, test_keys: Any, tmp_path: Path, option: str, value: str, words: str
) -> None:
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    done = run_cli("serve", "--trust-root", test_keys.trust_root, "--store", url, option, value)
    assert done.exit_code == 2
    assert done.stderr.strip() == f"error: field '{option}': {words}" or (
        words in done.stderr and len(done.stderr.strip().splitlines()) == 1
    ), done.stderr
    assert not (tmp_path / "store.sqlite").exists()  # refused before the store is opened


@pytest.mark.parametrize("workers", [1, 2], ids=["one-worker", "two-workers"])
def test_a_stalled_tls_handshake_is_let_go_within_the_head_time(
    test_keys: Any, tmp_path: Path, workers: int
) -> None:
    """Over TLS the head's time starts at the handshake: a client that opens the connection and
    sends no ClientHello, or half of one, holds a socket only as long as a silent plain client
    (asyncio's default was 60 s, and uvicorn counts a connection only once the handshake is
    done, so --max-connections did not bound them either). Others are served meanwhile."""
    from test_api_serve import _tls_pair

    cert, key = _tls_pair(tmp_path)
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    open_store(url, initialise=True).close()
    server = Server(
        "--trust-root", test_keys.trust_root, "--store", url, "--workers", workers,
        "--tls-cert", cert, "--tls-key", key, "--header-timeout", HEAD_SECONDS,
        tls_ca=cert,
    )  # fmt: skip
    server.start()
    try:
        # A real client's ClientHello, of which the second client sends half.
        written = ssl.MemoryBIO()
        client = ssl.create_default_context().wrap_bio(
            ssl.MemoryBIO(), written, server_hostname="localhost"
        )
        with contextlib.suppress(ssl.SSLWantReadError):
            client.do_handshake()
        client_hello = written.read()
        assert client_hello[:1] == b"\x16"  # a TLS handshake record
        silent = Dribbler(server.port, b"", b"")
        half = Dribbler(server.port, client_hello[: len(client_hello) // 2], b"")
        for dribbler in (silent, half):
            dribbler.start()
        while silent.is_alive() or half.is_alive():
            started = time.monotonic()
            answer = httpx.get(server.url + "/healthz", verify=server.verify, timeout=30)
            assert answer.status_code == 200
            assert time.monotonic() - started < SLACK
            time.sleep(0.3)
            assert time.monotonic() - silent.opened < 60
        for dribbler in (silent, half):
            assert dribbler.closed_after is not None
            assert dribbler.closed_after < HEAD_SECONDS + SLACK, dribbler.closed_after
            assert dribbler.answer == b""
    finally:
        server.stop()
