"""Retention: remove whole sealed chunks older than a limit, leaving a signed prune record.

The record is written (atomically) before any file is removed, so an interrupted prune leaves
at worst files the record already explains; rerunning finishes it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from securesystemslib.signer import Signer

from ..errors import EvidenceChainError, InputError, MalformedDocumentError
from ..formats.flat import read_flat, read_list
from ..formats.prune import PruneRecord
from ..formats.seal import LossCounters
from ..formats.trust_root import TrustRoot
from ..fsutil import fsync_directory, write_bytes_atomic
from ..timeutil import format_timestamp, parse_timestamp, utc_now
from .chain import verify_chain
from .layout import PRUNE_RECORD_NAME, chunk_name, find_chain_dirs, seal_name
from .prune_record import build_prune_record, read_prune_record
from .report import ERROR, ChainReport
from .seal import ParsedSeal, parse_seal
from .storage import remove_quietly

_DURATION_RE = re.compile(r"^([0-9]+)([smhdw])\Z")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> int:
    """`72h`, `30m`, `7d`, `2w`, `90s` → seconds."""
    match = _DURATION_RE.match(text.strip())
    if match is None:
        raise InputError(
            f"invalid duration {text!r}: expected a number and a unit s, m, h, d or w (e.g. 72h)",
            field="older_than",
        )
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


@dataclass(frozen=True)
class ChainPruneResult:
    chain_id: str
    removed_sequences: list[int]
    records_removed: int
    record: PruneRecord | None  # None when nothing was old enough
    dry_run: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "removed_sequences": list(self.removed_sequences),
            "records_removed": self.records_removed,
            "prune_record": self.record.to_dict() if self.record else None,
        }


@dataclass(frozen=True)
class _PruneFields:
    """The JSON shape of one chain's ChainPruneResult (its record read by PruneRecord)."""

    chain_id: str
    removed_sequences: list[int]
    records_removed: int
    prune_record: object


@dataclass(frozen=True)
class PruneOutcome:
    """What `signals prune` prints: per chain, what was (or would be) removed."""

    older_than: str
    dry_run: bool
    chains: tuple[ChainPruneResult, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "older_than": self.older_than,
            "dry_run": self.dry_run,
            "chains": [chain.to_dict() for chain in self.chains],
        }

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> PruneOutcome:
        if not isinstance(data, dict) or set(data) != {"older_than", "dry_run", "chains"}:
            raise MalformedDocumentError(
                "expected older_than, dry_run and chains", path=source, field="prune"
            )
        if not isinstance(data["older_than"], str) or not isinstance(data["dry_run"], bool):
            raise MalformedDocumentError(
                "expected a duration and true or false", path=source, field="older_than"
            )
        chains = []
        for index, item in enumerate(read_list(data["chains"], source, "chains")):
            values = read_flat(_PruneFields, item, source, f"chains[{index}]")
            record = values["prune_record"]
            chains.append(
                ChainPruneResult(
                    values["chain_id"],
                    values["removed_sequences"],
                    values["records_removed"],
                    None if record is None else PruneRecord.from_dict(record, source),
                    data["dry_run"],
                )
            )
        return cls(data["older_than"], data["dry_run"], tuple(chains))


def prune_chains(
    directory: Path,
    older_than: str,
    signer: Signer,
    *,
    trust_root: TrustRoot | None = None,
    dry_run: bool = False,
) -> PruneOutcome:
    """`prune_chain` on every chain under `directory`, `older_than` a duration such as 72h."""
    seconds = parse_duration(older_than)
    chains = find_chain_dirs(directory)
    if not chains:
        raise InputError("no evidence chain found", path=directory)
    results = tuple(
        prune_chain(chain, seconds, signer, trust_root=trust_root, dry_run=dry_run)
        for chain in chains
    )
    return PruneOutcome(older_than, dry_run, results)


def prune_chain(
    chain_dir: str | Path,
    older_than_seconds: int,
    signer: Signer,
    *,
    trust_root: TrustRoot | None = None,
    now: dt.datetime | None = None,
    dry_run: bool = False,
) -> ChainPruneResult:
    """Remove the oldest sealed chunks sealed before `now - older_than_seconds`.

    Only a contiguous run from the chain start is removed, never the newest seal (it is the
    head the writer continues from). A chain that does not verify is refused: pruning it would
    destroy the evidence of what is wrong.
    """
    directory = Path(chain_dir)
    report = verify_chain(
        directory, trust_root, require_signatures=trust_root is not None, allow_open=True
    )
    _refuse_broken(report)
    cutoff = (now or utc_now()) - dt.timedelta(seconds=older_than_seconds)
    prune_path = directory / PRUNE_RECORD_NAME
    previous_bytes = prune_path.read_bytes() if prune_path.exists() else None
    previous = read_prune_record(previous_bytes, prune_path) if previous_bytes else None
    sealed = [c.sequence for c in report.chunks if c.seal_file is not None]
    candidates = _expired_seals(directory, sealed[:-1], cutoff)  # never the head
    if not candidates:
        return ChainPruneResult(report.chain_id, [], 0, None, dry_run)
    pruned = _Pruned(report.chain_id, format_timestamp(now or utc_now()), older_than_seconds)
    record = _next_record(pruned, directory, candidates, previous_bytes, previous)
    records = record.records_removed
    removed = [s.predicate.sequence for s in candidates]
    if dry_run:
        return ChainPruneResult(report.chain_id, removed, records, record, True)
    write_bytes_atomic(prune_path, build_prune_record(record, [signer]))
    for sequence in removed:
        remove_quietly(directory / chunk_name(sequence), directory / seal_name(sequence))
    fsync_directory(directory)
    return ChainPruneResult(report.chain_id, removed, records, record, False)


def _expired_seals(directory: Path, sequences: list[int], cutoff: dt.datetime) -> list[ParsedSeal]:
    """The seals from the chain start sealed before `cutoff` (a contiguous run)."""
    expired = []
    for sequence in sequences:
        path = directory / seal_name(sequence)
        seal = parse_seal(path.read_bytes(), path)
        if parse_timestamp(seal.predicate.sealed_at) >= cutoff:
            break
        expired.append(seal)
    return expired


@dataclass(frozen=True)
class _Pruned:
    chain_id: str
    pruned_at: str
    older_than_seconds: int


def _next_record(
    pruned: _Pruned,
    directory: Path,
    removed: list[ParsedSeal],
    previous_bytes: bytes | None,
    previous: PruneRecord | None,
) -> PruneRecord:
    """The prune record after removing `removed`: cumulative from the chain start (the
    previous record's counts and window added)."""
    loss = LossCounters()
    records = 0
    for seal in removed:
        loss.add(seal.predicate.loss)
        records += seal.predicate.content.records
    firsts = [s.predicate.first_observed_at for s in removed if s.predicate.first_observed_at]
    lasts = [s.predicate.last_observed_at for s in removed if s.predicate.last_observed_at]
    first_observed = min(firsts) if firsts else None
    last_observed = max(lasts) if lasts else None
    first_sequence = removed[0].predicate.sequence
    if previous is not None:
        loss.add(previous.loss_removed)
        records += previous.records_removed
        if previous.first_observed_at:
            first_observed = min(filter(None, [first_observed, previous.first_observed_at]))
        last_observed = last_observed or previous.last_observed_at
        first_sequence = previous.first_sequence
    last_sequence = removed[-1].predicate.sequence
    return PruneRecord(
        chain_id=pruned.chain_id,
        first_sequence=first_sequence,
        last_sequence=last_sequence,
        last_seal_sha256=hashlib.sha256(
            (directory / seal_name(last_sequence)).read_bytes()
        ).hexdigest(),
        records_removed=records,
        loss_removed=loss,
        first_observed_at=first_observed,
        last_observed_at=last_observed,
        pruned_at=pruned.pruned_at,
        older_than_seconds=pruned.older_than_seconds,
        previous_prune_sha256=hashlib.sha256(previous_bytes).hexdigest()
        if previous_bytes
        else None,
    )


def _refuse_broken(report: ChainReport) -> None:
    errors = [
        f for f in report.findings if f.severity == ERROR and f.code != "signatures_not_checked"
    ]
    if errors:
        listed = "; ".join(f"{f.code} ({f.message})" for f in errors[:3])
        raise EvidenceChainError(
            f"refusing to prune a chain that does not verify: {listed}", path=report.location
        )
