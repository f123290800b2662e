"""The route of `POST /api/v1/function-maps/{map_id}/verify`: its common requests answered
without FastAPI's per-request machinery.

A verification is the API's hot path (fleets post observations continuously). Through FastAPI
it cost about 2 ms of CPU beside the verification's own 2 ms: dependency solving, a Request
object, pydantic over the body's model, the JSON parse on the event loop and a thread hop.
Here a request the typed decoder takes (a JSON body, a known bearer token with the write
scope, a well-formed map id, no query) is read, decoded, verified, stored and answered by
plain ASGI (see `_answer`). Anything else, and every refusal of the token, body or id, is handed to the
FastAPI operation this route also is (with the body read so far), which answers it as it
always has; the operation is also what the OpenAPI document describes. Errors raised by the
verification itself (an unknown map, a bad record, the store down) go to the app's exception
handlers, the same answers as from the operation.
"""

from __future__ import annotations

import re
import time
from typing import Any, Final

from fastapi.security.utils import get_authorization_scheme_param
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..coverage.compiled import FOLD
from . import operations
from .deps import ApiContext, JsonBodyRoute
from .middleware import within_limit
from .models import (
    DIGEST_PATTERN,
    ScannedVerifyBody,
    TypedVerifyBody,
    decode_verify_body,
    read_verify_body,
)
from .tokens import grants

_MAP_ID: Final = re.compile(DIGEST_PATTERN)
_SCOPE_NEEDED: Final = "write"
# Bodies up to this size are decoded on the event loop (see `_answer`): about 4,000 records,
# 3 ms at most.
INLINE_DECODE_MAX_BYTES: Final = 1 << 20


def _header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a header (names are lower case in ASGI), as Starlette reads it."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def _is_json(content_type: bytes | None) -> bool:
    # Stricter than FastAPI's test (`+json` types and odd spellings go to the operation).
    return (
        content_type is not None
        and content_type.split(b";", 1)[0].strip().lower() == b"application/json"
    )


def _authorised(ctx: ApiContext, scope: Scope) -> bool:
    """The caller would pass `require("write")`: the operation's own check, without raising
    (a refusal is the operation's to answer)."""
    tokens = ctx.settings.tokens
    if tokens is None:  # loopback without tokens: everyone is admin
        return True
    value = _header(scope, b"authorization")
    scheme, token = get_authorization_scheme_param(value.decode("latin-1") if value else None)
    if scheme.lower() != "bearer" or not token:
        return False
    entry = tokens.authenticate(token)
    return entry is not None and grants(entry.scopes, _SCOPE_NEEDED)


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body; None when the client left first (or the size limit answered:
    BodySizeLimit then says the client left)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` for the operation after this route read the body: the body, then the rest."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _verify(
    ctx: ApiContext, map_id: str, body: ScannedVerifyBody | TypedVerifyBody[Any]
) -> operations.VerifyAnswer:
    options = body.options()
    with ctx.stores.lease() as store:
        return operations.verify(store, map_id, options, body.records())


def _read_and_verify(ctx: ApiContext, map_id: str, raw: bytes) -> operations.VerifyAnswer | None:
    body = read_verify_body(raw)
    return None if body is None else _verify(ctx, map_id, body)


async def _answer(ctx: ApiContext, map_id: str, raw: bytes) -> operations.VerifyAnswer | None:
    """The verification of a body; None when the typed decoder refuses it.

    With the compiled fold, the body is read in a verification thread: its records checked
    from the bytes by the compiled scan and folded from them (`read_verify_body`; a body the
    scan does not take is decoded there), so the loop only reads the HTTP body. Without it, a
    small body is decoded on the event loop (CPU only, bounded by its size; decoded in the
    thread, its records were made farther from where they are folded: docs/api.md). The
    verification, which reads the map from the store and writes the report, runs in a
    verification thread, so the loop keeps serving while a store waits (a SQLite write lock
    held by an ingest, a PostgreSQL round trip or reconnection). Verifying a small body on the
    loop as well cost 10-20% less CPU per request under load (one hand-off fewer), but would
    stall every request of the process behind such a wait; with a SQLite connection that never
    waits it still stalled them behind the verifications themselves (/healthz answered in
    0.65-1.5 s during the bench, 23-25 ms with the threads; docs/api.md)."""
    if FOLD is not None or len(raw) > INLINE_DECODE_MAX_BYTES:
        return await ctx.verify_threads.run(_read_and_verify, ctx, map_id, raw)
    body = decode_verify_body(raw)
    if body is None:
        return None
    return await ctx.verify_threads.run(_verify, ctx, map_id, body)


def _takes(ctx: ApiContext, scope: Scope, map_id: str) -> bool:
    """The fast path's request: no query, a well-formed id, a JSON body, a write token."""
    return (
        scope["method"] == "POST"
        and not scope["query_string"]
        and _MAP_ID.match(map_id) is not None
        and _is_json(_header(scope, b"content-type"))
        and _authorised(ctx, scope)
    )


async def _respond(ctx: ApiContext, answer: operations.VerifyAnswer, send: Send) -> None:
    ctx.metrics.verifications.labels(str(answer.verified).lower()).inc()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(answer.encoded)).encode()),
                (b"x-stella-report-id", str(answer.report_id).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": answer.encoded})


class VerifyRoute(JsonBodyRoute):
    """The verify operation, with the fast path in front of it."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: ApiContext = scope["app"].state.ctx
        map_id = scope.get("path_params", {}).get("map_id", "")
        if not _takes(ctx, scope, map_id):
            await super().handle(scope, receive, send)
            return
        raw = await _read_body(receive)
        if raw is None:
            return
        answer = await _answer(ctx, map_id, raw)
        if answer is None:
            await super().handle(scope, _replay(raw, receive), send)
            return
        await _respond(ctx, answer, send)


class VerifyLane:
    """The fast path taken before the app's middleware and router (`StellaApi.__call__`):
    the eleven ASGI layers a request crosses to reach `VerifyRoute` (error, telemetry and
    body-limit middleware, metrics, the exception handlers' layer, the routers, most wrapping
    `send` or `receive`) held a worker's GIL in about a tenth of py-spy's samples under the
    bench's load; in process they are ~2% of a request's instructions (cachegrind).

    The lane takes what `VerifyRoute`'s fast path takes and what the two middlewares of our
    own would pass untouched (`within_limit`), and does their part: it counts the request in
    the metrics as `RequestMetrics` would. Everything else, a body the typed decoder refuses
    and any error of the verification go to the app whole (the body read so far replayed),
    which answers as it always has: an error is met again by `VerifyRoute`, inside the
    exception handlers (the verification stores nothing before its report, so it can run
    again)."""

    def __init__(self, ctx: ApiContext, route: VerifyRoute) -> None:
        self.ctx = ctx
        self.route = route
        self.template = route.path

    def map_id(self, scope: Scope) -> str | None:
        """The map id when the lane takes the request, else None."""
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            return None
        match = self.route.path_regex.match(scope["path"])
        if match is None:
            return None
        map_id: str = match["map_id"]
        ctx = self.ctx
        if not within_limit(scope, ctx.settings.max_body_bytes) or not _takes(ctx, scope, map_id):
            return None
        return map_id

    async def __call__(
        self, map_id: str, scope: Scope, receive: Receive, send: Send, app: ASGIApp
    ) -> None:
        ctx = self.ctx
        begin = time.perf_counter()
        raw = await _read_body(receive)
        if raw is None:  # the client left: counted as RequestMetrics counts it
            ctx.metrics.observe_request("POST", self.template, 500, time.perf_counter() - begin)
            return
        try:
            answer = await _answer(ctx, map_id, raw)
        except Exception:  # the app's handlers answer it: VerifyRoute meets it again there
            answer = None
        if answer is None:
            await app(scope, _replay(raw, receive), send)
            return
        await _respond(ctx, answer, send)
        ctx.metrics.observe_request("POST", self.template, 200, time.perf_counter() - begin)
