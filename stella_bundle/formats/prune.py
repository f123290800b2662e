"""The prune record's predicate (DESIGN.md §4, schemas/evidence-prune.schema.json): which sealed
chunks retention removed, and the last removed seal's digest.

Building, signing and parsing `prune.dsse.json` are `evidence/prune_record.py`; retention
itself is `evidence/prune.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ..canonical import MAX_SAFE_INTEGER
from ..digests import SHA256_HEX_RE
from ..errors import MalformedDocumentError
from ..timeutil import is_rfc3339_timestamp
from .seal import CHAIN_ID_RE, MAX_SEQUENCE, LossCounters

EVIDENCE_PRUNE_PREDICATE: Final = "https://stella.ops/predicates/evidence-prune/v1"


@dataclass(frozen=True)
class PruneRecord:
    chain_id: str
    first_sequence: int
    last_sequence: int
    last_seal_sha256: str  # sha256 of the bytes of the last removed seal
    records_removed: int
    loss_removed: LossCounters
    first_observed_at: str | None
    last_observed_at: str | None
    pruned_at: str
    older_than_seconds: int
    previous_prune_sha256: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "removed": {"first_sequence": self.first_sequence, "last_sequence": self.last_sequence},
            "last_removed_seal": {"sequence": self.last_sequence, "sha256": self.last_seal_sha256},
            "records_removed": self.records_removed,
            "loss_removed": self.loss_removed.to_dict(),
            "window_removed": {
                "first_observed_at": self.first_observed_at,
                "last_observed_at": self.last_observed_at,
            },
            "pruned_at": self.pruned_at,
            "older_than_seconds": self.older_than_seconds,
            "previous_prune_sha256": self.previous_prune_sha256,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> PruneRecord:
        """Strict parse; MalformedDocumentError names the predicate field at fault."""

        def fail(message: str, field: str) -> MalformedDocumentError:
            return MalformedDocumentError(message, path=source, field=f"predicate.{field}")

        def fields_of(value: Any, where: str, names: tuple[str, ...]) -> dict[str, Any]:
            """The object at `where`, with exactly `names` (unknown fields refused)."""
            if not isinstance(value, dict):
                raise (
                    fail("expected an object", where)
                    if where
                    else MalformedDocumentError("prune predicate is not an object", path=source)
                )
            prefix = f"{where}." if where else ""
            unknown = sorted(value.keys() - set(names))
            if unknown:
                raise fail("unknown field", prefix + unknown[0])
            for name in names:
                if name not in value:
                    raise fail("required field is missing", prefix + name)
            return value

        def sequence(value: Any, where: str) -> int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise fail("expected a sequence number", where)
            if not 1 <= value <= MAX_SEQUENCE:
                raise fail("expected a sequence number", where)
            return value

        def count(value: Any, where: str) -> int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise fail("expected a non-negative integer (at most 2**53 - 1)", where)
            if not 0 <= value <= MAX_SAFE_INTEGER:
                raise fail("expected a non-negative integer (at most 2**53 - 1)", where)
            return value

        def sha256(value: Any, where: str) -> str:
            if not isinstance(value, str) or not SHA256_HEX_RE.match(value):
                raise fail("expected 64 lowercase hex digits", where)
            return value

        def time(value: Any, where: str) -> str:
            if not is_rfc3339_timestamp(value):
                raise fail("expected an RFC 3339 timestamp", where)
            return str(value)

        top = fields_of(data, "", _FIELDS)
        chain_id = top["chain_id"]
        if not isinstance(chain_id, str) or not CHAIN_ID_RE.match(chain_id):
            raise fail("expected a chain id", "chain_id")
        removed = fields_of(top["removed"], "removed", ("first_sequence", "last_sequence"))
        first = sequence(removed["first_sequence"], "removed.first_sequence")
        last = sequence(removed["last_sequence"], "removed.last_sequence")
        last_seal = fields_of(top["last_removed_seal"], "last_removed_seal", ("sequence", "sha256"))
        sequence(last_seal["sequence"], "last_removed_seal.sequence")
        seal_sha256 = sha256(last_seal["sha256"], "last_removed_seal.sha256")
        window_names = ("first_observed_at", "last_observed_at")
        window = fields_of(top["window_removed"], "window_removed", window_names)
        first_at, last_at = (
            None if window[name] is None else time(window[name], f"window_removed.{name}")
            for name in window_names
        )
        previous = top["previous_prune_sha256"]
        record = cls(
            chain_id=chain_id,
            first_sequence=first,
            last_sequence=last,
            last_seal_sha256=seal_sha256,
            records_removed=count(top["records_removed"], "records_removed"),
            loss_removed=LossCounters.from_dict(top["loss_removed"], source),
            first_observed_at=first_at,
            last_observed_at=last_at,
            pruned_at=time(top["pruned_at"], "pruned_at"),
            older_than_seconds=count(top["older_than_seconds"], "older_than_seconds"),
            previous_prune_sha256=(
                None if previous is None else sha256(previous, "previous_prune_sha256")
            ),
        )
        # Beyond the schema: the range and the last removed seal name the same sequence.
        if first > last or last_seal["sequence"] != last:
            raise fail("the removed range and the last removed seal disagree", "removed")
        return record


_FIELDS: Final = (
    "chain_id",
    "removed",
    "last_removed_seal",
    "records_removed",
    "loss_removed",
    "window_removed",
    "pruned_at",
    "older_than_seconds",
    "previous_prune_sha256",
)
