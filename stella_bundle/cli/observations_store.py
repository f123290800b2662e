"""`stella observations ingest` and `prune`: evidence into a store, and retention."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import InputError
from ..report.kinds import STORE_INGEST, STORE_PRUNE
from ..report.registry import OutputFormat
from .observations import app
from .output import emit, format_option
from .store_options import config_option, store_url_option


@app.command("ingest")
def ingest(
    ndjson: list[Path] = typer.Argument(
        None, help="Plain NDJSON observation files, stored unsigned (default: none; or --evidence)."
    ),
    evidence: Path | None = typer.Option(
        None,
        "--evidence",
        help="Evidence directory or chain directory: verified with --trust-root, then stored "
        "(default: none; or NDJSON files).",
    ),
    trust_root: Path | None = typer.Option(
        None, "--trust-root", help="trust-root.json; required with --evidence (default: none)."
    ),
    store: str | None = store_url_option(),
    config: Path | None = config_option(),
    output_format: OutputFormat = format_option(STORE_INGEST),
) -> None:
    """Store observations: sealed chains verified first, idempotent per (chain, sequence);
    a chunk conflicting with a stored one is refused and nothing is stored (exit 1)."""
    from ..formats.trust_root import TrustRoot
    from ..store import ingest_evidence, ingest_ndjson, open_store, raise_conflicts
    from ..store.config import store_settings
    from ..store.results import StoreIngest

    files = list(ndjson or [])
    if bool(files) == (evidence is not None):
        raise InputError("give exactly one of --evidence DIR or NDJSON files")
    settings = store_settings(store, config)
    root = TrustRoot.load(trust_root) if trust_root is not None else None
    if evidence is not None and root is None:
        raise InputError(
            "a trust root is required: evidence is verified before it is stored",
            field="--trust-root",
        )
    with open_store(settings.url, initialise=True) as opened:
        if evidence is not None:
            result = ingest_evidence(opened, evidence, root)
        else:
            result = ingest_ndjson(opened, files, settings.max_batch_size)
        raise_conflicts(result, opened)
        where = opened.display_url
    emit(StoreIngest(where, result), output_format, STORE_INGEST)


@app.command("prune")
def prune(
    older_than: str | None = typer.Option(
        None,
        "--older-than",
        help="Remove whole UTC days of records older than this, e.g. 72h (default: "
        "observation_store.retention_hours of --config, else 72h).",
    ),
    store: str | None = store_url_option(),
    config: Path | None = config_option(),
    output_format: OutputFormat = format_option(STORE_PRUNE),
) -> None:
    """Retention: drop the days of records older than the limit (PostgreSQL: whole day
    partitions detached and dropped). Chunk provenance is kept, so pruned evidence offered
    again is not stored again."""
    import datetime as dt

    from ..evidence.prune import parse_duration
    from ..store import open_store
    from ..store.config import store_settings
    from ..store.coverage import prune_cutoff
    from ..store.results import StorePrune

    settings = store_settings(store, config)
    age = (
        dt.timedelta(seconds=parse_duration(older_than))
        if older_than is not None
        else settings.retention
    )
    with open_store(settings.url) as opened:
        result = opened.prune(prune_cutoff(age))
        where = opened.display_url
    emit(StorePrune(where, result), output_format, STORE_PRUNE)
