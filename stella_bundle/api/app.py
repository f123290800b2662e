"""`create_app(settings)`: the REST API and the coverage dashboard as one ASGI application.

Every failure is answered with `{"detail": "<one line>"}`: the library's exceptions are mapped
by kind (bad input 422, refused evidence 422, conflicting chunk 409, store down 503), never
with a traceback. Unexpected exceptions are a 500 and a bug.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Receive, Scope, Send

from .. import __version__
from ..errors import ConfigError, InputError, StellaError, VerificationFailure
from ..store import ChunkConflictError, StoreError
from ..store.config import scheme_type
from . import routes_data, routes_maps, routes_ops, routes_runtime, ui
from .deps import ApiContext, StoreDown, StorePool, context, reject_unknown_query
from .metrics import ApiMetrics
from .middleware import BodySizeLimit, RequestMetrics
from .operations import NotFound
from .settings import ApiSettings
from .verify_route import VerifyLane, VerifyRoute

log = logging.getLogger("stella.api")

DESCRIPTION = """\
The stella-bundle API: function maps, verification reports (the same documents as the CLI),
coverage over time, sealed evidence upload, stored observations, the Tetragon bridge's runtime
traces, health and metrics. Authentication: `Authorization: Bearer <token>` with scopes
read < write < admin (`stella serve token add`).
"""


def _answer(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


def _validation_line(exc: RequestValidationError) -> str:
    """FastAPI's list of validation errors as one line: where (body.chains.0.chain_id,
    query.limit) and what was expected, the first error first."""
    errors = exc.errors()
    parts = []
    for error in errors[:3]:
        where = ".".join(str(item) for item in error.get("loc", ()))
        parts.append(f"field '{where}': {error.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return "; ".join(parts) + more


def _allowed_methods(app: FastAPI, request: Request) -> list[str]:
    # Starlette answers 405 with the methods of the first route of the path only; a path
    # served by two routes (GET and POST /function-maps) must list both.
    allowed = []
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in app.router.routes):
            allowed.append(method)
    return allowed


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(app, request))
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _answer(422, _validation_line(exc))

    @app.exception_handler(StoreDown)
    async def store_down(request: Request, exc: StoreDown) -> JSONResponse:
        context(request).metrics.store_unavailable.inc()
        return _answer(503, f"store unavailable: {exc.message}")

    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError) -> JSONResponse:
        # Unavailable mid-operation or schema not the current one: the server's problem, and
        # the operation kept nothing (every store write is one transaction).
        context(request).metrics.store_unavailable.inc()
        return _answer(503, f"store unavailable: {exc.describe()}")

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> JSONResponse:
        return _answer(404, exc.message)

    @app.exception_handler(ChunkConflictError)
    async def conflict(request: Request, exc: ChunkConflictError) -> JSONResponse:
        return _answer(409, exc.describe())

    @app.exception_handler(VerificationFailure)
    async def refused(request: Request, exc: VerificationFailure) -> JSONResponse:
        return _answer(422, f"verification failed, nothing stored: {exc.describe()}")

    @app.exception_handler(InputError)
    async def bad_input(request: Request, exc: InputError) -> JSONResponse:
        return _answer(422, exc.describe())

    @app.exception_handler(StellaError)
    async def internal(request: Request, exc: StellaError) -> JSONResponse:
        log.error("internal error: %s", exc.describe())
        return _answer(500, f"internal error: {exc.describe()}")


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    ctx: ApiContext = app.state.ctx
    ctx.stores.drain()  # the stores kept open between requests
    ctx.verify_threads.stop()


class StellaApi(FastAPI):
    """The app, with `POST …/verify`'s common request taken before its middleware stack
    (`VerifyLane`); every other request is FastAPI's."""

    lane: VerifyLane | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lane = self.lane
        map_id = None if lane is None else lane.map_id(scope)
        if map_id is None or lane is None:
            await super().__call__(scope, receive, send)
            return
        await lane(map_id, scope, receive, send, super().__call__)


def _verify_route() -> VerifyRoute:
    (route,) = (r for r in routes_maps.router.routes if isinstance(r, VerifyRoute))
    return route


def create_app(settings: ApiSettings) -> FastAPI:
    """The API over `settings.store_url`, verifying with `settings.trust_root`."""
    if scheme_type(settings.store_url) == "memory":
        # Each request opens its own store; an in-process memory store would be a new empty
        # one every time. Memory is the agent's buffer, not a store to serve.
        raise ConfigError(
            "the API needs a persistent store (sqlite:///PATH or postgresql://…), not memory://",
            field="--store",
        )
    app = StellaApi(
        title="stella-bundle API",
        version=__version__,
        description=DESCRIPTION,
        # Served from this app itself (no CDN): the dashboard is the human interface; the
        # Swagger/ReDoc pages would pull scripts from the internet, so they are off.
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(reject_unknown_query)],
        lifespan=_lifespan,
    )
    metrics = ApiMetrics()
    app.state.ctx = ApiContext(settings, metrics, StorePool(settings.store_url))
    _install_handlers(app)
    for module in (routes_maps, routes_data, routes_runtime, routes_ops, ui):
        app.include_router(module.router)
    # The last added is outermost: metrics see every answer, 413s of the limit included;
    # the limit refuses before anything parses.
    app.add_middleware(BodySizeLimit, limit=settings.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.lane = VerifyLane(app.state.ctx, _verify_route())
    return app
