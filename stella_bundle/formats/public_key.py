"""A public key as the JSON documents of this toolkit write it (trust roots, `.pub.json` files,
DSSE key lists): securesystemslib's key dict, its keyid checked against the key material.

Parsing a key needs cryptography (through securesystemslib) to read its material: one public
key written two ways must be recognised as one key (key_material), or a threshold could count
one signer twice. Generating keys, loading private keys and signing are `attest/keys.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from securesystemslib.signer import SSlibKey

from ..errors import KeyFileError


def public_key_to_dict(key: SSlibKey) -> dict[str, Any]:
    return {"keyid": key.keyid, **key.to_dict()}


def public_key_from_dict(data: dict[str, Any], source: str | Path | None = None) -> SSlibKey:
    """Parse a public key dict; the keyid, when present, must match the key material."""
    body = {k: v for k, v in data.items() if k != "keyid"}
    try:
        computed = SSlibKey.from_dict(_compute_keyid(body), dict(body))
    except Exception as exc:  # securesystemslib raises several types for bad dicts
        raise KeyFileError(f"not a public key: {exc}", path=source) from exc
    claimed = data.get("keyid")
    if claimed is not None and claimed != computed.keyid:
        raise KeyFileError(
            f"keyid {claimed} does not match the key material (expected {computed.keyid})",
            path=source,
            field="keyid",
        )
    return computed


def _compute_keyid(body: dict[str, Any]) -> str:
    # The same definition securesystemslib uses for keys it builds from crypto objects.
    from securesystemslib.signer._utils import compute_default_keyid

    try:
        return str(compute_default_keyid(body["keytype"], body["scheme"], body["keyval"]))
    except (KeyError, TypeError) as exc:
        raise KeyFileError(f"public key lacks field {exc}") from exc


def key_material(key: SSlibKey) -> bytes:
    """The key's identity: its SubjectPublicKeyInfo DER, whatever way the JSON wrote it.

    The keyid hashes the key *as written* (hex case, PEM line layout), so one key can hide
    behind two keyids; thresholds and duplicate checks compare this instead.
    """
    try:
        crypto_key = key._crypto_key()  # securesystemslib exposes no public accessor
    except Exception as exc:  # securesystemslib raises several types for bad key values
        public = key.keyval.get("public") if isinstance(key.keyval, dict) else None
        if key.keytype == "ed25519" and isinstance(public, str) and "-----BEGIN" in public:
            # securesystemslib writes ed25519 keys as raw hex only; `add-key` converts PEM.
            raise KeyFileError(
                f"key {key.keyid[:16]}: an ed25519 keyval.public is 64 hex digits, found a PEM "
                "block (add a PEM key with `stella trust-root add-key --key FILE.pem`, which "
                "writes its hex form)"
            ) from exc
        raise KeyFileError(f"key {key.keyid[:16]} has unreadable key material: {exc}") from exc
    return crypto_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
