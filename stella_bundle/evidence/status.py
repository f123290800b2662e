"""Operator views of a chain: `status` (head, age, size, rate, open chunk, loss) and `inspect`."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..compression import BoundedInflater
from ..errors import InputError, MalformedDocumentError
from ..formats.flat import read_flat, read_list
from ..formats.seal import LossCounters, SealPredicate
from ..jsonio import parse_json_line
from ..timeutil import parse_timestamp, utc_now
from .layout import (
    PARTIAL_SUFFIX,
    PRUNE_RECORD_NAME,
    SEAL_SUFFIX,
    chunk_name,
    find_chain_dirs,
    parse_name,
    partial_name,
    seal_name,
)
from .prune_record import read_prune_record
from .seal import ParsedSeal, parse_seal, seal_digest

T = TypeVar("T")


@dataclass(frozen=True)
class OpenChunk:
    sequence: int
    bytes: int
    records: int


@dataclass(frozen=True)
class PrunedRange:
    first_sequence: int
    last_sequence: int


@dataclass(frozen=True)
class StatusHead:
    """The last seal as `signals status` shows it (its age at the time of asking)."""

    sequence: int
    seal_sha256: str
    sealed_at: str
    age_seconds: float
    reason: str
    final: bool


@dataclass
class ChainStatus:
    """One chain as `signals status` shows it: head, size, rate, open chunk, loss, prune."""

    chain_id: str
    location: str
    sealed_chunks: int
    records: int
    size_bytes: int
    open_chunk: OpenChunk | None
    loss: LossCounters
    pruned: PrunedRange | None
    head: StatusHead | None = None
    records_per_second: float | None = None
    # Both or neither: the span of the sealed records.
    first_observed_at: str | None = None
    last_observed_at: str | None = None

    @property
    def events_lost(self) -> int:
        return self.loss.total

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "chain_id": self.chain_id,
            "location": self.location,
            "sealed_chunks": self.sealed_chunks,
            "records": self.records,
            "size_bytes": self.size_bytes,
            "open_chunk": _plain(self.open_chunk),
            "loss": self.loss.report_dict(),
            "events_lost": self.events_lost,
            "pruned": _plain(self.pruned),
            "head": _plain(self.head),
            "records_per_second": self.records_per_second,
        }
        if self.first_observed_at is not None:
            out["first_observed_at"] = self.first_observed_at
            out["last_observed_at"] = self.last_observed_at
        return out

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None, where: str) -> ChainStatus:
        values = read_flat(_StatusFields, data, source, where)
        status = cls(
            chain_id=values["chain_id"],
            location=values["location"],
            sealed_chunks=values["sealed_chunks"],
            records=values["records"],
            size_bytes=values["size_bytes"],
            open_chunk=_part(OpenChunk, values["open_chunk"], source, f"{where}.open_chunk"),
            loss=LossCounters.from_dict(values["loss"], source),
            pruned=_part(PrunedRange, values["pruned"], source, f"{where}.pruned"),
            head=_part(StatusHead, values["head"], source, f"{where}.head"),
            records_per_second=values["records_per_second"],
            first_observed_at=values.get("first_observed_at"),
            last_observed_at=values.get("last_observed_at"),
        )
        if status.to_dict() != data:
            raise MalformedDocumentError(
                "events_lost disagrees with loss, or the window has one end only",
                path=source,
                field=where,
            )
        return status


@dataclass(frozen=True)
class _StatusFields:
    """The JSON shape of a ChainStatus, for the strict reader (nested parts read apart)."""

    chain_id: str
    location: str
    sealed_chunks: int
    records: int
    size_bytes: int
    open_chunk: object
    loss: object
    events_lost: int
    pruned: object
    head: object
    records_per_second: float | None
    first_observed_at: str | None = None
    last_observed_at: str | None = None


def _plain(part: Any) -> dict[str, Any] | None:
    return None if part is None else dataclasses.asdict(part)


def _part(cls: type[T], data: Any, source: str | Path | None, where: str) -> T | None:
    return None if data is None else cls(**read_flat(cls, data, source, where))


@dataclass(frozen=True)
class ChainStatuses:
    """What `signals status` prints: every chain found under the directory."""

    chains: tuple[ChainStatus, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"chains": [chain.to_dict() for chain in self.chains]}

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> ChainStatuses:
        if not isinstance(data, dict) or set(data) != {"chains"}:
            raise MalformedDocumentError(
                "expected an object of chains", path=source, field="chains"
            )
        items = read_list(data["chains"], source, "chains")
        return cls(
            tuple(
                ChainStatus.from_dict(item, source, f"chains[{i}]") for i, item in enumerate(items)
            )
        )


def chain_statuses(directory: Path) -> ChainStatuses:
    """The status of every chain under `directory` (one chain directory or several)."""
    chains = find_chain_dirs(directory)
    if not chains:
        raise InputError("no evidence chain found", path=directory)
    return ChainStatuses(tuple(chain_status(chain) for chain in chains))


def chain_status(chain_dir: str | Path) -> ChainStatus:
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
            open_chunk = OpenChunk(sequence, path.stat().st_size, lines)
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
        pruned = PrunedRange(prune.first_sequence, prune.last_sequence)
    status = ChainStatus(
        chain_id=directory.resolve().name,
        location=str(directory),
        sealed_chunks=len(seals),
        records=records,
        size_bytes=size,
        open_chunk=open_chunk,
        loss=loss,
        pruned=pruned,
    )
    if seals:
        sequence, head, data = seals[-1]
        sealed_at = parse_timestamp(head.predicate.sealed_at)
        status.head = StatusHead(
            sequence=sequence,
            seal_sha256=seal_digest(data),
            sealed_at=head.predicate.sealed_at,
            age_seconds=round((utc_now() - sealed_at).total_seconds(), 3),
            reason=head.predicate.reason,
            final=head.predicate.final,
        )
        firsts = [
            s.predicate.first_observed_at for _, s, _ in seals if s.predicate.first_observed_at
        ]
        lasts = [s.predicate.last_observed_at for _, s, _ in seals if s.predicate.last_observed_at]
        if firsts and lasts:
            span = (parse_timestamp(max(lasts)) - parse_timestamp(min(firsts))).total_seconds()
            status.first_observed_at, status.last_observed_at = min(firsts), max(lasts)
            if span > 0:
                status.records_per_second = round(records / span, 3)
    return status


@dataclass(frozen=True)
class SealSummary:
    """A seal as inspected: its file, digest, subject, signers (not checked) and predicate."""

    file: str
    seal_sha256: str
    subject_name: str
    subject_sha256: str
    signature_keyids: tuple[str, ...]
    predicate: SealPredicate

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "seal_sha256": self.seal_sha256,
            "subject": {"name": self.subject_name, "sha256": self.subject_sha256},
            "signature_keyids": list(self.signature_keyids),
            "predicate": self.predicate.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> SealSummary:
        values = read_flat(_SealFields, data, source, "seal")
        subject = values["subject"]
        if not isinstance(subject, dict) or set(subject) != {"name", "sha256"}:
            raise MalformedDocumentError(
                "expected name and sha256", path=source, field="seal.subject"
            )
        return cls(
            values["file"],
            values["seal_sha256"],
            str(subject["name"]),
            str(subject["sha256"]),
            tuple(values["signature_keyids"]),
            SealPredicate.from_dict(values["predicate"], source),
        )


@dataclass(frozen=True)
class _SealFields:
    file: str
    seal_sha256: str
    subject: object
    signature_keyids: list[str]
    predicate: object


@dataclass(frozen=True)
class Inspection:
    """What `signals inspect` prints: a seal's summary (None for an open chunk) and the chunk's
    records as written (an open chunk's are not evidence yet: shown, not checked)."""

    source: str
    seal: SealSummary | None
    records: list[dict[str, Any]]
    total_records: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "seal": None if self.seal is None else self.seal.to_dict(),
            "total_records": self.total_records,
            "records": self.records,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> Inspection:
        values = read_flat(_InspectionFields, data, source, "inspection")
        records = read_list(values["records"], source, "records")
        for index, record in enumerate(records):
            if not isinstance(record, dict):
                raise MalformedDocumentError(
                    "expected an object", path=source, field=f"records[{index}]"
                )
        seal = values["seal"]
        return cls(
            values["source"],
            None if seal is None else SealSummary.from_dict(seal, source),
            records,
            values["total_records"],
        )


@dataclass(frozen=True)
class _InspectionFields:
    source: str
    seal: object
    total_records: int
    records: object


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
    summary = SealSummary(
        seal_path.name,
        seal_digest(data),
        seal.subject_name,
        seal.subject_sha256,
        tuple(s.keyid for s in seal.envelope.signatures),
        seal.predicate,
    )
    chunk = directory / chunk_name(sequence)
    if not chunk.exists():
        return Inspection(str(seal_path), summary, [], 0)
    return _collect(str(chunk), _compressed_lines(chunk), summary, limit)


def _collect(
    source: str, lines: Iterator[bytes], seal: SealSummary | None, limit: int | None
) -> Inspection:
    records: list[dict[str, Any]] = []
    total = 0
    for number, line in enumerate(lines, start=1):
        if not line.endswith(b"\n"):
            continue  # the torn end of an open chunk
        total += 1
        if limit is None or len(records) < limit:
            records.append(parse_json_line(line, source, number))
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
