"""A signed or trusted JSON document naming one key twice is refused, wherever it is read.

Python's `json` keeps the last of two equal keys, Go's too, other readers the first or an error:
a statement signed as `{"predicateType": A, ..., "predicateType": B}` means A to one verifier
and B to another, so no verdict may rest on it. Each hostile document here is valid in every
other way (really signed by a trusted key), so only the duplicate can refuse it: a bundle's
manifest statement, a trust root, a function-map envelope's statement, a plain DSSE envelope.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stella_bundle.attest.dsse import sign_payload
from stella_bundle.canonical import canonical_bytes
from stella_bundle.errors import MalformedDocumentError
from stella_bundle.jsonio import parse_json
from tests.adversarial.test_adversarial_entry_order import members  # noqa: F401 (fixture)
from tests.bundle.bundle_helpers import snapshot, write_members
from tests.conftest import CliResult

Members = list[tuple[str, bytes]]
IN_TOTO = "application/vnd.in-toto+json"


def _with_duplicate(document: bytes, key: str, value: Any) -> bytes:
    """`document` (a canonical JSON object) with `key` written once more, first, as `value`."""
    assert document.startswith(b"{")
    return b"{" + json.dumps(key).encode() + b":" + json.dumps(value).encode() + b"," + document[1:]


@pytest.mark.parametrize(
    "text, key",
    [
        ('{"a": 1, "a": 1}', "a"),
        ('{"a": 1, "a": 2}', "a"),
        ('{"outer": [{"k": {}, "k": []}]}', "k"),
        ('{"\\u0061": 1, "a": 2}', "a"),  # the same key, escaped once
    ],
)
def test_parse_json_refuses_a_key_named_twice(text: str, key: str) -> None:
    with pytest.raises(MalformedDocumentError) as caught:
        parse_json(text, "doc.json")
    assert caught.value.describe() == (
        f"doc.json: malformed JSON: key {key!r} appears twice in one object"
    )


def test_distinct_keys_and_records_stay_as_they_were(tmp_path: Path) -> None:
    assert parse_json('{"a": {"a": 1}, "b": [{"a": 2}, {"a": 3}]}', "doc.json") == {
        "a": {"a": 1},
        "b": [{"a": 2}, {"a": 3}],
    }


def test_bundle_whose_signed_manifest_names_a_key_twice_is_refused(
    members: Members,  # noqa: F811
    tmp_path: Path,
    test_keys: Any,
    run_cli: Callable[..., CliResult],
) -> None:
    by_name = dict(members)
    # The builder's own key signs the hostile manifest: the signature is valid.
    payload = _with_duplicate(by_name["manifest.json"], "predicateType", "https://evil/v1")
    envelope = sign_payload(payload, IN_TOTO, [test_keys.signer("builder")])
    hostile = [
        (name, payload)
        if name == "manifest.json"
        else (name, canonical_bytes(envelope.to_dict()))
        if name == "manifest.dsse.json"
        else (name, data)
        for name, data in members
    ]
    bundle = write_members(tmp_path / "dup.stella.bundle.tgz", hostile)
    out = tmp_path / "work" / "out"
    before = snapshot(tmp_path)
    result = run_cli(
        "bundle", "verify", bundle, "--trust-root", test_keys.trust_root, "--output-dir", out
    )
    created = {p for p in snapshot(tmp_path) - before if not p.startswith("work")}
    assert not created, f"written outside the output directory: {created}"
    assert result.exit_code != 0, result.stdout + result.stderr
    assert "key 'predicateType' appears twice in one object" in result.stdout + result.stderr


def test_trust_root_naming_a_key_twice_is_refused(
    tmp_path: Path, test_keys: Any, run_cli: Callable[..., CliResult]
) -> None:
    original = Path(test_keys.trust_root).read_bytes()
    hostile = tmp_path / "trust-root.json"
    # Equal values: even a duplicate that changes nothing is refused, never "harmless".
    document = json.loads(original)
    first_key = next(iter(document))
    hostile.write_bytes(_with_duplicate(canonical_bytes(document), first_key, document[first_key]))
    envelope = tmp_path / "x.dsse.json"
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "a", "digest": {"sha256": "0" * 64}}],
        "predicateType": "https://stella.ops/test/v1",
        "predicate": {},
    }
    sign = sign_payload(canonical_bytes(statement), IN_TOTO, [test_keys.signer("builder")])
    envelope.write_bytes(canonical_bytes(sign.to_dict()))
    result = run_cli("attest", "verify", envelope, "--trust-root", hostile, "--role", "builder")
    assert result.exit_code == 2, result.stdout + result.stderr
    assert f"{hostile}: malformed JSON: key {first_key!r} appears twice" in result.stderr


def test_signed_statement_naming_a_key_twice_is_refused_by_attest_verify(
    tmp_path: Path, test_keys: Any, run_cli: Callable[..., CliResult]
) -> None:
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "a", "digest": {"sha256": "0" * 64}}],
        "predicateType": "https://stella.ops/test/v1",
        "predicate": {"verdict": "FAILED"},
    }
    payload = _with_duplicate(canonical_bytes(statement), "predicate", {"verdict": "PASSED"})
    envelope = tmp_path / "dup.dsse.json"
    signed = sign_payload(payload, IN_TOTO, [test_keys.signer("builder")])
    envelope.write_bytes(canonical_bytes(signed.to_dict()))
    result = run_cli(
        "attest", "verify", envelope, "--trust-root", test_keys.trust_root, "--role", "builder"
    )
    assert result.exit_code != 0, result.stdout + result.stderr
    assert "key 'predicate' appears twice in one object" in result.stderr


def test_envelope_naming_a_key_twice_is_refused(
    tmp_path: Path, test_keys: Any, run_cli: Callable[..., CliResult]
) -> None:
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "a", "digest": {"sha256": "0" * 64}}],
        "predicateType": "https://stella.ops/test/v1",
        "predicate": {},
    }
    signed = sign_payload(canonical_bytes(statement), IN_TOTO, [test_keys.signer("builder")])
    body = canonical_bytes(signed.to_dict())
    envelope = tmp_path / "dup.dsse.json"
    envelope.write_bytes(_with_duplicate(body, "payloadType", "text/plain"))
    result = run_cli(
        "attest", "verify", envelope, "--trust-root", test_keys.trust_root, "--role", "builder"
    )
    assert result.exit_code == 2, result.stdout + result.stderr
    assert "key 'payloadType' appears twice in one object" in result.stderr
