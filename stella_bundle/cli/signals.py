"""`stella signals`: evidence chains: collect (`start`, its own module), verify, inspect, prune."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import InputError
from ..report.kinds import CHAINS, INSPECTION, PRUNES, STATUSES
from ..report.registry import OutputFormat
from .output import emit, format_option

# Its help is its line in cli/app.py's GROUPS table.
app = typer.Typer(no_args_is_help=True)


@app.command("verify-chain")
def verify_chain_command(
    directory: Path = typer.Argument(..., help="An evidence directory or one chain directory."),
    trust_root: Path | None = typer.Option(
        None,
        "--trust-root",
        help="Trust root whose `collector` role must have signed every seal (default: none, and the "
        "chain fails unless --structure-only).",
    ),
    structure_only: bool = typer.Option(
        False,
        "--structure-only",
        help="Without a trust root: pass on digests and links alone (signatures NOT checked).",
    ),
    allow_open: bool = typer.Option(
        False, "--allow-open", help="Accept a chain still being written (no final seal: warning)."
    ),
    output_format: OutputFormat = format_option(CHAINS),
) -> None:
    """Check every chunk, seal, signature and link; name each problem. Exit 0 pass, 1 fail."""
    from ..evidence.chain import verify_evidence
    from ..evidence.report import ChainVerification
    from ..formats.trust_root import TrustRoot

    if structure_only and trust_root is not None:
        raise InputError("--structure-only and --trust-root exclude each other")
    result = ChainVerification(
        tuple(
            verify_evidence(
                directory,
                TrustRoot.load(trust_root) if trust_root else None,
                require_signatures=not structure_only,
                allow_open=allow_open,
            )
        )
    )
    emit(result, output_format, CHAINS)
    raise typer.Exit(0 if result.passed else 1)


@app.command("inspect")
def inspect_command(
    target: str = typer.Argument(
        ..., help="A chunk, seal or open chunk file; a sequence number; or sha256:<hex>."
    ),
    chain: Path | None = typer.Option(
        None, "--chain", help="Chain directory for a sequence number or digest (default: .)."
    ),
    limit: int = typer.Option(50, "--limit", help="Records to show (0: all)."),
    output_format: OutputFormat = format_option(INSPECTION),
) -> None:
    """Show a seal's summary and the chunk's records (signatures are not checked here)."""
    from ..evidence.status import inspect_target

    emit(inspect_target(target, chain, None if limit == 0 else limit), output_format, INSPECTION)


@app.command("status")
def status_command(
    directory: Path = typer.Argument(..., help="An evidence directory or one chain directory."),
    output_format: OutputFormat = format_option(STATUSES),
) -> None:
    """Chain head, age of the last seal, size, records per second, open chunk, loss."""
    from ..evidence.status import chain_statuses

    emit(chain_statuses(directory), output_format, STATUSES)


@app.command("prune")
def prune_command(
    directory: Path = typer.Argument(..., help="An evidence directory or one chain directory."),
    older_than: str = typer.Option(..., "--older-than", help="Age of seals to remove, e.g. 72h."),
    key: Path = typer.Option(
        ..., "--key", help="Collector private key that signs the prune record."
    ),
    trust_root: Path | None = typer.Option(
        None,
        "--trust-root",
        help="Also verify signatures before pruning (recommended; default: digests and links only).",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be removed."),
    output_format: OutputFormat = format_option(PRUNES),
) -> None:
    """Remove whole sealed chunks older than a limit; write a signed prune record."""
    from ..attest.keys import load_signer
    from ..evidence.prune import parse_duration, prune_chains
    from ..formats.trust_root import TrustRoot

    parse_duration(older_than)  # a bad duration refused before the key is read
    signer = load_signer(key)
    root = TrustRoot.load(trust_root) if trust_root else None
    result = prune_chains(directory, older_than, signer, trust_root=root, dry_run=dry_run)
    emit(result, output_format, PRUNES)


from . import signals_start  # noqa: E402,F401
