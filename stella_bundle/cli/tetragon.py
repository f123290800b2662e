"""`stella tetragon`: policies from function maps, Tetragon events into signed chains, hot symbols."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import typer

from ..errors import InputError
from ..report.kinds import HOT_SYMBOLS, POLICY, TETRAGON_INGEST
from ..report.registry import OutputFormat
from .output import emit, error_line, format_option

# Its help is its line in cli/app.py's GROUPS table.
app = typer.Typer(no_args_is_help=True)


@app.command("policy")
def policy(
    function_map: Path = typer.Option(..., "--function-map", help="FM.json or FM.dsse.json."),
    output: Path = typer.Option(..., "--output", help="Where to write the TracingPolicy YAML."),
    name: str | None = typer.Option(None, "--name", help="metadata.name (default stella-SERVICE)."),
    trust_root: Path | None = typer.Option(
        None,
        "--trust-root",
        help="Check the map's signature (function-map role) first (default: not checked).",
    ),
    output_format: OutputFormat = format_option(POLICY),
) -> None:
    """Write the TracingPolicy that probes exactly the function map's nodes."""
    import yaml

    from ..fsutil import write_bytes_atomic
    from ..functionmap.load import load_function_map
    from ..tetragon.policy import build_policy

    loaded = load_function_map(function_map, trust_root)
    result = build_policy(loaded.function_map, name)
    text = yaml.safe_dump(result.document, sort_keys=False, default_flow_style=False)
    write_bytes_atomic(output, text.encode("utf-8"))
    for item in result.not_probed:
        error_line(f"warning: {item['purl']}#{item['symbol']}: not probed: {item['reason']}")
    emit(result.written(output), output_format, POLICY)


def _load_inputs(function_map: Path | None, sbom: Path | None, trust_root: Path | None) -> Any:
    from ..functionmap.load import load_function_map
    from ..functionmap.sbom import load_sbom
    from ..tetragon.nodes import NodeIndex

    loaded = load_function_map(function_map, trust_root) if function_map else None
    return NodeIndex(loaded.function_map if loaded else None, load_sbom(sbom) if sbom else None)


@app.command("ingest")
def ingest(
    files: list[Path] = typer.Argument(
        None, help="Export files in order (plain or gzip); '-' or none with --stdin: stdin."
    ),
    export_file: Path | None = typer.Option(
        None,
        "--export-file",
        help="Tetragon's export-filename: its rotated backups oldest first, then the file "
        "(default: none).",
    ),
    follow: bool = typer.Option(
        False, "--follow", help="Keep reading --export-file across rotations until stopped."
    ),
    idle_exit: float | None = typer.Option(
        None,
        "--idle-exit",
        help="With --follow: stop after this many seconds without a line (default: never).",
    ),
    cursor_file: Path | None = typer.Option(
        None,
        "--cursor",
        help="With --follow: resume from / save to this file (inode + offset) across runs "
        "(default: none, start at the beginning).",
    ),
    stdin: bool = typer.Option(False, "--stdin", help="Read JSON lines from standard input."),
    grpc_address: str | None = typer.Option(
        None,
        "--grpc",
        help="Tetragon's gRPC server, e.g. unix:///var/run/tetragon/tetragon.sock (default: none).",
    ),
    max_events: int | None = typer.Option(
        None,
        "--max-events",
        help="With --grpc: stop after this many events (default: until stopped).",
    ),
    function_map: Path | None = typer.Option(
        None,
        "--function-map",
        help="FM.json or FM.dsse.json: binary_path + symbol → node (default: none).",
    ),
    sbom: Path | None = typer.Option(
        None,
        "--sbom",
        help="CycloneDX SBOM: binary → component purl, nodes outside the map (default: none).",
    ),
    trust_root: Path | None = typer.Option(
        None,
        "--trust-root",
        help="Check the map's signature (function-map role) first (default: not checked).",
    ),
    target: Path | None = typer.Option(
        None, "--target", help="Evidence directory (default: signals.output_directory)."
    ),
    key: Path | None = typer.Option(
        None, "--key", help="The bridge's collector key (default: signals.signing.key_file)."
    ),
    chain_id: str | None = typer.Option(
        None, "--chain-id", help="Chain to write or continue (default: tetragon-NODE)."
    ),
    config: Path | None = typer.Option(
        None,
        "--config",
        help="stellaops.yaml: tetragon (privacy) and signals sections (default: none).",
    ),
    max_records: int | None = typer.Option(
        None,
        "--max-records",
        help="Records per chunk (default: signals.rotation.max_records, else no limit).",
    ),
    map_worker: bool | None = typer.Option(
        None,
        "--map-worker/--no-map-worker",
        help="Files: decode and map in worker processes (one per CPU, up to 4) while this "
        "one writes and seals (default: for 32 MiB or more on 2+ CPUs).",
    ),
    output_format: OutputFormat = format_option(TETRAGON_INGEST),
) -> None:
    """Turn Tetragon events (JSON export, stdin or gRPC) into a signed evidence chain."""
    from ..attest.keys import load_signer
    from ..evidence.config import SignalsConfig, load_signals_config, read_stellaops
    from ..evidence.layout import validate_chain_id
    from ..tetragon.config import load_tetragon_config
    from ..tetragon.events import EventMapper
    from ..tetragon.ingest import BridgeIngest, TetragonIngest
    from ..tetragon.privacy import PrivacyFilter

    settings = (
        load_signals_config(config)
        if config and "signals" in read_stellaops(config)
        else SignalsConfig()
    )
    bridge = load_tetragon_config(config)
    if not bridge.enabled:  # the null service: nothing read, nothing written, not an error
        emit(BridgeIngest(None), output_format, TETRAGON_INGEST)
        return
    if files and [str(f) for f in files] == ["-"]:
        files, stdin = [], True
    _check_inputs(bool(files), export_file, stdin, grpc_address, follow, cursor_file)
    paths = _finished_files(files, export_file, follow, map_worker)
    target, key, writer_config = _writer_settings(settings, target, key, max_records)
    nodes = _load_inputs(function_map, sbom, trust_root)
    chain = chain_id or bridge.chain_id or settings.chain_id
    stop = threading.Event()
    lines, follower = _open_lines(
        files or [], stdin, export_file, follow, idle_exit, cursor_file, bridge.max_line_bytes, stop
    )

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # A stream without end (--follow, --grpc) stops cleanly on SIGTERM or Ctrl-C: what was
    # read is sealed as final and the cursor saved.
    streaming = follower is not None or grpc_address is not None
    previous = signal.signal(signal.SIGTERM, request_stop)
    previous_int = signal.signal(signal.SIGINT, request_stop) if streaming else None
    try:
        runner = TetragonIngest(
            target,
            validate_chain_id(chain) if chain else "",
            load_signer(key),
            EventMapper(nodes, PrivacyFilter(bridge.privacy)),
            config=writer_config,
            source_name=str(
                export_file or (files[0] if files else "") or grpc_address or "<stdin>"
            ),
            max_object_bytes=bridge.max_line_bytes,
        )
        result = _ingest(
            runner,
            lines,
            _Source(
                follower,
                cursor_file,
                grpc_address,
                max_events,
                paths,
                map_worker,
            ),
            stop,
            bridge.max_line_bytes,
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
        if previous_int is not None:
            signal.signal(signal.SIGINT, previous_int)
    for problem in result.problems:
        error_line(f"warning: {problem}")
    emit(BridgeIngest(result), output_format, TETRAGON_INGEST)


def _writer_settings(
    settings: Any, target: Path | None, key: Path | None, max_records: int | None
) -> tuple[Path, Path, Any]:
    """Target directory, signing key and writer limits: the options, else stellaops.yaml's."""
    from ..evidence.config import WriterConfig

    target = target or settings.output_directory
    if target is None:
        raise InputError("no target: pass --target or set signals.output_directory in --config")
    key = key or settings.key_file
    if key is None:
        raise InputError("no signing key: pass --key or set signals.signing.key_file in --config")
    base = settings.writer
    writer_config = WriterConfig(
        max_size_mb=base.max_size_mb,
        max_age_seconds=base.max_age_seconds,
        max_records=max_records if max_records is not None else base.max_records,
        zstd_level=base.zstd_level,
        flush_interval_seconds=base.flush_interval_seconds,
    )
    return target, key, writer_config


def _check_inputs(
    files: bool,
    export_file: Path | None,
    stdin: bool,
    grpc_address: str | None,
    follow: bool,
    cursor_file: Path | None,
) -> None:
    """Exactly one input, and the options that only make sense with another one."""
    if sum([files, export_file is not None, stdin, grpc_address is not None]) != 1:
        raise InputError(
            "give exactly one input: FILES, --export-file, --stdin or --grpc", field="input"
        )
    if follow and export_file is None:
        raise InputError("--follow needs --export-file", field="--follow")
    if cursor_file is not None and not follow:
        raise InputError("--cursor needs --follow", field="--cursor")


def _open_lines(
    files: list[Path],
    stdin: bool,
    export_file: Path | None,
    follow: bool,
    idle_exit: float | None,
    cursor_file: Path | None,
    max_line_bytes: int,
    stop: threading.Event,
) -> tuple[Iterator[Any], Any]:
    """The input's lines in blocks (none for --grpc), and the follower of --follow (else
    None)."""
    from ..tetragon.sources import (
        ExportFollower,
        FollowCursor,
        file_blocks,
        rotated_backups,
        stdin_blocks,
    )

    if files:
        return file_blocks(list(files), max_line_bytes), None
    if stdin:
        return stdin_blocks(sys.stdin.buffer, max_line_bytes), None
    if export_file is not None and not follow:
        return file_blocks([*rotated_backups(export_file), export_file], max_line_bytes), None
    if export_file is not None:
        follower = ExportFollower(
            export_file,
            max_line_bytes,
            idle_seconds=idle_exit,
            stop=stop,
            cursor=FollowCursor.load(cursor_file) if cursor_file else None,
        )
        # One line a block: the cursor saved matches what was sealed, line by line.
        return ((line[0], line[1], [line[2]]) for line in follower.lines()), follower
    return iter(()), None


@dataclass(frozen=True)
class _Source:
    follower: Any  # ExportFollower of --follow, else None
    cursor_file: Path | None
    grpc_address: str | None
    max_events: int | None
    paths: list[Path] | None  # files read to their end (FILES, --export-file without --follow)
    map_worker: bool | None  # for paths: None = by size (tetragon/parallel.py)


def _finished_files(
    files: list[Path] | None, export_file: Path | None, follow: bool, map_worker: bool | None
) -> list[Path] | None:
    """The files of an input read to its end (FILES, --export-file without --follow), the
    only inputs a mapping worker takes (tetragon/parallel.py)."""
    from ..tetragon.sources import rotated_backups

    if files:
        return list(files)
    if export_file is not None and not follow:
        return [*rotated_backups(export_file), export_file]
    if map_worker is not None:
        raise InputError(
            "--map-worker/--no-map-worker need FILES or --export-file without --follow",
            field="--map-worker",
        )
    return None


def _ingest(
    runner: Any, lines: Iterator[Any], source: _Source, stop: threading.Event, max_line_bytes: int
) -> Any:
    """Feed the runner, seal, then save the cursor (only once what was read is sealed)."""
    follower, cursor_file = source.follower, source.cursor_file
    try:
        if source.grpc_address is not None:
            from ..tetragon.grpc_source import grpc_events

            events = grpc_events(source.grpc_address, max_events=source.max_events, stop=stop)
            runner.feed_events(events, source.grpc_address)
        elif source.paths is not None:
            from ..tetragon.parallel import feed_files

            # Large files over worker processes (decode and map | write and seal), same chain.
            feed_files(runner, source.paths, max_line_bytes, parallel=source.map_worker)
        else:
            runner.feed_blocks(lines, live=True)  # a follower or standard input
    except BaseException:
        runner.abort()
        raise
    if follower is not None and follower.position_lost:
        runner.note_gap("follow:saved_position_not_found")
    result = runner.close()
    if follower is not None and cursor_file is not None and follower.cursor is not None:
        follower.cursor.save(cursor_file)
    return result


@app.command("hot-symbols")
def hot_symbols(
    observations: list[Path] = typer.Option(
        [],
        "--observations",
        help="NDJSON observation file, plain or .zst (repeatable; default: none, give this or "
        "--evidence).",
    ),
    evidence: Path | None = typer.Option(
        None, "--evidence", help="Evidence directory (default: none)."
    ),
    window: int | None = typer.Option(
        None, "--window", help="Also count per window of this many seconds (default: overall only)."
    ),
    top: int | None = typer.Option(
        None, "--top", help="Only the most frequent N symbols (default: all)."
    ),
    config: Path | None = typer.Option(
        None,
        "--config",
        help="stellaops.yaml: with tetragon.enabled false, an empty answer (default: none).",
    ),
    output_format: OutputFormat = format_option(HOT_SYMBOLS),
) -> None:
    """How often each (purl, symbol) was observed, overall and per time window."""
    from ..coverage.inputs import iter_input_records
    from ..tetragon.analysis import hot_symbols as count_hot_symbols
    from ..tetragon.config import load_tetragon_config

    if window is not None and window < 1:
        raise InputError("expected a number of seconds >= 1", field="--window")
    enabled = load_tetragon_config(config).enabled
    records = iter_input_records(list(observations), evidence) if enabled else iter(())
    emit(count_hot_symbols(records, window_seconds=window, top=top), output_format, HOT_SYMBOLS)
