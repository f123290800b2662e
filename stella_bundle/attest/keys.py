"""Signing keys: generation, PKCS#8 PEM storage, public key JSON, fingerprints.

Keys are securesystemslib `SSlibKey`s (public) and `CryptoSigner`s (private). The public key
JSON file is `SSlibKey.to_dict()` plus its `keyid`, the form a trust root embeds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from securesystemslib.signer import CryptoSigner, SSlibKey

from ..errors import KeyFileError, MalformedDocumentError
from ..formats.flat import read_flat
from ..formats.public_key import key_material, public_key_from_dict, public_key_to_dict
from ..formats.trust_root import TrustRoot
from ..fsutil import write_bytes_atomic
from ..jsonio import load_json_object, read_bytes, write_canonical_json

KeyType = Literal["ed25519", "ecdsa-p256"]
KEY_TYPES: tuple[KeyType, ...] = ("ed25519", "ecdsa-p256")

# Name of the environment variable that may hold the passphrase of a private key.
PASSPHRASE_ENV = "STELLA_KEY_PASSPHRASE"


@dataclass(frozen=True)
class GeneratedKey:
    private_path: Path
    public_path: Path
    public_key: SSlibKey


def generate_key(
    key_type: KeyType, prefix: str | Path, passphrase: bytes | None, *, overwrite: bool = False
) -> GeneratedKey:
    """Write `PREFIX.key` (PKCS#8 PEM, mode 0600) and `PREFIX.pub.json`."""
    private_path = Path(f"{prefix}.key")
    public_path = Path(f"{prefix}.pub.json")
    if not overwrite:
        for existing in (private_path, public_path):
            if existing.exists():
                # A lost private key cannot be regenerated: never replace one by accident.
                raise KeyFileError("already exists; refusing to overwrite a key", path=existing)
    private: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
    if key_type == "ed25519":
        private = ed25519.Ed25519PrivateKey.generate()
    elif key_type == "ecdsa-p256":
        private = ec.generate_private_key(ec.SECP256R1())
    else:
        raise KeyFileError(f"unknown key type {key_type!r}; expected one of {', '.join(KEY_TYPES)}")
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    public = SSlibKey.from_crypto(private.public_key())
    write_bytes_atomic(private_path, pem, mode=0o600)
    write_canonical_json(public_path, public_key_to_dict(public))
    return GeneratedKey(private_path, public_path, public)


def load_signer(path: str | Path, passphrase: bytes | None = None) -> CryptoSigner:
    """Load a PKCS#8 PEM private key; the passphrase defaults to $STELLA_KEY_PASSPHRASE."""
    pem = read_bytes(path)
    encrypted = b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in pem
    if passphrase is None and encrypted and os.environ.get(PASSPHRASE_ENV):
        # Only for encrypted keys: one exported passphrase must not break plain keys.
        passphrase = os.environ[PASSPHRASE_ENV].encode()
    if encrypted and passphrase is None:
        raise KeyFileError(
            f"the private key is encrypted: set ${PASSPHRASE_ENV} to its passphrase", path=path
        )
    if not encrypted and passphrase is not None:
        raise KeyFileError("a passphrase was given but the private key is not encrypted", path=path)
    try:
        private = serialization.load_pem_private_key(pem, password=passphrase)
    except (TypeError, ValueError) as exc:
        reason = (
            f"wrong passphrase (from ${PASSPHRASE_ENV} or the caller)"
            if encrypted
            else "not a PKCS#8 PEM private key (ed25519 or ECDSA P-256)"
        )
        raise KeyFileError(reason, path=path) from exc
    if not isinstance(private, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
        raise KeyFileError("unsupported key type; expected ed25519 or ECDSA P-256", path=path)
    if isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name != "secp256r1":
        raise KeyFileError(f"unsupported curve {private.curve.name}; expected P-256", path=path)
    return CryptoSigner(private)


def load_public_key(path: str | Path) -> SSlibKey:
    """Load a public key from our JSON form, a PEM SubjectPublicKeyInfo, or a private key."""
    data = read_bytes(path)
    stripped = data.lstrip()
    if stripped.startswith(b"{"):
        return public_key_from_dict(load_json_object(path, "a public key object"), path)
    if b"PRIVATE KEY" in data:
        return load_signer(path).public_key
    try:
        return SSlibKey.from_crypto(serialization.load_pem_public_key(data))
    except Exception as exc:
        raise KeyFileError(
            "not a public key (expected .pub.json, PEM public key or PEM private key)", path=path
        ) from exc


def fingerprint(key: SSlibKey) -> str:
    """SHA-256 of the SubjectPublicKeyInfo DER, as colon-separated byte pairs (for the eye)."""
    digest = hashlib.sha256(key_material(key)).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


@dataclass(frozen=True)
class KeyFingerprint:
    """What `keys fingerprint` prints: what an auditor compares by eye."""

    keyid: str
    keytype: str
    scheme: str
    fingerprint_sha256: str

    @classmethod
    def of(cls, key: SSlibKey) -> KeyFingerprint:
        return cls(key.keyid, key.keytype, key.scheme, fingerprint(key))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> KeyFingerprint:
        return cls(**read_flat(cls, data, source, "key"))


@dataclass(frozen=True)
class TrustRootView:
    """What `trust-root show` prints: the trust root as read from `path`, whether it has
    expired (at the time of asking) and each key's fingerprint."""

    path: str
    root: TrustRoot
    expired: bool

    @property
    def fingerprints(self) -> dict[str, str]:
        return {keyid: fingerprint(key) for keyid, key in self.root.keys.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.root.to_dict(),
            "path": self.path,
            "expired": self.expired,
            "fingerprints": self.fingerprints,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> TrustRootView:
        if not isinstance(data, dict):
            raise MalformedDocumentError("expected an object", path=source, field="trust root")
        document = dict(data)
        extra = {name: document.pop(name, None) for name in ("path", "expired", "fingerprints")}
        if not isinstance(extra["path"], str) or not isinstance(extra["expired"], bool):
            raise MalformedDocumentError(
                "expected the path shown and true or false", path=source, field="expired"
            )
        view = cls(extra["path"], TrustRoot.from_dict(document, source), extra["expired"])
        if extra["fingerprints"] != view.fingerprints:
            raise MalformedDocumentError(
                "disagrees with the keys", path=source, field="fingerprints"
            )
        return view
