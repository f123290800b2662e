"""The seal of a chunk: a DSSE-signed in-toto Statement, predicate as in DESIGN.md §4."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from securesystemslib.signer import Signer

from ..attest.dsse import Envelope, parse_statement_envelope, sign_statement
from ..attest.statement import EVIDENCE_CHUNK_PREDICATE, make_statement
from ..canonical import MAX_SAFE_INTEGER, canonical_bytes
from ..errors import MalformedDocumentError, SchemaValidationError
from ..timeutil import is_rfc3339_timestamp
from .config import (
    CollectorInfo,
    LossCounters,
    ProbeFailure,
    ProbeReattachment,
    parse_probe_failures,
    parse_probe_reattachments,
)
from .layout import CHAIN_ID_RE, MAX_SEQUENCE, chunk_name

SealReason = Literal["size", "age", "shutdown", "recovered"]
SEAL_REASONS: Final = ("size", "age", "shutdown", "recovered")
COMPRESSION: Final = "zstd"
SHA256_HEX_RE: Final = re.compile(r"^[0-9a-f]{64}\Z")


@dataclass(frozen=True)
class PreviousLink:
    sequence: int
    sha256: str  # of the previous seal file's bytes

    def to_dict(self) -> dict[str, Any]:
        return {"sequence": self.sequence, "sha256": self.sha256}


@dataclass(frozen=True)
class ChunkContent:
    sha256: str  # of the uncompressed canonical NDJSON
    records: int
    bytes: int
    compression: str = COMPRESSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256,
            "records": self.records,
            "bytes": self.bytes,
            "compression": self.compression,
        }


@dataclass(frozen=True)
class SealPredicate:
    chain_id: str
    sequence: int
    previous: PreviousLink | None
    content: ChunkContent
    first_observed_at: str | None
    last_observed_at: str | None
    sealed_at: str
    reason: str
    final: bool
    collector: CollectorInfo
    loss: LossCounters
    # Probes that could not be attached since the previous seal (optional; absent when none).
    probe_failures: tuple[ProbeFailure, ...] = ()
    # Probes reattached by the health check since the previous seal (optional; absent: none).
    probe_reattachments: tuple[ProbeReattachment, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "chain_id": self.chain_id,
            "sequence": self.sequence,
            "previous": self.previous.to_dict() if self.previous else None,
            "content": self.content.to_dict(),
            "window": {
                "first_observed_at": self.first_observed_at,
                "last_observed_at": self.last_observed_at,
            },
            "sealed_at": self.sealed_at,
            "reason": self.reason,
            "final": self.final,
            "collector": self.collector.to_dict(),
            "loss": self.loss.to_dict(),
        }
        if self.probe_failures:
            out["probe_failures"] = [failure.to_dict() for failure in self.probe_failures]
        if self.probe_reattachments:
            out["probe_reattachments"] = [item.to_dict() for item in self.probe_reattachments]
        return out

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> SealPredicate:
        """Strict parse; MalformedDocumentError names the predicate field at fault."""

        def fail(message: str, field: str) -> MalformedDocumentError:
            return MalformedDocumentError(message, path=source, field=f"predicate.{field}")

        if not isinstance(data, dict):
            raise MalformedDocumentError("predicate is not an object", path=source)
        _known_fields(data, (*_REQUIRED_FIELDS, *_OPTIONAL_FIELDS), fail, "")
        for name in _REQUIRED_FIELDS:
            if name not in data:
                raise fail("required field is missing", name)
        chain_id = data["chain_id"]
        if not isinstance(chain_id, str) or not CHAIN_ID_RE.match(chain_id):
            raise fail("expected a chain id", "chain_id")
        sequence = _sequence(data["sequence"], fail, "sequence")
        previous = None
        if data["previous"] is not None:
            raw = data["previous"]
            if not isinstance(raw, dict):
                raise fail("expected an object or null", "previous")
            _known_fields(raw, ("sequence", "sha256"), fail, "previous.")
            previous = PreviousLink(
                _sequence(raw.get("sequence"), fail, "previous.sequence"),
                _sha256(raw.get("sha256"), fail, "previous.sha256"),
            )
        raw_content = data["content"]
        if not isinstance(raw_content, dict):
            raise fail("expected an object", "content")
        _known_fields(raw_content, ("sha256", "records", "bytes", "compression"), fail, "content.")
        compression = raw_content.get("compression")
        if compression != COMPRESSION:
            raise fail(
                f"unsupported compression {compression!r}; expected 'zstd'", "content.compression"
            )
        content = ChunkContent(
            _sha256(raw_content.get("sha256"), fail, "content.sha256"),
            _count(raw_content.get("records"), fail, "content.records"),
            _count(raw_content.get("bytes"), fail, "content.bytes"),
            compression,
        )
        window = data["window"]
        if not isinstance(window, dict):
            raise fail("expected an object", "window")
        _known_fields(window, ("first_observed_at", "last_observed_at"), fail, "window.")
        for name in ("first_observed_at", "last_observed_at"):
            if name not in window:
                raise fail("required field is missing", f"window.{name}")
        first = _optional_time(window.get("first_observed_at"), fail, "window.first_observed_at")
        last = _optional_time(window.get("last_observed_at"), fail, "window.last_observed_at")
        if not is_rfc3339_timestamp(data["sealed_at"]):
            raise fail("expected an RFC 3339 timestamp", "sealed_at")
        if data["reason"] not in SEAL_REASONS:
            raise fail(f"expected one of {', '.join(SEAL_REASONS)}", "reason")
        if not isinstance(data["final"], bool):
            raise fail("expected true or false", "final")
        return cls(
            chain_id=chain_id,
            sequence=sequence,
            previous=previous,
            content=content,
            first_observed_at=first,
            last_observed_at=last,
            sealed_at=data["sealed_at"],
            reason=data["reason"],
            final=data["final"],
            collector=CollectorInfo.from_dict(data["collector"], source),
            loss=LossCounters.from_dict(data["loss"], source),
            probe_failures=parse_probe_failures(
                data.get("probe_failures", []), source, "predicate.probe_failures"
            ),
            probe_reattachments=parse_probe_reattachments(
                data.get("probe_reattachments", []), source, "predicate.probe_reattachments"
            ),
        )


_REQUIRED_FIELDS: Final = (
    "chain_id",
    "sequence",
    "previous",
    "content",
    "window",
    "sealed_at",
    "reason",
    "final",
    "collector",
    "loss",
)
_OPTIONAL_FIELDS: Final = ("probe_failures", "probe_reattachments")


def _known_fields(data: dict[str, Any], known: Sequence[str], fail: Any, where: str) -> None:
    """Unknown fields are refused, as by every format model (see stella_bundle/formats)."""
    unknown = sorted(data.keys() - set(known))
    if unknown:
        raise fail("unknown field", where + unknown[0])


def _sequence(value: Any, fail: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SEQUENCE:
        raise fail(f"expected an integer 1..{MAX_SEQUENCE}", field)
    return value


def _count(value: Any, fail: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SAFE_INTEGER:
        raise fail("expected a non-negative integer (at most 2**53 - 1)", field)
    return value


def _sha256(value: Any, fail: Any, field: str) -> str:
    if not isinstance(value, str) or not SHA256_HEX_RE.match(value):
        raise fail("expected 64 lowercase hex digits", field)
    return value


def _optional_time(value: Any, fail: Any, field: str) -> str | None:
    if value is None:
        return None
    if not is_rfc3339_timestamp(value):
        raise fail("expected an RFC 3339 timestamp or null", field)
    return str(value)


@dataclass(frozen=True)
class ParsedSeal:
    """A seal file read without any trust decision: envelope, statement and predicate."""

    envelope: Envelope
    statement: dict[str, Any]
    predicate: SealPredicate
    subject_name: str
    subject_sha256: str


def build_seal(predicate: SealPredicate, chunk_sha256: str, signers: Sequence[Signer]) -> bytes:
    """The seal file's bytes: canonical JSON of the DSSE envelope over the Statement."""
    subject = {"name": chunk_name(predicate.sequence), "digest": {"sha256": chunk_sha256}}
    statement = make_statement([subject], EVIDENCE_CHUNK_PREDICATE, predicate.to_dict())
    return canonical_bytes(sign_statement(statement, signers).to_dict())


def parse_seal(data: bytes, source: str | Path | None = None) -> ParsedSeal:
    """Parse a seal file; MalformedDocumentError / StatementError say what is wrong."""
    envelope, statement = parse_statement_envelope(
        data, EVIDENCE_CHUNK_PREDICATE, source, what="seal"
    )
    # The published schema is the seal's contract for every reader (verify-chain, bundle
    # verify, recovery): a field it refuses (an unknown loss counter, a loss over its bound)
    # is refused here, once, rather than by some commands only.
    from ..schema import validate_document

    try:
        validate_document("evidence-chunk", statement, source=source)
    except SchemaValidationError as exc:
        raise MalformedDocumentError(exc.message, path=source, field=exc.field) from exc
    subjects = statement["subject"]
    if len(subjects) != 1 or not isinstance(subjects[0].get("digest"), dict):
        raise MalformedDocumentError(
            "expected exactly one subject: the chunk", path=source, field="subject"
        )
    subject_sha = subjects[0]["digest"].get("sha256")
    if not isinstance(subject_sha, str) or not SHA256_HEX_RE.match(subject_sha):
        raise MalformedDocumentError(
            "expected a sha256 digest", path=source, field="subject[0].digest"
        )
    predicate = SealPredicate.from_dict(statement["predicate"], source)
    return ParsedSeal(envelope, statement, predicate, str(subjects[0].get("name", "")), subject_sha)


def seal_digest(data: bytes) -> str:
    """What the next seal's `previous.sha256` holds: sha256 of the seal file's bytes."""
    return hashlib.sha256(data).hexdigest()
