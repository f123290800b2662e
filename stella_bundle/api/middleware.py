"""ASGI layers around the API: the request body limit (413, and 415 for a compressed body)
and request metrics.

Both are plain ASGI (not Starlette's BaseHTTPMiddleware): the limit must wrap `receive` to
count the bytes of a body sent without Content-Length, and plain ASGI adds no task per request.
"""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .metrics import ApiMetrics


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


def within_limit(scope: Scope, limit: int) -> bool:
    """A request `BodySizeLimit` lets through untouched: no Content-Encoding, a Content-Length
    of digits within `limit` (httptools reads exactly that many bytes of body)."""
    length = None
    for name, value in scope["headers"]:
        if name == b"content-encoding":
            return False
        if name == b"content-length":
            length = value
    return length is not None and length.isdigit() and int(length) <= limit


class BodySizeLimit:
    """Refuse request bodies over `limit` bytes with 413: at once when Content-Length says so,
    else as soon as the bytes read pass the limit (nothing of the request is processed)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    def _refusal(self) -> dict[str, Any]:
        return {"detail": f"request body larger than the server's limit of {self.limit} bytes"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-encoding" and value.strip().lower() not in (b"", b"identity"):
                # Never inflated here: a compressed body would pass the limit as sent and
                # become anything once inflated (a bomb); say so rather than read it as JSON.
                shown = value.decode("latin-1")[:40]
                await _send_json(
                    send,
                    415,
                    {
                        "detail": f"header 'Content-Encoding': {shown!r} is not accepted; "
                        "send the body uncompressed"
                    },
                )
                return
            if name == b"content-length":
                if not value.isdigit():
                    await _send_json(send, 400, {"detail": "Content-Length is not a number"})
                    return
                if int(value) > self.limit:
                    await _send_json(send, 413, self._refusal())
                    return
        received = 0
        started = False
        refused = False

        async def limited_receive() -> Message:
            # Past the limit: answer 413 here and tell the app the client left, so it stops
            # reading; whatever it answers then is dropped (one answer per request).
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit and not refused:
                    refused = True
                    if not started:
                        await _send_json(send, 413, self._refusal())
                    return {"type": "http.disconnect"}
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except Exception:
            if not refused:
                raise


class RequestMetrics:
    """Count requests and their latency per route template (never the raw path: bounded
    label values) and status code."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        begin = time.perf_counter()

        async def watched_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(
                scope["method"], template, status, time.perf_counter() - begin
            )
