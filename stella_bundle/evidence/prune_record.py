"""The signed prune record: which sealed chunks retention removed, and the last seal's digest.

`prune.dsse.json` in the chain directory, replaced (atomically) by each prune: the range is
cumulative from the chain start, so one record always explains every removed sequence. Building,
signing and parsing it here; its predicate's model is `formats/prune.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from securesystemslib.signer import Signer

from ..attest.dsse import Envelope, parse_statement_envelope, sign_statement
from ..attest.statement import make_statement
from ..canonical import canonical_bytes
from ..errors import MalformedDocumentError, SchemaValidationError
from ..formats.prune import EVIDENCE_PRUNE_PREDICATE, PruneRecord
from .layout import seal_name


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
