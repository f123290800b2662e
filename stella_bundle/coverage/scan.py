"""Aggregating observation records per node: fast whole-block paths, a full path else.

Files are read in 8 MiB blocks of whole lines. Each block tries, in order:
0. with the compiled fold and no chain times or scope, its scan of plain canonical lines from
   the bytes (`_fold.c`, `Index.scan`); 1. msgspec typed decoding of the whole block
   (fastdecode.py), then the checks msgspec cannot express; 2. a regular expression
   specialised to the first line's key set (no optional groups); 3. one anchored regular
   expression for any canonical line (sorted keys, no whitespace). Each accepts a strict subset of what `validate_record` accepts, and a block is
   folded only when every line is accepted. Any other block is re-read line by line with
   `json.loads` + `validate_record`: valid non-canonical lines still count, and a bad line is
   an error naming the file and line number.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from operator import attrgetter
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

import zstandard
from msgspec import UNSET

from ..digests import PREFIXED_SHA256_RE
from ..errors import InternalError, MalformedDocumentError
from ..evidence.timecheck import ChunkTimes
from ..formats.record import KINDS, PROBE_TYPES, ObservationError, validate_record
from ..formats.scope import RECORD_CONTEXT_KEY, Scope
from ..jsonio import parse_json_line
from ..observations.ndjson import open_ndjson
from ..timeutil import canonical_timestamp
from .compiled import FOLD
from .fastdecode import (
    LightRecord,
    PlainRecord,
    PlainRecords,
    Record,
    convert_records,
    decode_block,
    decode_records,
)
from .patterns import FIRST_KEYS, VALID_DATES, canonical_line, date_ok, shape_pattern

PROBE_BIT: Final = {name: 1 << index for index, name in enumerate(PROBE_TYPES)}
_NODE_HASH: Final = attrgetter("node_hash")
_PROBE_TYPE: Final = attrgetter("probe_type")
_OBSERVED_AT: Final = attrgetter("observed_at")

# One node's state as worker processes hand it back: count, first, last, probe mask, name, purl.
NodeState = tuple[int, str, str, int, str | None, str | None]
# An aggregator's whole state: expected and unexpected nodes, records, outside window, out of scope.
AggregateState = tuple[dict[str, NodeState], dict[str, NodeState], int, int, int]

_BLOCK = 8 << 20


class _BadDate(Exception):
    """A canonical-looking line has an impossible date: the full path reports it."""


# After this many blocks that do not have one uniform shape, stop trying shapes in a file.
_MAX_SHAPE_MISSES = 4


def decode_json_string(raw: str) -> str:
    """The value of a JSON string literal captured with its quotes."""
    if "\\" not in raw:
        return raw[1:-1]
    value = json.loads(raw)
    return str(value)


@functools.lru_cache(maxsize=1024)
def probe_types_of(mask: int) -> tuple[str, ...]:
    """The probe type names of a bit mask, in PROBE_TYPES order."""
    return tuple(name for name, bit in PROBE_BIT.items() if mask & bit)


class PyNodeAggregate:
    """What was seen of one node_hash: counts, first/last seen, probe types, a name and purl.
    The reference; `NodeAggregate` is the compiled fold's `NodeState` with the same fields
    when that is built (coverage/compiled.py)."""

    __slots__ = ("count", "first", "function_name", "last", "probe_mask", "purl")

    def __init__(self) -> None:
        self.count = 0
        self.first = "~"  # sorts after every timestamp
        self.last = ""
        self.probe_mask = 0
        self.function_name: str | None = None
        self.purl: str | None = None

    def probe_types(self) -> list[str]:
        return list(probe_types_of(self.probe_mask))


if TYPE_CHECKING or FOLD is None:
    NodeAggregate = PyNodeAggregate
else:

    class NodeAggregate(FOLD.NodeState):
        """PyNodeAggregate's fields in C: the compiled fold adds to count and probe_mask
        without making an int per record (the Python values are brought up to date when
        read)."""

        __slots__ = ()

        def probe_types(self) -> list[str]:
            return list(probe_types_of(self.probe_mask))


def _canonical_time(value: str, source: str | Path, line: int | None, field: str) -> str:
    try:
        return canonical_timestamp(value)
    except ValueError as exc:
        raise ObservationError(str(exc), path=source, line=line, field=field) from exc


class ScannedRecords:
    """A JSON array of records (an API verify body's) checked from its bytes by the compiled
    scan (`_fold.parse_records`: no object per record), not decoded: `add_scanned` folds them
    from the bytes. The scan takes a strict subset of what `decode_records` takes, with the
    same values; `decoded()` gives the records as it decodes them, for the other paths."""

    __slots__ = ("array", "parsed")

    def __init__(self, parsed: Any, array: bytes | memoryview) -> None:
        self.parsed = parsed
        self.array = array

    def __len__(self) -> int:
        return len(self.parsed)

    def decoded(self) -> list[Any]:
        records = decode_records(self.array)
        if records is None:
            raise InternalError("the compiled scan took a records array msgspec refuses")
        return records


def records_scanned() -> bool:
    """Whether `scan_records` can take an array: the compiled fold is in use."""
    return FOLD is not None


def scan_records(array: bytes | memoryview) -> ScannedRecords | None:
    """The records of a JSON array when the compiled scan takes every one (plain records by
    the rules of `Index.scan`, JSON whitespace and keys in any order); None when it does not,
    or the compiled fold is not in use: decode them (`decode_records`)."""
    if FOLD is None:
        return None
    parsed = FOLD.parse_records(array, PROBE_BIT, KINDS)
    return None if parsed is None else ScannedRecords(parsed, array)


class ObservationAggregator:
    """Folds records into per-node state; only nodes of the map (and unexpected ones) are kept.

    Memory is proportional to the number of distinct node hashes, never to the record count.
    With a scope, a record counts only when its workload context (details.scope) matches;
    the others are counted in `out_of_scope` and folded nowhere. The regex paths cannot see
    the context, so a scoped scan takes the msgspec path or the line-by-line one.
    """

    def __init__(
        self,
        expected: Iterable[str] | None = None,
        window_from: str | None = None,
        window_to: str | None = None,
        scope: Scope | None = None,
        *,
        unsplit: bool = False,
        compiled: bool = True,
    ) -> None:
        # The compiled fold (coverage/compiled.py) when built and not refused (`compiled`
        # False: the Python fold and node state, the reference).
        self._index = (
            FOLD.Index(PROBE_BIT, int.from_bytes(os.urandom(8), "little"), KINDS)
            if compiled and FOLD is not None
            else None
        )
        # The size of `expected` when the index last saw it. The index caches what `_resolve`
        # answered; states are never removed or replaced, so only a node added to `expected`
        # by another path can change an answer (one that `unexpected` gave): then the index
        # starts again.
        self._index_expected = -1
        node = self._node = NodeAggregate if self._index is not None else PyNodeAggregate
        self.expected: dict[str, NodeAggregate] = {h: node() for h in expected or ()}
        self.unexpected: dict[str, NodeAggregate] = {}
        # A scan started before the map is read (engine.verify_map_files) cannot tell the
        # map's nodes from others: every node is kept as if unexpected (its first record's
        # name and purl), in `expected`, the dict the hot loops look up first; the aggregator
        # that knows the map sorts them out when it merges this one's export (`routed`).
        self.unsplit = unsplit
        self.window_from = window_from
        self.window_to = window_to
        self.records = 0
        self.outside_window = 0
        self.scope = scope
        self.out_of_scope = 0
        self.files: list[str] = []
        # Set by a chain verifier around one chunk's scan: every record's times are folded
        # there too (the time rules), window or not, by whichever path reads the record.
        self.times: ChunkTimes | None = None

    # -- partial aggregates (worker processes) -----------------------------------------------

    def export(self) -> AggregateState:
        """The state to `merge` into another aggregator of the same map, window and scope."""
        return (
            _export(self.expected),
            _export(self.unexpected),
            self.records,
            self.outside_window,
            self.out_of_scope,
        )

    def merge(self, state: AggregateState, *, routed: bool = False) -> None:
        """Fold another aggregator's `export` in. Merged in input order, an unexpected node
        keeps the name and purl of its first record, as one aggregator reading it all would.
        `routed`: the export is an unsplit aggregator's; each node goes where this one's map
        puts it (a node of the map keeps no name or purl, as when it was folded here)."""
        expected, unexpected, records, outside, out_of_scope = state
        node = self._node
        if routed:
            _merge_routed(self.expected, self.unexpected, expected, node)
            _merge_routed(self.expected, self.unexpected, unexpected, node)
        else:
            _merge(self.expected, expected, node)
            _merge(self.unexpected, unexpected, node)
        self.records += records
        self.outside_window += outside
        self.out_of_scope += out_of_scope

    # -- one record at a time (validated dicts; the library path for evidence readers) --------

    def add_record(
        self,
        record: Any,
        source: str | Path = "<records>",
        line: int | None = None,
        *,
        validated: bool = False,
    ) -> None:
        if not validated:
            record = validate_record(record, source, line)
        observed = _canonical_time(record["observed_at"], source, line, "observed_at")
        first = record.get("first_observed_at")
        last = record.get("last_observed_at")
        if self.times is not None:
            self.times.add(record["observed_at"], first, last)
        if self.scope is not None and not self.scope.matches(record):
            self.records += 1
            self.out_of_scope += 1
            return
        self._fold(
            record["node_hash"],
            observed,
            _canonical_time(first, source, line, "first_observed_at") if first else None,
            _canonical_time(last, source, line, "last_observed_at") if last else None,
            int(record.get("count", 1)),
            record["probe_type"],
            record["function_name"],
            record.get("purl"),
        )

    def _fold(
        self,
        node_hash: str,
        observed: str,
        first: str | None,
        last: str | None,
        count: int,
        probe_type: str,
        function_name: str,
        purl: str | None,
    ) -> None:
        self.records += 1
        start = first or observed
        end = last or observed
        if (self.window_from is not None and end < self.window_from) or (
            self.window_to is not None and start > self.window_to
        ):
            self.outside_window += 1
            return
        state = self.expected.get(node_hash)
        if state is None:
            state = self.unexpected.get(node_hash)
            if state is None:
                state = self.unexpected[node_hash] = self._node()
                state.function_name = function_name
                state.purl = purl
        state.count += count
        if start < state.first:
            state.first = start
        if end > state.last:
            state.last = end
        state.probe_mask |= PROBE_BIT[probe_type]

    # -- files ------------------------------------------------------------------------------------

    def scan_file(self, path: str | Path) -> None:
        """Aggregate one NDJSON file (plain or zstd); errors name the file and line."""
        self.files.append(str(path))
        with open_ndjson(path) as handle:
            try:
                self._scan_handle(handle, path)
            except zstandard.ZstdError as exc:
                raise MalformedDocumentError(f"corrupt zstd data: {exc}", path=path) from exc

    def scan_stream(self, reader: Any, source: str | Path) -> None:
        """Aggregate an NDJSON byte stream (anything with `read(size)`, e.g. a decompressing
        reader over a bundle member); errors name `source` and the line."""
        self.files.append(str(source))
        try:
            self._scan_handle(reader, source)
        except zstandard.ZstdError as exc:
            raise MalformedDocumentError(f"corrupt zstd data: {exc}", path=source) from exc

    def scan_range(self, path: str | Path, start: int, end: int) -> None:
        """Aggregate bytes [start, end) of a plain NDJSON file (both at line boundaries).

        Line numbers in errors are relative to `start`; the caller rebases them.
        """
        with open(path, "rb") as handle:
            handle.seek(start)
            self._scan_handle(_RangeReader(handle, end - start), path)

    def _scan_handle(self, handle: Any, path: str | Path) -> None:
        scan = BlockScan(self, path)
        for block in _blocks(handle):
            scan.feed(block)

    def add_parsed(self, records: list[Any]) -> bool:
        """Fold already parsed records (a JSON body's list of objects) whole, when the fast
        path accepts every one (`convert_records`: the rules of `validate_record`); False, with
        nothing folded, when the caller must add them one by one (`add_record`, which names
        the first bad one)."""
        converted = convert_records(records)
        if converted is None:
            return False
        typed, aggregated = converted
        # What the fold would otherwise find half-way: a malformed hash outside the map.
        # (Set operations in C: a comprehension over the records cost as much as the fold.)
        outside = set(map(_NODE_HASH, typed)).difference(self.expected)
        if not all(map(PREFIXED_SHA256_RE.match, outside)):
            return False
        self._fold_typed(typed, aggregated)
        return True

    def _decoded_block(self, block: bytes, lines: int) -> list[str] | None:
        """Fold a block msgspec decodes and validates whole: its records' observed_at values;
        None to try the other paths."""
        decoded = decode_block(block, lines)
        if decoded is None:
            return None
        records, observed, aggregated = decoded
        self._fold_typed(records, aggregated, observed)
        return observed

    def _fold_typed(
        self,
        records: list[Record] | PlainRecords,
        aggregated: bool,
        observed: list[str] | None = None,
    ) -> None:
        """Fold records msgspec decoded and the fast path checked (dates of observed_at
        included; `aggregated`: some carry count or first/last_observed_at; `observed`: their
        observed_at values, when the caller has them)."""
        window_from = self.window_from
        window_to = self.window_to
        times = self.times
        # The earliest and latest observed_at, found once for the times and the window.
        span: tuple[str, str] | None = None
        if times is not None:
            if aggregated:
                for record in records:
                    first = record.first_observed_at  # type: ignore[union-attr]
                    last = record.last_observed_at  # type: ignore[union-attr]
                    times.add(
                        record.observed_at,
                        None if first is UNSET else first,
                        None if last is UNSET else last,
                    )
            else:
                if observed is None:
                    observed = [record.observed_at for record in records]
                span = times.add_observed(observed)
        if self.scope is not None:
            records = self._in_scope(records)
            span = None  # of every record, not of those kept
        if not aggregated and (
            (window_from is None and window_to is None)
            or (
                records
                and (
                    window_from is None
                    or (span[0] if span else min(map(_OBSERVED_AT, records))) >= window_from
                )
                and (
                    window_to is None
                    or (span[1] if span else max(map(_OBSERVED_AT, records))) <= window_to
                )
            )
        ):
            # One timestamp per record and every one inside the window: nothing to leave out.
            self._plain_records(records)
            return
        expected = self.expected
        bits = PROBE_BIT
        outside = 0
        count = 1
        for record in records:  # observed_at dates were checked by decode_block
            start = end = record.observed_at
            if aggregated:  # only then are the records `Record`s with these fields
                first = record.first_observed_at  # type: ignore[union-attr]
                last = record.last_observed_at  # type: ignore[union-attr]
                if first is not UNSET:
                    if not date_ok(first):
                        raise _BadDate
                    start = first
                if last is not UNSET:
                    if not date_ok(last):
                        raise _BadDate
                    end = last
                count = 1 if record.count is UNSET else record.count  # type: ignore[union-attr]
            if (window_from is not None and end < window_from) or (
                window_to is not None and start > window_to
            ):
                outside += 1
                continue
            state = expected.get(record.node_hash) or self._unexpected_state(record)
            state.count += count
            if start < state.first:
                state.first = start
            if end > state.last:
                state.last = end
            state.probe_mask |= bits[record.probe_type]
        self.records += len(records)
        self.outside_window += outside

    def _in_scope(self, records: list[Record] | PlainRecords) -> list[Any]:
        """The records of the scope's workload; the others counted as read and out of scope.
        A PlainRecord has no details, so no workload context: never in scope."""
        scope = self.scope
        assert scope is not None
        kept = [
            record
            for record in records
            if isinstance(record, Record)
            and isinstance(record.details, dict)
            and scope.context_matches(record.details.get(RECORD_CONTEXT_KEY))
        ]
        dropped = len(records) - len(kept)
        self.records += dropped
        self.out_of_scope += dropped
        return kept

    def _plain_records(self, records: list[Record] | PlainRecords) -> None:
        """The common case: one timestamp, count 1, all inside the window (most of the verify
        time is here). The compiled fold when built (`_fold.c`, the same fold: its index finds
        a node by the bytes of its hash and asks `_resolve` for any node it has not seen);
        else a plain loop, the reference: folding per node with C-level passes over the block
        (Counter of hashes, dicts of first/last times, a set of (node, probe) pairs) was
        measured 1.5-5x slower (each pass over 40,000 fresh objects costs about as much as
        this loop, and finding an unexpected node's first record cost a list scan each)."""
        index = self._index
        if index is not None:
            if len(self.expected) != self._index_expected:
                index.clear()
            try:
                index.fold(records, self._resolve)
            finally:
                self._index_expected = len(self.expected)
            self.records += len(records)
            return
        expected = self.expected
        bits = PROBE_BIT
        for record in records:
            observed = record.observed_at
            state = expected.get(record.node_hash) or self._unexpected_state(record)
            state.count += 1
            if observed < state.first:
                state.first = observed
            if observed > state.last:
                state.last = observed
            state.probe_mask |= bits[record.probe_type]
        self.records += len(records)

    def _resolve(self, record: Record | PlainRecord | LightRecord) -> NodeAggregate:
        """The state of a record's node, as the Python fold finds it (the compiled fold's
        question on a node it has not seen)."""
        return self.expected.get(record.node_hash) or self._unexpected_state(record)

    def _unexpected_state(self, record: Record | PlainRecord | LightRecord) -> NodeAggregate:
        """The state of a node outside the map, created from its first record."""
        return self._unexpected(
            record.node_hash, record.function_name, None if record.purl is UNSET else record.purl
        )

    def _unexpected(self, node_hash: str, function_name: str, purl: str | None) -> NodeAggregate:
        state = self.unexpected.get(node_hash)
        if state is None:
            if not PREFIXED_SHA256_RE.match(node_hash):
                raise _BadDate  # not a date, but the same remedy: the full path names it
            state = self._node()
            (self.expected if self.unsplit else self.unexpected)[node_hash] = state
            state.function_name = function_name
            state.purl = purl
        return state

    def _resolve_line(self, node_hash: str, function_name: str, purl: str | None) -> NodeAggregate:
        """`_resolve` for the compiled scan, which has a line's values, not a record."""
        return self.expected.get(node_hash) or self._unexpected(node_hash, function_name, purl)

    def _compiled_block(self, block: bytes) -> int | None:
        """Fold a block of plain canonical lines with the compiled scan (`_fold.c`'s
        `Index.scan`: no object per record): its lines (each a record); None, nothing folded,
        when it is not one (any other line: the other paths decide) or the scan cannot be used
        (the Python fold, a chain's times to fold, a scope to match)."""
        return self._compiled_scan(block)

    def add_scanned(self, records: ScannedRecords) -> bool:
        """Fold records the compiled scan checked (`scan_records`) from their bytes; False,
        nothing folded, when the compiled fold cannot be used (as for `_compiled_block`): the
        caller folds `records.decoded()`."""
        return self._compiled_scan(records.parsed) is not None

    def _compiled_scan(self, source: Any) -> int | None:
        """Index.scan of a block's bytes, or Index.fold_records of scanned records."""
        index = self._index
        if index is None or self.times is not None or self.scope is not None:
            return None
        if len(self.expected) != self._index_expected:
            index.clear()
        fold = index.scan if isinstance(source, bytes) else index.fold_records
        try:
            counted = fold(source, self._resolve_line, self.window_from, self.window_to)
        finally:
            self._index_expected = len(self.expected)
        if counted is None:
            return None
        records, outside = counted
        self.records += records
        self.outside_window += outside
        return records

    def _shape_block(self, text: str, lines: int) -> bool:
        """Fold a block whose lines all have the first line's keys; False if they do not."""
        end = text.find("\n")
        keys = tuple(FIRST_KEYS.findall(text[: end if end >= 0 else len(text)]))
        pattern = shape_pattern(keys)
        if pattern is None:
            return False
        matches = pattern.findall(text)
        if len(matches) != lines:
            return False
        if (
            self.window_from is None
            and self.window_to is None
            and not {"count", "first_observed_at", "last_observed_at"} & set(keys)
        ):
            self._plain_fold(matches)
        else:
            self._fast_fold(matches)
        return True

    def _plain_fold(self, matches: list[tuple[str, ...]]) -> None:
        """`_fast_fold` for records without count/first/last and no window: one timestamp."""
        expected = self.expected
        unexpected = self.unexpected
        bits = PROBE_BIT
        valid_dates = VALID_DATES
        if self.times is not None:
            self.times.add_observed([match[5] for match in matches])
        for _, _, name, _, node_hash, observed, probe, purl in matches:
            if observed[:10] not in valid_dates and not date_ok(observed):
                raise _BadDate
            state = expected.get(node_hash)
            if state is None:
                state = unexpected.get(node_hash)
                if state is None:
                    state = unexpected[node_hash] = self._node()
                    state.function_name = decode_json_string(name)
                    state.purl = decode_json_string(purl) if purl else None
            state.count += 1
            if observed < state.first:
                state.first = observed
            if observed > state.last:
                state.last = observed
            state.probe_mask |= bits[probe or "unknown"]
        self.records += len(matches)

    def _fast_fold(self, matches: list[tuple[str, ...]]) -> None:
        # A plain loop: whole-block Counter/dict/set aggregation was measured slower (the
        # column transposition and tuple hashing cost more than they save).
        expected = self.expected
        window_from = self.window_from
        window_to = self.window_to
        bits = PROBE_BIT
        valid_dates = VALID_DATES
        outside = 0
        times = self.times
        if times is not None:
            for _, first, _, last, _, observed, _, _ in matches:
                times.add(observed, first or None, last or None)
        for count, first, name, last, node_hash, observed, probe, purl in matches:
            if observed[:10] not in valid_dates and not date_ok(observed):
                raise _BadDate
            if (first and not date_ok(first)) or (last and not date_ok(last)):
                raise _BadDate
            start = first or observed
            end = last or observed
            if (window_from is not None and end < window_from) or (
                window_to is not None and start > window_to
            ):
                outside += 1
                continue
            state = expected.get(node_hash)
            if state is None:
                state = self.unexpected.get(node_hash)
                if state is None:
                    state = self.unexpected[node_hash] = self._node()
                    state.function_name = decode_json_string(name)
                    state.purl = decode_json_string(purl) if purl else None
            state.count += int(count) if count else 1
            if start < state.first:
                state.first = start
            if end > state.last:
                state.last = end
            state.probe_mask |= bits[probe or "unknown"]
        self.records += len(matches)
        self.outside_window += outside

    def _slow_block(self, block: bytes, path: str | Path, line_base: int) -> None:
        if not block.strip():  # blank lines only (a bomb of newlines): one C pass, not a million
            return
        line_pattern = canonical_line()
        for offset, raw in enumerate(block.split(b"\n"), start=1):
            number = line_base + offset
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise MalformedDocumentError(
                    "malformed NDJSON: not UTF-8", path=path, line=number
                ) from exc
            match = line_pattern.fullmatch(text) if self.scope is None else None
            if match is not None:
                try:
                    self._fast_fold([match.groups(default="")])
                    continue
                except _BadDate:
                    pass  # validate_record below names the field
            self.add_record(parse_json_line(text, path, number), path, number)


def _export(states: Mapping[str, NodeAggregate]) -> dict[str, NodeState]:
    return {
        h: (s.count, s.first, s.last, s.probe_mask, s.function_name, s.purl)
        for h, s in states.items()
        if s.count
    }


def _merge(
    target: dict[str, NodeAggregate],
    states: Mapping[str, NodeState],
    node: type[NodeAggregate],
) -> None:
    for node_hash, (count, first, last, mask, name, purl) in states.items():
        state = target.get(node_hash)
        if state is None:
            state = target[node_hash] = node()
        state.count += count
        state.first = min(state.first, first)
        state.last = max(state.last, last)
        state.probe_mask |= mask
        if state.function_name is None:
            state.function_name, state.purl = name, purl


def _merge_routed(
    mine: dict[str, NodeAggregate],
    unexpected: dict[str, NodeAggregate],
    states: Mapping[str, NodeState],
    node: type[NodeAggregate],
) -> None:
    """`_merge` of an unsplit aggregator's nodes: a node of the map (in `mine`) without its
    name and purl, as when it was folded here; any other into `unexpected`."""
    for node_hash, (count, first, last, mask, name, purl) in states.items():
        state = mine.get(node_hash)
        if state is None:
            state = unexpected.get(node_hash)
            if state is None:
                state = unexpected[node_hash] = node()
            if state.function_name is None:
                state.function_name, state.purl = name, purl
        state.count += count
        if first < state.first:
            state.first = first
        if last > state.last:
            state.last = last
        state.probe_mask |= mask


class BlockScan:
    """An aggregator's scan fed whole-line blocks one at a time (what `scan_stream` does with
    a stream's blocks), for a caller that cuts the blocks itself and counts their lines once
    for its own use too (the bundle verifier's line tally)."""

    def __init__(self, aggregator: ObservationAggregator, path: str | Path) -> None:
        self.aggregator = aggregator
        self.path = path
        self.line_base = 0  # lines before the current block
        self.shape_misses = 0
        # The observed_at values (decoded) of the last block fed, when msgspec folded it.
        self.keys: list[str] | None = None

    def feed(self, block: bytes, newlines: int | None = None) -> bool:
        """Fold a block of whole lines (only the last block may lack its final newline) that
        holds `newlines` newlines (None: counted here when needed). True when a fast path
        folded it whole: every line of it is then a record (none blank). A bad line raises,
        naming the line."""
        aggregator = self.aggregator
        self.keys = None
        folded = aggregator._compiled_block(block)
        if folded is not None:
            self.line_base += folded
            return True
        if newlines is None:
            newlines = block.count(b"\n")
        lines = newlines + (0 if block.endswith(b"\n") else 1)
        try:
            self.keys = aggregator._decoded_block(block, lines)
            done = self.keys is not None
            if not done and aggregator.scope is None:
                text = block.decode("utf-8")
                if self.shape_misses < _MAX_SHAPE_MISSES:
                    done = aggregator._shape_block(text, lines)
                    self.shape_misses += not done
                if not done:
                    matches = canonical_line().findall(text)
                    if len(matches) == lines:
                        aggregator._fast_fold(matches)
                        done = True
        except (_BadDate, UnicodeDecodeError):
            done = False
        if not done:
            # Line by line: raises naming the line, or folds valid non-canonical lines.
            aggregator._slow_block(block, self.path, self.line_base)
        self.line_base += lines
        return done


class _RangeReader:
    """Reads at most `remaining` bytes from a file object."""

    def __init__(self, inner: IO[bytes], remaining: int) -> None:
        self._inner = inner
        self._remaining = remaining

    def read(self, size: int) -> bytes:
        if self._remaining <= 0:
            return b""
        data = self._inner.read(min(size, self._remaining))
        self._remaining -= len(data)
        return data


def _blocks(handle: Any) -> Iterator[bytes]:
    """Blocks of whole lines (the last one may lack its newline)."""
    tail = b""
    while True:
        chunk = handle.read(_BLOCK)
        if not chunk:
            break
        cut = chunk.rfind(b"\n")
        if cut < 0:
            tail += chunk  # no line ends in this chunk (the tail never holds a newline)
            continue
        # One copy of the 8 MiB at most (joined from a view), not two (concatenate, slice).
        if tail or cut + 1 < len(chunk):
            block = b"".join((tail, memoryview(chunk)[: cut + 1]))
        else:
            block = chunk
        tail = chunk[cut + 1 :]
        yield block
    if tail:
        yield tail
