"""Operator endpoints: `/healthz` (alive), `/readyz` (the store answers), `/metrics`,
`/api/v1/store/status` (admin)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from ..store import ObservationStore, StoreError, open_store
from .deps import context, open_request_store, require, responses
from .models import ErrorBody, Health, Readiness

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health)
def healthz() -> Any:
    """The process answers (no store access, no token: for liveness probes)."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": ErrorBody, "description": "The store cannot be reached."}},
)
def readyz(request: Request) -> Any:
    """Ready when the store opens with the schema this server writes (no token: for
    readiness probes; the answer names the store without its password)."""
    ctx = context(request)
    try:
        with open_store(ctx.settings.store_url) as store:
            store.schema_version()
            return {"status": "ready", "store": store.display_url, "backend": store.backend}
    except StoreError as exc:
        ctx.metrics.store_unavailable.inc()
        return JSONResponse({"detail": f"store unavailable: {exc.describe()}"}, status_code=503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        **responses(),
    },
    dependencies=[require("read")],
)
def metrics(request: Request) -> Response:
    """Prometheus exposition of `stella_api_*` (needs a read token: scrape with
    `authorization: {credentials_file: …}`)."""
    return Response(context(request).metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/api/v1/store/status",
    responses=responses(),
    dependencies=[require("admin")],
    response_model=dict[str, Any],
)
def store_status(store: Annotated[ObservationStore, Depends(open_request_store)]) -> Any:
    """`stella store status` of the server's store: schema, counts, partitions."""
    return store.status().to_dict()
