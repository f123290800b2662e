"""What the store commands print (`observations ingest` and `prune`, `store init`, `migrate`,
`status`): the store's answer, named by the store it came from, read back strictly (the report
registry's models of the store)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MalformedDocumentError
from ..formats.flat import read_flat, read_list
from .base import ChunkConflict, DroppedPartition, IngestResult, PruneResult, StoreStatus


@dataclass(frozen=True)
class _ChainSummary:
    """One verified chain of an evidence ingest (store/ingest.py writes these)."""

    chain_id: str
    chunks: int
    records: int
    final_seal: bool
    events_lost: int
    warnings: list[str]


@dataclass(frozen=True)
class _IngestFields:
    store: str
    chunks_stored: int
    chunks_already_stored: int
    records_stored: int
    records_dropped: int
    conflicts: object
    chains: object


@dataclass(frozen=True)
class StoreIngest:
    store: str  # the store's URL as shown (no password)
    result: IngestResult

    def to_dict(self) -> dict[str, Any]:
        return {"store": self.store, **self.result.to_dict()}

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> StoreIngest:
        values = read_flat(_IngestFields, data, source, "ingest")
        conflicts = [
            ChunkConflict(**read_flat(ChunkConflict, item, source, f"conflicts[{index}]"))
            for index, item in enumerate(read_list(values["conflicts"], source, "conflicts"))
        ]
        chains = [
            read_flat(_ChainSummary, item, source, f"chains[{index}]")
            for index, item in enumerate(read_list(values["chains"], source, "chains"))
        ]
        result = IngestResult(
            values["chunks_stored"],
            values["chunks_already_stored"],
            values["records_stored"],
            values["records_dropped"],
            conflicts,
            chains,
        )
        return cls(values["store"], result)


@dataclass(frozen=True)
class _PruneFields:
    store: str
    cutoff: str
    records_removed: int
    partitions_dropped: object


@dataclass(frozen=True)
class StorePrune:
    store: str
    result: PruneResult

    def to_dict(self) -> dict[str, Any]:
        return {"store": self.store, **self.result.to_dict()}

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> StorePrune:
        values = read_flat(_PruneFields, data, source, "prune")
        items = read_list(values["partitions_dropped"], source, "partitions_dropped")
        dropped = [
            DroppedPartition(
                **read_flat(DroppedPartition, item, source, f"partitions_dropped[{i}]")
            )
            for i, item in enumerate(items)
        ]
        return cls(
            values["store"], PruneResult(values["cutoff"], values["records_removed"], dropped)
        )


@dataclass(frozen=True)
class _InitFields:
    store: str
    applied: list[int]
    schema_version: int


@dataclass(frozen=True)
class StoreInit:
    """What `store init` prints: the migrations applied (none: it was initialised already)."""

    store: str
    applied: tuple[int, ...]
    schema_version: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "applied": list(self.applied),
            "schema_version": self.schema_version,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> StoreInit:
        values = read_flat(_InitFields, data, source, "init")
        return cls(values["store"], tuple(values["applied"]), values["schema_version"])


@dataclass(frozen=True)
class _MigrateFields:
    store: str
    from_version: int
    applied: list[int]
    schema_version: int


@dataclass(frozen=True)
class StoreMigrate:
    """What `store migrate` prints: from which version, the migrations applied, the version now."""

    store: str
    from_version: int
    applied: tuple[int, ...]
    schema_version: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "from_version": self.from_version,
            "applied": list(self.applied),
            "schema_version": self.schema_version,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> StoreMigrate:
        values = read_flat(_MigrateFields, data, source, "migrate")
        return cls(
            values["store"],
            values["from_version"],
            tuple(values["applied"]),
            values["schema_version"],
        )


@dataclass(frozen=True)
class _StatusFields:
    url: str
    backend: str
    schema_version: int
    latest_version: int
    pending_migrations: list[int]
    records: int
    chunks: int
    chains: int
    function_maps: int
    reports: int
    first_observed_at: str | None
    last_observed_at: str | None
    partitions: list[str]
    records_dropped: int


@dataclass(frozen=True)
class StoreStatusReport:
    """What `store status` prints: the store's status, its backend's own details after."""

    status: StoreStatus

    def to_dict(self) -> dict[str, Any]:
        return self.status.to_dict()

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> StoreStatusReport:
        if not isinstance(data, dict):
            raise MalformedDocumentError("expected an object", path=source, field="status")
        known = [f.name for f in dataclasses.fields(_StatusFields)]
        values = read_flat(
            _StatusFields, {k: v for k, v in data.items() if k in known}, source, "status"
        )
        details = {k: v for k, v in data.items() if k not in known}
        del values["pending_migrations"]
        report = cls(StoreStatus(**values, details=details))
        if report.to_dict() != data:
            raise MalformedDocumentError(
                "disagrees with schema_version and latest_version",
                path=source,
                field="pending_migrations",
            )
        return report
