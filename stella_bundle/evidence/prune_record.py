"""The signed prune record: which sealed chunks retention removed, and the last seal's digest.

`prune.dsse.json` in the chain directory, replaced (atomically) by each prune: the range is
cumulative from the chain start, so one record always explains every removed sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from securesystemslib.signer import Signer

from ..attest.dsse import Envelope, parse_statement_envelope, sign_statement
from ..attest.statement import make_statement
from ..canonical import canonical_bytes
from ..errors import MalformedDocumentError, SchemaValidationError
from ..timeutil import is_rfc3339_timestamp
from .config import LossCounters
from .layout import CHAIN_ID_RE, MAX_SEQUENCE, seal_name
from .seal import SHA256_HEX_RE

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
        def fail(message: str, field: str) -> MalformedDocumentError:
            return MalformedDocumentError(message, path=source, field=f"predicate.{field}")

        if not isinstance(data, dict):
            raise MalformedDocumentError("prune predicate is not an object", path=source)
        try:
            removed = data["removed"]
            last_seal = data["last_removed_seal"]
            window = data["window_removed"]
            chain_id = data["chain_id"]
            first, last = removed["first_sequence"], removed["last_sequence"]
            record = cls(
                chain_id=chain_id,
                first_sequence=first,
                last_sequence=last,
                last_seal_sha256=last_seal["sha256"],
                records_removed=data["records_removed"],
                loss_removed=LossCounters.from_dict(data["loss_removed"], source),
                first_observed_at=window["first_observed_at"],
                last_observed_at=window["last_observed_at"],
                pruned_at=data["pruned_at"],
                older_than_seconds=data["older_than_seconds"],
                previous_prune_sha256=data["previous_prune_sha256"],
            )
        except (KeyError, TypeError) as exc:
            raise MalformedDocumentError(
                f"prune predicate lacks or mistypes {exc}", path=source, field="predicate"
            ) from exc
        if not isinstance(chain_id, str) or not CHAIN_ID_RE.match(chain_id):
            raise fail("expected a chain id", "chain_id")
        for name, value in (("removed.first_sequence", first), ("removed.last_sequence", last)):
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or not 1 <= value <= MAX_SEQUENCE
            ):
                raise fail("expected a sequence number", name)
        if first > last or last_seal.get("sequence") != last:
            raise fail("the removed range and the last removed seal disagree", "removed")
        if not isinstance(record.last_seal_sha256, str) or not SHA256_HEX_RE.match(
            record.last_seal_sha256
        ):
            raise fail("expected 64 lowercase hex digits", "last_removed_seal.sha256")
        if not is_rfc3339_timestamp(record.pruned_at):
            raise fail("expected an RFC 3339 timestamp", "pruned_at")
        for name in ("records_removed", "older_than_seconds"):
            value = getattr(record, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise fail("expected a non-negative integer", name)
        return record


@dataclass(frozen=True)
class ParsedPruneRecord:
    envelope: Envelope
    record: PruneRecord


def build_prune_record(record: PruneRecord, signers: Sequence[Signer]) -> bytes:
    subject = {
        "name": seal_name(record.last_sequence),
        "digest": {"sha256": record.last_seal_sha256},
    }
    statement = make_statement([subject], EVIDENCE_PRUNE_PREDICATE, record.to_dict())
    return canonical_bytes(sign_statement(statement, signers).to_dict())


def parse_prune_record(data: bytes, source: str | Path | None = None) -> ParsedPruneRecord:
    envelope, statement = parse_statement_envelope(
        data, EVIDENCE_PRUNE_PREDICATE, source, what="prune record"
    )
    # As for seals: the published schema is the prune record's contract for every reader
    # (verify-chain, bundle verify, the chain reader), so its integer bounds hold everywhere.
    from ..schema import validate_document

    try:
        validate_document("evidence-prune", statement["predicate"], source=source)
    except SchemaValidationError as exc:
        field = f"predicate.{exc.field}" if exc.field else "predicate"
        raise MalformedDocumentError(exc.message, path=source, field=field) from exc
    return ParsedPruneRecord(envelope, PruneRecord.from_dict(statement["predicate"], source))


def read_prune_record(data: bytes, source: str | Path | None = None) -> PruneRecord:
    return parse_prune_record(data, source).record
