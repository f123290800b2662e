"""Start-up of a writer: find the chain head, clean temp files, seal an interrupted chunk."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard
from securesystemslib.signer import Signer

from ..errors import InputError, MalformedDocumentError
from ..formats.seal import (
    ChunkContent,
    CollectorInfo,
    LossCounters,
    PreviousLink,
    ProbeFailure,
    ProbeReattachment,
    SealPredicate,
    parse_probe_failures,
    parse_probe_reattachments,
)
from ..fsutil import fsync_directory
from ..jsonio import parse_json, parse_json_line
from ..timeutil import format_timestamp, utc_now
from .layout import (
    CHUNK_SUFFIX,
    PARTIAL_STATE_SUFFIX,
    PARTIAL_SUFFIX,
    PRUNE_RECORD_NAME,
    SEAL_SUFFIX,
    chunk_name,
    is_temporary,
    parse_name,
    partial_name,
    partial_state_name,
    seal_name,
)
from .seal import build_seal, parse_seal, seal_digest
from .storage import commit_chunk, remove_quietly, storage_error, temp_path, write_temp
from .window import ObservationWindow


@dataclass(frozen=True)
class ChainHead:
    """The last seal of a chain (sequence 0 and no digest for a new chain).

    `final`: whether that seal ended the chain cleanly (None: no seal to say, a new or a
    wholly pruned chain)."""

    sequence: int
    seal_sha256: str | None
    final: bool | None = None

    def link(self) -> PreviousLink | None:
        if self.seal_sha256 is None:
            return None
        return PreviousLink(self.sequence, self.seal_sha256)


@dataclass(frozen=True)
class RecoveredChunk:
    sequence: int
    records: int
    torn_records: int


def _sequences(chain_dir: Path, suffix: str) -> list[int]:
    found = []
    for entry in os.listdir(chain_dir):
        parsed = parse_name(entry)
        if parsed is not None and parsed[1] == suffix:
            found.append(parsed[0])
    return sorted(found)


def remove_temporaries(chain_dir: Path) -> None:
    """Temp files are never evidence: a crash mid-seal left them, the partial still holds all."""
    for entry in os.listdir(chain_dir):
        if is_temporary(entry):
            remove_quietly(chain_dir / entry)


def find_head(chain_dir: Path, chain_id: str) -> ChainHead:
    """The highest sealed sequence and its seal digest (or the prune record's when all pruned)."""
    seals = _sequences(chain_dir, SEAL_SUFFIX)
    if seals:
        sequence = seals[-1]
        path = chain_dir / seal_name(sequence)
        data = path.read_bytes()
        try:
            predicate = parse_seal(data, path).predicate
        except MalformedDocumentError as exc:
            raise InputError(
                f"the chain head seal is unreadable ({exc.message}); run `stella signals "
                "verify-chain` and move the damaged chain aside before writing to it",
                path=path,
            ) from exc
        if predicate.chain_id != chain_id or predicate.sequence != sequence:
            raise InputError(
                f"the chain head seal names chain {predicate.chain_id!r} sequence "
                f"{predicate.sequence}, expected {chain_id!r} sequence {sequence}",
                path=path,
            )
        return ChainHead(sequence, seal_digest(data), predicate.final)
    prune_path = chain_dir / PRUNE_RECORD_NAME
    if prune_path.exists():
        from .prune_record import read_prune_record

        record = read_prune_record(prune_path.read_bytes(), prune_path)
        return ChainHead(record.last_sequence, record.last_seal_sha256)
    return ChainHead(0, None)


_State = tuple[CollectorInfo, LossCounters, tuple[ProbeFailure, ...], tuple[ProbeReattachment, ...]]


def _read_state(path: Path, fallback: CollectorInfo) -> _State:
    try:
        state = parse_json(path.read_bytes(), path)
    except (OSError, MalformedDocumentError):
        return fallback, LossCounters(), (), ()
    if not isinstance(state, dict):
        return fallback, LossCounters(), (), ()
    try:
        collector = CollectorInfo.from_dict(state.get("collector"), path)
    except MalformedDocumentError:
        collector = fallback
    try:
        loss = LossCounters.from_dict(state.get("loss", {}), path)
    except MalformedDocumentError:
        loss = LossCounters()
    try:
        failures = parse_probe_failures(state.get("probe_failures", []), path, "probe_failures")
    except MalformedDocumentError:
        failures = ()  # the count stays in loss.by_reason
    try:
        reattachments = parse_probe_reattachments(
            state.get("probe_reattachments", []), path, "probe_reattachments"
        )
    except MalformedDocumentError:
        reattachments = ()  # the count stays in loss.by_reason
    return collector, loss, failures, reattachments


def _complete_lines(
    data: bytes, window: ObservationWindow, source: Path
) -> tuple[list[bytes], int]:
    """Lines that parse as records; a torn last line (and any damaged line) counts as lost."""
    end = data.rfind(b"\n")
    body, tail = (data[: end + 1], data[end + 1 :]) if end >= 0 else (b"", data)
    torn = 1 if tail.strip() else 0
    kept = []
    for number, line in enumerate(body.split(b"\n")[:-1], start=1):
        try:
            record: Any = parse_json_line(line, source, number)
        except MalformedDocumentError:  # JSON, UTF-8, > 4300-digit integers, lone surrogates
            torn += 1
            continue
        if not isinstance(record, dict) or not isinstance(record.get("observed_at"), str):
            torn += 1
            continue
        try:
            window.add(record)
        except ValueError:
            torn += 1
            continue
        kept.append(line)
    return kept, torn


def seal_recovered_partial(
    chain_dir: Path,
    chain_id: str,
    sequence: int,
    head: ChainHead,
    signer: Signer,
    collector: CollectorInfo,
    zstd_level: int,
) -> RecoveredChunk:
    """Seal `<sequence>.ndjson.partial` with reason `recovered`; remove it once sealed."""
    partial = chain_dir / partial_name(sequence)
    state = chain_dir / partial_state_name(sequence)
    data = partial.read_bytes()
    window = ObservationWindow()
    lines, torn = _complete_lines(data, window, partial)
    written_by, loss, failures, reattachments = _read_state(state, collector)
    loss.torn_records += torn
    content = b"".join(line + b"\n" for line in lines)
    compressed = zstandard.ZstdCompressor(level=zstd_level).compress(content)
    chunk_temp = temp_path(chain_dir, chunk_name(sequence))
    try:
        write_temp(chunk_temp, compressed)
    except OSError as exc:
        remove_quietly(chunk_temp)
        raise storage_error(exc, chunk_temp, "recovering an interrupted chunk") from exc
    predicate = SealPredicate(
        chain_id=chain_id,
        sequence=sequence,
        previous=head.link(),
        content=ChunkContent(hashlib.sha256(content).hexdigest(), len(lines), len(content)),
        first_observed_at=window.first_observed_at,
        last_observed_at=window.last_observed_at,
        sealed_at=format_timestamp(utc_now()),
        reason="recovered",
        final=False,
        collector=written_by,
        loss=loss,
        probe_failures=failures,
        probe_reattachments=reattachments,
    )
    seal_bytes = build_seal(predicate, hashlib.sha256(compressed).hexdigest(), [signer])
    commit_chunk(chain_dir, sequence, chunk_temp, seal_bytes)
    remove_quietly(partial, state)
    fsync_directory(chain_dir)
    return RecoveredChunk(sequence, len(lines), torn)


def recover_chain(
    chain_dir: Path, chain_id: str, signer: Signer, collector: CollectorInfo, zstd_level: int
) -> tuple[ChainHead, list[RecoveredChunk]]:
    """Bring a chain directory to a clean state after any crash; return its head."""
    remove_temporaries(chain_dir)
    head = find_head(chain_dir, chain_id)
    recovered = []
    partials = sorted(
        set(_sequences(chain_dir, PARTIAL_SUFFIX))
        | set(_sequences(chain_dir, PARTIAL_STATE_SUFFIX))
    )
    for sequence in partials:
        if sequence <= head.sequence:
            # Sealed already: the crash came between publishing the seal and removing these.
            remove_quietly(
                chain_dir / partial_name(sequence), chain_dir / partial_state_name(sequence)
            )
            continue
        if sequence != head.sequence + 1:
            raise InputError(
                f"open chunk {sequence} does not follow the chain head {head.sequence}; "
                "the chain directory was altered",
                path=chain_dir / partial_name(sequence),
            )
        if not (chain_dir / partial_name(sequence)).exists():
            (chain_dir / partial_name(sequence)).touch()  # state written, crash before any line
        # A chunk published without its seal is rebuilt from the partial, which holds it all.
        remove_quietly(chain_dir / chunk_name(sequence))
        item = seal_recovered_partial(
            chain_dir, chain_id, sequence, head, signer, collector, zstd_level
        )
        recovered.append(item)
        head = find_head(chain_dir, chain_id)
    orphans = [s for s in _sequences(chain_dir, CHUNK_SUFFIX) if s > head.sequence]
    if orphans:
        raise InputError(
            f"chunk {orphans[0]} has no seal and no open chunk to rebuild it from; move it aside "
            "(verify-chain reports it) before writing to this chain",
            path=chain_dir / chunk_name(orphans[0]),
        )
    return head, recovered
