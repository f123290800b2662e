"""`stella observations query`: filter observations and summarise them per symbol."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from ..errors import InputError
from ..report.kinds import RECORDS, SYMBOLS
from ..report.registry import OutputFormat
from ..timeutil import format_timestamp
from .observations import app
from .options import time_option
from .output import emit, format_option
from .store_options import config_option


def _time(value: str | None, option: str) -> str | None:
    moment = time_option(value, option)
    return None if moment is None else format_timestamp(moment)


@app.command("query")
def query(
    observations: list[Path] = typer.Option(
        [],
        "--observations",
        help="NDJSON observation file, plain or .zst (repeatable; default: none, give this or "
        "--evidence).",
    ),
    evidence: Path | None = typer.Option(
        None,
        "--evidence",
        help="Evidence directory (<chain_id>/<seq>.ndjson.zst chunks; default: none).",
    ),
    summary: bool = typer.Option(False, "--summary", help="Per-symbol summary, not records."),
    service: str | None = typer.Option(
        None,
        "--service",
        help="Pod S or S-<suffix>, namespace, comm or details.service (default: any).",
    ),
    container: str | None = typer.Option(
        None, "--container", help="Container id (or prefix; default: any)."
    ),
    symbol: str | None = typer.Option(
        None, "--symbol", help="Glob over function names (default: any)."
    ),
    window_from: str | None = typer.Option(
        None, "--from", help="Only observations from this RFC 3339 time (default: from the first)."
    ),
    window_to: str | None = typer.Option(
        None, "--to", help="Only observations until this RFC 3339 time (default: to the last)."
    ),
    limit: int | None = typer.Option(
        None, "--limit", help="At most this many records (default: all)."
    ),
    output_format: OutputFormat = format_option(RECORDS),
    store: str | None = typer.Option(
        None,
        "--store",
        help="Read the records from this store instead of files (sqlite:///PATH, postgresql://…; "
        "default: none, or observation_store of --config).",
    ),
    config: Path | None = config_option(),
) -> None:
    """Show observation records, or with --summary per-symbol counts, first/last seen,
    probe types and containers (from files, evidence or a store)."""
    with contextlib.ExitStack() as stack:
        _query(
            stack,
            observations,
            evidence,
            summary,
            service,
            container,
            symbol,
            window_from,
            window_to,
            limit,
            output_format,
            store,
            config,
        )


def _query(
    stack: contextlib.ExitStack,
    observations: list[Path],
    evidence: Path | None,
    summary: bool,
    service: str | None,
    container: str | None,
    symbol: str | None,
    window_from: str | None,
    window_to: str | None,
    limit: int | None,
    output_format: OutputFormat,
    store: str | None,
    config: Path | None,
) -> None:
    from ..coverage.inputs import iter_input_records
    from ..coverage.query import QueryFilter, filter_records, select_records, summary_of

    selection = QueryFilter(
        service=service,
        container=container,
        symbol=symbol,
        window_from=_time(window_from, "--from"),
        window_to=_time(window_to, "--to"),
    )
    records: Iterator[dict[str, Any]]
    if store is not None or config is not None:
        # From a store: the same filter and summary code over the stored records.
        from ..store import open_store, query_records
        from ..store.config import store_settings

        if observations or evidence is not None:
            raise InputError("give --store (or --config) or --observations/--evidence, not both")
        opened = open_store(store_settings(store, config).url)
        stack.callback(opened.close)
        records = query_records(opened, selection)
    else:
        records = filter_records(iter_input_records(list(observations), evidence), selection)
    if summary:
        emit(summary_of(records), output_format, SYMBOLS)
    else:
        emit(select_records(records, limit), output_format, RECORDS)
