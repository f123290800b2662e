"""Writing the verification report: the Statement as JSON, its auditor DSSE, the HTML page."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from securesystemslib.signer import Signer

from ..attest.dsse import sign_statement
from ..canonical import canonical_bytes
from ..errors import InputError, KeyFileError
from ..formats.roles import RoleName
from ..formats.trust_root import TrustRoot
from ..fsutil import write_bytes_atomic
from ..verify import VerificationOutcome
from .render import render_html

REPORT_JSON = "verification-report.json"
REPORT_ENVELOPE = "verification-report.dsse.json"
REPORT_HTML = "verification-report.html"


@dataclass(frozen=True)
class ReportFiles:
    json: Path
    html: Path
    envelope: Path | None


def check_auditor_key(signer: Signer, trust_root: TrustRoot, source: Path) -> None:
    """The report is signed by the auditor role; refuse a key the trust root gives another role."""
    keyid = signer.public_key.keyid
    if keyid not in trust_root.role(RoleName.AUDITOR).keyids:
        roles = ", ".join(trust_root.roles_of(keyid)) or "none"
        raise KeyFileError(
            f"--report-key {keyid[:16]} is not an auditor key of the trust root (its roles: "
            f"{roles}); the report would not verify",
            path=source,
        )


def write_reports(
    outcome: VerificationOutcome, output_dir: Path, signer: Signer | None = None
) -> ReportFiles:
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"cannot create the output directory: {exc.strerror}", path=output_dir
        ) from exc
    json_path = output_dir / REPORT_JSON
    html_path = output_dir / REPORT_HTML
    envelope_path = output_dir / REPORT_ENVELOPE if signer is not None else None
    write_bytes_atomic(json_path, canonical_bytes(outcome.statement))
    write_bytes_atomic(html_path, render_html(outcome.report).encode("utf-8"))
    if signer is not None and envelope_path is not None:
        envelope = sign_statement(outcome.statement, [signer])
        write_bytes_atomic(envelope_path, canonical_bytes(envelope.to_dict()))
    return ReportFiles(json_path, html_path, envelope_path)
