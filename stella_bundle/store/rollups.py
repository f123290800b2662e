"""Per-node daily rollups: the coverage question answered without reading every stored row.

`verify --store` needs, per node_hash over a window (see `coverage.scan.ObservationAggregator`):
the number of records, the sum of their counts, the earliest interval start and latest end,
the probe types seen, and, for nodes outside the map, the name and purl of the node's first
record in store order (chain id, sequence, line). Ingest folds each new chunk's rows into one
rollup row per (UTC day of observed_at, node_hash) holding exactly that, plus the least end and
greatest start, which tell whether every record of a rollup row meets a window, none does, or
some do. The SQL backends upsert these rows in the ingest transaction (so the rollups always
describe exactly the stored rows) and delete them with the days that prune removes.

A window is answered from whole rollup rows wherever the answer is all or nothing; a day
holding a row that is only partly in the window (the window's ragged edges, or an aggregated
record straddling an edge) is read from the raw rows instead, with the verifier's rule.

Why days, not hours (schema version 4 replaced version 3's hours): a rollup row costs ingest
about what a stored row costs (folded in Python, upserted by the database), and at a few
records per node and hour (the ingest bench: 1,000,000 records over 3 days and 5,000 nodes)
hourly rows are nearly one per record, which tripled PostgreSQL's ingest time. Daily rows are
one per node and day, they match PostgreSQL's day partitions (prune drops both alike), and a
window's ragged days are read through the observed_at index (SQLite) or the day partition.
"""

from __future__ import annotations

import bisect
import datetime as dt
import operator
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Sequence
from itertools import islice
from typing import Any, Final

from msgspec import UNSET

from ..formats.record import PROBE_TYPES
from ..timeutil import format_timestamp, parse_timestamp
from .base import NodeAggregation, NodeRow, StoreChunk
from .rows import DecodedChunk, chunk_rows

# Bit i of a stored probe mask is STORED_PROBE_ORDER[i]. Stored in the database: this order is
# part of the schema and only ever grows at the end (a new probe type takes the next bit).
STORED_PROBE_ORDER: Final = (
    "uprobe",
    "uretprobe",
    "usdt",
    "fentry",
    "fexit",
    "tracepoint",
    "raw_tracepoint",
    "kprobe",
    "kretprobe",
    "unknown",
)
if not set(PROBE_TYPES) <= set(STORED_PROBE_ORDER):  # pragma: no cover - a programming error
    raise AssertionError("a probe type has no stored bit: append it to STORED_PROBE_ORDER")
STORED_BIT: Final = {name: 1 << index for index, name in enumerate(STORED_PROBE_ORDER)}

# The columns of node_rollups, in insert order.
ROLLUP_COLUMNS: Final = (
    "bucket",
    "node_hash",
    "records",
    "events",
    "min_start",
    "max_start",
    "min_end",
    "max_end",
    "probe_mask",
    "first_chain",
    "first_sequence",
    "first_line",
    "function_name",
    "purl",
)

DAY: Final = dt.timedelta(days=1)
BUCKET_CHARS: Final = 10  # a canonical timestamp's YYYY-MM-DD: its bucket
# An ingest spanning many hours of many nodes folds its rollups into the store every this many
# entries: its memory stays bounded by this, not by the hours and nodes it covers.
FLUSH_ENTRIES = 200_000

# One rollup entry: [records, events, min_start, max_start, min_end, max_end, mask,
#                    first_chain, first_sequence, first_line, function_name, purl]
Entry = list[Any]


_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def micros(canonical: str) -> int:
    """Microseconds since the epoch of a canonical timestamp."""
    return (parse_timestamp(canonical) - _EPOCH) // dt.timedelta(microseconds=1)


def shifted(canonical: str, microseconds: int) -> str | None:
    """A canonical timestamp moved by `microseconds`; None past the calendar's ends."""
    try:
        return format_timestamp(
            parse_timestamp(canonical) + dt.timedelta(microseconds=microseconds)
        )
    except OverflowError:
        return None


def bucket_of(canonical: str) -> str:
    """The UTC day holding a canonical timestamp, as a canonical timestamp."""
    return canonical[:BUCKET_CHARS] + "T00:00:00.000000Z"


def _fold(table: dict[tuple[str, str], Entry], key: tuple[str, str], entry: Entry) -> None:
    """Fold `entry` into the table's entry of `key` (the first record kept in store order)."""
    mine = table.get(key)
    if mine is None:
        table[key] = entry
        return
    mine[0] += entry[0]
    mine[1] += entry[1]
    if entry[2] < mine[2]:
        mine[2] = entry[2]
    if entry[3] > mine[3]:
        mine[3] = entry[3]
    if entry[4] < mine[4]:
        mine[4] = entry[4]
    if entry[5] > mine[5]:
        mine[5] = entry[5]
    mine[6] |= entry[6]
    if (entry[7], entry[8], entry[9]) < (mine[7], mine[8], mine[9]):
        mine[7:12] = entry[7:12]


class Rollups:
    """The rollup rows of the chunks one ingest stores (memory: one entry per day and node)."""

    def __init__(self) -> None:
        self.table: dict[tuple[str, str], Entry] = {}
        # How far the records' intervals reach before and after their observed_at (µs): the
        # SQLite store keeps the widest in span_bounds (PostgreSQL computes its own in COPY).
        self.spans = (0, 0)

    def __len__(self) -> int:
        return len(self.table)

    def full(self) -> bool:
        return len(self.table) >= FLUSH_ENTRIES

    def clear(self) -> None:
        """After the entries were folded into the store (the spans stay: they cover it all)."""
        self.table = {}

    def add(self, chunk: StoreChunk) -> None:
        decoded = chunk.prepared
        if isinstance(decoded, DecodedChunk) and not decoded.aggregated:
            observed = decoded.observed
            # Time-ordered (as collectors write): first and last occurrence are the extremes.
            if all(map(operator.le, observed, islice(observed, 1, None))):
                self._add_plain(decoded)
                return
        p = chunk.provenance
        table = self.table
        for row in chunk_rows(chunk):
            _, _, line, observed_at, start, end, node, name, probe, count, purl, _ = row
            if start != observed_at or end != observed_at:
                at = micros(observed_at)
                before, after = self.spans
                self.spans = (max(before, at - micros(start)), max(after, micros(end) - at))
            entry = [1, count, start, start, end, end, STORED_BIT[probe], p.chain_id]
            entry += (p.sequence, line, name, purl)
            _fold(table, (observed_at[:BUCKET_CHARS], node), entry)

    def _add_plain(self, decoded: DecodedChunk) -> None:
        """A time-ordered chunk of plain records (count 1, interval = observed_at), folded at
        C speed per day it spans: counts by Counter, first and last occurrences by dict
        assignment order; Python runs once per (day, node), not per record."""
        observed = decoded.observed
        records = decoded.records
        nodes = [r.node_hash for r in records]
        probes = [r.probe_type for r in records]
        start = 0
        while start < len(observed):
            day = observed[start][:BUCKET_CHARS]
            # The first record of the next day (time-ordered: one bisect per day).
            end = bisect.bisect_left(observed, day + "~", start)
            self._add_day(decoded, day, start, end, nodes[start:end], probes[start:end])
            start = end

    def _add_day(
        self,
        decoded: DecodedChunk,
        day: str,
        start: int,
        end: int,
        nodes: list[str],
        probes: Sequence[str],
    ) -> None:
        observed = decoded.observed
        records = decoded.records
        counts = Counter(nodes)
        first = dict(zip(reversed(nodes), range(end - 1, start - 1, -1), strict=True))
        last = dict(zip(nodes, range(start, end), strict=True))
        masks: dict[str, int] = dict.fromkeys(counts, 0)
        for node, probe in set(zip(nodes, probes, strict=True)):
            masks[node] |= STORED_BIT[probe]
        chain, sequence = decoded.chain_id, decoded.sequence
        table = self.table
        for node, count in counts.items():
            head = first[node]
            low, high = observed[head], observed[last[node]]
            record = records[head]
            purl = None if record.purl is UNSET else record.purl
            entry = [count, count, low, high, low, high, masks[node], chain, sequence, head + 1]
            entry.append(record.function_name)
            entry.append(purl)
            _fold(table, (day, node), entry)

    def rows(self) -> Iterator[tuple[Any, ...]]:
        """Rows in ROLLUP_COLUMNS order (times as canonical strings)."""
        for (day, node), entry in self.table.items():
            yield (day + "T00:00:00.000000Z", node, *entry)


def window_class(window_from: str | None, window_to: str | None) -> tuple[str, str]:
    """SQL conditions on a rollup row (named parameters :f/:t style given by the caller as
    `{f}`/`{t}`): every record in the window, and none in it."""
    inside = ["TRUE"]
    outside = ["FALSE"]
    if window_from is not None:
        inside.append("min_end >= {f}")
        outside.append("max_end < {f}")
    if window_to is not None:
        inside.append("max_start <= {t}")
        outside.append("min_start > {t}")
    return " AND ".join(inside), " OR ".join(outside)


def bucket_ranges(buckets: Iterable[str]) -> list[tuple[str, str]]:
    """Days (canonical starts) as merged [start, end) ranges of canonical strings."""
    ranges: list[tuple[str, str]] = []
    for bucket in sorted(set(buckets)):
        end = format_timestamp(parse_timestamp(bucket) + DAY)
        if ranges and ranges[-1][1] == bucket:
            ranges[-1] = (ranges[-1][0], end)
        else:
            ranges.append((bucket, end))
    return ranges


def combine(
    groups: Iterable[tuple[str, int, int, str, str, int]],
    firsts: Iterable[tuple[str, str, int, int, str, str | None]],
    expected: Collection[str],
    total: int,
) -> NodeAggregation:
    """The backends' answer as `NodeAggregation`.

    `groups`: (node, records, events, first, last, probe mask) per node over the window;
    `firsts`: (node, chain, sequence, line, name, purl) candidates for nodes outside the map
    (one per whole rollup row and raw row read), the least in store order names the node.
    """
    names: dict[str, tuple[tuple[str, int, int], str, str | None]] = {}
    for node, chain, sequence, line, name, purl in firsts:
        if node in expected:
            continue
        key = (chain, int(sequence), int(line))
        known = names.get(node)
        if known is None or key < known[0]:
            names[node] = (key, name, purl)
    rows = []
    in_window = 0
    for node, records, events, first, last, mask in groups:
        in_window += int(records)
        named = names.get(node)
        rows.append(
            NodeRow(
                node,
                int(events),
                first,
                last,
                tuple(p for i, p in enumerate(STORED_PROBE_ORDER) if int(mask) >> i & 1),
                named[1] if named else "",
                named[2] if named else None,
            )
        )
    return NodeAggregation(rows, total, in_window)
