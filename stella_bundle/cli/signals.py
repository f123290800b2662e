"""`stella signals`: evidence chains: collect (`start`, its own module), verify, inspect, prune."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from ..errors import InputError
from ..evidence.report import ERROR, INFO, WARNING
from ..report.kinds import CHAINS
from ..report.registry import TextFormat
from .output import FORMAT_HELP, Format, console, emit, emit_json, format_option

# Its help is its line in cli/app.py's GROUPS table.
app = typer.Typer(no_args_is_help=True)

_SEVERITY_STYLE = {ERROR: "red", WARNING: "yellow", INFO: "dim"}


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
    output_format: TextFormat = format_option(CHAINS),
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


def _pairs(values: dict[str, object]) -> str:
    return ", ".join(f"{key} {value}" for key, value in values.items())


def _escape(text: str) -> str:
    return text.replace("[", "\\[")


@app.command("inspect")
def inspect_command(
    target: str = typer.Argument(
        ..., help="A chunk, seal or open chunk file; a sequence number; or sha256:<hex>."
    ),
    chain: Path | None = typer.Option(
        None, "--chain", help="Chain directory for a sequence number or digest (default: .)."
    ),
    limit: int = typer.Option(50, "--limit", help="Records to show (0: all)."),
    output_format: Format = typer.Option(Format.table, "--format", help=FORMAT_HELP),
) -> None:
    """Show a seal's summary and the chunk's records (signatures are not checked here)."""
    from ..evidence.status import inspect_target

    result = inspect_target(target, chain, None if limit == 0 else limit)
    if output_format is Format.json:
        emit_json(
            {
                "source": result.source,
                "seal": result.seal,
                "total_records": result.total_records,
                "records": result.records,
            }
        )
        return
    if result.seal is None:
        console.print(f"open chunk {result.source} (not sealed: not evidence yet)", markup=False)
    else:
        predicate = result.seal["predicate"]
        window = predicate["window"]
        console.print(
            f"seal {result.seal['file']}  sha256 {result.seal['seal_sha256']}", markup=False
        )
        console.print(
            f"  chain {predicate['chain_id']}  sequence {predicate['sequence']}  reason "
            f"{predicate['reason']}  final {predicate['final']}  sealed {predicate['sealed_at']}",
            markup=False,
        )
        console.print(
            f"  records {predicate['content']['records']}  bytes {predicate['content']['bytes']}  "
            f"window {window['first_observed_at']} .. {window['last_observed_at']}",
            markup=False,
        )
        console.print(f"  loss {_pairs(predicate['loss'])}", markup=False)
        console.print(f"  collector {_pairs(predicate['collector'])}", markup=False)
        console.print(f"  signed by {', '.join(result.seal['signature_keyids'])}", markup=False)
    table = Table()
    table.add_column("observed_at", no_wrap=True)
    for column in ("function_name", "probe_type", "pid", "comm", "node_hash"):
        table.add_column(column)
    for record in result.records:
        table.add_row(
            str(record.get("observed_at", "")),
            str(record.get("function_name", "")),
            str(record.get("probe_type", "")),
            str(record.get("pid", "")),
            str(record.get("comm", "")),
            str(record.get("node_hash", ""))[:23] + "…",
        )
    console.print(table)
    console.print(f"{len(result.records)} of {result.total_records} records shown", markup=False)


@app.command("status")
def status_command(
    directory: Path = typer.Argument(..., help="An evidence directory or one chain directory."),
    output_format: Format = typer.Option(Format.table, "--format", help=FORMAT_HELP),
) -> None:
    """Chain head, age of the last seal, size, records per second, open chunk, loss."""
    from ..evidence.layout import find_chain_dirs
    from ..evidence.status import chain_status

    chains = find_chain_dirs(directory)
    if not chains:
        raise InputError("no evidence chain found", path=directory)
    statuses = [chain_status(chain) for chain in chains]
    if output_format is Format.json:
        emit_json({"chains": statuses})
        return
    for status in statuses:
        head = status["head"]
        console.print(f"chain {status['chain_id']}  ({status['location']})", markup=False)
        if head:
            console.print(
                f"  head {head['sequence']}  sealed {head['sealed_at']} ({head['age_seconds']} s ago)"
                f"  reason {head['reason']}  final {head['final']}",
                markup=False,
            )
        console.print(
            f"  sealed chunks {status['sealed_chunks']}  records {status['records']}  size "
            f"{status['size_bytes']} bytes  records/s {status['records_per_second'] or '-'}",
            markup=False,
        )
        open_chunk = status["open_chunk"]
        if open_chunk:
            console.print(
                f"  open chunk {open_chunk['sequence']}: {open_chunk['records']} records, "
                f"{open_chunk['bytes']} bytes",
                markup=False,
            )
        console.print(
            f"  events lost {status['events_lost']}  ({_pairs(status['loss'])})", markup=False
        )
        if status["pruned"]:
            pruned = status["pruned"]
            console.print(
                f"  pruned sequences {pruned['first_sequence']}-{pruned['last_sequence']}",
                markup=False,
            )


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
    output_format: Format = typer.Option(Format.table, "--format", help=FORMAT_HELP),
) -> None:
    """Remove whole sealed chunks older than a limit; write a signed prune record."""
    from ..attest.keys import load_signer
    from ..evidence.layout import find_chain_dirs
    from ..evidence.prune import parse_duration, prune_chain
    from ..formats.trust_root import TrustRoot

    seconds = parse_duration(older_than)
    signer = load_signer(key)
    root = TrustRoot.load(trust_root) if trust_root else None
    chains = find_chain_dirs(directory)
    if not chains:
        raise InputError("no evidence chain found", path=directory)
    results = [
        prune_chain(chain, seconds, signer, trust_root=root, dry_run=dry_run) for chain in chains
    ]
    if output_format is Format.json:
        emit_json(
            {
                "dry_run": dry_run,
                "chains": [
                    {
                        "chain_id": r.chain_id,
                        "removed_sequences": r.removed_sequences,
                        "records_removed": r.records_removed,
                        "prune_record": r.record.to_dict() if r.record else None,
                    }
                    for r in results
                ],
            }
        )
        return
    verb = "would remove" if dry_run else "removed"
    for result in results:
        if not result.removed_sequences:
            console.print(f"chain {result.chain_id}: nothing older than {older_than}", markup=False)
            continue
        first, last = result.removed_sequences[0], result.removed_sequences[-1]
        console.print(
            f"chain {result.chain_id}: {verb} sequences {first}-{last} "
            f"({len(result.removed_sequences)} chunks, {result.records_removed} records in the "
            "prune record's total)",
            markup=False,
        )


from . import signals_start  # noqa: E402,F401

if TYPE_CHECKING:
    pass
