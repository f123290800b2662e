"""One key written two ways (hex case, PEM line layout, keyid spelling) never counts twice.

Each hostile trust root is built here from real keys: the trust root is refused naming both
keyids (exit 2), and a threshold counts distinct key material, never signature entries.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from securesystemslib.signer import CryptoSigner, SSlibKey

from stella_bundle.attest.dsse import EnvelopeSignature, sign_statement, verify_envelope
from stella_bundle.errors import ThresholdNotMetError, TrustRootError
from stella_bundle.formats.public_key import key_material, public_key_from_dict, public_key_to_dict
from stella_bundle.formats.trust_root import TrustRoot
from stella_bundle.timeutil import format_timestamp
from tests.conftest import CliResult

Run = Callable[..., CliResult]

STATEMENT = {
    "_type": "https://in-toto.io/Statement/v1",
    "subject": [{"name": "a", "digest": {"sha256": "0" * 64}}],
    "predicateType": "https://stella.ops/test/v1",
    "predicate": {},
}


def _ed25519() -> CryptoSigner:
    return CryptoSigner(ed25519.Ed25519PrivateKey.generate())


def _ecdsa() -> CryptoSigner:
    return CryptoSigner(ec.generate_private_key(ec.SECP256R1()))


def _rewritten(key: SSlibKey, how: str) -> dict[str, Any]:
    """The same public key as a trust root entry, its material written differently."""
    body = key.to_dict()
    public = body["keyval"]["public"]
    if how == "hex-upper":
        body["keyval"] = {"public": public.upper()}
    elif how == "pem-64-to-40-columns":
        lines = public.strip().splitlines()
        inner = "".join(lines[1:-1])
        wrapped = [inner[i : i + 40] for i in range(0, len(inner), 40)]
        body["keyval"] = {"public": "\n".join([lines[0], *wrapped, lines[-1]]) + "\n"}
    elif how == "pem-crlf":
        body["keyval"] = {"public": public.replace("\n", "\r\n")}
    else:
        raise AssertionError(how)
    rewritten = public_key_from_dict(body)
    assert rewritten.keyid != key.keyid, "the variant must really be a second keyid"
    return public_key_to_dict(rewritten)


VARIANTS = [
    pytest.param(_ed25519, "hex-upper", id="ed25519-hex-case"),
    pytest.param(_ecdsa, "pem-64-to-40-columns", id="ecdsa-pem-line-layout"),
    pytest.param(_ecdsa, "pem-crlf", id="ecdsa-pem-crlf"),
]


def _trust_root_document(entries: dict[str, dict[str, Any]], threshold: int) -> dict[str, Any]:
    keys = {
        keyid: {k: v for k, v in entry.items() if k != "keyid"} for keyid, entry in entries.items()
    }
    expires = format_timestamp(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    return {
        "_type": "https://stella.ops/trust-root/v1",
        "version": 1,
        "expires": expires,
        "keys": keys,
        "roles": {"auditor": {"keyids": sorted(keys), "threshold": threshold}},
    }


@pytest.mark.parametrize(("make_signer", "how"), VARIANTS)
def test_trust_root_listing_one_key_twice_is_refused_naming_both(
    make_signer: Callable[[], CryptoSigner], how: str, run_cli: Run, tmp_path: Path
) -> None:
    signer = make_signer()
    original = public_key_to_dict(signer.public_key)
    twin = _rewritten(signer.public_key, how)
    document = _trust_root_document({original["keyid"]: original, twin["keyid"]: twin}, 2)
    with pytest.raises(TrustRootError) as raised:
        TrustRoot.from_dict(document)
    assert original["keyid"] in raised.value.message and twin["keyid"] in raised.value.message

    # Through the CLI: exit 2, one line, both keyids named; no file written beside the inputs.
    root_path = tmp_path / "trust-root.json"
    root_path.write_text(json.dumps(document))
    envelope = sign_statement(STATEMENT, [signer])
    envelope_path = tmp_path / "statement.dsse.json"
    envelope_path.write_text(json.dumps(envelope.to_dict()))
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run_cli(
        "attest", "verify", envelope_path, "--trust-root", root_path, "--role", "auditor"
    )
    assert result.exit_code == 2, result
    error_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(error_lines) == 1, result.stderr
    assert original["keyid"][:16] in result.stderr or original["keyid"] in result.stderr
    assert twin["keyid"] in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize(("make_signer", "how"), VARIANTS)
@pytest.mark.parametrize("keyid_hint", ["original", "twin", "empty", "upper-case-keyid"])
def test_one_signature_twice_never_meets_threshold_two(
    make_signer: Callable[[], CryptoSigner], how: str, keyid_hint: str
) -> None:
    """Even handed both spellings as candidates (no trust root check), one key counts once."""
    signer = make_signer()
    twin = public_key_from_dict(_rewritten(signer.public_key, how))
    assert key_material(twin) == key_material(signer.public_key)
    envelope = sign_statement(STATEMENT, [signer])
    signature = envelope.signatures[0]
    hints = {
        "original": (signer.public_key.keyid, signer.public_key.keyid),
        "twin": (signer.public_key.keyid, twin.keyid),
        "empty": ("", ""),
        "upper-case-keyid": (signer.public_key.keyid.upper(), twin.keyid.upper()),
    }[keyid_hint]
    doubled = type(envelope)(
        envelope.payload,
        envelope.payload_type,
        tuple(EnvelopeSignature(hint, signature.sig) for hint in hints),
    )
    with pytest.raises(ThresholdNotMetError, match="1 of 2"):
        verify_envelope(doubled, [signer.public_key, twin], 2)
    # Two different keys still meet it: the count is of keys, not of a broken rule.
    other = make_signer()
    both = sign_statement(STATEMENT, [signer, other])
    assert len(verify_envelope(both, [signer.public_key, twin, other.public_key], 2)) == 2


def test_trust_root_role_listing_one_keyid_twice_counts_once() -> None:
    signer = _ed25519()
    entry = public_key_to_dict(signer.public_key)
    document = _trust_root_document({entry["keyid"]: entry}, 1)
    document["roles"]["auditor"] = {"keyids": [entry["keyid"], entry["keyid"]], "threshold": 2}
    with pytest.raises(TrustRootError, match="threshold 2 exceeds the 1 keys"):
        TrustRoot.from_dict(document)


def test_an_ed25519_key_written_as_pem_in_a_trust_root_is_named_with_the_way_out(
    tmp_path: Path, test_keys: Any, run_cli: Any
) -> None:
    # One key written two ways: `trust-root add-key` takes the PEM and writes the hex form;
    # a PEM block pasted into keyval.public by hand was refused with securesystemslib's
    # "non-hexadecimal number found in fromhex() arg at position 0".
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from securesystemslib.signer._utils import compute_default_keyid

    root = json.loads(Path(test_keys.trust_root).read_text())
    keyid = root["roles"]["builder"]["keyids"][0]
    key = root["keys"].pop(keyid)
    pem = (
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(key["keyval"]["public"]))
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    key["keyval"] = {"public": pem}
    new_id = compute_default_keyid(key["keytype"], key["scheme"], key["keyval"])
    root["keys"][new_id] = key
    root["roles"]["builder"]["keyids"] = [new_id]
    path = tmp_path / "trust-root.json"
    path.write_text(json.dumps(root))
    result = run_cli("trust-root", "show", path)
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert "64 hex digits, found a PEM block" in line and "trust-root add-key" in line
    assert f"keys.{new_id}" in line
