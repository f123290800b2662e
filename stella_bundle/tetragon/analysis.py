"""Runtime questions over observation records: hot symbols and a correlated timeline.

Both read the same records as every other command (`coverage.inputs`): evidence chains or
NDJSON files. With the bridge disabled or no records they answer empty results, never errors.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..formats.record import record_count
from ..timeutil import format_timestamp, parse_timestamp


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


def hot_symbols(
    records: Iterable[dict[str, Any]], *, window_seconds: int | None = None, top: int | None = None
) -> dict[str, Any]:
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
    out: dict[str, Any] = {
        "symbols": [
            {
                "purl": purl,
                "symbol": symbol,
                "count": tally.count,
                "first_seen": tally.first,
                "last_seen": tally.last,
            }
            for (purl, symbol), tally in ranked
        ]
    }
    if window_seconds is not None:
        kept = {key for key, _ in ranked}
        out["window_seconds"] = window_seconds
        out["windows"] = [
            {"window_start": start, "purl": purl, "symbol": symbol, "count": count}
            for (start, purl, symbol), count in sorted(
                windows.items(), key=lambda item: (item[0][0], -item[1], item[0][1:])
            )
            if (purl, symbol) in kept
        ]
    return out


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


def timeline(
    records: Iterable[dict[str, Any]],
    *,
    window_from: str | None = None,
    window_to: str | None = None,
    image: str | None = None,
    purl: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
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
    return entries[:limit] if limit is not None else entries


def _versionless(purl: str) -> str:
    """`pkg:deb/debian/openssl@3.0?arch=amd64` → `pkg:deb/debian/openssl` (a purl filter
    without a version matches every version)."""
    return purl.split("?")[0].split("#")[0].split("@")[0]
