"""The DSSE specification's published test vector (protocol.md, "Test Vectors").

Source: github.com/secure-systems-lab/dsse, protocol.md (DSSE v1): ECDSA over NIST P-256 and
SHA-256, deterministic RFC 6979, the signature as raw r || s. The key is given there as the
affine point (X, Y); the signature was produced by the reference implementation, not by us.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from securesystemslib.signer import SSlibKey

from stella_bundle.attest.dsse import pae, parse_envelope, signing_keys, verify_envelope
from stella_bundle.errors import SignatureError
from stella_bundle.formats.public_key import public_key_to_dict
from stella_bundle.formats.trust_root import TrustRoot
from tests.conftest import CliResult

VECTOR_X = 46950820868899156662930047687818585632848591499744589407958293238635476079160
VECTOR_Y = 5640078356564379163099075877009565129882514886557779369047442380624545832820
VECTOR_ENVELOPE: dict[str, Any] = {
    "payload": "aGVsbG8gd29ybGQ=",
    "payloadType": "http://example.com/HelloWorld",
    "signatures": [
        {
            "sig": "A3JqsQGtVsJ2O2xqrI5IcnXip5GToJ3F+FnZ+O88SjtR6rDAajabZKciJTfUiHqJPcIAriEGAHTVeCUjW2JIZA=="
        }
    ],
}


def vector_key() -> SSlibKey:
    public = ec.EllipticCurvePublicNumbers(VECTOR_X, VECTOR_Y, ec.SECP256R1()).public_key()
    return SSlibKey.from_crypto(public)


def test_pae_matches_the_specification() -> None:
    envelope = parse_envelope(VECTOR_ENVELOPE)
    assert envelope.payload == b"hello world"
    assert pae(envelope.payload_type, envelope.payload) == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_vector_verifies() -> None:
    document = copy.deepcopy(VECTOR_ENVELOPE)
    envelope = parse_envelope(document)
    assert document == VECTOR_ENVELOPE  # parsing never mutates its input
    key = vector_key()
    assert verify_envelope(envelope, [key], threshold=1) == [key]


def test_vector_verifies_with_url_safe_base64() -> None:
    """The protocol says verifiers MUST accept standard and URL-safe base64."""
    document = copy.deepcopy(VECTOR_ENVELOPE)
    sig = document["signatures"][0]["sig"]
    document["signatures"][0]["sig"] = sig.replace("+", "-").replace("/", "_").rstrip("=")
    assert signing_keys(parse_envelope(document), [vector_key()]) == [vector_key()]


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def _mutations() -> list[tuple[str, dict[str, Any]]]:
    payload = base64.b64decode(VECTOR_ENVELOPE["payload"])
    sig = base64.b64decode(VECTOR_ENVELOPE["signatures"][0]["sig"])
    cases = []
    for index in range(len(payload)):
        changed = copy.deepcopy(VECTOR_ENVELOPE)
        changed["payload"] = base64.b64encode(_flip(payload, index)).decode()
        cases.append((f"payload[{index}]", changed))
    payload_type = VECTOR_ENVELOPE["payloadType"].encode()
    for index in range(len(payload_type)):
        changed = copy.deepcopy(VECTOR_ENVELOPE)
        changed["payloadType"] = _flip(payload_type, index).decode()
        cases.append((f"payloadType[{index}]", changed))
    for index in range(len(sig)):
        changed = copy.deepcopy(VECTOR_ENVELOPE)
        changed["signatures"][0]["sig"] = base64.b64encode(_flip(sig, index)).decode()
        cases.append((f"sig[{index}]", changed))
    return cases


@pytest.mark.parametrize("document", [m[1] for m in _mutations()], ids=[m[0] for m in _mutations()])
def test_one_changed_byte_fails(document: dict[str, Any]) -> None:
    envelope = parse_envelope(document)
    assert signing_keys(envelope, [vector_key()]) == []
    with pytest.raises(SignatureError, match="no trusted key verifies the signature"):
        verify_envelope(envelope, [vector_key()], threshold=1)


def test_vector_through_the_cli_stops_at_payload_type(
    run_cli: Callable[..., CliResult], no_network: list[str], tmp_path: Path
) -> None:
    """The CLI verifies in-toto statements only; the vector is not one, so it is refused
    before any signature is trusted, with the payloadType named (the library tests above
    cover the signature itself)."""
    root = TrustRoot(expires=dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    root.add_key(vector_key(), ["auditor"])
    root.save(tmp_path / "trust-root.json")
    (tmp_path / "vector.json").write_text(json.dumps(VECTOR_ENVELOPE))
    (tmp_path / "key.pub.json").write_text(json.dumps(public_key_to_dict(vector_key())))
    result = run_cli(
        "attest",
        "verify",
        tmp_path / "vector.json",
        "--trust-root",
        tmp_path / "trust-root.json",
        "--role",
        "auditor",
    )
    assert result.exit_code == 1
    assert "payloadType is 'http://example.com/HelloWorld'" in result.stderr
    fingerprint = run_cli("keys", "fingerprint", tmp_path / "key.pub.json", "--format", "json")
    assert json.loads(fingerprint.stdout)["keytype"] == "ecdsa"
