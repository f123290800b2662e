"""The bounded in-memory store: the agent's buffer before evidence reaches a real store.

At most `max_records` records are held; records of a chunk that do not fit are dropped and
counted (in the ingest result and in `status().records_dropped`), never lost silently. The
chunk itself is recorded, so offering it again adds nothing.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from ..timeutil import format_timestamp, utc_now
from .base import (
    ChunkConflict,
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
    upgrades,
)
from .rows import Row, chunk_rows, in_window, load_record

DEFAULT_MAX_RECORDS: Final = 1_000_000
LATEST: Final = 1


@dataclass
class _Chunk:
    provenance: Provenance
    seal: bytes | None
    records: int


def memory_bound(url: str) -> int:
    """`memory://` or `memory://?max_records=N`."""
    parts = urlsplit(url)
    if parts.scheme != "memory" or parts.netloc or parts.path not in ("", "/"):
        raise StoreError(f"expected memory:// or memory://?max_records=N, found {url!r}")
    query = parse_qs(parts.query)
    unknown = set(query) - {"max_records"}
    if unknown:
        raise StoreError(f"unknown memory store option {min(unknown)!r} (allowed: max_records)")
    values = query.get("max_records", [str(DEFAULT_MAX_RECORDS)])
    try:
        bound = int(values[-1])
    except ValueError:
        bound = -1
    if bound < 1:
        raise StoreError(f"max_records must be a positive integer, found {values[-1]!r}")
    return bound


class MemoryStore(ObservationStore):
    backend = "memory"

    def __init__(self, url: str = "memory://", max_records: int | None = None) -> None:
        super().__init__(url, url)
        self.max_records = memory_bound(url) if max_records is None else max_records
        self._lock = threading.RLock()
        self._chunks: dict[tuple[str, int], _Chunk] = {}
        self._rows: list[Row] = []
        self._sorted = True
        self._dropped = 0
        self._maps: dict[str, StoredFunctionMap] = {}
        self._reports: list[StoredReport] = []

    def close(self) -> None:
        pass

    def schema_version(self) -> int:
        return LATEST  # nothing to migrate: the structures are the code's

    def latest_version(self) -> int:
        return LATEST

    def migrate(self) -> list[int]:
        return []

    def status(self) -> StoreStatus:
        with self._lock:
            status = StoreStatus(self.display_url, self.backend, LATEST, LATEST)
            status.records = len(self._rows)
            status.chunks = len(self._chunks)
            status.chains = len({chain for chain, _ in self._chunks})
            status.function_maps = len(self._maps)
            status.reports = len(self._reports)
            if self._rows:
                status.first_observed_at = min(r.observed_at for r in self._rows)
                status.last_observed_at = max(r.observed_at for r in self._rows)
            status.records_dropped = self._dropped
            status.details["max_records"] = self.max_records
            return status

    def stored_seals(self, chain_id: str) -> dict[int, str]:
        with self._lock:
            return {
                seq: c.provenance.seal_sha256
                for (chain, seq), c in self._chunks.items()
                if chain == chain_id
            }

    def store_chunks(self, chunks: Iterable[StoreChunk]) -> IngestResult:
        result = IngestResult()
        with self._lock:
            new: list[StoreChunk] = []
            offered: set[tuple[str, int]] = set()
            for chunk in chunks:
                p = chunk.provenance
                key = (p.chain_id, p.sequence)
                stored = self._chunks.get(key)
                if stored is None and key in offered:
                    continue  # the same chunk twice in one batch
                if stored is None:
                    new.append(chunk)
                    offered.add(key)
                elif stored.provenance.seal_sha256 != p.seal_sha256:
                    result.conflicts.append(
                        ChunkConflict(
                            p.chain_id, p.sequence, stored.provenance.seal_sha256, p.seal_sha256
                        )
                    )
                else:
                    result.chunks_already_stored += 1
            if result.conflicts:
                return IngestResult(
                    chunks_already_stored=result.chunks_already_stored,
                    conflicts=result.conflicts,
                )
            # Rows are built before anything changes: a bad record leaves the store as it was.
            prepared = [(chunk, list(chunk_rows(chunk))) for chunk in new]
            for chunk, rows in prepared:
                p = chunk.provenance
                room = max(0, self.max_records - len(self._rows))
                kept = rows[:room]
                self._rows += kept
                self._sorted = False
                dropped = len(rows) - len(kept)
                self._dropped += dropped
                self._chunks[(p.chain_id, p.sequence)] = _Chunk(p, chunk.seal, len(rows))
                result.chunks_stored += 1
                result.records_stored += len(kept)
                result.records_dropped += dropped
        return result

    def _ordered(self) -> list[Row]:
        if not self._sorted:
            self._rows.sort(key=lambda r: (r.chain_id, r.sequence, r.line))
            self._sorted = True
        return self._rows

    def iter_records(
        self, window_from: str | None = None, window_to: str | None = None
    ) -> Iterator[StoredRecord]:
        with self._lock:
            rows = [
                r
                for r in self._ordered()
                if in_window(r.obs_start, r.obs_end, window_from, window_to)
            ]
        for row in rows:
            yield StoredRecord(load_record(row.record), row.chain_id, row.sequence, row.line)

    def aggregate_nodes(
        self,
        window_from: str | None = None,
        window_to: str | None = None,
        expected: Collection[str] = (),
    ) -> NodeAggregation:
        with self._lock:
            rows = self._ordered()
            states: dict[str, list[Any]] = {}
            in_count = 0
            for r in rows:
                if not in_window(r.obs_start, r.obs_end, window_from, window_to):
                    continue
                in_count += 1
                state = states.get(r.node_hash)
                if state is None:
                    named = r.node_hash not in expected
                    states[r.node_hash] = [
                        r.event_count,
                        r.obs_start,
                        r.obs_end,
                        {r.probe_type},
                        r.function_name if named else "",
                        r.purl if named else None,
                    ]
                    continue
                state[0] += r.event_count
                state[1] = min(state[1], r.obs_start)
                state[2] = max(state[2], r.obs_end)
                state[3].add(r.probe_type)
            total = len(rows)
        return NodeAggregation(
            [
                NodeRow(h, s[0], s[1], s[2], tuple(sorted(s[3])), s[4], s[5])
                for h, s in states.items()
            ],
            total,
            in_count,
        )

    def provenance(self, chain_id: str, sequence: int) -> Provenance | None:
        chunk = self._chunks.get((chain_id, sequence))
        return None if chunk is None else chunk.provenance

    def seal_bytes(self, chain_id: str, sequence: int) -> bytes | None:
        chunk = self._chunks.get((chain_id, sequence))
        return None if chunk is None else chunk.seal

    def prune(self, cutoff: dt.datetime) -> PruneResult:
        boundary = cutoff.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        text = format_timestamp(boundary)
        with self._lock:
            before = len(self._rows)
            self._rows = [r for r in self._rows if r.observed_at >= text]
            return PruneResult(text, records_removed=before - len(self._rows))

    def put_function_map(self, function_map: StoredFunctionMap) -> bool:
        with self._lock:
            stored = self._maps.get(function_map.digest)
            if stored is None:
                self._maps[function_map.digest] = function_map
                return True
            if not upgrades(function_map, stored):
                return False
            self._maps[function_map.digest] = replace(
                function_map, service=stored.service, stored_at=stored.stored_at
            )
            return True

    def get_function_map(self, digest: str) -> StoredFunctionMap | None:
        return self._maps.get(digest)

    def list_function_maps(self) -> list[StoredFunctionMap]:
        with self._lock:
            return sorted(self._maps.values(), key=lambda m: (m.stored_at, m.digest))

    def put_report(
        self,
        function_map_digest: str,
        window_from: str | None,
        window_to: str | None,
        verified: bool,
        report: dict[str, Any],
        *,
        encoded: bytes | None = None,
    ) -> StoredReport:
        with self._lock:
            stored = StoredReport(
                len(self._reports) + 1,
                function_map_digest,
                format_timestamp(utc_now()),
                window_from,
                window_to,
                verified,
                report,
            )
            self._reports.append(stored)
            return stored

    def get_report(self, report_id: int) -> StoredReport | None:
        with self._lock:
            if 1 <= report_id <= len(self._reports):
                return self._reports[report_id - 1]
            return None

    def list_reports(self, function_map_digest: str | None = None) -> list[StoredReport]:
        with self._lock:
            return [
                r
                for r in self._reports
                if function_map_digest is None or r.function_map_digest == function_map_digest
            ]
