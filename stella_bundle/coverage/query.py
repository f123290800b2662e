"""`stella observations query`: filter observation records and summarise them per symbol."""

from __future__ import annotations

import fnmatch
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MalformedDocumentError
from ..formats.flat import read_flat, read_list
from ..formats.node_hash import normalize_symbol
from ..formats.record import ObservationRecord
from ..timeutil import canonical_timestamp, check_window, parse_timestamp


@dataclass
class QueryFilter:
    service: str | None = None
    container: str | None = None
    symbol: str | None = None  # glob over function_name and its normalised form
    window_from: str | None = None  # canonical timestamps
    window_to: str | None = None

    def __post_init__(self) -> None:
        if self.window_from is not None and self.window_to is not None:
            check_window(parse_timestamp(self.window_from), parse_timestamp(self.window_to))

    def matches_service(self, record: dict[str, Any]) -> bool:
        """A record belongs to service S when its pod is S or S-<suffix>, its namespace or
        comm is S, or details.service is S (records carry no service field of their own)."""
        if self.service is None:
            return True
        name = self.service
        pod = record.get("pod_name") or ""
        details = record.get("details")
        return (
            pod == name
            or pod.startswith(name + "-")
            or record.get("namespace") == name
            or record.get("comm") == name
            or (isinstance(details, dict) and details.get("service") == name)
        )

    def accepts(self, record: dict[str, Any]) -> bool:
        if not self.matches_service(record):
            return False
        if self.container is not None:
            container = record.get("container_id") or ""
            if not (container == self.container or container.startswith(self.container)):
                return False
        if self.symbol is not None:
            name = record["function_name"]
            if not (
                fnmatch.fnmatchcase(name, self.symbol)
                or fnmatch.fnmatchcase(normalize_symbol(name), self.symbol)
            ):
                return False
        if self.window_from is not None or self.window_to is not None:
            start = canonical_timestamp(record.get("first_observed_at") or record["observed_at"])
            end = canonical_timestamp(record.get("last_observed_at") or record["observed_at"])
            if self.window_from is not None and end < self.window_from:
                return False
            if self.window_to is not None and start > self.window_to:
                return False
        return True


@dataclass
class SymbolSummary:
    function_name: str
    purl: str | None
    node_hash: str
    count: int = 0
    records: int = 0
    first_observed_at: str = "~"
    last_observed_at: str = ""
    probe_types: set[str] = field(default_factory=set)
    containers: set[str] = field(default_factory=set)

    def to_dict(self) -> dict[str, Any]:
        return {
            "function_name": self.function_name,
            "purl": self.purl,
            "node_hash": self.node_hash,
            "count": self.count,
            "records": self.records,
            "first_observed_at": self.first_observed_at,
            "last_observed_at": self.last_observed_at,
            "probe_types": sorted(self.probe_types),
            "containers": sorted(self.containers),
        }

    @classmethod
    def from_dict(
        cls, data: Any, source: str | Path | None = None, where: str = "symbol"
    ) -> SymbolSummary:
        values = read_flat(cls, data, source, where)
        for name in ("probe_types", "containers"):
            values[name] = set(values[name])
        return cls(**values)


@dataclass(frozen=True)
class SymbolSummaries:
    """What `observations query --summary` prints: one entry per symbol, most counted first."""

    symbols: tuple[SymbolSummary, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"symbols": [entry.to_dict() for entry in self.symbols]}

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> SymbolSummaries:
        items = read_list(_only(data, "symbols", source), source, "symbols")
        return cls(
            tuple(
                SymbolSummary.from_dict(item, source, f"symbols[{i}]")
                for i, item in enumerate(items)
            )
        )


@dataclass(frozen=True)
class RecordSelection:
    """What `observations query` prints: the records the filter kept, in input order."""

    records: tuple[ObservationRecord, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"records": [record.to_dict() for record in self.records]}

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> RecordSelection:
        items = read_list(_only(data, "records", source), source, "records")
        return cls(
            tuple(ObservationRecord.from_dict(item, source, i) for i, item in enumerate(items, 1))
        )


def _only(data: Any, name: str, source: str | Path | None) -> Any:
    if not isinstance(data, dict) or set(data) != {name}:
        raise MalformedDocumentError(
            f"expected an object with {name} only", path=source, field=name
        )
    return data[name]


def select_records(records: Iterable[dict[str, Any]], limit: int | None = None) -> RecordSelection:
    """The first `limit` records (all without one); they were validated as they were read."""
    selected = itertools.islice(records, limit) if limit is not None else records
    return RecordSelection(tuple(ObservationRecord(**record) for record in selected))


def summary_of(records: Iterable[dict[str, Any]]) -> SymbolSummaries:
    """The per-symbol summary as a result (`summarise`'s entries)."""
    return SymbolSummaries(tuple(summarise(records)))


def filter_records(
    records: Iterable[dict[str, Any]], query: QueryFilter
) -> Iterator[dict[str, Any]]:
    return (record for record in records if query.accepts(record))


def summarise(records: Iterable[dict[str, Any]]) -> list[SymbolSummary]:
    """Per symbol (node_hash): counts, first/last seen, probe types, containers."""
    table: dict[str, SymbolSummary] = {}
    for record in records:
        node_hash = record["node_hash"]
        entry = table.get(node_hash)
        if entry is None:
            entry = table[node_hash] = SymbolSummary(
                record["function_name"], record.get("purl"), node_hash
            )
        entry.count += int(record.get("count", 1))
        entry.records += 1
        start = canonical_timestamp(record.get("first_observed_at") or record["observed_at"])
        end = canonical_timestamp(record.get("last_observed_at") or record["observed_at"])
        entry.first_observed_at = min(entry.first_observed_at, start)
        entry.last_observed_at = max(entry.last_observed_at, end)
        entry.probe_types.add(record["probe_type"])
        if record.get("container_id"):
            entry.containers.add(record["container_id"])
    return sorted(table.values(), key=lambda s: (-s.count, s.function_name, s.node_hash))
