"""One definition of a DSSE envelope: the schema (`schema validate`) and the parser every
verifier uses (`attest.dsse.parse_envelope`) accept exactly the same envelopes, and the number
of signatures is bounded.

Before, the parser ignored fields the schema refuses (an extra top-level field, a `cert` in a
signature), so `schema validate` called an envelope invalid that `bundle verify` passed; and it
took any number of signatures, each tried against every trusted key of the role: a 5 MB
manifest envelope of 50,000 junk signatures cost 8 s of CPU, a 64 MiB one (the document limit)
minutes, per envelope in the bundle.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from stella_bundle.attest.dsse import MAX_SIGNATURES, parse_envelope
from stella_bundle.errors import InputError, MalformedDocumentError, SchemaValidationError
from stella_bundle.schema import validate_document
from tests.bundle.bundle_helpers import read_members, snapshot, write_members
from tests.conftest import cpu_seconds

_SIG = base64.b64encode(b"s" * 64).decode()
_BASE = {
    "payload": base64.b64encode(b"{}").decode(),
    "payloadType": "application/vnd.in-toto+json",
    "signatures": [{"keyid": "k", "sig": _SIG}],
}


def _variant(name: str) -> Any:
    document = json.loads(json.dumps(_BASE))
    if name == "extra top-level field":
        document["extra"] = 1
    elif name == "extra signature field":
        document["signatures"][0]["cert"] = None
    elif name == "no signature":
        document["signatures"] = []
    elif name == "empty sig":
        document["signatures"][0]["sig"] = ""
    elif name == "at the signature bound":
        document["signatures"] = [{"keyid": str(i), "sig": _SIG} for i in range(MAX_SIGNATURES)]
    elif name == "past the signature bound":
        document["signatures"] = [{"keyid": str(i), "sig": _SIG} for i in range(MAX_SIGNATURES + 1)]
    elif name == "no keyid":
        del document["signatures"][0]["keyid"]
    return document


_VARIANTS = {
    "plain": True,
    "no keyid": True,
    "at the signature bound": True,
    "extra top-level field": False,
    "extra signature field": False,
    "empty sig": False,
    "past the signature bound": False,
}


def _schema_accepts(document: Any) -> bool:
    try:
        validate_document("dsse-envelope", document, source="e.dsse.json")
    except SchemaValidationError:
        return False
    return True


def _parser_accepts(document: Any) -> bool:
    try:
        parse_envelope(document, "e.dsse.json")
    except InputError as exc:
        assert "\n" not in str(exc)
        return False
    return True


@pytest.mark.parametrize("name", sorted(_VARIANTS))
def test_schema_and_parser_decide_alike(name: str) -> None:
    document = _variant(name)
    assert _schema_accepts(document) is _VARIANTS[name]
    assert _parser_accepts(document) is _VARIANTS[name]


def test_an_unsigned_envelope_is_a_shape_error_to_the_schema_and_a_verdict_to_verifiers() -> None:
    # The one deliberate difference: the verifiers report "unsigned" (exit 1, the chain's
    # `unsigned_seal`), so the parser leaves an empty list to them.
    document = _variant("no signature")
    assert not _schema_accepts(document)
    assert parse_envelope(document, "e.dsse.json").signatures == ()


def test_parser_names_the_field() -> None:
    with pytest.raises(MalformedDocumentError) as caught:
        parse_envelope(_variant("extra signature field"), "e.dsse.json")
    assert "signatures[0]" in str(caught.value) and "cert" in str(caught.value)
    with pytest.raises(MalformedDocumentError) as caught:
        parse_envelope(_variant("past the signature bound"), "e.dsse.json")
    assert f"at most {MAX_SIGNATURES}" in str(caught.value)


def test_bundle_with_a_flood_of_signatures_is_refused_cheaply(
    tmp_path: Path, built_bundle: Path, test_keys: Any, run_cli: Any
) -> None:
    members = read_members(built_bundle)
    envelope = json.loads(dict(members)["manifest.dsse.json"])
    junk = [{"keyid": "ab" * 32, "sig": base64.b64encode(bytes(64)).decode()}] * 50_000
    envelope["signatures"] = junk + envelope["signatures"]
    flooded = [
        (name, json.dumps(envelope).encode() if name == "manifest.dsse.json" else data)
        for name, data in members
    ]
    bundle = write_members(tmp_path / "flood.stella.bundle.tgz", flooded)
    out = tmp_path / "out"
    before = snapshot(tmp_path)
    started = cpu_seconds()
    result = run_cli(
        "bundle", "verify", bundle, "--trust-root", test_keys.trust_root, "--output-dir", out
    )
    spent = cpu_seconds() - started
    assert result.exit_code == 2, result.stderr
    assert f"at most {MAX_SIGNATURES}" in result.stderr
    assert "manifest.dsse.json" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    # 50,000 signature checks took ~8 s of CPU; refused on the count, it is parsing only.
    assert spent < 4.0, spent
    assert snapshot(tmp_path) - before <= {p for p in snapshot(tmp_path) if p.startswith("out")}
