"""A validated observation record as a database row: the columns the database filters and
aggregates on, beside the record itself (canonical JSON, returned as it was given)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any, Final, NamedTuple

from ..canonical import canonical_record_bytes
from ..observations.record import record_count
from ..timeutil import format_timestamp, parse_timestamp
from .base import StoreChunk

# The columns of the observations table, in insert (and COPY) order.
COLUMNS: Final = (
    "chain_id",
    "sequence",
    "line",
    "observed_at",
    "obs_start",
    "obs_end",
    "node_hash",
    "function_name",
    "probe_type",
    "count",
    "purl",
    "record",
)


class Row(NamedTuple):
    chain_id: str
    sequence: int
    line: int
    observed_at: str
    obs_start: str  # first_observed_at or observed_at: where the record's interval starts
    obs_end: str  # last_observed_at or observed_at
    node_hash: str
    function_name: str
    probe_type: str
    event_count: int  # the "count" column
    purl: str | None
    record: str


def canonical_time(value: str) -> str:
    """The canonical form (microseconds, Z) of a valid RFC 3339 timestamp."""
    if len(value) == 27 and value[19] == "." and value.endswith("Z"):
        return value
    return format_timestamp(parse_timestamp(value))


def day_of(canonical: str) -> dt.date:
    return dt.date.fromisoformat(canonical[:10])


def record_row(chain_id: str, sequence: int, line: int, record: dict[str, Any]) -> Row:
    observed = canonical_time(record["observed_at"])
    first = record.get("first_observed_at")
    last = record.get("last_observed_at")
    return Row(
        chain_id,
        sequence,
        line,
        observed,
        canonical_time(first) if first else observed,
        canonical_time(last) if last else observed,
        record["node_hash"],
        record["function_name"],
        record["probe_type"],
        record_count(record),
        record.get("purl"),
        canonical_record_bytes(record).decode("utf-8"),
    )


def chunk_rows(chunk: StoreChunk) -> Iterator[Row]:
    provenance = chunk.provenance
    for line, record in enumerate(chunk.records, start=1):
        yield record_row(provenance.chain_id, provenance.sequence, line, record)


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
