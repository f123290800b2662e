"""`/api/v1/evidence` (upload) and `/api/v1/observations` (query, summary)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from ..coverage.query import QueryFilter, summarise
from ..store import ChunkConflictError, ObservationStore, query_records
from ..store.config import DEFAULT_MAX_BATCH_SIZE
from ..timeutil import format_timestamp, parse_time_field
from . import operations
from .deps import UniqueKeysJsonBodyRoute, context, open_request_store, require, responses
from .models import DATE_TIME, EvidenceUpload, IngestAnswer, RecordsAnswer, SymbolsAnswer
from .settings import DEFAULT_QUERY_LIMIT, MAX_QUERY_LIMIT

router = APIRouter(
    prefix="/api/v1", tags=["evidence and observations"], route_class=UniqueKeysJsonBodyRoute
)
Store = Annotated[ObservationStore, Depends(open_request_store)]


@router.post(
    "/evidence",
    status_code=201,
    response_model=IngestAnswer,
    responses=responses(
        409, more={200: {"model": IngestAnswer, "description": "Everything was stored already."}}
    ),
    dependencies=[require("write")],
)
def post_evidence(body: EvidenceUpload, request: Request, response: Response, store: Store) -> Any:
    """Store sealed chains (each verified whole with the chain verifier and the server's trust
    root before anything is stored) or plain records (stored, marked unsigned). Idempotent per
    (chain, sequence); a chunk conflicting with a stored one refuses the whole upload (409)."""
    ctx = context(request)
    settings = ctx.settings
    try:
        result, signed = operations.ingest(
            store, body, settings.trust_root, settings.work_dir, DEFAULT_MAX_BATCH_SIZE
        )
    except ChunkConflictError:
        ctx.metrics.chunks_refused.inc()
        raise
    ctx.metrics.records_ingested.labels(str(signed).lower()).inc(result.records_stored)
    if result.chunks_stored == 0:
        response.status_code = 200
    return {"store": store.display_url, "signed": signed, **result.to_dict()}


def _time(value: str | None, field: str) -> str | None:
    moment = parse_time_field(value, field)
    return None if moment is None else format_timestamp(moment)


@router.get(
    "/observations",
    response_model=RecordsAnswer | SymbolsAnswer,
    responses=responses(),
    dependencies=[require("read")],
)
def get_observations(
    store: Store,
    summary: Annotated[bool, Query(description="Per-symbol summary instead of records.")] = False,
    service: Annotated[
        str | None,
        Query(description="Pod S or S-<suffix>, namespace, comm or details.service."),
    ] = None,
    container: Annotated[str | None, Query(description="Container id or prefix.")] = None,
    symbol: Annotated[str | None, Query(description="Glob over function names.")] = None,
    window_from: Annotated[
        str | None, Query(alias="from", description="RFC 3339.", json_schema_extra=DATE_TIME)
    ] = None,
    window_to: Annotated[
        str | None, Query(alias="to", description="RFC 3339.", json_schema_extra=DATE_TIME)
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_QUERY_LIMIT, description="At most this many records.")
    ] = DEFAULT_QUERY_LIMIT,
) -> Any:
    """Stored observations the filters accept, in store order (chain, sequence, line), or with
    `summary=true` the same per-symbol summary as `stella observations query --summary`."""
    selection = QueryFilter(
        service=service,
        container=container,
        symbol=symbol,
        window_from=_time(window_from, "from"),
        window_to=_time(window_to, "to"),
    )
    records = query_records(store, selection)
    if summary:
        return {"symbols": [entry.to_dict() for entry in summarise(records)]}
    selected: list[dict[str, Any]] = []
    truncated = False
    for record in records:
        if len(selected) >= limit:
            truncated = True
            break
        selected.append(record)
    return {"records": selected, "truncated": truncated}
