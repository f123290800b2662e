"""parse_statement_envelope: DSSE bytes read back from disk → statement, each refusal named."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest

from stella_bundle.attest.dsse import parse_statement_envelope, sign_payload, sign_statement
from stella_bundle.attest.statement import (
    EVIDENCE_CHUNK_PREDICATE,
    make_statement,
    subject_for_bytes,
)
from stella_bundle.canonical import canonical_bytes
from stella_bundle.errors import MalformedDocumentError


def _statement() -> dict[str, Any]:
    return make_statement([subject_for_bytes("c", b"x")], EVIDENCE_CHUNK_PREDICATE, {"a": 1})


def test_round_trip(test_keys: Any) -> None:
    data = canonical_bytes(sign_statement(_statement(), [test_keys.signer("collector")]).to_dict())
    envelope, statement = parse_statement_envelope(data, EVIDENCE_CHUNK_PREDICATE, "s.json")
    assert statement == _statement()
    assert len(envelope.signatures) == 1


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda env: b"{not json", "s.json: seal is not valid JSON"),
        (
            lambda env: canonical_bytes({**env, "payloadType": "text/plain"}),
            "s.json: field 'payloadType': payloadType is 'text/plain'",
        ),
        (
            lambda env: canonical_bytes({**env, "payload": base64.b64encode(b"{oops").decode()}),
            "s.json: field 'payload': seal payload is not valid JSON",
        ),
    ],
)
def test_refusals_name_file_and_field(test_keys: Any, mutate: Any, message: str) -> None:
    envelope = sign_statement(_statement(), [test_keys.signer("collector")]).to_dict()
    with pytest.raises(MalformedDocumentError) as info:
        parse_statement_envelope(mutate(envelope), EVIDENCE_CHUNK_PREDICATE, "s.json", "seal")
    assert info.value.describe().startswith(message)


def test_wrong_predicate_type_is_refused(test_keys: Any) -> None:
    other = make_statement([subject_for_bytes("c", b"x")], "https://example.com/other/v1", {"a": 1})
    data = canonical_bytes(sign_statement(other, [test_keys.signer("collector")]).to_dict())
    with pytest.raises(
        MalformedDocumentError, match=re.escape("predicateType is 'https://example.com/other/v1'")
    ):
        parse_statement_envelope(data, EVIDENCE_CHUNK_PREDICATE, "s.json")


def test_not_a_statement_is_refused(test_keys: Any) -> None:
    envelope = sign_payload(
        json.dumps({"hello": 1}).encode(),
        "application/vnd.in-toto+json",
        [test_keys.signer("collector")],
    )
    with pytest.raises(MalformedDocumentError, match="not an in-toto Statement v1"):
        parse_statement_envelope(
            canonical_bytes(envelope.to_dict()), EVIDENCE_CHUNK_PREDICATE, "s.json"
        )
