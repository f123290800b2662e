"""Questions asked of a store, answered with the file path's own code.

The database only aggregates (per node over the window, in `aggregate_nodes`); the result is
loaded into the file path's `ObservationAggregator` and judged by the same `evaluate`, so a
verification over a store and over files of the same records give the same report. Queries
read records in store order through the same `QueryFilter` and `summarise`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from typing import Any

from ..coverage.engine import VerificationResult, VerifyOptions, evaluate, new_aggregator
from ..coverage.query import QueryFilter, SymbolSummary, summarise
from ..coverage.scan import PROBE_BIT, NodeAggregate, ObservationAggregator
from ..functionmap.load import LoadedFunctionMap, function_map_from_statement
from ..timeutil import format_timestamp, utc_now
from .base import ObservationStore, StoredFunctionMap, StoreError


def store_aggregator(
    store: ObservationStore, function_map: LoadedFunctionMap, options: VerifyOptions
) -> ObservationAggregator:
    aggregator = new_aggregator(function_map, options)
    window_from, window_to = options.window_strings()
    if aggregator.scope is not None:
        # The store aggregates by node only; a scoped map needs each record's workload
        # context, so every record is folded one by one, the window applied by the aggregator
        # as on the file path (the same counts of records read and outside the window).
        for stored in store.iter_records():
            aggregator.add_record(stored.record, validated=True)
        return aggregator
    answer = store.aggregate_nodes(window_from, window_to, expected=aggregator.expected.keys())
    for row in answer.rows:
        state = aggregator.expected.get(row.node_hash)
        if state is None:
            state = aggregator.unexpected[row.node_hash] = NodeAggregate()
            state.function_name = row.function_name
            state.purl = row.purl
        state.count = row.count
        state.first = row.first
        state.last = row.last
        mask = 0
        for probe in row.probe_types:
            mask |= PROBE_BIT[probe]
        state.probe_mask = mask
    aggregator.records = answer.records_total
    aggregator.outside_window = answer.records_total - answer.records_in_window
    return aggregator


def verify_stored(
    store: ObservationStore, function_map: LoadedFunctionMap, options: VerifyOptions | None = None
) -> VerificationResult:
    """Verify the stored observations of the window against a function map."""
    options = options or VerifyOptions()
    return evaluate(function_map, store_aggregator(store, function_map, options), options)


def query_records(store: ObservationStore, selection: QueryFilter) -> Iterator[dict[str, Any]]:
    """Stored records the filter accepts, in store order; the window is applied by the store."""
    for stored in store.iter_records(selection.window_from, selection.window_to):
        if selection.accepts(stored.record):
            yield stored.record


def query_summary(store: ObservationStore, selection: QueryFilter) -> list[SymbolSummary]:
    return summarise(query_records(store, selection))


# --- function maps --------------------------------------------------------------------------


def stored_form(loaded: LoadedFunctionMap, raw: bytes) -> StoredFunctionMap:
    """What the store keeps of a loaded map: the Statement bytes, and the envelope if signed.

    `raw` is the file as read (the Statement, or the DSSE envelope whose payload it is).
    """
    import json

    envelope = raw if loaded.signed else None
    statement = raw
    if envelope is not None:
        import base64

        statement = base64.b64decode(json.loads(raw)["payload"])
    digest = "sha256:" + hashlib.sha256(statement).hexdigest()
    if digest != loaded.digest:
        raise StoreError(
            "function map changed while it was read", path=loaded.source, field="--function-map"
        )
    return StoredFunctionMap(
        loaded.digest,
        loaded.function_map.service,
        statement,
        envelope,
        loaded.signed,
        loaded.signature_checked,
        loaded.signers,
        format_timestamp(utc_now()),
    )


def load_stored_function_map(store: ObservationStore, digest: str) -> LoadedFunctionMap:
    """A stored map as the verifier takes it (signature status as recorded when stored)."""
    import json

    stored = store.get_function_map(digest)
    if stored is None:
        raise StoreError(f"no function map {digest} in store {store.display_url}")
    statement = json.loads(stored.statement)
    source = f"{store.display_url}#function-map/{digest}"
    return LoadedFunctionMap(
        function_map=function_map_from_statement(statement, source),
        statement=statement,
        digest=stored.digest,
        source=source,
        signed=stored.signed,
        signature_checked=stored.signature_checked,
        signers=stored.signers,
    )


def prune_cutoff(older_than: dt.timedelta, now: dt.datetime | None = None) -> dt.datetime:
    return (now or utc_now()) - older_than
