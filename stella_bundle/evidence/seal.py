"""The seal of a chunk: a DSSE-signed in-toto Statement; building, signing and parsing seal
files. The predicate's model is `formats/seal.py`."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from securesystemslib.signer import Signer

from ..attest.dsse import Envelope, parse_statement_envelope, sign_statement
from ..attest.statement import EVIDENCE_CHUNK_PREDICATE, make_statement
from ..canonical import canonical_bytes
from ..digests import SHA256_HEX_RE
from ..errors import MalformedDocumentError, SchemaValidationError
from ..formats.seal import SealPredicate
from .layout import chunk_name


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
