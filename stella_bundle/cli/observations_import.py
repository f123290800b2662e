"""`stella observations import`: validate and seal external observations into a chain."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import InputError
from ..evidence.config import DEFAULT_MAX_AGE_SECONDS, DEFAULT_MAX_SIZE_MB, DEFAULT_ZSTD_LEVEL
from ..report.kinds import IMPORT
from ..report.registry import OutputFormat
from .observations import app
from .output import emit, format_option


@app.command("import")
def import_command(
    source: Path = typer.Argument(..., help="NDJSON observations (plain or zstd)."),
    target: Path | None = typer.Option(
        None, "--target", help="Evidence directory (default: signals.output_directory)."
    ),
    key: Path | None = typer.Option(
        None, "--key", help="Signing key (default: signals.signing.key_file)."
    ),
    config: Path | None = typer.Option(
        None,
        "--config",
        help="stellaops.yaml: output directory, rotation, signing key (default: none, the "
        "options and built-in defaults apply).",
    ),
    chain_id: str | None = typer.Option(
        None, "--chain-id", help="Chain to create (default: import-<file sha256 prefix>)."
    ),
    max_size_mb: float | None = typer.Option(
        None,
        "--max-size-mb",
        help="Seal a chunk before it holds more than this many MiB of uncompressed NDJSON "
        f"(default: signals.rotation.max_size_mb, else {DEFAULT_MAX_SIZE_MB}).",
    ),
    max_age_seconds: float | None = typer.Option(
        None,
        "--max-age-seconds",
        help="Seal a chunk once it has been open this many seconds (default: "
        f"signals.rotation.max_age_*, else {DEFAULT_MAX_AGE_SECONDS}).",
    ),
    max_records: int | None = typer.Option(
        None,
        "--max-records",
        help="Seal a chunk once it holds this many records (default: "
        "signals.rotation.max_records, else no record limit).",
    ),
    zstd_level: int | None = typer.Option(
        None,
        "--zstd-level",
        help="zstd compression level of the chunks, 1-22 (default: signals.zstd_level, "
        f"else {DEFAULT_ZSTD_LEVEL}).",
    ),
    output_format: OutputFormat = format_option(IMPORT),
) -> None:
    """Validate every record (nothing written if one is bad), then seal them as a new chain."""
    from ..attest.keys import load_signer
    from ..evidence.config import SignalsConfig, WriterConfig, load_signals_config
    from ..evidence.importer import import_observations

    settings = load_signals_config(config) if config else SignalsConfig()
    target = target or settings.output_directory
    if target is None:
        raise InputError("no target: pass --target or set signals.output_directory in --config")
    key = key or settings.key_file
    if key is None:
        raise InputError("no signing key: pass --key or set signals.signing.key_file in --config")
    base = settings.writer
    writer_config = WriterConfig(
        max_size_mb=max_size_mb if max_size_mb is not None else base.max_size_mb,
        max_age_seconds=max_age_seconds if max_age_seconds is not None else base.max_age_seconds,
        max_records=max_records if max_records is not None else base.max_records,
        zstd_level=zstd_level if zstd_level is not None else base.zstd_level,
        flush_interval_seconds=base.flush_interval_seconds,
    )
    result = import_observations(
        source,
        target,
        load_signer(key),
        chain_id=chain_id or settings.chain_id,
        config=writer_config,
    )
    emit(result, output_format, IMPORT)
