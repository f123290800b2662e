"""The observation record (schemas/observation-record.schema.json).

The rules are `observations.record.validate_record`, hand-written for the hot paths (scan,
writer, ingest), which keep records as dicts; `ObservationRecord` is the typed view of one
record for code that reads its fields by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..observations.record import (
    KINDS,
    PROBE_TYPES,
    ObservationError,
    validate_record,
)

__all__ = ["KINDS", "PROBE_TYPES", "ObservationError", "ObservationRecord", "validate_record"]


@dataclass(frozen=True)
class ObservationRecord:
    node_hash: str
    function_name: str
    probe_type: str
    observed_at: str
    first_observed_at: str | None = None
    last_observed_at: str | None = None
    count: int | None = None
    pid: int | None = None
    kind: str | None = None
    purl: str | None = None
    comm: str | None = None
    binary_path: str | None = None
    build_id: str | None = None
    container_id: str | None = None
    pod_name: str | None = None
    namespace: str | None = None
    host: str | None = None
    image_digest: str | None = None
    # Open by design: kind-specific values (path, argv, address), float-free and shallow.
    details: Mapping[str, Any] | None = None

    @classmethod
    def from_dict(
        cls, data: Any, source: str | Path | None = None, line: int | None = None
    ) -> ObservationRecord:
        """A record as the schema states it: `probe_type` required (the NDJSON readers default
        it to `unknown` before this point, as `validate_record` does by default)."""
        record = dict(data) if isinstance(data, dict) else data
        return cls(**validate_record(record, source, line, default_probe_type=False))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if value is not None:
                out[item.name] = dict(value) if item.name == "details" else value
        return out
