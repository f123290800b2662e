"""The runtime endpoints of the Tetragon bridge (issue 12): hot symbols, the correlated
timeline, and Tetragon JSON lines posted for sealing. Answered by the runtime-trace service;
with the bridge disabled, by its null service: empty answers, never an error."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from ..timeutil import format_timestamp, parse_time_field
from .deps import context, require, responses
from .models import (
    CHAIN_ID_PATTERN,
    DATE_TIME,
    HotSymbolsAnswer,
    RuntimeIngestAnswer,
    TimelineAnswer,
)

router = APIRouter(prefix="/api/v1", tags=["runtime (Tetragon bridge)"])

MAX_EVENTS = 100_000

_LINES_BODY: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "description": "Tetragon's JSON export: one GetEventsResponse per line (protobuf JSON "
        "mapping, proto field names), as `tetra getevents -o json` or the export file writes it.",
        "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
    }
}


@router.get(
    "/runtime/hot-symbols",
    response_model=HotSymbolsAnswer,
    responses=responses(),
    dependencies=[require("read")],
)
def hot_symbols(
    request: Request,
    window_seconds: Annotated[
        int | None, Query(ge=1, le=366 * 86400, description="Also count per window of this size.")
    ] = None,
    top: Annotated[int | None, Query(ge=1, le=MAX_EVENTS, description="Most frequent N.")] = None,
) -> Any:
    """Observations per (purl, symbol), most frequent first (a record's count counts)."""
    service = context(request).settings.runtime
    answer = service.hot_symbols(window_seconds=window_seconds, top=top)
    return {**answer.to_dict(), "enabled": service.enabled}


@router.get(
    "/runtime/timeline",
    response_model=TimelineAnswer,
    responses=responses(),
    dependencies=[require("read")],
)
def runtime_timeline(
    request: Request,
    window_from: Annotated[
        str | None, Query(alias="from", description="RFC 3339.", json_schema_extra=DATE_TIME)
    ] = None,
    window_to: Annotated[
        str | None, Query(alias="to", description="RFC 3339.", json_schema_extra=DATE_TIME)
    ] = None,
    image: Annotated[str | None, Query(description="Image digest or a prefix of it.")] = None,
    purl: Annotated[str | None, Query(description="Component; without version: any.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_EVENTS)] = 1000,
) -> Any:
    """Events in chronological order, each with its component (purl) and build artifact."""
    service = context(request).settings.runtime
    start = parse_time_field(window_from, "from")
    end = parse_time_field(window_to, "to")
    events = service.timeline(
        window_from=format_timestamp(start) if start else None,
        window_to=format_timestamp(end) if end else None,
        image=image,
        purl=purl,
        limit=limit,
    )
    return {**events.to_dict(), "enabled": service.enabled}


@router.post(
    "/runtime-traces",
    status_code=201,
    response_model=RuntimeIngestAnswer,
    responses=responses(
        more={200: {"model": RuntimeIngestAnswer, "description": "The bridge is disabled."}}
    ),
    openapi_extra=_LINES_BODY,
    dependencies=[require("write")],
)
async def post_runtime_traces(
    request: Request,
    response: Response,
    chain_id: Annotated[
        str | None,
        Query(pattern=CHAIN_ID_PATTERN, description="Chain to append to (default: per node)."),
    ] = None,
) -> Any:
    """Tetragon lines mapped, privacy-filtered and sealed into the bridge's chain with its
    collector key; at once in the timeline and hot symbols. Unmappable events are counted."""
    ctx = context(request)
    service = ctx.settings.runtime
    data = await request.body()
    if not service.enabled:
        response.status_code = 200
        result = service.ingest_lines(data, None, chain_id=chain_id or "")  # type: ignore[arg-type]
        return {"enabled": False, "result": result.to_dict()}
    signer = ctx.settings.runtime_signer
    if signer is None:
        raise HTTPException(503, "the runtime bridge has no collector key (--tetragon-key)")

    def run() -> Any:
        with ctx.runtime_lock:
            return service.ingest_lines(data, signer, chain_id=chain_id or "")

    result = await run_in_threadpool(run)
    return {"enabled": True, "result": result.to_dict()}
