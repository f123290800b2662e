"""`stella trust-root`: create, extend and show the trust root an auditor brings."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import typer

from ..attest.keys import TrustRootView, load_public_key
from ..errors import InputError
from ..formats.roles import ROLES
from ..formats.trust_root import SigstoreIdentity, SigstoreTrust, TrustRoot
from ..formats.written import TrustRootWritten
from ..jsonio import load_json_object
from ..report.kinds import TRUST_ROOT, TRUST_ROOT_WRITTEN
from ..report.registry import OutputFormat
from ..timeutil import format_timestamp, parse_timestamp, utc_now
from .output import emit, format_option

# Its help is its line in cli/app.py's GROUPS table.
app = typer.Typer(no_args_is_help=True)


def _expiry(expires: str | None, days: int) -> dt.datetime:
    if expires:
        try:
            return parse_timestamp(expires)
        except ValueError as exc:
            raise InputError(str(exc), field="--expires") from exc
    return utc_now() + dt.timedelta(days=days)


def _check_roles(roles: list[str]) -> None:
    for role in roles:
        if role not in ROLES:
            raise InputError(
                f"unknown role {role!r}; expected one of {', '.join(ROLES)}", field="--role"
            )


def _written(path: Path, change: str, root: TrustRoot, **details: Any) -> TrustRootWritten:
    return TrustRootWritten(str(path), change, format_timestamp(root.expires), **details)


@app.command("init")
def init(
    output: Path = typer.Option(
        Path("trust-root.json"), "--output", "-o", help="Where to write the trust root."
    ),
    expires: str | None = typer.Option(
        None, "--expires", help="RFC 3339 expiry (default: none, --days from now applies)."
    ),
    days: int = typer.Option(365, "--days", help="Expiry in days from now (without --expires)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
    output_format: OutputFormat = format_option(TRUST_ROOT_WRITTEN),
) -> None:
    """Write an empty trust root with the four roles and an expiry."""
    if output.exists() and not force:
        raise InputError("file exists; pass --force to overwrite", path=output)
    root = TrustRoot(expires=_expiry(expires, days))
    root.save(output)
    emit(_written(output, "init", root), output_format, TRUST_ROOT_WRITTEN)


@app.command("add-key")
def add_key(
    trust_root: Path = typer.Argument(..., help="trust-root.json to update."),
    key: Path = typer.Option(..., "--key", help="Public key (.pub.json or PEM)."),
    role: list[str] = typer.Option(..., "--role", help=f"Role(s): {', '.join(ROLES)}."),
    threshold: int | None = typer.Option(
        None,
        "--threshold",
        help="New threshold for the role(s) (default: unchanged, 1 for a new role).",
    ),
    output_format: OutputFormat = format_option(TRUST_ROOT_WRITTEN),
) -> None:
    """Trust a public key for one or more roles."""
    _check_roles(role)
    root = TrustRoot.load(trust_root)
    public = load_public_key(key)
    root.add_key(public, role, threshold)
    # Re-validate through the model so an impossible threshold is refused before writing.
    TrustRoot.from_dict(root.to_dict(), trust_root)
    root.save(trust_root)
    written = _written(trust_root, "add-key", root, keyid=public.keyid, roles=list(role))
    emit(written, output_format, TRUST_ROOT_WRITTEN)


@app.command("set-sigstore")
def set_sigstore(
    trust_root: Path = typer.Argument(..., help="trust-root.json to update."),
    trusted_root: Path = typer.Option(..., "--trusted-root", help="Sigstore trusted_root.json."),
    identity: list[str] = typer.Option(..., "--identity", help="Allowed certificate identity."),
    issuer: list[str] = typer.Option(..., "--issuer", help="OIDC issuer for each --identity."),
    output_format: OutputFormat = format_option(TRUST_ROOT_WRITTEN),
) -> None:
    """Embed a Sigstore trusted root and the identity/issuer pairs allowed to sign."""
    from ..attest.sigstore_offline import trusted_root_from_dict  # sigstore is slow to import

    if len(identity) != len(issuer):
        raise InputError("give one --issuer for every --identity")
    root = TrustRoot.load(trust_root)
    pairs = [SigstoreIdentity(i, s) for i, s in zip(identity, issuer, strict=True)]
    document = load_json_object(trusted_root, "a Sigstore trusted root")
    trusted_root_from_dict(document, trusted_root)  # refuse what the verifier could not use
    root.sigstore = SigstoreTrust(document, pairs)
    root.save(trust_root)
    written = _written(
        trust_root,
        "set-sigstore",
        root,
        sigstore_trusted_root=str(trusted_root),
        sigstore_identities=len(pairs),
    )
    emit(written, output_format, TRUST_ROOT_WRITTEN)


@app.command("show")
def show(
    trust_root: Path = typer.Argument(..., help="trust-root.json to show."),
    output_format: OutputFormat = format_option(TRUST_ROOT),
) -> None:
    """Print keys (with fingerprints), roles, thresholds and expiry."""
    root = TrustRoot.load(trust_root)
    view = TrustRootView(str(trust_root), root, utc_now() >= root.expires)
    emit(view, output_format, TRUST_ROOT)
