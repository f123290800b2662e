"""`/api/v1/function-maps`: store, list, read, verify, coverage over time."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from ..store import ObservationStore
from . import operations
from .deps import (
    JsonBodyRoute,
    StorePool,
    context,
    open_request_store,
    require,
    responses,
    store_pool,
)
from .models import (
    DATE_TIME,
    DIGEST_PATTERN,
    CoverageAnswer,
    FunctionMapDocument,
    FunctionMapList,
    FunctionMapStored,
    FunctionMapSummary,
    VerifyRequest,
)
from .settings import DEFAULT_TREND_WINDOWS, MAX_TREND_WINDOWS
from .verify_route import VerifyRoute

router = APIRouter(
    prefix="/api/v1/function-maps", tags=["function maps"], route_class=JsonBodyRoute
)

MapId = Annotated[
    str,
    Path(
        pattern=DIGEST_PATTERN,
        description="The map's digest, sha256:<hex> (or the bare hex).",
    ),
]
Store = Annotated[ObservationStore, Depends(open_request_store)]

_MAP_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "function-map.json (an in-toto Statement, stored unsigned) or "
        "function-map.dsse.json (its DSSE envelope, verified against the server's trust root "
        "for the function-map role, then stored as checked). Kept byte for byte: the digest "
        "is that of the Statement bytes.",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}


@router.post(
    "",
    status_code=201,
    response_model=FunctionMapStored,
    responses=responses(
        more={
            200: {
                "model": FunctionMapStored,
                "description": "Stored already (a copy no less signed than this one).",
            }
        }
    ),
    openapi_extra=_MAP_BODY,
    dependencies=[require("write")],
)
async def post_function_map(request: Request, response: Response, store: Store) -> Any:
    """Store a function map by its digest (idempotent; a checked envelope upgrades a copy)."""
    raw = await request.body()
    trust_root = context(request).settings.trust_root
    stored, created = await run_in_threadpool(operations.store_function_map, store, raw, trust_root)
    if not created:
        response.status_code = 200
    response.headers["Location"] = f"/api/v1/function-maps/{stored.digest}"
    return {**stored.summary(), "created": created}


@router.get(
    "",
    response_model=FunctionMapList,
    responses=responses(),
    dependencies=[require("read")],
)
def list_function_maps(store: Store) -> Any:
    """Every stored function map."""
    return {"function_maps": [m.summary() for m in store.list_function_maps()]}


@router.get(
    "/{map_id}",
    response_model=FunctionMapDocument,
    responses=responses(404),
    dependencies=[require("read")],
)
def get_function_map(map_id: MapId, store: Store) -> Any:
    """A stored function map: its summary, Statement and (when signed) envelope."""
    stored = operations.get_function_map(store, map_id)
    return {
        "summary": stored.summary(),
        "statement": json.loads(stored.statement),
        "envelope": json.loads(stored.envelope) if stored.envelope is not None else None,
    }


async def verify_function_map(
    map_id: MapId,
    body: VerifyRequest,
    request: Request,
    stores: Annotated[StorePool, Depends(store_pool)],
) -> Response:
    """Verify observations (in the body, or the stored ones of a window) against the map.
    The report is stored too. A map that is not verified is still a 200: the verdict is in
    the report's `verified`."""
    options = body.options()

    def work() -> operations.VerifyAnswer:
        with stores.lease() as store:
            return operations.verify(store, map_id, options, body.observations)

    ctx = context(request)
    answer = await ctx.verify_threads.run(work)
    ctx.metrics.verifications.labels(str(answer.verified).lower()).inc()
    return Response(
        answer.encoded,
        media_type="application/json",
        headers={"X-Stella-Report-Id": str(answer.report_id)},
    )


# The common requests are answered by VerifyRoute's fast path; this operation answers the
# rest and is what the OpenAPI document describes.
router.add_api_route(
    "/{map_id}/verify",
    verify_function_map,
    methods=["POST"],
    route_class_override=VerifyRoute,
    responses=responses(
        404,
        more={
            200: {
                "description": "The verification report, the same document as `stella function-map "
                "verify --format json` (schemas/verification-report.schema.json: coverage part and "
                "function_map).",
                "content": {"application/json": {"schema": {"type": "object"}}},
                "headers": {
                    "X-Stella-Report-Id": {
                        "description": "Id of the report as stored.",
                        "schema": {"type": "string"},
                    }
                },
            }
        },
    ),
    dependencies=[require("write")],
)


@router.get(
    "/{map_id}/coverage",
    response_model=CoverageAnswer,
    responses=responses(404),
    dependencies=[require("read")],
)
def function_map_coverage(
    map_id: MapId,
    store: Store,
    window_from: Annotated[
        str | None,
        Query(
            alias="from",
            description="RFC 3339 (default: the first stored observation).",
            json_schema_extra=DATE_TIME,
        ),
    ] = None,
    window_to: Annotated[
        str | None,
        Query(
            alias="to",
            description="RFC 3339 (default: the last stored observation).",
            json_schema_extra=DATE_TIME,
        ),
    ] = None,
    windows: Annotated[
        int,
        Query(ge=1, le=MAX_TREND_WINDOWS, description="Windows in the trend."),
    ] = DEFAULT_TREND_WINDOWS,
) -> Any:
    """Coverage of the stored observations over a range: per path, per tag, and the trend of
    the observation rate over consecutive windows of the range."""
    return operations.coverage(store, map_id, window_from, window_to, windows)


__all__ = ["FunctionMapSummary", "router"]
