"""Offline verification of Sigstore bundles against a trusted root the auditor brought.

Built on `sigstore.verify.Verifier(trusted_root=...)` with an identity policy; never
`Verifier.production()` (it refreshes TUF metadata over the network and writes under `$HOME`).
`verify_dsse` does not compare the in-toto subjects with the artifact: we do.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pydantic
from sigstore.errors import Error as SigstoreError
from sigstore.hashes import Hashed
from sigstore.models import Bundle, TrustedRoot
from sigstore.verify import Verifier
from sigstore.verify.policy import AnyOf, Identity, VerificationPolicy
from sigstore_models.common.v1 import HashAlgorithm
from sigstore_models.trustroot.v1 import TrustedRoot as TrustedRootDocument

from ..errors import (
    InputError,
    MalformedDocumentError,
    PayloadTypeError,
    SigstoreVerificationError,
    StatementError,
    TrustRootError,
    UnsupportedError,
)
from ..formats.trust_root import SigstoreIdentity, TrustRoot
from ..jsonio import parse_json, read_bytes
from .dsse import IN_TOTO_PAYLOAD_TYPE
from .outcome import SigstoreVerificationResult
from .statement import subject_digests
from .verifier import AttestationVerifier, artifact_sha256

# Transparency log entry kinds sigstore-python 4.x can check against a bundle. `intoto` 0.0.2
# (Rekor v1's legacy in-toto type) has no verifier there, so such bundles are refused as
# unsupported rather than half-verified.
SUPPORTED_LOG_ENTRIES: frozenset[tuple[str, str]] = frozenset(
    {("hashedrekord", "0.0.1"), ("hashedrekord", "0.0.2"), ("dsse", "0.0.1")}
)

# In-toto statement types whose `subject` list we compare with the artifact.
IN_TOTO_STATEMENT_TYPES = ("https://in-toto.io/Statement/v1", "https://in-toto.io/Statement/v0.1")

# Sigstore's own messages can embed whole pydantic reports; one stderr line must stay readable.
MAX_REASON_CHARS = 400

_DIGEST_PATTERN = re.compile(r"sha256:[0-9a-fA-F]{64}")


def _one_line(text: str) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= MAX_REASON_CHARS else line[: MAX_REASON_CHARS - 1] + "…"


# --- trust material ---------------------------------------------------------------------------


def load_trusted_root(path: str | Path) -> TrustedRoot:
    """A Sigstore `trusted_root.json` from a file the auditor brought."""
    parse_json(read_bytes(path), path)  # a clear JSON error first, with line and column
    try:
        return TrustedRoot.from_file(str(path))
    except (pydantic.ValidationError, SigstoreError, ValueError) as exc:
        raise TrustRootError(
            f"not a usable Sigstore trusted root: {_one_line(str(exc))}", path=path
        ) from exc


def trusted_root_from_dict(
    document: dict[str, Any], source: str | Path | None = None
) -> TrustedRoot:
    """The Sigstore trusted root embedded in a stella trust root's `sigstore` section."""
    try:
        # TrustedRoot.from_file only takes a path; this is the same parse without a temp file.
        return TrustedRoot(TrustedRootDocument.from_json(json.dumps(document)))
    except (pydantic.ValidationError, SigstoreError, ValueError) as exc:
        raise TrustRootError(
            f"embedded Sigstore trusted root is not usable: {_one_line(str(exc))}",
            path=source,
            field="sigstore.trusted_root",
        ) from exc


def parse_digest(digest: str) -> str:
    """Normalise `sha256:<hex>`; anything else is a usage error."""
    if not _DIGEST_PATTERN.fullmatch(digest):
        raise InputError(
            f"digest {digest!r} is not of the form sha256:<64 hex digits>", field="--digest"
        )
    return digest.lower()


# --- the bundle -------------------------------------------------------------------------------


def check_supported(document: Any, source: str | Path) -> None:
    """Refuse, with the reason, bundle shapes sigstore-python cannot verify."""
    if not isinstance(document, dict):
        raise MalformedDocumentError("not a Sigstore bundle (expected a JSON object)", path=source)
    material = document.get("verificationMaterial")
    if not isinstance(material, dict):
        return  # sigstore's own parser reports the missing material precisely
    if "publicKey" in material:
        raise UnsupportedError(
            "unsupported Sigstore bundle: signed with a managed key (verificationMaterial."
            "publicKey, no certificate); sigstore-python 4.x verifies only keyless bundles "
            "whose signing certificate chains to the trusted root",
            path=source,
        )
    entries = material.get("tlogEntries")
    for index, entry in enumerate(entries if isinstance(entries, list) else []):
        kind_version = entry.get("kindVersion") if isinstance(entry, dict) else None
        if not isinstance(kind_version, dict):
            continue
        kind = (str(kind_version.get("kind")), str(kind_version.get("version")))
        if kind not in SUPPORTED_LOG_ENTRIES:
            supported = ", ".join(f"{k}/{v}" for k, v in sorted(SUPPORTED_LOG_ENTRIES))
            raise UnsupportedError(
                f"unsupported transparency log entry {kind[0]}/{kind[1]}: sigstore-python 4.x "
                f"verifies only {supported}",
                path=source,
                field=f"verificationMaterial.tlogEntries[{index}].kindVersion",
            )


def load_bundle(path: str | Path) -> Bundle:
    """Parse a Sigstore bundle: malformed JSON exits 2, unsupported shapes say so, the rest 1."""
    raw = read_bytes(path)
    document = parse_json(raw, path)
    check_supported(document, path)
    try:
        return Bundle.from_json(raw)
    except (SigstoreError, pydantic.ValidationError, ValueError) as exc:
        raise SigstoreVerificationError(
            f"invalid Sigstore bundle: {_one_line(str(exc))}", path=path
        ) from exc


@contextmanager
def _collect_sigstore_warnings() -> Iterator[list[str]]:
    """Keep sigstore's logged warnings for the result instead of loose lines on stderr."""
    collected: list[str] = []

    class _Collector(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            collected.append(_one_line(record.getMessage()))

    logger = logging.getLogger("sigstore")
    handler = _Collector(level=logging.WARNING)
    previous = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield collected
    finally:
        logger.removeHandler(handler)
        logger.propagate = previous


class OfflineSigstoreVerifier:
    """Verifies Sigstore bundles with one trusted root and a list of allowed identities."""

    def __init__(self, trusted_root: TrustedRoot, identities: Sequence[SigstoreIdentity]) -> None:
        if not identities:
            raise InputError("no allowed Sigstore identity: give --identity and --issuer")
        self.identities = list(identities)
        try:
            self._verifier = Verifier(trusted_root=trusted_root)
        except SigstoreError as exc:
            raise TrustRootError(f"Sigstore trusted root unusable: {_one_line(str(exc))}") from exc
        policies: list[VerificationPolicy] = [
            Identity(identity=pair.identity, issuer=pair.issuer) for pair in self.identities
        ]
        self._policy: VerificationPolicy = policies[0] if len(policies) == 1 else AnyOf(policies)

    @classmethod
    def from_trust_root(
        cls,
        trust_root: TrustRoot,
        source: str | Path | None = None,
        only: SigstoreIdentity | None = None,
    ) -> OfflineSigstoreVerifier:
        """Trust the Sigstore section of a stella trust root (expiry checked first)."""
        trust_root.check_not_expired(source=str(source) if source is not None else None)
        if trust_root.sigstore is None:
            raise TrustRootError(
                "trust root has no 'sigstore' section", path=source, field="sigstore"
            )
        identities = trust_root.sigstore.identities
        if not identities:
            raise TrustRootError(
                "the Sigstore section allows no identity/issuer pair",
                path=source,
                field="sigstore.identities",
            )
        if only is not None:
            if only not in identities:
                raise TrustRootError(
                    f"identity {only.identity} (issuer {only.issuer}) is not allowed by the "
                    "trust root",
                    path=source,
                    field="sigstore.identities",
                )
            identities = [only]
        return cls(trusted_root_from_dict(trust_root.sigstore.trusted_root, source), identities)

    def verify(
        self,
        bundle_path: str | Path,
        *,
        artifact: str | Path | None = None,
        artifact_digest: str | None = None,
        predicate_type: str | None = None,
    ) -> SigstoreVerificationResult:
        """Verify the bundle over the artifact (a file or its `sha256:` digest)."""
        if (artifact is None) == (artifact_digest is None):
            raise InputError("give exactly one of --artifact FILE or --digest sha256:…")
        digest = (
            "sha256:" + artifact_sha256(artifact)
            if artifact is not None
            else parse_digest(str(artifact_digest))
        )
        where = str(bundle_path)
        with _collect_sigstore_warnings() as warnings:
            try:
                bundle = load_bundle(bundle_path)
                payload_type, payload = self._verify_signature(bundle, digest, where)
            except SigstoreVerificationError as exc:
                if warnings:  # e.g. "this bundle contains a root CA": part of the reason
                    exc.message += f" (sigstore warned: {'; '.join(warnings)})"
                raise
        identity = self._matched_identity(bundle)
        if payload is None:
            return SigstoreVerificationResult(
                where, "message_signature", digest, identity, warnings=tuple(warnings)
            )
        statement = self._check_statement(payload_type, payload, digest, where, artifact)
        if predicate_type is not None and statement.get("predicateType") != predicate_type:
            raise StatementError(
                f"predicateType is {statement.get('predicateType')!r}, expected {predicate_type!r}",
                path=where,
            )
        return SigstoreVerificationResult(
            where,
            "dsse",
            digest,
            identity,
            payload_type=payload_type,
            predicate_type=str(statement.get("predicateType")),
            subjects=tuple(statement["subject"]),
            warnings=tuple(warnings),
        )

    def _verify_signature(
        self, bundle: Bundle, digest: str, where: str
    ) -> tuple[str | None, bytes | None]:
        """Sigstore's checks: chain, identity policy, log entry, timestamps, signature."""
        try:
            if bundle._dsse_envelope is not None:  # sigstore exposes no public accessor
                return self._verifier.verify_dsse(bundle, self._policy)
            hashed = Hashed(algorithm=HashAlgorithm.SHA2_256, digest=bytes.fromhex(digest[7:]))
            self._verifier.verify_artifact(hashed, bundle, self._policy)
            return None, None
        except (SigstoreError, pydantic.ValidationError, ValueError) as exc:
            reason = _one_line(str(exc)) or type(exc).__name__
            raise SigstoreVerificationError(
                f"Sigstore bundle rejected: {reason}", path=where
            ) from exc

    def _matched_identity(self, bundle: Bundle) -> SigstoreIdentity:
        certificate = bundle.signing_certificate
        for pair in self.identities:
            try:
                Identity(identity=pair.identity, issuer=pair.issuer).verify(certificate)
            except SigstoreError:
                continue
            return pair
        raise SigstoreVerificationError("no allowed identity matches the signing certificate")

    @staticmethod
    def _check_statement(
        payload_type: str | None,
        payload: bytes,
        digest: str,
        where: str,
        artifact: str | Path | None,
    ) -> dict[str, Any]:
        """The DSSE payload is an in-toto statement whose subject is our artifact."""
        if payload_type != IN_TOTO_PAYLOAD_TYPE:
            raise PayloadTypeError(
                f"DSSE payloadType is {payload_type!r}, expected {IN_TOTO_PAYLOAD_TYPE!r}",
                path=where,
            )
        try:
            statement = parse_json(payload, where)
        except MalformedDocumentError as exc:
            raise StatementError(f"DSSE payload: {exc.message}", path=where) from exc
        if not isinstance(statement, dict) or statement.get("_type") not in IN_TOTO_STATEMENT_TYPES:
            raise StatementError("DSSE payload is not an in-toto Statement", path=where)
        subjects = statement.get("subject")
        if not isinstance(subjects, list) or not all(isinstance(s, dict) for s in subjects):
            raise StatementError("in-toto statement has no subject list", path=where)
        if not subject_digests(statement):
            raise StatementError("no subject of the statement has a sha256 digest", path=where)
        AttestationVerifier.check_subject(statement, digest, where, artifact)
        return statement
