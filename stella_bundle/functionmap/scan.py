"""Aggregating observation records per node: fast whole-block paths, a full path else.

Files are read in 8 MiB blocks of whole lines. Each block tries, in order:
1. msgspec typed decoding of the whole block (fastdecode.py), then the checks msgspec cannot
   express; 2. a regular expression specialised to the first line's key set (no optional
   groups); 3. one anchored regular expression for any canonical line (sorted keys, no
   whitespace). Each accepts a strict subset of what `validate_record` accepts, and a block is
   folded only when every line is accepted. Any other block is re-read line by line with
   `json.loads` + `validate_record`: valid non-canonical lines still count, and a bad line is
   an error naming the file and line number.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Final

import zstandard
from msgspec import UNSET

from ..errors import MalformedDocumentError
from ..observations.ndjson import open_ndjson
from ..observations.record import (
    KINDS,
    NODE_HASH_RE,
    PROBE_TYPES,
    ObservationError,
    validate_record,
)
from ..timeutil import format_timestamp, parse_timestamp
from .fastdecode import decode_block

PROBE_BIT: Final = {name: 1 << index for index, name in enumerate(PROBE_TYPES)}

_BLOCK = 8 << 20

# --- the canonical-line pattern ---------------------------------------------------------------

# JSON strings, "unrolled" with possessive quantifiers so the engine never backtracks into them.
_CHARS = r'[^"\\\x00-\x1f]*+'
_ESC = r'\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})'
_STR = rf'"{_CHARS}(?:{_ESC}{_CHARS})*+"'
_NESTR = rf'"(?=[^"])(?:{_CHARS}(?:{_ESC}{_CHARS})*+)"'
# At most 15 digits: always within RFC 8785's ±(2**53 - 1); longer numbers take the full path.
_UINT = r"(?:0|[1-9][0-9]{0,14})"
_SINT = r"-?(?:0|[1-9][0-9]{0,14})"
_SCALAR = rf"(?:{_STR}|{_SINT}|true|false|null)"
_ARRAY = rf"\[(?:{_SCALAR}(?:,{_SCALAR})*)?\]"
_DVAL = rf"(?:{_SCALAR}|{_ARRAY})"
# `details` in the fast path: a flat object of scalars and scalar arrays (argv, addresses).
_DETAILS = rf"\{{(?:{_STR}:{_DVAL}(?:,{_STR}:{_DVAL})*)?\}}"
# Canonical UTC timestamps. The regex checks the shape and the time of day; the calendar date
# (April 31, February 29 of a non-leap year) is checked in the fold against a cache of dates
# already seen valid, which is much cheaper than spelling the calendar out in the pattern.
_TS = r'"([0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{6}Z)"'
_VALID_DATES: set[str] = set()


def date_ok(stamp: str) -> bool:
    """Whether the YYYY-MM-DD prefix of a canonical timestamp is a real date (cached)."""
    day = stamp[:10]
    if day in _VALID_DATES:
        return True
    try:
        dt.date(int(day[:4]), int(day[5:7]), int(day[8:10]))
    except ValueError:
        return False
    if len(_VALID_DATES) > 100_000:
        _VALID_DATES.clear()
    _VALID_DATES.add(day)
    return True


class _BadDate(Exception):
    """A canonical-looking line has an impossible date: the full path reports it."""


# After this many blocks that do not have one uniform shape, stop trying shapes in a file.
_MAX_SHAPE_MISSES = 4


_HASH = r'"(sha256:[0-9a-f]{64})"'
_PROBE = '"(' + "|".join(PROBE_TYPES) + ')"'
_KIND = '"(?:' + "|".join(KINDS) + ')"'


def _before(key: str, value: str) -> str:
    return f'(?:"{key}":{value},)?'


def _after(key: str, value: str) -> str:
    return f'(?:,"{key}":{value})?'


CANONICAL_LINE: Final = re.compile(
    r"^\{"
    + _before("binary_path", _STR)
    + _before("build_id", _STR)
    + _before("comm", _STR)
    + _before("container_id", _STR)
    + _before("count", r"([1-9][0-9]{0,14})")
    + _before("details", _DETAILS)
    + _before("first_observed_at", _TS)
    + f'"function_name":({_NESTR})'
    + _after("host", _STR)
    + _after("image_digest", r'"sha256:[0-9a-f]{64}"')
    + _after("kind", _KIND)
    + _after("last_observed_at", _TS)
    + _after("namespace", _STR)
    + f',"node_hash":{_HASH}'
    + f',"observed_at":{_TS}'
    + _after("pid", _UINT)
    + _after("pod_name", _STR)
    + _after("probe_type", _PROBE)
    + _after("purl", f"({_STR})")
    + r"\}$",
    re.MULTILINE,
)
# Per field: (value pattern, capture group index or None). Group order of every line pattern:
# count, first_observed_at, function_name, last_observed_at, node_hash, observed_at,
# probe_type, purl (absent fields capture "").
_SIMPLE_STR = r'"[^"\\\x00-\x1f]*"'
_SHAPE_FIELDS: Final[dict[str, tuple[str, int | None]]] = {
    "binary_path": (_SIMPLE_STR, None),
    "build_id": (_SIMPLE_STR, None),
    "comm": (_SIMPLE_STR, None),
    "container_id": (_SIMPLE_STR, None),
    "count": (r"([1-9][0-9]{0,14})", 0),
    "first_observed_at": (_TS, 1),
    "function_name": (r'("[^"\\\x00-\x1f]+")', 2),
    "host": (_SIMPLE_STR, None),
    "image_digest": (r'"sha256:[0-9a-f]{64}"', None),
    "kind": (_KIND, None),
    "last_observed_at": (_TS, 3),
    "namespace": (_SIMPLE_STR, None),
    "node_hash": (_HASH, 4),
    "observed_at": (_TS, 5),
    "pid": (_UINT, None),
    "pod_name": (_SIMPLE_STR, None),
    "probe_type": (_PROBE, 6),
    "purl": (f"({_SIMPLE_STR})", 7),
}
_FIRST_KEYS = re.compile(r'"([a-z_]+)":')


@functools.lru_cache(maxsize=64)
def shape_pattern(keys: tuple[str, ...]) -> re.Pattern[str] | None:
    """A pattern for lines with exactly these (sorted) keys and escape-free strings.

    It accepts a subset of CANONICAL_LINE (hence of validate_record) and is about a third
    faster: no optional groups. Absent captured fields are empty groups, so match tuples
    have CANONICAL_LINE's layout.
    """
    if list(keys) != sorted(set(keys)) or not {"function_name", "node_hash", "observed_at"} <= set(
        keys
    ):
        return None
    if any(key not in _SHAPE_FIELDS for key in keys):
        return None  # details (nested) and unknown keys: the general pattern decides
    captured = {_SHAPE_FIELDS[key][1] for key in keys} - {None}
    pending = [index for index in range(8) if index not in captured]
    pieces = []
    for key in keys:
        value, index = _SHAPE_FIELDS[key]
        if index is not None:
            while pending and pending[0] < index:
                pieces.append("()")
                pending.pop(0)
        separator = "," if any(piece != "()" for piece in pieces) else ""
        pieces.append(f'{separator}"{key}":{value}')
    pattern = r"^\{" + "".join(pieces) + "()" * len(pending) + r"\}$"
    return re.compile(pattern, re.MULTILINE)


# Group order of CANONICAL_LINE.findall tuples.
_G_COUNT, _G_FIRST, _G_NAME, _G_LAST, _G_HASH, _G_OBSERVED, _G_PROBE, _G_PURL = range(8)


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


class NodeAggregate:
    """What was seen of one node_hash: counts, first/last seen, probe types, a name and purl."""

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


def _canonical_time(value: str, source: str | Path, line: int | None, field: str) -> str:
    if len(value) == 27 and value.endswith("Z") and value[19] == ".":
        return value
    try:
        return format_timestamp(parse_timestamp(value))
    except ValueError as exc:
        raise ObservationError(str(exc), path=source, line=line, field=field) from exc


class ObservationAggregator:
    """Folds records into per-node state; only nodes of the map (and unexpected ones) are kept.

    Memory is proportional to the number of distinct node hashes, never to the record count.
    """

    def __init__(
        self,
        expected: Iterable[str] | None = None,
        window_from: str | None = None,
        window_to: str | None = None,
    ) -> None:
        self.expected: dict[str, NodeAggregate] = {h: NodeAggregate() for h in expected or ()}
        self.unexpected: dict[str, NodeAggregate] = {}
        self.window_from = window_from
        self.window_to = window_to
        self.records = 0
        self.outside_window = 0
        self.files: list[str] = []

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

    def add_records(self, records: Iterable[Any], source: str | Path = "<records>") -> None:
        for index, record in enumerate(records, start=1):
            self.add_record(record, source, index)

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
                state = self.unexpected[node_hash] = NodeAggregate()
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

    def scan_range(self, path: str | Path, start: int, end: int) -> None:
        """Aggregate bytes [start, end) of a plain NDJSON file (both at line boundaries).

        Line numbers in errors are relative to `start`; the caller rebases them.
        """
        with open(path, "rb") as handle:
            handle.seek(start)
            self._scan_handle(_RangeReader(handle, end - start), path)

    def scan_files(self, paths: Iterable[str | Path]) -> None:
        for path in paths:
            self.scan_file(path)

    def _scan_handle(self, handle: Any, path: str | Path) -> None:
        line_base = 0  # lines before the current block
        shape_misses = 0
        for block in _blocks(handle):
            lines = block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
            try:
                done = self._decoded_block(block, lines)
                if not done:
                    text = block.decode("utf-8")
                    if shape_misses < _MAX_SHAPE_MISSES:
                        done = self._shape_block(text, lines)
                        shape_misses += not done
                    if not done:
                        matches = CANONICAL_LINE.findall(text)
                        if len(matches) == lines:
                            self._fast_fold(matches)
                            done = True
            except (_BadDate, UnicodeDecodeError):
                done = False
            if not done:
                # Line by line: raises naming the line, or folds valid non-canonical lines.
                self._slow_block(block, path, line_base)
            line_base += lines

    def _decoded_block(self, block: bytes, lines: int) -> bool:
        """Fold a block msgspec decodes and validates whole; False to try the other paths."""
        decoded = decode_block(block, lines)
        if decoded is None:
            return False
        records, aggregated = decoded
        expected = self.expected
        unexpected = self.unexpected
        bits = PROBE_BIT
        valid_dates = _VALID_DATES
        window_from = self.window_from
        window_to = self.window_to
        plain = not aggregated and window_from is None and window_to is None
        outside = 0
        for record in records:
            node_hash = record.node_hash
            observed = record.observed_at
            if observed[:10] not in valid_dates and not date_ok(observed):
                raise _BadDate
            if plain:
                start = end = observed
                count = 1
            else:
                first = record.first_observed_at
                last = record.last_observed_at
                start = observed if first is UNSET else first  # type: ignore[assignment]
                end = observed if last is UNSET else last  # type: ignore[assignment]
                if (start is not observed and not date_ok(start)) or (
                    end is not observed and not date_ok(end)
                ):
                    raise _BadDate
                if (window_from is not None and end < window_from) or (
                    window_to is not None and start > window_to
                ):
                    outside += 1
                    continue
                count = 1 if record.count is UNSET else record.count  # type: ignore[assignment]
            state = expected.get(node_hash)
            if state is None:
                state = unexpected.get(node_hash)
                if state is None:
                    if not NODE_HASH_RE.match(node_hash):
                        raise _BadDate  # not a date, but the same remedy: the full path names it
                    state = unexpected[node_hash] = NodeAggregate()
                    state.function_name = record.function_name
                    state.purl = None if record.purl is UNSET else record.purl  # type: ignore[assignment]
            state.count += count
            if start < state.first:
                state.first = start
            if end > state.last:
                state.last = end
            state.probe_mask |= bits[record.probe_type]
        self.records += len(records)
        self.outside_window += outside
        return True

    def _shape_block(self, text: str, lines: int) -> bool:
        """Fold a block whose lines all have the first line's keys; False if they do not."""
        end = text.find("\n")
        keys = tuple(_FIRST_KEYS.findall(text[: end if end >= 0 else len(text)]))
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
        valid_dates = _VALID_DATES
        for _, _, name, _, node_hash, observed, probe, purl in matches:
            if observed[:10] not in valid_dates and not date_ok(observed):
                raise _BadDate
            state = expected.get(node_hash)
            if state is None:
                state = unexpected.get(node_hash)
                if state is None:
                    state = unexpected[node_hash] = NodeAggregate()
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
        valid_dates = _VALID_DATES
        outside = 0
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
                    state = self.unexpected[node_hash] = NodeAggregate()
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
            match = CANONICAL_LINE.fullmatch(text)
            if match is not None:
                try:
                    self._fast_fold([match.groups(default="")])
                    continue
                except _BadDate:
                    pass  # validate_record below names the field
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise MalformedDocumentError(
                    f"malformed NDJSON: {exc.msg} (column {exc.colno})", path=path, line=number
                ) from exc
            self.add_record(value, path, number)


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
        data = tail + chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            tail = data
            continue
        tail = data[cut + 1 :]
        yield data[: cut + 1]
    if tail:
        yield tail
