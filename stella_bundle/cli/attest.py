"""`stella attest`: sign documents as DSSE in-toto statements and verify them offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from ..attest.keys import fingerprint, load_signer
from ..attest.signing import load_ready_statement, sign_to_file, statement_for_document
from ..attest.trustroot import ROLES, TrustRoot
from ..attest.verifier import AttestationVerifier, VerifiedStatement
from ..errors import InputError, StellaError
from .output import Format, console, emit_json

app = typer.Typer(
    help="Sign and verify in-toto attestations (DSSE, Sigstore).", no_args_is_help=True
)


@app.command("sign")
def sign(
    input_path: Path = typer.Option(..., "--input", help="JSON document (or a ready statement)."),
    predicate_type: str | None = typer.Option(
        None, "--predicate-type", help="Wrap --input as the predicate of a Statement of this type."
    ),
    statement: bool = typer.Option(False, "--statement", help="--input is a ready Statement."),
    key: list[Path] = typer.Option(..., "--key", help="Private key(s); repeat for thresholds."),
    output: Path = typer.Option(..., "--output", help="Where to write the .dsse.json envelope."),
) -> None:
    """Sign a document: its sha256 becomes the Statement's subject."""
    if bool(predicate_type) == statement:
        raise InputError("give exactly one of --predicate-type URI or --statement")
    signers = [load_signer(path) for path in key]
    document = (
        load_ready_statement(input_path)
        if statement
        else statement_for_document(input_path, str(predicate_type))
    )
    envelope = sign_to_file(document, signers, output)
    console.print(
        f"signed {input_path} as {document['predicateType']} by "
        f"{', '.join(s.keyid for s in envelope.signatures)} → {output}"
    )


def _summary(result: VerifiedStatement, trust_root: TrustRoot) -> dict[str, Any]:
    return {
        "verified": True,
        "role": result.role,
        "predicate_type": result.predicate_type,
        "subjects": result.statement["subject"],
        "signers": [
            {
                "keyid": key.keyid,
                "fingerprint_sha256": fingerprint(key),
                "roles": trust_root.roles_of(key.keyid),
            }
            for key in result.signers
        ],
    }


@app.command("verify")
def verify(
    envelope: Path = typer.Argument(..., help="The .dsse.json envelope to verify."),
    trust_root_path: Path = typer.Option(..., "--trust-root", help="trust-root.json you brought."),
    role: str = typer.Option(
        ..., "--role", help=f"Role required of the signers: {', '.join(ROLES)}."
    ),
    artifact: Path | None = typer.Option(None, "--artifact", help="File the subject must match."),
    digest: str | None = typer.Option(None, "--digest", help="sha256:… the subject must match."),
    predicate_type: str | None = typer.Option(None, "--predicate-type", help="Require this type."),
    output_format: Format = typer.Option(Format.table, "--format"),
) -> None:
    """Verify a DSSE envelope offline: role threshold, payloadType, statement, subject digest."""
    try:
        trust_root = TrustRoot.load(trust_root_path)
        result = AttestationVerifier(trust_root).verify_statement_file(
            envelope,
            role,
            predicate_type=predicate_type,
            artifact=artifact,
            artifact_digest=digest,
        )
    except StellaError as exc:
        if output_format is Format.json:
            emit_json({"verified": False, "error": type(exc).__name__, "message": exc.describe()})
        raise
    summary = _summary(result, trust_root)
    if output_format is Format.json:
        emit_json(summary)
        return
    console.print(f"[green]VERIFIED[/green] {envelope} ({result.predicate_type}, role {role})")
    table = Table("subject", "sha256")
    for subject in result.statement["subject"]:
        table.add_row(subject.get("name", ""), subject.get("digest", {}).get("sha256", ""))
    console.print(table)
    for signer in summary["signers"]:
        console.print(f"signed by {signer['keyid']} ({signer['fingerprint_sha256']})")
