"""`stella serve --workers N`: the workers share the connections evenly (api/balance.py).

Which worker holds a connection is read from the kernel: the established sockets of the
server's port (/proc/net/tcp) against each worker's open descriptors.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import struct
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_support import Server
from test_api_serve import _tls_pair

from stella_bundle.api.balance import (
    SHARE_VARIABLE,
    BalancedServer,
    Share,
    create_share,
)

_ESTABLISHED = "01"


def _workers(server: Server) -> list[int]:
    assert server.process is not None
    pid = server.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [
        int(child)
        for child in children
        if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
    ]


def _held(pids: list[int], port: int) -> dict[int, int]:
    """Established connections to `port` held by each process."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == _ESTABLISHED:
                inodes.add(f"socket:[{fields[9]}]")
    held = {}
    for pid in pids:
        descriptors = Path(f"/proc/{pid}/fd")
        count = 0
        for fd in descriptors.iterdir():
            try:
                count += os.readlink(fd) in inodes
            except OSError:
                continue  # closed meanwhile
        held[pid] = count
    return held


def _request(conn: socket.socket | ssl.SSLSocket) -> None:
    conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = b""
    while not answer.endswith(b'{"status":"ok"}'):
        chunk = conn.recv(4096)
        assert chunk, answer
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer


def _burst(port: int, count: int, tls: ssl.SSLContext | None = None) -> list[Any]:
    """`count` keep-alive connections opened at once (all in the listen queue before any is
    accepted: the case where one worker took almost all), then one request on each."""
    conns: list[Any] = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    if tls is not None:
        conns = [tls.wrap_socket(conn, server_hostname="127.0.0.1") for conn in conns]
    for conn in conns:
        conn.settimeout(60)
        _request(conn)
    return conns


def _wait_counted_closed(pids: list[int]) -> None:
    """Until every worker's published count is 0 (the connections closed by the client are
    counted out: a stale count would make a worker defer in the next burst)."""
    environ = Path(f"/proc/{pids[0]}/environ").read_bytes().split(b"\0")
    prefix = f"{SHARE_VARIABLE}=".encode()
    share = Path(next(v for v in environ if v.startswith(prefix))[len(prefix) :].decode())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if all(count == 0 for pid, count in _slots(share) if pid in pids):
            return
        time.sleep(0.01)
    raise AssertionError(f"open connections still counted: {_slots(share)}")


def _wait_workers(server: Server, count: int, tls: ssl.SSLContext | None = None) -> list[int]:
    """The worker pids, once each has accepted a connection (a worker still starting takes
    none: the one ready takes them all)."""
    served: set[int] = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pids = _workers(server)
        if len(pids) == count:
            conns = _burst(server.port, count, tls)
            served |= {pid for pid, held in _held(pids, server.port).items() if held}
            for conn in conns:
                conn.close()
            if served >= set(pids):
                _wait_counted_closed(pids)
                return pids
        time.sleep(0.2)
    raise AssertionError("workers did not start")


@pytest.mark.slow
def test_two_workers_share_connections_evenly_over_tls_and_after_a_kill(
    test_keys: Any, tmp_path: Path
) -> None:
    """40 connections opened at once: 20 each, give or take a few (a worker the scheduler
    leaves out for more than DEFER_SECONDS lets the other take one); before, the first worker
    woken took the burst (39 of 50 measured, 0-8 of these 40 left to the other). Closed
    connections are counted out. TLS goes through the balanced accept (certificate options
    unchanged; plain HTTP to the TLS port gets no answer). A worker killed with SIGKILL: the
    other answers meanwhile, uvicorn's supervisor starts a replacement, which takes its share
    of the next burst. One server for all (each start takes 9-22 s on a loaded machine)."""
    cert, key = _tls_pair(tmp_path)
    server = Server(
        "--trust-root", test_keys.trust_root, "--store", f"sqlite:///{tmp_path / 's.sqlite'}",
        "--workers", "2", "--tls-cert", cert, "--tls-key", key,
        tls_ca=cert,
    )  # fmt: skip
    server.start()
    tls = ssl.create_default_context(cafile=str(cert))
    try:
        pids = _wait_workers(server, 2, tls)
        conns = _burst(server.port, 40, tls)
        held = _held(pids, server.port)
        assert sum(held.values()) == 40, held
        assert min(held.values()) >= 14, held
        for conn in conns:
            conn.close()
        _wait_counted_closed(pids)
        conns = _burst(server.port, 10, tls)
        held = _held(pids, server.port)
        assert sum(held.values()) == 10 and min(held.values()) >= 3, held
        for conn in conns:
            conn.close()
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=5)
        victim, survivor = pids
        os.kill(victim, signal.SIGKILL)
        gone_by = time.monotonic() + 60
        while victim in _workers(server):
            assert time.monotonic() < gone_by, "the killed worker was not reaped"
            time.sleep(0.05)
        for conn in _burst(server.port, 6, tls):  # answered while the victim is replaced
            conn.close()
        replaced = _wait_workers(server, 2, tls)
        assert survivor in replaced and victim not in replaced
        conns = _burst(server.port, 10, tls)
        held = _held(replaced, server.port)
        assert sum(held.values()) == 10 and min(held.values()) >= 3, held
        for conn in conns:
            conn.close()
    finally:
        server.stop()


def test_a_connection_that_outlives_the_server_closes_without_an_error(tmp_path: Path) -> None:
    """uvicorn's shutdown closes the server, then the connections still open: each one's
    close comes after the share file is closed, and is not counted there any more (it was
    counted in a closed map: an error logged per open connection at every shutdown)."""
    share_path = tmp_path / "connections"
    create_share(share_path, 2)
    errors: list[dict[str, Any]] = []
    made: list[asyncio.Transport] = []

    class Held(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            made.append(transport)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: errors.append(context))
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        share = Share(str(share_path))
        server = BalancedServer(loop, Held, listener, share, None, None, 8)
        _, writer = await asyncio.open_connection(*listener.getsockname())
        deadline = loop.time() + 60
        while not made and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert made, "the connection was not accepted"
        assert _slots(share_path) == [(os.getpid(), 1)]  # counted open
        server.close()
        made[0].close()
        writer.close()
        await server.wait_closed()
        for _ in range(10):  # the transport's connection_lost runs on a later turn
            await asyncio.sleep(0)
        listener.close()

    asyncio.run(main())
    assert errors == []
    assert _slots(share_path) == []  # the slot freed


def _slots(share: Path) -> list[tuple[int, int]]:
    """The claimed slots of a share file: (pid, open connections)."""
    return [slot for slot in struct.iter_unpack("<qq", share.read_bytes()) if slot[0]]
