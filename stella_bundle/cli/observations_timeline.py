"""`stella observations timeline`: events in time order, each with its component and artifact."""

from __future__ import annotations

from pathlib import Path

import typer

from ..report.kinds import TIMELINE
from ..report.registry import OutputFormat
from ..timeutil import format_timestamp
from .observations import app
from .options import time_option
from .output import emit, format_option


@app.command("timeline")
def timeline_command(
    observations: list[Path] = typer.Option(
        [],
        "--observations",
        help="NDJSON observation file, plain or .zst (repeatable; default: none, give this or "
        "--evidence).",
    ),
    evidence: Path | None = typer.Option(
        None, "--evidence", help="Evidence directory (default: none)."
    ),
    window_from: str | None = typer.Option(
        None, "--from", help="Only events from this RFC 3339 time (default: from the first)."
    ),
    window_to: str | None = typer.Option(
        None, "--to", help="Only events until this RFC 3339 time (default: to the last)."
    ),
    image: str | None = typer.Option(
        None, "--image", help="Image digest (or a prefix of it; default: any)."
    ),
    purl: str | None = typer.Option(
        None, "--purl", help="Component; without version: any version (default: any component)."
    ),
    limit: int | None = typer.Option(
        None, "--limit", help="At most this many events (default: all)."
    ),
    output_format: OutputFormat = format_option(TIMELINE),
) -> None:
    """Chronological events correlated with their SBOM component (purl) and build artifact
    (image digest, build id, binary)."""
    from ..coverage.inputs import iter_input_records
    from ..tetragon.analysis import timeline

    start = time_option(window_from, "--from")
    end = time_option(window_to, "--to")
    result = timeline(
        iter_input_records(list(observations), evidence),
        window_from=format_timestamp(start) if start else None,
        window_to=format_timestamp(end) if end else None,
        image=image,
        purl=purl,
        limit=limit,
    )
    emit(result, output_format, TIMELINE)
