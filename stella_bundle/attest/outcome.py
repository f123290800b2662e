"""What `attest verify` prints: a DSSE statement verified against a trust root's role, a
Sigstore bundle verified offline, or, as JSON for programs, why it was refused (people read
the error line on stderr). Free of sigstore's imports (~0.3 s), which only verifying needs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MalformedDocumentError, StellaError
from ..formats.flat import read_flat, read_list
from ..formats.trust_root import SigstoreIdentity


@dataclass(frozen=True)
class SignerView:
    keyid: str
    fingerprint_sha256: str
    roles: list[str]


@dataclass(frozen=True)
class StatementVerified:
    """A DSSE envelope whose signers meet the role of the trust root given."""

    envelope: str
    role: str
    predicate_type: str
    subjects: tuple[dict[str, Any], ...]  # as the statement holds them
    signers: tuple[SignerView, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "verified": True,
            "envelope": self.envelope,
            "role": self.role,
            "predicate_type": self.predicate_type,
            "subjects": list(self.subjects),
            "signers": [dataclasses.asdict(signer) for signer in self.signers],
        }


@dataclass(frozen=True)
class SigstoreVerificationResult:
    """What an offline Sigstore verification established, for the summary and `--format json`."""

    bundle: str
    kind: str  # "message_signature" or "dsse"
    artifact_digest: str
    identity: SigstoreIdentity
    payload_type: str | None = None
    predicate_type: str | None = None
    subjects: tuple[dict[str, Any], ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verified": True,
            "sigstore_bundle": self.bundle,
            "kind": self.kind,
            "artifact_digest": self.artifact_digest,
            "identity": self.identity.identity,
            "issuer": self.identity.issuer,
            "payload_type": self.payload_type,
            "predicate_type": self.predicate_type,
            "subjects": list(self.subjects),
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class AttestationRefusal:
    error: str  # the exception's class
    message: str  # its one line

    @classmethod
    def of(cls, error: StellaError) -> AttestationRefusal:
        return cls(type(error).__name__, error.describe())

    def to_dict(self) -> dict[str, Any]:
        return {"verified": False, "error": self.error, "message": self.message}


@dataclass(frozen=True)
class _StatementFields:
    envelope: str
    role: str
    predicate_type: str
    subjects: object
    signers: object


@dataclass(frozen=True)
class _SigstoreFields:
    sigstore_bundle: str
    kind: str
    artifact_digest: str
    identity: str
    issuer: str
    payload_type: str | None
    predicate_type: str | None
    subjects: object
    warnings: list[str]


@dataclass(frozen=True)
class AttestationCheck:
    outcome: StatementVerified | SigstoreVerificationResult | AttestationRefusal

    def to_dict(self) -> dict[str, Any]:
        return self.outcome.to_dict()

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> AttestationCheck:
        if not isinstance(data, dict) or not isinstance(data.get("verified"), bool):
            raise MalformedDocumentError(
                "expected an object with verified", path=source, field="verified"
            )
        fields = {key: value for key, value in data.items() if key != "verified"}
        if not data["verified"]:
            return cls(
                AttestationRefusal(**read_flat(AttestationRefusal, fields, source, "refusal"))
            )
        if "sigstore_bundle" in fields:
            return cls(_sigstore(fields, source))
        values = read_flat(_StatementFields, fields, source, "statement")
        signers = tuple(
            SignerView(**read_flat(SignerView, item, source, f"signers[{index}]"))
            for index, item in enumerate(read_list(values["signers"], source, "signers"))
        )
        return cls(
            StatementVerified(
                values["envelope"],
                values["role"],
                values["predicate_type"],
                _subjects(values["subjects"], source),
                signers,
            )
        )


def _subjects(data: Any, source: str | Path | None) -> tuple[dict[str, Any], ...]:
    subjects = read_list(data, source, "subjects")
    for index, subject in enumerate(subjects):
        if not isinstance(subject, dict):
            raise MalformedDocumentError(
                "expected an object", path=source, field=f"subjects[{index}]"
            )
    return tuple(subjects)


def _sigstore(fields: dict[str, Any], source: str | Path | None) -> SigstoreVerificationResult:
    values = read_flat(_SigstoreFields, fields, source, "sigstore")
    if values["kind"] not in ("message_signature", "dsse"):
        raise MalformedDocumentError(
            "expected message_signature or dsse", path=source, field="sigstore.kind"
        )
    return SigstoreVerificationResult(
        values["sigstore_bundle"],
        values["kind"],
        values["artifact_digest"],
        SigstoreIdentity(values["identity"], values["issuer"]),
        values["payload_type"],
        values["predicate_type"],
        _subjects(values["subjects"], source),
        tuple(values["warnings"]),
    )
