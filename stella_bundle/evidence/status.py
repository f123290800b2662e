"""Operator views of a chain: `status` (head, age, size, rate, open chunk, loss) and `inspect`."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..compression import BoundedInflater
from ..errors import InputError, MalformedDocumentError
from ..formats.seal import LossCounters
from ..timeutil import parse_timestamp, utc_now
from .layout import (
    PARTIAL_SUFFIX,
    PRUNE_RECORD_NAME,
    SEAL_SUFFIX,
    chunk_name,
    parse_name,
    partial_name,
    seal_name,
)
from .prune_record import read_prune_record
from .seal import ParsedSeal, parse_seal, seal_digest


def chain_status(chain_dir: str | Path) -> dict[str, Any]:
    """What an operator asks of a live chain; read from seals only (no signature checks)."""
    directory = Path(chain_dir)
    if not directory.is_dir():
        raise InputError("expected a chain directory", path=directory)
    seals: list[tuple[int, ParsedSeal, bytes]] = []
    size = 0
    open_chunk = None
    for entry in sorted(os.listdir(directory)):
        path = directory / entry
        size += path.stat().st_size
        parsed = parse_name(entry)
        if parsed is None:
            continue
        sequence, suffix = parsed
        if suffix == SEAL_SUFFIX:
            data = path.read_bytes()
            seals.append((sequence, parse_seal(data, path), data))
        elif suffix == PARTIAL_SUFFIX:
            with open(path, "rb") as handle:
                lines = sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))
            open_chunk = {"sequence": sequence, "bytes": path.stat().st_size, "records": lines}
    loss = LossCounters()
    records = 0
    for _, seal, _ in seals:
        loss.add(seal.predicate.loss)
        records += seal.predicate.content.records
    pruned = None
    prune_path = directory / PRUNE_RECORD_NAME
    if prune_path.exists():
        prune = read_prune_record(prune_path.read_bytes(), prune_path)
        loss.add(prune.loss_removed)
        pruned = {"first_sequence": prune.first_sequence, "last_sequence": prune.last_sequence}
    status: dict[str, Any] = {
        "chain_id": directory.resolve().name,
        "location": str(directory),
        "sealed_chunks": len(seals),
        "records": records,
        "size_bytes": size,
        "open_chunk": open_chunk,
        "loss": loss.report_dict(),
        "events_lost": loss.total,
        "pruned": pruned,
        "head": None,
        "records_per_second": None,
    }
    if seals:
        sequence, head, data = seals[-1]
        sealed_at = parse_timestamp(head.predicate.sealed_at)
        status["head"] = {
            "sequence": sequence,
            "seal_sha256": seal_digest(data),
            "sealed_at": head.predicate.sealed_at,
            "age_seconds": round((utc_now() - sealed_at).total_seconds(), 3),
            "reason": head.predicate.reason,
            "final": head.predicate.final,
        }
        firsts = [
            s.predicate.first_observed_at for _, s, _ in seals if s.predicate.first_observed_at
        ]
        lasts = [s.predicate.last_observed_at for _, s, _ in seals if s.predicate.last_observed_at]
        if firsts and lasts:
            span = (parse_timestamp(max(lasts)) - parse_timestamp(min(firsts))).total_seconds()
            status["first_observed_at"], status["last_observed_at"] = min(firsts), max(lasts)
            if span > 0:
                status["records_per_second"] = round(records / span, 3)
    return status


@dataclass(frozen=True)
class Inspection:
    """A seal's summary (None for an open chunk) and the chunk's records."""

    source: str
    seal: dict[str, Any] | None
    records: list[dict[str, Any]]
    total_records: int


def inspect_target(target: str, chain_dir: Path | None, limit: int | None) -> Inspection:
    """`target`: a chunk, seal or open-chunk file; a sequence number; or `sha256:<hex>`."""
    path = Path(target)
    if path.is_file():
        parsed = parse_name(path.name)
        if parsed is None:
            raise InputError(
                "expected a chunk, seal or open chunk file of an evidence chain", path=path
            )
        return _inspect_sequence(path.parent, parsed[0], parsed[1] == PARTIAL_SUFFIX, limit)
    directory = chain_dir or Path(".")
    if target.isdigit():
        return _inspect_sequence(directory, int(target), False, limit)
    if target.startswith("sha256:"):
        wanted = target.removeprefix("sha256:").lower()
        for entry in sorted(os.listdir(directory)):
            parsed = parse_name(entry)
            if parsed is None or parsed[1] != SEAL_SUFFIX:
                continue
            data = (directory / entry).read_bytes()
            seal = parse_seal(data, directory / entry)
            if wanted in (seal.subject_sha256, seal_digest(data), seal.predicate.content.sha256):
                return _inspect_sequence(directory, parsed[0], False, limit)
        raise InputError(f"no chunk or seal with digest {target} in this chain", path=directory)
    raise InputError(
        "expected a chunk/seal file, a sequence number (with --chain DIR) or sha256:<hex>",
        path=target,
    )


def _inspect_sequence(
    directory: Path, sequence: int, open_chunk: bool, limit: int | None
) -> Inspection:
    seal_path = directory / seal_name(sequence)
    if open_chunk or not seal_path.exists():
        partial = directory / partial_name(sequence)
        if not partial.exists():
            raise InputError(f"no seal and no open chunk for sequence {sequence}", path=directory)
        return _collect(str(partial), _plain_lines(partial), None, limit)
    data = seal_path.read_bytes()
    seal = parse_seal(data, seal_path)
    summary = {
        "file": seal_path.name,
        "seal_sha256": seal_digest(data),
        "subject": {"name": seal.subject_name, "sha256": seal.subject_sha256},
        "signature_keyids": [s.keyid for s in seal.envelope.signatures],
        "predicate": seal.predicate.to_dict(),
    }
    chunk = directory / chunk_name(sequence)
    if not chunk.exists():
        return Inspection(str(seal_path), summary, [], 0)
    return _collect(str(chunk), _compressed_lines(chunk), summary, limit)


def _collect(
    source: str, lines: Iterator[bytes], seal: dict[str, Any] | None, limit: int | None
) -> Inspection:
    records: list[dict[str, Any]] = []
    total = 0
    for number, line in enumerate(lines, start=1):
        if not line.endswith(b"\n"):
            continue  # the torn end of an open chunk
        total += 1
        if limit is None or len(records) < limit:
            try:
                records.append(json.loads(line))
            except (ValueError, RecursionError) as exc:  # JSON, UTF-8, > 4300-digit integers
                raise MalformedDocumentError(
                    "malformed NDJSON line", path=source, line=number
                ) from exc
    return Inspection(source, seal, records, total)


def _plain_lines(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        yield from handle


def _compressed_lines(path: Path) -> Iterator[bytes]:
    import io

    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise MalformedDocumentError(f"cannot open: {exc.strerror}", path=path) from exc
    with raw, io.BufferedReader(BoundedInflater(raw, "zstd", path)) as lines:
        yield from lines
