"""Offline verification of signed statements against a trust root, one step at a time.

Steps, in order (each with its own exception): trust root not expired → envelope well-formed →
payloadType is in-toto → enough keys of the required role signed (a valid signature by a
trusted key of another role is named as a role error) → payload is an in-toto Statement v1 of
the expected predicate type → subject digest matches the artifact.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from securesystemslib.signer import SSlibKey

from ..digests import file_sha256
from ..errors import (
    MalformedDocumentError,
    PayloadTypeError,
    RoleError,
    StatementError,
    SubjectDigestMismatchError,
)
from ..formats.trust_root import TrustRoot
from ..jsonio import parse_json, read_bytes
from .dsse import (
    IN_TOTO_PAYLOAD_TYPE,
    Envelope,
    parse_envelope,
    read_envelope,
    signing_keys,
    verify_envelope,
)
from .statement import subject_digests, validate_statement


@dataclass(frozen=True)
class VerifiedStatement:
    statement: dict[str, Any]
    signers: tuple[SSlibKey, ...]
    role: str
    payload: bytes

    @property
    def predicate(self) -> dict[str, Any]:
        predicate: dict[str, Any] = self.statement["predicate"]
        return predicate

    @property
    def predicate_type(self) -> str:
        return str(self.statement["predicateType"])


def artifact_sha256(path: str | Path) -> str:
    """Hex sha256 of an artifact file; an unreadable artifact is a clear input error."""
    try:
        return file_sha256(path)
    except FileNotFoundError as exc:
        raise MalformedDocumentError("artifact not found", path=path) from exc
    except OSError as exc:
        raise MalformedDocumentError(f"cannot read artifact: {exc.strerror}", path=path) from exc


class AttestationVerifier:
    """Verifies DSSE-signed in-toto statements with the keys and roles of one trust root."""

    def __init__(self, trust_root: TrustRoot, *, now: dt.datetime | None = None) -> None:
        self.trust_root = trust_root
        self.now = now

    def verify_signers(
        self, envelope: Envelope, role: str, source: str | None = None
    ) -> list[SSlibKey]:
        """Threshold of `role` keys; a signature by another role's key is a RoleError."""
        self.trust_root.check_not_expired(self.now, source)
        required = self.trust_root.role(role)
        if not required.keyids:
            raise RoleError(f"the trust root lists no key for role '{role}'", path=source)
        role_signers = signing_keys(envelope, self.trust_root.role_keys(role))
        if not role_signers:
            others = signing_keys(envelope, self.trust_root.keys.values())
            if others:
                described = "; ".join(
                    f"{key.keyid[:16]} (roles: {', '.join(self.trust_root.roles_of(key.keyid)) or 'none'})"
                    for key in others
                )
                raise RoleError(
                    f"signed by a trusted key without the '{role}' role: {described}", path=source
                )
        return verify_envelope(
            envelope, self.trust_root.role_keys(role), required.threshold, source
        )

    def verify_statement(
        self,
        envelope_document: Any,
        role: str,
        *,
        source: str | Path | None = None,
        predicate_type: str | None = None,
        artifact: str | Path | None = None,
        artifact_digest: str | None = None,
    ) -> VerifiedStatement:
        where = str(source) if source is not None else None
        envelope = (
            envelope_document
            if isinstance(envelope_document, Envelope)
            else parse_envelope(envelope_document, source)
        )
        if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE:
            raise PayloadTypeError(
                f"payloadType is {envelope.payload_type!r}, expected {IN_TOTO_PAYLOAD_TYPE!r}",
                path=where,
            )
        signers = self.verify_signers(envelope, role, where)
        try:
            statement = parse_json(envelope.payload, f"{where or 'envelope'} (payload)")
        except MalformedDocumentError as exc:
            raise StatementError(exc.describe()) from exc
        try:
            validate_statement(statement, predicate_type)
        except StatementError as exc:
            raise StatementError(exc.message, path=where) from exc
        if artifact is not None:
            artifact_digest = "sha256:" + artifact_sha256(artifact)
            if artifact_digest[7:] == hashlib.sha256(envelope.payload).hexdigest():
                # A common slip: the statement's own JSON (a verification report written beside
                # its envelope) given where the file the statement is about belongs.
                listed = ", ".join(name or "?" for name, _ in subject_digests(statement))
                raise SubjectDigestMismatchError(
                    f"{artifact} is this statement itself, not its subject: --artifact takes "
                    f"the file the statement is about ({listed})",
                    path=where,
                )
        if artifact_digest is not None:
            self.check_subject(statement, artifact_digest, where, artifact)
        return VerifiedStatement(statement, tuple(signers), role, envelope.payload)

    def verify_statement_file(
        self, path: str | Path, role: str, **kwargs: Any
    ) -> VerifiedStatement:
        # read_envelope: the envelope's bytes parsed once, the payload decoded in place.
        return self.verify_statement(
            read_envelope(read_bytes(path), path), role, source=path, **kwargs
        )

    @staticmethod
    def check_subject(
        statement: dict[str, Any],
        artifact_digest: str,
        source: str | None,
        artifact: str | Path | None = None,
    ) -> None:
        algorithm, _, expected = artifact_digest.partition(":")
        if algorithm != "sha256" or len(expected) != 64:
            raise MalformedDocumentError(
                f"digest {artifact_digest!r} is not of the form sha256:<64 hex digits>"
            )
        digests = subject_digests(statement)
        if not any(sha == expected.lower() for _, sha in digests):
            named = artifact if artifact is not None else artifact_digest
            listed = ", ".join(f"{name or '?'}={sha[:16]}…" for name, sha in digests) or "none"
            raise SubjectDigestMismatchError(
                f"no subject matches {named} (sha256 {expected[:16]}…); subjects: {listed}",
                path=source,
            )
