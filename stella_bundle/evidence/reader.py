"""Reading the records of a chain back, in order, each chunk checked against its seal.

This checks digests and the chain's time rules (`timecheck`, the same as `verify_chain`), not
signatures: run `verify_chain` with a trust root to decide whether the chain is trusted, then
read it with these functions.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..compression import BoundedInflater
from ..errors import EvidenceChainError
from ..formats.record import validate_record
from ..formats.seal import SealPredicate
from ..fsutil import open_regular_file, read_regular_file
from ..jsonio import parse_json_line
from ..timeutil import utc_now
from .chain import ChunkOpener
from .layout import PRUNE_RECORD_NAME, SEAL_SUFFIX, chunk_name, parse_name, seal_name
from .prune_record import read_prune_record
from .seal import parse_seal
from .timecheck import (
    ChainTimes,
    ChunkTimes,
    TimeFinding,
    record_time_findings,
    seal_time_findings,
)


def iter_chain_records(chain_dir: str | Path) -> Iterator[dict[str, Any]]:
    """Validated records of the chain in `chain_dir`, in sequence and line order."""
    directory = Path(chain_dir)
    seals = {}
    for entry in os.listdir(directory):
        parsed = parse_name(entry)
        if parsed is not None and parsed[1] == SEAL_SUFFIX:
            seals[parsed[0]] = read_regular_file(directory / entry)
    prune_path = directory / PRUNE_RECORD_NAME
    start = 1
    if prune_path.exists():
        start = read_prune_record(read_regular_file(prune_path), prune_path).last_sequence + 1

    def opener(sequence: int) -> io.BufferedReader:
        return open_regular_file(directory / chunk_name(sequence))  # type: ignore[return-value]

    yield from iter_chain_records_files(
        directory.resolve().name,
        {s: d for s, d in seals.items() if s >= start},
        opener,
        location=str(directory),
    )


def iter_chain_records_files(
    chain_id: str,
    seals: Mapping[int, bytes],
    chunk_opener: ChunkOpener,
    *,
    location: str = "",
) -> Iterator[dict[str, Any]]:
    """The same over seal bytes and a chunk opener (e.g. members of a bundle archive)."""
    where = location or chain_id
    times = ChainTimes()
    now = utc_now()
    for sequence in sorted(seals):
        seal_source = f"{where}/{seal_name(sequence)}"
        seal = parse_seal(seals[sequence], seal_source)
        if seal.predicate.chain_id != chain_id or seal.predicate.sequence != sequence:
            raise EvidenceChainError(
                f"seal names chain {seal.predicate.chain_id!r} sequence "
                f"{seal.predicate.sequence}; run verify-chain",
                path=seal_source,
            )
        _refuse(seal_time_findings(seal.predicate, times, now), seal_source)
        times.advance(seal.predicate)
        source = f"{where}/{chunk_name(sequence)}"
        try:
            with chunk_opener(sequence) as stream:
                compressed = stream.read()
        except FileNotFoundError as exc:
            raise EvidenceChainError(
                "chunk file is missing; run verify-chain", path=source
            ) from exc
        actual = hashlib.sha256(compressed).hexdigest()
        if actual != seal.subject_sha256:
            raise EvidenceChainError(
                f"chunk digest sha256:{actual} differs from the sealed sha256:{seal.subject_sha256}",
                path=source,
            )
        yield from _records(compressed, seal.predicate, source)


def _refuse(findings: list[TimeFinding], source: str) -> None:
    """The first broken time rule, as the error `verify_chain` would report as a finding."""
    if findings:
        raise EvidenceChainError(f"{findings[0].code}: {findings[0].message}", path=source)


def _records(compressed: bytes, predicate: SealPredicate, source: str) -> Iterator[dict[str, Any]]:
    content_sha256, content_bytes = predicate.content.sha256, predicate.content.bytes
    times = ChunkTimes()
    # Bounded (size and ratio, exit 2 for a bomb); corrupt data stays a chain error.
    reader = BoundedInflater(
        io.BytesIO(compressed), "zstd", source, corrupt_error=EvidenceChainError
    )
    buffered = io.BufferedReader(reader, buffer_size=1 << 20)
    digest = hashlib.sha256()
    size = 0
    for number, line in enumerate(buffered, start=1):
        size += len(line)
        if size > content_bytes:
            raise EvidenceChainError("chunk holds more data than its seal declares", path=source)
        digest.update(line)
        record = validate_record(parse_json_line(line, source, number), source, number)
        times.add(
            record["observed_at"],
            record.get("first_observed_at"),
            record.get("last_observed_at"),
        )
        yield record
    if digest.hexdigest() != content_sha256:
        raise EvidenceChainError(
            "chunk content differs from its sealed content digest", path=source
        )
    _refuse(record_time_findings(times, predicate), source)
