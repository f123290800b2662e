"""uvicorn's httptools protocol with a bound on the request head (request line and headers).

httptools (llhttp) sets no limit of its own: a client that sends header bytes and never the
blank line that ends them was buffered without end (40 MB of one header held by one
connection, measured; a few such connections exhaust the server's memory). Past
`MAX_REQUEST_HEAD_BYTES` the request is answered 431 and the connection closed, before the
app sees it. Bodies are bounded by `BodySizeLimit` (middleware.py), a head here.

Slow clients are bounded in time (uvicorn has no such bound: its keep-alive timer runs only
between a response and the next request, so a connection that sends nothing, or its head or
body a byte at a time, was held for ever):

- a request's line and headers must arrive within `head_seconds` of its first byte (of the
  connection's opening for the first request): past it 408 and the connection closed (closed
  silently when not a byte came);
- a body gets `body_seconds`, and another second for each `body_min_rate` bytes received (a
  large upload over a slow link goes on; one trickled byte by byte does not): past it 408 and
  the connection closed. Time while the server itself is not reading (its flow control) is not
  counted against the client.

How many connections a worker holds is uvicorn's `limit_concurrency` (server.py): past it,
requests are answered 503.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Final

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# Several times what browsers and proxies send (nginx reads 32 KiB of headers by default,
# Apache 100 fields of 8 KiB); the dashboard's cookie and a bearer token are under 1 KiB.
MAX_REQUEST_HEAD_BYTES: Final = 64 << 10


@dataclass(frozen=True)
class SlowClientLimits:
    """The time bounds above (`stella serve --header-timeout/--body-timeout`)."""

    head_seconds: float = 20.0
    body_seconds: float = 20.0
    body_min_rate: int = 500  # bytes per second


DEFAULT_SLOW_CLIENT_LIMITS: Final = SlowClientLimits()
# The uvicorn Config attribute carrying them to the protocol (pickled with the config into
# each worker process of `--workers N`).
LIMITS_ATTRIBUTE: Final = "stella_slow_client_limits"


class BoundedHeadProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` answering 431 once a request's head passes the bound, 408 when a
    head or body arrives too slowly."""

    _head_bytes = 0
    _in_head = True
    _head_timer: asyncio.TimerHandle | None = None
    _body_timer: asyncio.TimerHandle | None = None
    _body_bytes = 0
    _body_started = 0.0
    _body_checked = 0.0
    _body_credit = 0.0

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self._limits: SlowClientLimits = getattr(
            config, LIMITS_ATTRIBUTE, DEFAULT_SLOW_CLIENT_LIMITS
        )

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._in_head = True
        if self._head_timer is None:  # a later request of a kept-alive connection
            self._start_head_timer()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_timers()
        super().on_headers_complete()
        if not self.transport.is_closing():
            now = self.loop.time()
            self._body_bytes, self._body_credit = 0, 0.0
            self._body_started = self._body_checked = now
            self._body_timer = self.loop.call_later(self._limits.body_seconds, self._check_body)

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._cancel_timers()
        super().on_message_complete()

    def _start_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self._limits.head_seconds, self._head_too_slow)

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._head_bytes == 0 and self._in_head:
            self.transport.close()  # not a byte of a request: nobody to answer
            return
        self._refuse(
            408,
            "Request Timeout",
            f"request line and headers not received within {self._limits.head_seconds:g} s",
        )

    def _check_body(self) -> None:
        self._body_timer = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        if self.flow.read_paused:  # the server's own back-pressure, not the client's pace
            self._body_credit += now - self._body_checked
        self._body_checked = now
        deadline = (
            self._body_started
            + self._limits.body_seconds
            + self._body_bytes / self._limits.body_min_rate
            + self._body_credit
        )
        if now < deadline:
            self._body_timer = self.loop.call_later(deadline - now, self._check_body)
            return
        if self.cycle is not None:
            self.cycle.disconnected = True  # the app's answer, if it comes, goes nowhere
            self.cycle.message_event.set()
            if self.cycle.response_started:
                self.transport.close()
                return
        self._refuse(
            408,
            "Request Timeout",
            f"request body not received within {self._limits.body_seconds:g} s and one more "
            f"second per {self._limits.body_min_rate} bytes",
        )

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Counted after the parser took the bytes: if the head ended in them, nothing is
        # counted; if it did not, they are all head (at most one read of another message's
        # tail counted with them).
        if self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_REQUEST_HEAD_BYTES:
                self._refuse_head()

    def _refuse_head(self) -> None:
        self._cancel_timers()
        self._refuse(
            431,
            "Request Header Fields Too Large",
            "request line and headers larger than the server's limit of "
            f"{MAX_REQUEST_HEAD_BYTES} bytes",
        )

    def _refuse(self, status: int, reason: str, detail: str) -> None:
        """Answer before (or instead of) the app, and close the connection."""
        body = json.dumps({"detail": detail}).encode()
        self.transport.write(
            f"HTTP/1.1 {status} {reason}\r\n".encode() + b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + body
        )
        self.transport.close()
