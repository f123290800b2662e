"""What every route depends on: the app's context, the caller's scope, an open store."""

from __future__ import annotations

import asyncio
import contextlib
import email.message
import queue
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import orjson
from fastapi import Depends, HTTPException, Request, Response, Security
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..errors import MalformedDocumentError
from ..jsonio import parse_json, refuse_repeated_outer_keys
from ..store import ObservationStore, StoreError, open_store
from .metrics import ApiMetrics
from .models import BODY_SOURCE, ErrorBody
from .settings import ApiSettings
from .tokens import grants

# The dashboard's cookie: set by /ui/login, accepted on the dashboard's GET pages only (a
# cookie sent by a browser on a cross-site POST must never write anything); see api/ui.py.
UI_COOKIE: Final = "stella_token"
VERIFY_THREADS: Final = 2

T = TypeVar("T")

bearer = HTTPBearer(
    auto_error=False,
    description="A token made with `stella serve token add`; scopes read < write < admin.",
)


class StoreDown(Exception):
    """The store could not be opened; answered 503."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class StorePool:
    """Open stores kept between requests. Opening one per request cost about a millisecond
    for SQLite (a connection, its pragmas, the schema check) and a connection set-up for
    PostgreSQL. A store serves one request at a time; it goes back to the pool only when it
    says it is reusable (still the store the URL names, its connection idle), and a store
    failure empties the pool, so a retry never meets a connection from before the failure."""

    def __init__(self, url: str, keep: int = 16) -> None:
        self.url = url
        self.keep = keep
        self._idle: list[ObservationStore] = []
        self._lock = threading.Lock()

    def acquire(self) -> ObservationStore:
        while True:
            with self._lock:
                store = self._idle.pop() if self._idle else None
            if store is None:
                return open_store(self.url)
            if store.reusable():
                return store
            store.close()

    def release(self, store: ObservationStore) -> None:
        with self._lock:
            if len(self._idle) < self.keep:
                self._idle.append(store)
                return
        store.close()

    def drain(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for store in idle:
            store.close()

    @contextmanager
    def lease(self) -> Iterator[ObservationStore]:
        """A store for one request alone (stores are not shared between threads), back to the
        pool after it; closed instead when the request failed, and on a store failure the
        pool is emptied too. A store that cannot be opened is `StoreDown` (503)."""
        try:
            store = self.acquire()
        except StoreError as exc:
            raise StoreDown(exc.describe()) from exc
        try:
            yield store
        except StoreError:
            store.close()
            self.drain()
            raise
        except BaseException:
            store.close()
            raise
        self.release(store)


def _settle(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():  # the request was cancelled (its client left) meanwhile
        return
    if isinstance(error, StopIteration):
        # A future refuses it (TypeError in this callback, the request left waiting forever):
        # raised as coroutines and anyio's threads raise it.
        wrapped = RuntimeError("the verification raised StopIteration")
        wrapped.__cause__ = error
        error = wrapped
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


class VerifyThreads:
    """The threads verifications run in, fed from the event loop by a queue.

    A verification is Python holding the GIL: however many threads run them, one computes at
    a time; with FastAPI's pool (40) every request in flight had a thread, and they spent the
    CPU handing the GIL round. Two: one computes while the other waits on the store. Handed
    over with anyio's `to_thread.run_sync` each call cost about 100 us more CPU than the work
    (a cancel scope, the limiter's bookkeeping, a context copy: 202 against 104 us for 50 us
    of work, 25 calls in flight, measured); here a put on a C queue and one call back to the
    loop. A request cancelled meanwhile (its client left) leaves the thread to finish the
    work, as anyio's call did, and the answer is dropped."""

    def __init__(self, count: int) -> None:
        self._count = count
        self._queue: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        if not self._threads:
            self._start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((loop, future, work, args))
        return await future

    def _start(self) -> None:
        for number in range(self._count):
            thread = threading.Thread(target=self._serve, name=f"verify-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self) -> None:
        while (item := self._queue.get()) is not None:
            loop, future, work, args = item
            value, error = None, None
            try:
                value = work(*args)
            except BaseException as exc:  # the request's to answer, on the loop
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody to answer
                loop.call_soon_threadsafe(_settle, future, value, error)

    def stop(self) -> None:
        """The threads end once the work queued before is done (the app's shutdown)."""
        for _ in self._threads:
            self._queue.put(None)
        self._threads.clear()


@dataclass
class ApiContext:
    settings: ApiSettings
    metrics: ApiMetrics
    stores: StorePool
    # One runtime-trace ingest at a time: they append to the bridge's one chain.
    runtime_lock: threading.Lock = field(default_factory=threading.Lock)
    verify_threads: VerifyThreads = field(default_factory=lambda: VerifyThreads(VERIFY_THREADS))


def context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


@dataclass(frozen=True)
class Caller:
    name: str
    scopes: tuple[str, ...]


_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})
_JSON_HEADER: Final = (b"content-type", b"application/json")


def _is_json_type(content_type: str) -> bool:
    """`application/json` or `application/<x>+json`, parameters aside (FastAPI's own test)."""
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def parse_body_json(body: bytes, *, unique_keys: bool) -> Any:
    """A request's JSON body by the toolkit's JSON rule (`jsonio.parse_json`): UTF-8 only, no
    NaN or Infinity, bounded nesting and integers; with `unique_keys`, an object naming a key
    twice is refused too. Anything refused is a 422 naming what is wrong (FastAPI would answer
    some of it 400 "There was an error parsing the body", and read UTF-16 or NaN).

    Without `unique_keys` (the verify body: a stream of records, whose keys are last-wins
    like an NDJSON line's) orjson reads it first (C; a 1,000-record verify body in a fifth
    of the standard library's time, on the event loop), and only the outermost object's keys
    must be unique (`{"observations": [...], "observations": [...]}` is refused); what orjson
    refuses goes through the rule, which names the fault."""
    try:
        if not unique_keys:
            try:
                value = orjson.loads(body)
            except orjson.JSONDecodeError:
                pass
            else:
                refuse_repeated_outer_keys(body, BODY_SOURCE)
                return value
        return parse_json(body, BODY_SOURCE)
    except MalformedDocumentError as exc:
        raise HTTPException(422, exc.describe()) from exc


class _JsonRequest(Request):
    """A request whose JSON body is read by `parse_body_json`."""

    unique_keys = False

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_body_json(await self.body(), unique_keys=self.unique_keys)
        return self._json


class _UniqueKeysJsonRequest(_JsonRequest):
    unique_keys = True


class JsonBodyRoute(APIRoute):
    """The route class of routers whose operations take JSON bodies (`_JsonRequest`).

    A body sent with a Content-Type that is not JSON is refused (415) before anything reads
    it: FastAPI would hand the bytes to the body model and answer "Input should be a valid
    dictionary", which names neither the header nor what it should say. A body sent without
    one is read as JSON."""

    request_class: type[_JsonRequest] = _JsonRequest

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        request_class = self.request_class

        async def with_json(request: Request) -> Response:
            content_type = request.headers.get("content-type")
            scope = request.scope
            if content_type is None:
                # No Content-Type (curl --data-binary, a bare client): the body is read as
                # JSON, as the function-map upload always read it.
                scope = {**scope, "headers": [*scope["headers"], _JSON_HEADER]}
            elif request.method in _BODY_METHODS and not _is_json_type(content_type):
                return JSONResponse(
                    {
                        "detail": f"header 'Content-Type': {content_type[:80]!r} is not JSON; "
                        "send the body as application/json"
                    },
                    status_code=415,
                )
            return await handler(request_class(scope, request.receive))

        return with_json


class UniqueKeysJsonBodyRoute(JsonBodyRoute):
    """`JsonBodyRoute` whose bodies are documents (an evidence upload): a key named twice in
    one object is refused, as in every document the toolkit reads (`jsonio.parse_json`)."""

    request_class = _UniqueKeysJsonRequest


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

    # async: a hash and a comparison, no I/O; run on the event loop, not in a worker thread
    # (each thread hop is a GIL hand-over under load).
    async def check(
        request: Request, credentials: HTTPAuthorizationCredentials | None = Security(bearer)
    ) -> Caller:
        return authenticate_token(request, credentials.credentials if credentials else None, scope)

    return Depends(check)


def _query_names(dependant: Dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def reject_unknown_query(request: Request) -> None:
    """A query parameter the operation does not know is refused (422), never ignored: a typo
    such as `?form=` would otherwise widen a query without a word. So is one given twice
    (`?from=A&from=B`: every parameter takes one value, and which would count is a guess)."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.query_params:
        return
    seen: set[str] = set()
    for name, _ in request.query_params.multi_items():
        if name in seen:
            raise RequestValidationError(
                [
                    {
                        "loc": ("query", name),
                        "msg": "given more than once; each query parameter takes one value",
                        "type": "repeated_parameter",
                    }
                ]
            )
        seen.add(name)
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
    """A store for this request (`StorePool.lease`)."""
    with context(request).stores.lease() as store:
        yield store


async def store_pool(request: Request) -> StorePool:
    """The pool itself, for an operation that leases its store in the thread that does its
    work (one thread hop per request instead of three: lease, work, return)."""
    return context(request).stores


ERROR_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    400: {
        "model": ErrorBody,
        "description": "The request cannot be read (Content-Length not a number).",
    },
    401: {"model": ErrorBody, "description": "No bearer token, or an unknown one."},
    403: {"model": ErrorBody, "description": "The token lacks the scope needed."},
    413: {"model": ErrorBody, "description": "The request body is over the server's limit."},
    415: {
        "model": ErrorBody,
        "description": "The request body is not JSON (Content-Type) or is compressed "
        "(Content-Encoding).",
    },
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
