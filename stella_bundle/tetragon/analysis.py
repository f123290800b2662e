"""Runtime questions over observation records: hot symbols and a correlated timeline.

Both read the same records as every other command (`coverage.inputs`): evidence chains or
NDJSON files. With the bridge disabled or no records they answer empty results, never errors.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MalformedDocumentError
from ..formats.flat import read_flat, read_list
from ..formats.record import record_count
from ..timeutil import format_timestamp, is_rfc3339_timestamp, parse_timestamp


@dataclass
class _Tally:
    count: int
    first: str
    last: str


def _first_last(record: dict[str, Any]) -> tuple[str, str]:
    observed = record["observed_at"]
    return record.get("first_observed_at", observed), record.get("last_observed_at", observed)


def _window_start(timestamp: str, window_seconds: int) -> str:
    moment = parse_timestamp(timestamp)
    epoch = int(moment.timestamp())
    start = epoch - epoch % window_seconds
    return format_timestamp(dt.datetime.fromtimestamp(start, dt.UTC))


@dataclass(frozen=True)
class SymbolCount:
    purl: str
    symbol: str
    count: int
    first_seen: str
    last_seen: str


@dataclass(frozen=True)
class WindowCount:
    window_start: str
    purl: str
    symbol: str
    count: int


@dataclass(frozen=True)
class HotSymbols:
    """What `tetragon hot-symbols` prints and `/runtime/hot-symbols` answers."""

    symbols: tuple[SymbolCount, ...]
    window_seconds: int | None = None  # with per-window counts
    windows: tuple[WindowCount, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"symbols": [dataclasses.asdict(item) for item in self.symbols]}
        if self.window_seconds is not None:
            out["window_seconds"] = self.window_seconds
            out["windows"] = [dataclasses.asdict(item) for item in self.windows or ()]
        return out

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> HotSymbols:
        if not isinstance(data, dict) or set(data) - {"symbols", "window_seconds", "windows"}:
            raise MalformedDocumentError(
                "expected symbols (and window_seconds with windows)", path=source, field="symbols"
            )
        symbols = tuple(
            SymbolCount(**read_flat(SymbolCount, item, source, f"symbols[{index}]"))
            for index, item in enumerate(read_list(data.get("symbols"), source, "symbols"))
        )
        if ("window_seconds" in data) != ("windows" in data):
            raise MalformedDocumentError(
                "window_seconds and windows go together", path=source, field="windows"
            )
        if "window_seconds" not in data:
            return cls(symbols)
        seconds = data["window_seconds"]
        if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 1:
            raise MalformedDocumentError(
                "expected a number of seconds >= 1", path=source, field="window_seconds"
            )
        windows = tuple(
            WindowCount(**read_flat(WindowCount, item, source, f"windows[{index}]"))
            for index, item in enumerate(read_list(data["windows"], source, "windows"))
        )
        return cls(symbols, seconds, windows)


def hot_symbols(
    records: Iterable[dict[str, Any]], *, window_seconds: int | None = None, top: int | None = None
) -> HotSymbols:
    """Observations per (purl, symbol), most frequent first; per window when asked.

    A record's `count` (aggregated records) counts as that many observations.
    """
    if window_seconds is not None and window_seconds < 1:
        raise ValueError("window_seconds must be at least 1")
    totals: dict[tuple[str, str], _Tally] = {}
    windows: dict[tuple[str, str, str], int] = {}
    for record in records:
        key = (record.get("purl", ""), record["function_name"])
        count = record_count(record)
        first, last = _first_last(record)
        tally = totals.get(key)
        if tally is None:
            totals[key] = _Tally(count, first, last)
        else:
            tally.count += count
            tally.first = min(tally.first, first, key=_sort_key)
            tally.last = max(tally.last, last, key=_sort_key)
        if window_seconds is not None:
            start = _window_start(record["observed_at"], window_seconds)
            windows[(start, *key)] = windows.get((start, *key), 0) + count
    ranked = sorted(totals.items(), key=lambda item: (-item[1].count, item[0]))
    if top is not None:
        ranked = ranked[:top]
    symbols = tuple(
        SymbolCount(purl, symbol, tally.count, tally.first, tally.last)
        for (purl, symbol), tally in ranked
    )
    if window_seconds is None:
        return HotSymbols(symbols)
    kept = {key for key, _ in ranked}
    return HotSymbols(
        symbols,
        window_seconds,
        tuple(
            WindowCount(start, purl, symbol, count)
            for (start, purl, symbol), count in sorted(
                windows.items(), key=lambda item: (item[0][0], -item[1], item[0][1:])
            )
            if (purl, symbol) in kept
        ),
    )


def _sort_key(timestamp: str) -> dt.datetime:
    return parse_timestamp(timestamp)


_TIMELINE_FIELDS = (
    "probe_type",
    "kind",
    "purl",
    "node_hash",
    "build_id",
    "binary_path",
    "image_digest",
    "container_id",
    "pod_name",
    "namespace",
    "host",
    "pid",
    "count",
)


@dataclass(frozen=True)
class Timeline:
    """What `observations timeline` prints and `/runtime/timeline` answers: events in time
    order, each the record's time and symbol with its component and artifact fields."""

    events: tuple[Mapping[str, Any], ...]

    def to_dict(self) -> dict[str, Any]:
        return {"events": [dict(event) for event in self.events]}

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> Timeline:
        if not isinstance(data, dict) or set(data) != {"events"}:
            raise MalformedDocumentError(
                "expected an object of events", path=source, field="events"
            )
        events = read_list(data["events"], source, "events")
        known = {"observed_at", "symbol", "event", *_TIMELINE_FIELDS}
        for index, event in enumerate(events):
            where = f"events[{index}]"
            if not isinstance(event, dict):
                raise MalformedDocumentError("expected an object", path=source, field=where)
            unknown = sorted(event.keys() - known)
            if unknown:
                raise MalformedDocumentError(
                    "unknown field", path=source, field=f"{where}.{unknown[0]}"
                )
            if not is_rfc3339_timestamp(event.get("observed_at")):
                raise MalformedDocumentError(
                    "expected an RFC 3339 timestamp", path=source, field=f"{where}.observed_at"
                )
            if not isinstance(event.get("symbol"), str):
                raise MalformedDocumentError(
                    "expected a string", path=source, field=f"{where}.symbol"
                )
        return cls(tuple(events))


def timeline(
    records: Iterable[dict[str, Any]],
    *,
    window_from: str | None = None,
    window_to: str | None = None,
    image: str | None = None,
    purl: str | None = None,
    limit: int | None = None,
) -> Timeline:
    """Events in chronological order, each with its component (purl) and build artifact
    (image digest, build id, binary). `image` matches the digest or a prefix of it."""
    start = parse_timestamp(window_from) if window_from else None
    end = parse_timestamp(window_to) if window_to else None
    wanted_purl = _versionless(purl) if purl else None
    selected = []
    for record in records:
        moment = parse_timestamp(record["observed_at"])
        if (start is not None and moment < start) or (end is not None and moment > end):
            continue
        if image is not None and not str(record.get("image_digest", "")).startswith(image):
            continue
        if wanted_purl is not None:
            record_purl = record.get("purl", "")
            if record_purl != purl and _versionless(record_purl) != wanted_purl:
                continue
        entry = {"observed_at": format_timestamp(moment), "symbol": record["function_name"]}
        for name in _TIMELINE_FIELDS:
            if name in record:
                entry[name] = record[name]
        event = (
            record.get("details", {}).get("event")
            if isinstance(record.get("details"), dict)
            else None
        )
        if event is not None:
            entry["event"] = event
        selected.append((moment, entry))
    selected.sort(key=lambda item: (item[0], item[1].get("symbol", ""), item[1].get("pid", 0)))
    entries = [entry for _, entry in selected]
    return Timeline(tuple(entries[:limit] if limit is not None else entries))


def _versionless(purl: str) -> str:
    """`pkg:deb/debian/openssl@3.0?arch=amd64` → `pkg:deb/debian/openssl` (a purl filter
    without a version matches every version)."""
    return purl.split("?")[0].split("#")[0].split("@")[0]
