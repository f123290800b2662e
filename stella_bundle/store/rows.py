"""A validated observation record as a database row: the columns the database filters and
aggregates on, beside the record itself (canonical JSON, returned as it was given)."""

from __future__ import annotations

import datetime as dt
import json
import operator
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import repeat, tee
from typing import Any

from msgspec import UNSET

from ..canonical import canonical_bytes
from ..coverage.fastdecode import LightRecord, PlainRecord, Record, decode_block
from ..digests import PREFIXED_SHA256_RE
from ..evidence.timecheck import ChunkTimes
from ..formats.record import record_count
from ..timeutil import canonical_timestamp
from .base import COLUMNS, Row, StoreChunk, StoredFunctionMap

_NODE_HASH = operator.attrgetter("node_hash")
_FUNCTION_NAME = operator.attrgetter("function_name")
_PROBE_TYPE = operator.attrgetter("probe_type")
_PURL = operator.attrgetter("purl")
_UNSET_AS_NONE: dict[object, None] = {UNSET: None}  # .get(purl, purl): UNSET -> None

__all__ = [
    "COLUMNS",
    "DecodedChunk",
    "Row",
    "chunk_rows",
    "fast_decode",
    "load_record",
    "record_row",
]


def day_of(canonical: str) -> dt.date:
    return dt.date.fromisoformat(canonical[:10])


def record_row(chain_id: str, sequence: int, line: int, record: dict[str, Any]) -> Row:
    observed = canonical_timestamp(record["observed_at"])
    first = record.get("first_observed_at")
    last = record.get("last_observed_at")
    return Row(
        chain_id,
        sequence,
        line,
        observed,
        canonical_timestamp(first) if first else observed,
        canonical_timestamp(last) if last else observed,
        record["node_hash"],
        record["function_name"],
        record["probe_type"],
        record_count(record),
        record.get("purl"),
        canonical_bytes(record).decode("utf-8"),
    )


def chunk_rows(chunk: StoreChunk) -> Iterator[Row]:
    if chunk.prepared is not None:
        yield from chunk.prepared.rows()
        return
    provenance = chunk.provenance
    for line, record in enumerate(chunk.records, start=1):
        yield record_row(provenance.chain_id, provenance.sequence, line, record)


def load_record(text: str) -> dict[str, Any]:
    """A stored record as the readers give it: `probe_type` defaulted like `validate_record`
    does (a sealed line is stored as signed, and may leave it out)."""
    record: dict[str, Any] = json.loads(text)
    record.setdefault("probe_type", "unknown")
    return record


@dataclass(frozen=True)
class DecodedChunk:
    """A chunk decoded by the verifier's msgspec fast path: typed records, their canonical
    observed_at values and their sealed line texts. Rows are built on demand; PostgreSQL
    formats COPY lines from these columns directly (`postgres.copy_lines`)."""

    chain_id: str
    sequence: int
    records: list[Record | PlainRecord | LightRecord]
    observed: list[str]
    texts: list[str]
    aggregated: bool  # some record has count, first_observed_at or last_observed_at
    backslash: bool = True  # some line holds a backslash (COPY's text format escapes it)

    def __len__(self) -> int:
        return len(self.records)

    def rows(self) -> Iterator[Row]:
        chain_id, sequence = self.chain_id, self.sequence
        # tuple.__new__ rather than Row(...): the generated __new__ costs twice as much, and
        # this runs once per record of every ingest.
        make = tuple.__new__
        lines = zip(self.records, self.observed, self.texts, strict=True)
        if not self.aggregated:
            for index, (r, stamp, text) in enumerate(lines, 1):
                purl = r.purl
                yield make(
                    Row,
                    (
                        chain_id,
                        sequence,
                        index,
                        stamp,
                        stamp,
                        stamp,
                        r.node_hash,
                        r.function_name,
                        r.probe_type,
                        1,
                        None if purl is UNSET else purl,
                        text,
                    ),
                )
            return
        for index, (r, stamp, text) in enumerate(lines, 1):
            first = getattr(r, "first_observed_at", UNSET)
            last = getattr(r, "last_observed_at", UNSET)
            count = getattr(r, "count", UNSET)
            purl = r.purl
            yield make(
                Row,
                (
                    chain_id,
                    sequence,
                    index,
                    stamp,
                    stamp if first is UNSET else first,
                    stamp if last is UNSET else last,
                    r.node_hash,
                    r.function_name,
                    r.probe_type,
                    1 if count is UNSET else count,
                    None if purl is UNSET else purl,
                    text,
                ),
            )


def row_values(chunk: StoreChunk) -> Iterable[tuple[Any, ...]]:
    """The chunk's rows as tuples in COLUMNS order, for a driver's executemany. A decoded
    chunk of plain records (count 1, interval = observed_at) is zipped from its columns at C
    speed: no Python frame per record."""
    decoded = chunk.prepared
    if not isinstance(decoded, DecodedChunk) or decoded.aggregated:
        return chunk_rows(chunk)
    records, observed = decoded.records, decoded.observed
    count = len(records)
    return zip(
        repeat(decoded.chain_id, count),
        repeat(decoded.sequence, count),
        range(1, count + 1),
        observed,
        observed,
        observed,
        map(_NODE_HASH, records),
        map(_FUNCTION_NAME, records),
        map(_PROBE_TYPE, records),
        repeat(1, count),
        map(_UNSET_AS_NONE.get, *tee(map(_PURL, records))),
        decoded.texts,
        strict=True,
    )


def fast_decode(
    chain_id: str, sequence: int, content: bytes, newlines: int | None = None
) -> DecodedChunk | None:
    """A chunk's uncompressed NDJSON through the verifier's msgspec fast path, each record's
    text kept byte for byte as sealed; None when any line needs the full path (non-canonical
    times, blank lines…), which then decides. `newlines`: the content's newline count, when
    the caller measured it already."""
    if newlines is None:
        newlines = content.count(b"\n")
    lines = newlines + (0 if content.endswith(b"\n") else 1)
    if not content or (decoded := decode_block(content, lines)) is None:
        return None
    decoded_records, observed, aggregated = decoded
    records: list[Record | PlainRecord | LightRecord] = list(decoded_records)
    for node_hash in set(map(_NODE_HASH, records)):
        if not PREFIXED_SHA256_RE.match(node_hash):
            return None
    try:
        texts = content.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        return None
    if texts[-1] == "":
        texts.pop()
    if len(texts) != len(records):
        return None
    return DecodedChunk(chain_id, sequence, records, observed, texts, aggregated, b"\\" in content)


def decoded_times(decoded: DecodedChunk) -> ChunkTimes:
    """The records' times as `measure_chunk` folds them from the chunk's lines, taken from
    the same lines decoded by the fast path (which accepted every one) instead of a second
    decoding."""
    times = ChunkTimes()
    if not decoded.aggregated:
        times.add_observed(decoded.observed)
        return times
    for record, observed in zip(decoded.records, decoded.observed, strict=True):
        first = getattr(record, "first_observed_at", UNSET)
        last = getattr(record, "last_observed_at", UNSET)
        times.add(observed, None if first is UNSET else first, None if last is UNSET else last)
    return times


def in_window(row_start: str, row_end: str, window_from: str | None, window_to: str | None) -> bool:
    """The verifier's window rule: the record's interval meets the window."""
    return not (
        (window_from is not None and row_end < window_from)
        or (window_to is not None and row_start > window_to)
    )


def key_ids(text: str | None) -> tuple[str, ...]:
    return tuple(k for k in (text or "").split(",") if k)


def join_key_ids(keys: Sequence[str]) -> str:
    return ",".join(keys)


def function_map_from_row(row: Sequence[Any], stored_at: str) -> StoredFunctionMap:
    """A `function_maps` row of either SQL backend; `stored_at` already as canonical text (each
    backend keeps its own column type)."""
    digest, service, statement, envelope, signed, checked, signers, _ = row
    return StoredFunctionMap(
        digest,
        service,
        bytes(statement),
        None if envelope is None else bytes(envelope),
        bool(signed),
        bool(checked),
        key_ids(signers),
        stored_at,
    )
