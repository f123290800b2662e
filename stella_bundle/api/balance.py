"""Connections shared evenly between the worker processes of `stella serve --workers N`.

uvicorn's supervisor binds one listening socket and every worker polls it; on a new
connection each worker's event loop is woken and libuv's accept loop takes every connection
pending, so whichever process the scheduler runs first takes a burst whole. With 50 keep-alive
clients connecting at once, one worker held 39 connections and the other 11 (measured): the
clients of the first waited 3.5 times longer, and the p99 latency was theirs. Keep-alive
connections stay with the worker that accepted them, so the split at accept time is the split
of the load.

Here each worker accepts one connection at a time from the same socket, and the worker with
the fewest open connections goes first: the others wait `DEFER_SECONDS` and take a connection
only if it is still pending then (the fewest-connections worker is busy or gone), so a
connection is never left waiting on one process. The open-connection counts are published in
a small file every worker maps (`Share`): one slot per worker, claimed under a lock held for
the process's life, holding its pid and its count. A slot of a process that no longer runs is
ignored.

`new_event_loop` is uvicorn's loop factory in the workers (`loop=` of its config): uvloop's
loop whose `create_server` on the supervisor's socket returns a `BalancedServer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import mmap
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from ssl import SSLContext
from typing import Any, Final

import uvloop

log = logging.getLogger("stella.api")

# The path of the share file, set by the supervisor for its workers.
SHARE_VARIABLE: Final = "STELLA_SERVE_BALANCE"
# Seconds a TLS client has for its handshake (`stella serve --header-timeout`, set by the
# server for its workers): asyncio's default is 60 s, and uvicorn counts a connection (for
# --max-connections and the head's timer) only once its handshake is done.
HANDSHAKE_VARIABLE: Final = "STELLA_SERVE_HANDSHAKE_TIMEOUT"
# How long a worker with more connections than another leaves a pending connection to the
# one with fewer: longer than a busy event loop's turn (a verify body's decoding, ~1 ms), short
# beside a request.
DEFER_SECONDS: Final = 0.005
# After an accept error that is the server's (out of file descriptors, of memory): a pause
# before the next attempt, as asyncio's own servers do.
ACCEPT_ERROR_PAUSE: Final = 0.1
_SLOT: Final = struct.Struct("<qq")  # pid, open connections


def share_size(workers: int) -> int:
    """Bytes of a share file for `workers` processes: slots for restarts (a replacement may
    start before the worker it replaces has left) and for SIGTTIN's extra workers."""
    return _SLOT.size * max(64, 4 * workers)


def create_share(path: Path, workers: int) -> None:
    """The supervisor's file of free slots (zeros), readable by its user only."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(descriptor, share_size(workers))
    finally:
        os.close(descriptor)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process has taken the pid: not a worker
        return False
    return True


class Share:
    """This worker's slot in the share file, and the counts of the others."""

    def __init__(self, path: str) -> None:
        self._file = Path(path).open("r+b")  # noqa: SIM115 (open for the process's life)
        self._map = mmap.mmap(self._file.fileno(), 0)
        self.slot = self._claim()
        self.publish(0)

    def _claim(self) -> int:
        for slot in range(len(self._map) // _SLOT.size):
            try:
                # Held until the process ends: a slot is never claimed twice at once.
                fcntl.lockf(
                    self._file, fcntl.LOCK_EX | fcntl.LOCK_NB, _SLOT.size, slot * _SLOT.size
                )
            except OSError:
                continue
            return slot
        raise RuntimeError("no free slot in the share file")

    def publish(self, connections: int) -> None:
        if self._map.closed:  # the server closed: its connections end after, uncounted
            return
        _SLOT.pack_into(self._map, self.slot * _SLOT.size, os.getpid(), connections)

    def fewest(self, connections: int) -> bool:
        """Whether no other running worker has fewer open connections than `connections`."""
        for slot, (pid, count) in enumerate(_SLOT.iter_unpack(self._map)):
            if slot != self.slot and pid and count < connections and _alive(pid):
                return False
        return True

    def close(self) -> None:
        _SLOT.pack_into(self._map, self.slot * _SLOT.size, 0, 0)
        self._map.close()
        self._file.close()  # the slot's lock goes with it


class BalancedServer(asyncio.AbstractServer):
    """Accepts from a listening socket shared with other processes, one connection at a time,
    the worker with the fewest open connections first (see the module's text)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        sock: socket.socket,
        share: Share,
        tls: SSLContext | None,
        handshake_timeout: float | None,
        backlog: int,
    ) -> None:
        self._loop = loop
        self._factory = protocol_factory
        self._sock = sock
        self._share = share
        self._tls = tls
        self._handshake_timeout = handshake_timeout
        self._open: set[asyncio.BaseProtocol] = set()
        self._starting: set[asyncio.Task[None]] = set()
        sock.setblocking(False)
        sock.listen(backlog)  # the supervisor binds it; each worker's listen is the same
        self._accepting = loop.create_task(self._accept_loop())

    async def _readable(self) -> None:
        ready: asyncio.Future[None] = self._loop.create_future()
        fd = self._sock.fileno()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        self._loop.add_reader(fd, wake)
        try:
            await ready
        finally:
            self._loop.remove_reader(fd)

    async def _accept_loop(self) -> None:
        while True:
            await self._readable()
            if not self._share.fewest(len(self._open)):
                await asyncio.sleep(DEFER_SECONDS)  # the other worker's turn, if it takes it
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                continue  # taken by another worker, or gone before it was accepted
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS, ENOMEM
                log.error("accepting a connection: %s", exc)
                await asyncio.sleep(ACCEPT_ERROR_PAUSE)
                continue
            task = self._loop.create_task(self._connect(conn))
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)

    def _counted(self) -> asyncio.BaseProtocol:
        """uvicorn's protocol for one connection, counted open until its connection_lost."""
        protocol = self._factory()
        lost = protocol.connection_lost

        def connection_lost(exc: Exception | None) -> None:
            try:
                lost(exc)
            finally:
                self._closed(protocol)

        protocol.connection_lost = connection_lost  # type: ignore[method-assign]
        self._open.add(protocol)
        self._share.publish(len(self._open))
        return protocol

    def _closed(self, protocol: asyncio.BaseProtocol) -> None:
        if protocol in self._open:
            self._open.discard(protocol)
            self._share.publish(len(self._open))

    async def _connect(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        protocol = self._counted()
        options: dict[str, Any] = {}
        if self._tls is not None:
            options = {"ssl": self._tls, "ssl_handshake_timeout": self._handshake_timeout}
        try:
            await self._loop.connect_accepted_socket(lambda: protocol, conn, **options)
        except Exception as exc:  # a failed TLS handshake, a client gone: its own business
            log.debug("connection not established: %s", exc)
            self._closed(protocol)
            conn.close()

    # -- asyncio.AbstractServer, as uvicorn uses it ------------------------------------------

    def close(self) -> None:
        if self._accepting.done():
            return
        self._accepting.cancel()
        for task in self._starting:
            task.cancel()
        self._share.close()

    async def wait_closed(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await self._accepting

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return not self._accepting.done()

    async def start_serving(self) -> None:
        pass  # serving from the start

    async def serve_forever(self) -> None:
        await self._accepting

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return (self._sock,)


def _handshake_seconds() -> float | None:
    value = os.environ.get(HANDSHAKE_VARIABLE)
    return float(value) if value else None


class BalancedLoop(uvloop.Loop):  # type: ignore[misc]
    """uvloop's loop; a server on a socket given by uvicorn's supervisor is balanced with the
    other workers' when the supervisor made a share file (`SHARE_VARIABLE`); TLS handshakes
    are bounded by `HANDSHAKE_VARIABLE`'s seconds."""

    async def create_server(  # type: ignore[override]
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        host: Any = None,
        port: Any = None,
        *,
        sock: socket.socket | None = None,
        ssl: SSLContext | None = None,
        ssl_handshake_timeout: float | None = None,
        backlog: int = 100,
        **options: Any,
    ) -> asyncio.AbstractServer:
        if ssl is not None and ssl_handshake_timeout is None:
            ssl_handshake_timeout = _handshake_seconds()
        path = os.environ.get(SHARE_VARIABLE)
        if sock is None or path is None:
            server: asyncio.AbstractServer = await super().create_server(
                protocol_factory,
                host,
                port,
                sock=sock,
                ssl=ssl,
                ssl_handshake_timeout=ssl_handshake_timeout,
                backlog=backlog,
                **options,
            )
            return server
        return BalancedServer(
            self, protocol_factory, sock, Share(path), ssl, ssl_handshake_timeout, backlog
        )


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvicorn's `loop` factory of `stella serve`."""
    return BalancedLoop()
