"""Observation stores (DESIGN.md §8): memory (bounded buffer), SQLite (embedded default),
PostgreSQL (daily partitions, COPY ingest). See docs/store.md.

Use: `open_store(url)` → an `ObservationStore`; `ingest_evidence` / `ingest_ndjson` to put
evidence in; `query_records`, `query_summary`, `verify_stored` to ask it questions.
"""

from __future__ import annotations

from .base import (
    ChunkConflict,
    ChunkConflictError,
    IngestResult,
    NodeAggregation,
    NodeRow,
    ObservationStore,
    Provenance,
    PruneResult,
    StoreChunk,
    StoredFunctionMap,
    StoredRecord,
    StoredReport,
    StoreError,
    StoreStatus,
    StoreUnavailableError,
    encode_report,
)
from .config import DEFAULT_URL, StoreSettings, open_store, redact, store_settings
from .coverage import (
    load_stored_function_map,
    query_records,
    query_summary,
    stored_form,
    verify_stored,
)
from .ingest import ingest_evidence, ingest_ndjson, raise_conflicts

__all__ = [
    "DEFAULT_URL",
    "ChunkConflict",
    "ChunkConflictError",
    "IngestResult",
    "NodeAggregation",
    "NodeRow",
    "ObservationStore",
    "Provenance",
    "PruneResult",
    "StoreChunk",
    "StoreError",
    "StoreSettings",
    "StoreStatus",
    "StoreUnavailableError",
    "StoredFunctionMap",
    "StoredRecord",
    "StoredReport",
    "encode_report",
    "ingest_evidence",
    "ingest_ndjson",
    "load_stored_function_map",
    "open_store",
    "query_records",
    "query_summary",
    "raise_conflicts",
    "redact",
    "store_settings",
    "stored_form",
    "verify_stored",
]
