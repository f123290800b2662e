"""`stella attest`: sign documents as DSSE in-toto statements and verify them offline."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ..errors import InputError, StellaError
from ..formats.roles import ROLES
from ..formats.trust_root import SigstoreIdentity, TrustRoot
from ..formats.written import StatementSigned
from ..report.kinds import ATTESTATION, STATEMENT_SIGNED
from ..report.registry import OutputFormat
from .output import emit, format_option

if TYPE_CHECKING:
    from ..attest.verifier import VerifiedStatement

if TYPE_CHECKING:  # sigstore costs ~0.3 s to import: loaded only when a Sigstore bundle is verified
    from ..attest.outcome import AttestationCheck, SigstoreVerificationResult

# Its help is its line in cli/app.py's GROUPS table.
app = typer.Typer(no_args_is_help=True)


@app.command("sign")
def sign(
    input_path: Path = typer.Option(..., "--input", help="JSON document (or a ready statement)."),
    predicate_type: str | None = typer.Option(
        None,
        "--predicate-type",
        help="Wrap --input as the predicate of a Statement of this type (default: none, --input is "
        "signed as a subject).",
    ),
    statement: bool = typer.Option(False, "--statement", help="--input is a ready Statement."),
    key: list[Path] = typer.Option(..., "--key", help="Private key(s); repeat for thresholds."),
    output: Path = typer.Option(..., "--output", help="Where to write the .dsse.json envelope."),
    output_format: OutputFormat = format_option(STATEMENT_SIGNED),
) -> None:
    """Sign a document: its sha256 becomes the Statement's subject."""
    from ..attest.keys import load_signer
    from ..attest.signing import load_ready_statement, sign_to_file, statement_for_document

    if bool(predicate_type) == statement:
        raise InputError("give exactly one of --predicate-type URI or --statement")
    signers = [load_signer(path) for path in key]
    document = (
        load_ready_statement(input_path)
        if statement
        else statement_for_document(input_path, str(predicate_type))
    )
    envelope = sign_to_file(document, signers, output)
    signed = StatementSigned(
        str(input_path),
        str(output),
        str(document["predicateType"]),
        [signature.keyid for signature in envelope.signatures],
    )
    emit(signed, output_format, STATEMENT_SIGNED)


def _summary(envelope: str, result: VerifiedStatement, trust_root: TrustRoot) -> AttestationCheck:
    from ..attest.keys import fingerprint
    from ..attest.outcome import AttestationCheck, SignerView, StatementVerified

    signers = tuple(
        SignerView(key.keyid, fingerprint(key), trust_root.roles_of(key.keyid))
        for key in result.signers
    )
    subjects = tuple(result.statement["subject"])
    return AttestationCheck(
        StatementVerified(envelope, result.role, result.predicate_type, subjects, signers)
    )


@app.command("verify")
def verify(
    envelope: Path | None = typer.Argument(
        None, help="The .dsse.json envelope to verify (omit with --sigstore-bundle)."
    ),
    trust_root_path: Path | None = typer.Option(
        None,
        "--trust-root",
        help="trust-root.json you brought (keys, roles, Sigstore section); no default.",
    ),
    role: str | None = typer.Option(
        None, "--role", help=f"Role required of the DSSE signers: {', '.join(ROLES)}; no default."
    ),
    artifact: Path | None = typer.Option(
        None,
        "--artifact",
        help="The file the statement is about: a subject must match its sha256 (default: "
        "subjects not checked).",
    ),
    digest: str | None = typer.Option(
        None, "--digest", help="sha256:… a subject must match (default: subjects not checked)."
    ),
    predicate_type: str | None = typer.Option(
        None, "--predicate-type", help="Require this predicate type (default: any)."
    ),
    sigstore_bundle: Path | None = typer.Option(
        None,
        "--sigstore-bundle",
        help="A Sigstore bundle (.sigstore.json) to verify offline (default: none, ENVELOPE is DSSE).",
    ),
    trusted_root: Path | None = typer.Option(
        None,
        "--trusted-root",
        help="Sigstore trusted_root.json (default: the Sigstore section of --trust-root).",
    ),
    identity: str | None = typer.Option(
        None,
        "--identity",
        help="Certificate identity (SAN) allowed to sign the bundle (default: those of --trust-root).",
    ),
    issuer: str | None = typer.Option(
        None,
        "--issuer",
        help="OIDC issuer of --identity, given with it (default: those of --trust-root).",
    ),
    output_format: OutputFormat = format_option(ATTESTATION),
) -> None:
    """Verify offline: a DSSE envelope against a trust root's role, or a Sigstore bundle."""
    from ..attest.outcome import AttestationCheck, AttestationRefusal
    from ..attest.verifier import AttestationVerifier

    try:
        if sigstore_bundle is not None:
            sigstore_result = _verify_sigstore(
                envelope,
                sigstore_bundle,
                trust_root_path,
                trusted_root,
                identity,
                issuer,
                role,
                artifact,
                digest,
                predicate_type,
            )
        else:
            if trusted_root is not None or identity is not None or issuer is not None:
                raise InputError("--trusted-root, --identity and --issuer need --sigstore-bundle")
            if envelope is None or trust_root_path is None or role is None:
                raise InputError(
                    "give ENVELOPE --trust-root T --role R (or --sigstore-bundle B for Sigstore)"
                )
            if artifact is not None and digest is not None:
                raise InputError("give --artifact FILE or --digest sha256:…, not both")
            trust_root = TrustRoot.load(trust_root_path)
            result = AttestationVerifier(trust_root).verify_statement_file(
                envelope,
                role,
                predicate_type=predicate_type,
                artifact=artifact,
                artifact_digest=digest,
            )
    except StellaError as exc:
        # A program reading JSON learns why on stdout too; for people the error line suffices.
        if output_format == OutputFormat.json:
            emit(AttestationCheck(AttestationRefusal.of(exc)), output_format, ATTESTATION)
        raise
    if sigstore_bundle is not None:
        emit(AttestationCheck(sigstore_result), output_format, ATTESTATION)
        return
    emit(_summary(str(envelope), result, trust_root), output_format, ATTESTATION)


def _verify_sigstore(
    envelope: Path | None,
    bundle: Path,
    trust_root_path: Path | None,
    trusted_root: Path | None,
    identity: str | None,
    issuer: str | None,
    role: str | None,
    artifact: Path | None,
    digest: str | None,
    predicate_type: str | None,
) -> SigstoreVerificationResult:
    """Wire the Sigstore flags to an OfflineSigstoreVerifier; every mistake is a usage error."""
    from ..attest.sigstore_offline import OfflineSigstoreVerifier, load_trusted_root

    if envelope is not None:
        raise InputError("give either ENVELOPE or --sigstore-bundle, not both")
    if role is not None:
        raise InputError("--role applies to DSSE envelopes, not to --sigstore-bundle")
    if (identity is None) != (issuer is None):
        raise InputError("give --identity and --issuer together")
    pair = SigstoreIdentity(identity, issuer) if identity and issuer else None
    if trusted_root is not None and trust_root_path is not None:
        raise InputError("give either --trusted-root (with --identity/--issuer) or --trust-root")
    if trusted_root is not None:
        if pair is None:
            raise InputError("--trusted-root needs --identity and --issuer")
        verifier = OfflineSigstoreVerifier(load_trusted_root(trusted_root), [pair])
    elif trust_root_path is not None:
        verifier = OfflineSigstoreVerifier.from_trust_root(
            TrustRoot.load(trust_root_path), trust_root_path, only=pair
        )
    else:
        raise InputError(
            "--sigstore-bundle needs --trusted-root with --identity/--issuer, or --trust-root"
        )
    return verifier.verify(
        bundle, artifact=artifact, artifact_digest=digest, predicate_type=predicate_type
    )
