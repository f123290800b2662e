"""in-toto Statement v1 documents, built and checked as plain dicts.

Statements are signed as the canonical JSON of a plain dict: in-toto-attestation's protobuf
form turns integers into floats, so it is used only to validate the shape.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf import json_format
from in_toto_attestation.v1.statement import Statement as _PbStatement
from in_toto_attestation.v1.statement_pb2 import Statement as _StatementProto

from ..errors import StatementError

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"

# Predicate types of this toolkit (DESIGN.md §4).
FUNCTION_MAP_PREDICATE = "https://stella.ops/predicates/function-map/v1"
EVIDENCE_CHUNK_PREDICATE = "https://stella.ops/predicates/evidence-chunk/v1"
BUNDLE_MANIFEST_PREDICATE = "https://stella.ops/predicates/bundle-manifest/v1"
VERIFICATION_REPORT_PREDICATE = "https://stella.ops/predicates/function-map-verification/v1"


def subject_for_bytes(name: str, data: bytes) -> dict[str, Any]:
    return {"name": name, "digest": {"sha256": hashlib.sha256(data).hexdigest()}}


def make_statement(
    subjects: Iterable[Mapping[str, Any]], predicate_type: str, predicate: Mapping[str, Any]
) -> dict[str, Any]:
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [dict(s) for s in subjects],
        "predicateType": predicate_type,
        "predicate": dict(predicate),
    }
    validate_statement(statement)
    return statement


def validate_statement(statement: Any, expected_predicate_type: str | None = None) -> None:
    """Check the in-toto Statement v1 shape (via in-toto-attestation) and the predicate type."""
    if not isinstance(statement, dict):
        raise StatementError(f"payload is not a JSON object but {type(statement).__name__}")
    if statement.get("_type") != STATEMENT_TYPE:
        raise StatementError(
            f"payload is not an in-toto Statement v1 (_type {statement.get('_type')!r}, "
            f"expected {STATEMENT_TYPE!r})"
        )
    for field in ("subject", "predicateType", "predicate"):
        if field not in statement:
            raise StatementError(f"statement lacks required field '{field}'")
    if not isinstance(statement["predicate"], dict):
        raise StatementError("statement field 'predicate' must be a JSON object")
    try:
        # A lone surrogate escape ("\ud800") in a key makes protobuf's parser raise SystemError.
        json.dumps(statement, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise StatementError(
            "statement holds text that is not valid Unicode (a lone surrogate escape)"
        ) from exc
    except (ValueError, RecursionError) as exc:
        raise StatementError(f"statement cannot be read as JSON: {exc}") from exc
    try:
        proto = json_format.ParseDict(statement, _StatementProto(), ignore_unknown_fields=False)
        _PbStatement.copy_from_pb(proto).validate()
    except (json_format.ParseError, ValueError, TypeError, OverflowError) as exc:
        # OverflowError: a number past a double's range (the predicate is a protobuf Struct).
        # protobuf's message runs over several lines (it lists the available fields): one line.
        reason = " ".join(str(exc).split())
        raise StatementError(f"malformed in-toto statement: {reason}") from exc
    if expected_predicate_type and statement["predicateType"] != expected_predicate_type:
        raise StatementError(
            f"predicateType is {statement['predicateType']!r}, expected {expected_predicate_type!r}"
        )


def subject_digests(statement: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(name, sha256 hex) for every subject that has a sha256 digest."""
    found = []
    for subject in statement.get("subject", []):
        sha = subject.get("digest", {}).get("sha256")
        if sha:
            found.append((subject.get("name", ""), sha.lower()))
    return found
