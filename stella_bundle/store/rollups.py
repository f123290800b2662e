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

Ten-minute rollups (schema version 5) answer the days a window cuts: the same rows per
(10-minute bucket, node) in `fine_rollups`, plus one row per bucket in `fine_buckets` with the
bounds of all its records (least/greatest start and end) and whether it must be read raw. A
cut day is then answered from the buckets wholly in the window (their rollup rows), and only
the buckets an edge cuts, or marked raw, are read from the raw rows. Their cost is kept off
sparse data: an ingest writes a bucket's rollup rows only where they are at most 1/DENSE of
its records (the ingest bench, 5,000 nodes over three days, has ~1.3 records per node and
bucket: nothing written, the bucket marked raw, as a cut day was read before); the verify
bench (1,000 records/s over 20,000 nodes) has ~30. A bucket once marked raw stays raw.
"""

from __future__ import annotations

import bisect
import datetime as dt
import operator
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
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
# A raw row's probe bit in SQL (both backends): one CASE, several times cheaper per row than
# a sum of shifted comparisons (SQLite) or array_position (PostgreSQL).
ROW_MASK_SQL: Final = (
    "CASE probe_type "
    + " ".join(f"WHEN '{name}' THEN {bit}" for name, bit in STORED_BIT.items())
    + " ELSE 0 END"
)

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
# The columns of fine_buckets, in insert order: the bounds of all a bucket's records, and
# whether its rollup rows are missing some (then it is read raw).
FINE_BUCKET_COLUMNS: Final = ("bucket", "min_start", "max_start", "min_end", "max_end", "raw")

DAY: Final = dt.timedelta(days=1)
_NODE_HASH: Final = operator.attrgetter("node_hash")
_PROBE_TYPE: Final = operator.attrgetter("probe_type")
BUCKET_CHARS: Final = 10  # a canonical timestamp's YYYY-MM-DD: its bucket
FINE: Final = dt.timedelta(minutes=10)
FINE_CHARS: Final = 15  # a canonical timestamp's YYYY-MM-DDTHH:M: its ten-minute bucket
FINE_SUFFIX: Final = "0:00.000000Z"
# A bucket's ten-minute rollup rows are written when its records are at least DENSE times as
# many (a test sets 0: always written).
DENSE = 4
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


@dataclass
class Fold:
    """What one fold writes: daily rollup rows, ten-minute rollup rows of the dense buckets,
    and one row per ten-minute bucket touched (FINE_BUCKET_COLUMNS)."""

    days: list[tuple[Any, ...]]
    fine: list[tuple[Any, ...]]
    buckets: list[tuple[Any, ...]]


class Rollups:
    """The rollup rows of the chunks one ingest stores (memory: one entry per day and node,
    and per ten-minute bucket and node)."""

    def __init__(self) -> None:
        self.table: dict[tuple[str, str], Entry] = {}
        self._fresh_fine()
        # How far the records' intervals reach before and after their observed_at (µs): the
        # SQLite store keeps the widest in span_bounds (PostgreSQL computes its own in COPY).
        self.spans = (0, 0)
        # The bucket the last time-ordered chunk ended in: a fold in the middle of an ingest
        # keeps it for the next fold (the chunk after may fill it), so a bucket is not judged
        # sparse on the sliver before a fold.
        self.open_bucket: str | None = None

    def _fresh_fine(self) -> None:
        # Per ten-minute bucket (its first FINE_CHARS characters): entries per node, its
        # records, bounds [min_start, max_start, min_end, max_end]; buckets found sparse.
        self.fine: dict[tuple[str, str], Entry] = {}
        self.fine_records: dict[str, int] = {}
        self.bounds: dict[str, list[str]] = {}
        self.raw: set[str] = set()

    def __len__(self) -> int:
        return len(self.table) + len(self.bounds)

    def full(self) -> bool:
        return len(self.table) + len(self.fine) >= FLUSH_ENTRIES

    def _bound(self, bucket: str, low: str, high: str, low_end: str, high_end: str, n: int) -> None:
        known = self.bounds.get(bucket)
        if known is None:
            self.bounds[bucket] = [low, high, low_end, high_end]
            self.fine_records[bucket] = n
            return
        self.fine_records[bucket] += n
        if low < known[0]:
            known[0] = low
        if high > known[1]:
            known[1] = high
        if low_end < known[2]:
            known[2] = low_end
        if high_end > known[3]:
            known[3] = high_end

    def add(self, chunk: StoreChunk) -> None:
        decoded = chunk.prepared
        if isinstance(decoded, DecodedChunk) and not decoded.aggregated:
            observed = decoded.observed
            # Time-ordered (as collectors write): first and last occurrence are the extremes.
            if all(map(operator.le, observed, islice(observed, 1, None))):
                self._add_plain(decoded)
                return
        self.open_bucket = None
        p = chunk.provenance
        table, fine = self.table, self.fine
        for row in chunk_rows(chunk):
            _, _, line, observed_at, start, end, node, name, probe, count, purl, _ = row
            if start != observed_at or end != observed_at:
                at = micros(observed_at)
                before, after = self.spans
                self.spans = (max(before, at - micros(start)), max(after, micros(end) - at))
            entry = [1, count, start, start, end, end, STORED_BIT[probe], p.chain_id]
            entry += (p.sequence, line, name, purl)
            _fold(table, (observed_at[:BUCKET_CHARS], node), entry)
            bucket = observed_at[:FINE_CHARS]
            _fold(fine, (bucket, node), entry.copy())
            self._bound(bucket, start, start, end, end, 1)

    def _add_plain(self, decoded: DecodedChunk) -> None:
        """A time-ordered chunk of plain records (count 1, interval = observed_at), folded at
        C speed per day and per ten-minute bucket it spans: counts by Counter, first and last
        occurrences by dict assignment order; Python runs once per (bucket, node), not per
        record, and not at all for a bucket the chunk holds wholly and sparsely."""
        observed = decoded.observed
        records = decoded.records
        nodes = list(map(_NODE_HASH, records))
        probes = list(map(_PROBE_TYPE, records))
        start = 0
        while start < len(observed):
            day = observed[start][:BUCKET_CHARS]
            # The first record of the next day (time-ordered: one bisect per day).
            end = bisect.bisect_left(observed, day + "~", start)
            self._add_entries(self.table, decoded, day, start, end, nodes, probes, None)
            start = end
        start = 0
        bucket = ""
        while start < len(observed):
            bucket = observed[start][:FINE_CHARS]
            end = bisect.bisect_left(observed, bucket + "~", start)
            low, high = observed[start], observed[end - 1]
            self._bound(bucket, low, high, low, high, end - start)
            counts = Counter(nodes[start:end])
            # A bucket the chunk holds from start to end is judged here; the first and last
            # may go on in the chunks around it (judged when folded).
            if start == 0 or end == len(observed) or end - start >= DENSE * len(counts):
                self._add_entries(self.fine, decoded, bucket, start, end, nodes, probes, counts)
            else:
                self.raw.add(bucket)
            start = end
        self.open_bucket = bucket or None

    def _add_entries(
        self,
        table: dict[tuple[str, str], Entry],
        decoded: DecodedChunk,
        key: str,
        start: int,
        end: int,
        nodes: list[str],
        probes: Sequence[str],
        counts: Counter[str] | None,
    ) -> None:
        observed = decoded.observed
        records = decoded.records
        run = nodes[start:end]
        if counts is None:
            counts = Counter(run)
        first = dict(zip(reversed(run), range(end - 1, start - 1, -1), strict=True))
        last = dict(zip(run, range(start, end), strict=True))
        kinds = set(probes[start:end])
        if len(kinds) == 1:  # one probe type (the usual chunk): the same mask for every node
            masks = dict.fromkeys(counts, STORED_BIT[kinds.pop()])
        else:
            masks = dict.fromkeys(counts, 0)
            for node, probe in set(zip(run, probes[start:end], strict=True)):
                masks[node] |= STORED_BIT[probe]
        chain, sequence = decoded.chain_id, decoded.sequence
        for node, count in counts.items():
            head = first[node]
            low, high = observed[head], observed[last[node]]
            record = records[head]
            purl = None if record.purl is UNSET else record.purl
            entry = [count, count, low, high, low, high, masks[node], chain, sequence, head + 1]
            entry.append(record.function_name)
            entry.append(purl)
            _fold(table, (key, node), entry)

    def take(self, final: bool) -> Fold:
        """The rows to fold into the store now; the state is emptied (but for the bucket still
        being filled, when `final` is false)."""
        keep = None if final else self.open_bucket
        entries = Counter(bucket for bucket, _ in self.fine)
        dense = {
            bucket
            for bucket, count in entries.items()
            if bucket != keep
            and bucket not in self.raw
            and self.fine_records[bucket] >= DENSE * count
        }
        fine = [
            (bucket + FINE_SUFFIX, node, *entry)
            for (bucket, node), entry in self.fine.items()
            if bucket in dense
        ]
        buckets = [
            (bucket + FINE_SUFFIX, *bounds, bucket not in dense)
            for bucket, bounds in self.bounds.items()
            if bucket != keep
        ]
        days = [
            (day + "T00:00:00.000000Z", node, *entry) for (day, node), entry in self.table.items()
        ]
        old = (self.fine, self.fine_records, self.bounds, self.raw)
        self.table = {}
        self._fresh_fine()
        if keep is not None and keep in old[2]:
            self.fine = {key: entry for key, entry in old[0].items() if key[0] == keep}
            self.fine_records[keep] = old[1][keep]
            self.bounds[keep] = old[2][keep]
            if keep in old[3]:
                self.raw.add(keep)
        return Fold(days, fine, buckets)


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


def bucket_ranges(buckets: Iterable[str], width: dt.timedelta = DAY) -> list[tuple[str, str]]:
    """Buckets (canonical starts) `width` long as merged [start, end) ranges of canonical
    strings."""
    ranges: list[tuple[str, str]] = []
    for bucket in sorted(set(buckets)):
        end = format_timestamp(parse_timestamp(bucket) + width)
        if ranges and ranges[-1][1] == bucket:
            ranges[-1] = (ranges[-1][0], end)
        else:
            ranges.append((bucket, end))
    return ranges


def fine_plan(
    buckets: Iterable[tuple[str, str, str, str, str, Any]],
    window_from: str | None,
    window_to: str | None,
) -> tuple[list[str], list[tuple[str, str]]]:
    """The ten-minute buckets (FINE_BUCKET_COLUMNS, times canonical) of the days a window
    cuts, sorted out: those answered by their rollup rows (every record in the window, none
    left out of the rows), and the observed_at ranges to read raw (an edge cuts the bucket, or
    it is marked raw). Buckets with no record in the window are in neither."""
    use: list[str] = []
    raw: list[str] = []
    for bucket, min_start, max_start, min_end, max_end, is_raw in buckets:
        if (window_from is not None and max_end < window_from) or (
            window_to is not None and min_start > window_to
        ):
            continue
        inside = (window_from is None or min_end >= window_from) and (
            window_to is None or max_start <= window_to
        )
        (raw if is_raw or not inside else use).append(bucket)
    return use, bucket_ranges(raw, FINE)


def clip(
    ranges: Iterable[tuple[str, str]], low: str | None, high: str | None
) -> list[tuple[str, str]]:
    """[start, end) ranges of observed_at cut to [low, high] (the observed_at a record meeting
    the window can have): the raw rows read are the parts of the cut buckets the window can
    reach, not whole buckets."""
    end = None if high is None else shifted(high, 1)
    cut = []
    for start, stop in ranges:
        if low is not None and low > start:
            start = low
        if end is not None and end < stop:
            stop = end
        if start < stop:
            cut.append((start, stop))
    return cut


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
