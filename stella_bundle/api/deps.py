"""What every route depends on: the app's context, the caller's scope, an open store."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from fastapi import Depends, HTTPException, Request, Security
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..store import ObservationStore, StoreError, open_store
from .metrics import ApiMetrics
from .models import ErrorBody
from .settings import ApiSettings
from .tokens import grants

# The dashboard's cookie: set by /ui/login, accepted on the dashboard's GET pages only (a
# cookie sent by a browser on a cross-site POST must never write anything); see api/ui.py.
UI_COOKIE: Final = "stella_token"

bearer = HTTPBearer(
    auto_error=False,
    description="A token made with `stella serve token add`; scopes read < write < admin.",
)


@dataclass
class ApiContext:
    settings: ApiSettings
    metrics: ApiMetrics
    # One runtime-trace ingest at a time: they append to the bridge's one chain.
    runtime_lock: threading.Lock = field(default_factory=threading.Lock)


def context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


@dataclass(frozen=True)
class Caller:
    name: str
    scopes: tuple[str, ...]


class StoreDown(Exception):
    """The store could not be opened; answered 503."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def authenticate_token(request: Request, token: str | None, needed: str) -> Caller:
    tokens = context(request).settings.tokens
    if tokens is None:  # loopback without tokens (stella serve refuses it elsewhere)
        return Caller("anonymous", ("admin",))
    challenge = {"WWW-Authenticate": "Bearer"}
    if token is None:
        raise HTTPException(401, "a bearer token is required", headers=challenge)
    entry = tokens.authenticate(token)
    if entry is None:
        raise HTTPException(401, "the bearer token is not known to this server", headers=challenge)
    if not grants(entry.scopes, needed):
        raise HTTPException(
            403, f"token {entry.name!r} lacks the {needed!r} scope this operation needs"
        )
    return Caller(entry.name, entry.scopes)


def require(scope: str) -> Any:
    """A dependency: the caller's bearer token must grant `scope`."""

    def check(
        request: Request, credentials: HTTPAuthorizationCredentials | None = Security(bearer)
    ) -> Caller:
        return authenticate_token(request, credentials.credentials if credentials else None, scope)

    return Depends(check)


def _query_names(dependant: Dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def reject_unknown_query(request: Request) -> None:
    """A query parameter the operation does not know is refused (422), never ignored: a typo
    such as `?form=` would otherwise widen a query without a word."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.query_params:
        return
    known = _query_names(route.dependant)
    for name in request.query_params:
        if name not in known:
            expected = ", ".join(sorted(known)) or "none"
            raise RequestValidationError(
                [
                    {
                        "loc": ("query", name),
                        "msg": f"unknown query parameter (expected: {expected})",
                        "type": "unknown_parameter",
                    }
                ]
            )


def open_request_store(request: Request) -> Iterator[ObservationStore]:
    """A store for this request (stores are not shared between threads), closed after it."""
    ctx = context(request)
    try:
        store = open_store(ctx.settings.store_url)
    except StoreError as exc:
        raise StoreDown(exc.describe()) from exc
    try:
        yield store
    finally:
        store.close()


ERROR_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    400: {"model": ErrorBody, "description": "The request body cannot be read (not JSON)."},
    401: {"model": ErrorBody, "description": "No bearer token, or an unknown one."},
    403: {"model": ErrorBody, "description": "The token lacks the scope needed."},
    413: {"model": ErrorBody, "description": "The request body is over the server's limit."},
    422: {"model": ErrorBody, "description": "The request is malformed or its content refused."},
    503: {"model": ErrorBody, "description": "The store cannot be reached."},
}


def responses(
    *codes: int, more: dict[int | str, dict[str, Any]] | None = None
) -> dict[int | str, dict[str, Any]]:
    """The documented answers: `more` (other successes), the common errors and `codes`."""
    extra: dict[int, dict[str, Any]] = {
        404: {"model": ErrorBody, "description": "No such function map."},
        409: {
            "model": ErrorBody,
            "description": "Conflicts with what is stored (a chunk).",
        },
    }
    return {**(more or {}), **ERROR_RESPONSES, **{code: extra[code] for code in codes}}
