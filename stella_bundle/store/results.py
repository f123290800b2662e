"""What `observations ingest` and `observations prune` print: the store's answer, named by the
store it came from, read back strictly (the report registry's models of the store)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..formats.flat import read_flat, read_list
from .base import ChunkConflict, DroppedPartition, IngestResult, PruneResult


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
