"""Signing documents as in-toto statements in DSSE envelopes, written atomically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from securesystemslib.signer import Signer

from ..errors import MalformedDocumentError, StatementError
from ..fsutil import write_bytes_atomic
from ..jsonio import load_json_object, read_bytes
from .dsse import Envelope, envelope_bytes, sign_statement
from .statement import make_statement, subject_for_bytes, validate_statement


def statement_for_document(
    input_path: str | Path, predicate_type: str, subject_name: str | None = None
) -> dict[str, Any]:
    """Wrap a JSON document as the predicate of a Statement whose subject is the file itself."""
    data = read_bytes(input_path)
    predicate = load_json_object(input_path, "a JSON object to use as predicate")
    name = subject_name or Path(input_path).name
    return make_statement([subject_for_bytes(name, data)], predicate_type, predicate)


def load_ready_statement(input_path: str | Path) -> dict[str, Any]:
    statement = load_json_object(input_path, "an in-toto statement")
    try:
        validate_statement(statement)
    except StatementError as exc:
        raise MalformedDocumentError(exc.message, path=input_path) from exc
    return statement


def write_envelope(path: str | Path, envelope: Envelope) -> None:
    """Write the envelope's canonical JSON (RFC 8785) atomically."""
    write_bytes_atomic(path, envelope_bytes(envelope))


def sign_to_file(
    statement: dict[str, Any], signers: Sequence[Signer], output: str | Path
) -> Envelope:
    envelope = sign_statement(statement, signers)
    write_envelope(output, envelope)
    return envelope
