"""The result of verifying an evidence chain: per-sequence entries and named findings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from ..errors import MalformedDocumentError
from ..formats.flat import read_flat, read_list
from ..formats.seal import LossCounters

ERROR: Final = "error"
WARNING: Final = "warning"
INFO: Final = "info"

# Finding codes (the diagnoses an auditor reads).
GAP: Final = "gap"
REORDERED: Final = "reordered"
DUPLICATED: Final = "duplicated"
TAMPERED_CHUNK: Final = "tampered_chunk"
TAMPERED_SEAL: Final = "tampered_seal"
UNSIGNED_SEAL: Final = "unsigned_seal"
WRONG_ROLE: Final = "wrong_role"
THRESHOLD_NOT_MET: Final = "threshold_not_met"
BROKEN_LINK: Final = "broken_link"
MISSING_CHUNK: Final = "missing_chunk"
ORPHAN_CHUNK: Final = "orphan_chunk"
WRONG_CHAIN: Final = "wrong_chain"
NO_FINAL_SEAL: Final = "no_final_seal"
EVENTS_LOST: Final = "events_lost"
PRUNED: Final = "pruned"
PRUNE_REJECTED: Final = "prune_rejected"
PRUNE_INCOMPLETE: Final = "prune_incomplete"
DECLARED_START: Final = "declared_start"
EMPTY_CHAIN: Final = "empty_chain"
RECOVERED: Final = "recovered"
OPEN_CHUNK: Final = "open_chunk"
LEFTOVER_TEMP: Final = "leftover_temp"
UNEXPECTED_FILE: Final = "unexpected_file"
SIGNATURES_NOT_CHECKED: Final = "signatures_not_checked"
TRUST_ROOT_EXPIRED: Final = "trust_root_expired"


@dataclass(frozen=True)
class Finding:
    code: str
    severity: str
    message: str
    sequence: int | None = None
    file: str | None = None
    expected: str | None = None
    actual: str | None = None
    key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class ChunkEntry:
    """One sequence of the chain as found: its seal, its chunk and what was checked."""

    sequence: int
    seal_file: str | None = None
    chunk_file: str | None = None
    seal_sha256: str | None = None
    chunk_sha256: str | None = None
    chunk_bytes: int = 0
    records: int = 0
    content_bytes: int = 0
    digest: str = "not_checked"  # ok | mismatch | missing | not_checked
    signature: str = "not_checked"  # verified | failed | unsigned | wrong_role | not_checked
    signers: list[str] = field(default_factory=list)
    link: str = "not_checked"  # ok | broken | start | not_checked
    reason: str | None = None
    final: bool | None = None
    sealed_at: str | None = None
    first_observed_at: str | None = None
    last_observed_at: str | None = None
    loss: dict[str, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class PruneSummary:
    first_sequence: int
    last_sequence: int
    records_removed: int
    pruned_at: str
    signed_by: list[str]
    accepted: bool

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ChainReport:
    chain_id: str
    location: str
    trust_root_used: bool = False
    chunks: list[ChunkEntry] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    loss: LossCounters = field(default_factory=LossCounters)
    pruned: PruneSummary | None = None

    def add(self, code: str, severity: str, message: str, **details: Any) -> None:
        self.findings.append(Finding(code, severity, message, **details))

    @property
    def passed(self) -> bool:
        return not any(f.severity == ERROR for f in self.findings)

    @property
    def records(self) -> int:
        return sum(c.records for c in self.chunks if c.digest == "ok")

    @property
    def first_sequence(self) -> int | None:
        return self.chunks[0].sequence if self.chunks else None

    @property
    def last_sequence(self) -> int | None:
        return self.chunks[-1].sequence if self.chunks else None

    @property
    def final_seal(self) -> bool:
        return bool(self.chunks) and self.chunks[-1].final is True

    @property
    def events_lost(self) -> int:
        return self.loss.total

    @property
    def signatures(self) -> str:
        return "verified" if self.trust_root_used else "not_checked"

    @property
    def first_observed_at(self) -> str | None:
        times = [c.first_observed_at for c in self.chunks if c.first_observed_at]
        return min(times) if times else None

    @property
    def last_observed_at(self) -> str | None:
        times = [c.last_observed_at for c in self.chunks if c.last_observed_at]
        return max(times) if times else None

    def codes(self) -> set[str]:
        return {f.code for f in self.findings}

    def gaps(self) -> list[Finding]:
        return [f for f in self.findings if f.code == GAP]

    def to_dict(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "location": self.location,
            "passed": self.passed,
            "signatures": self.signatures,
            "chunks": len(self.chunks),
            "records": self.records,
            "chunk_bytes": sum(c.chunk_bytes for c in self.chunks),
            "content_bytes": sum(c.content_bytes for c in self.chunks),
            "first_sequence": self.first_sequence,
            "last_sequence": self.last_sequence,
            "first_observed_at": self.first_observed_at,
            "last_observed_at": self.last_observed_at,
            "final_seal": self.final_seal,
            "events_lost": self.events_lost,
            "loss": self.loss.report_dict(),
            "gaps": len(self.gaps()),
            "pruned": self.pruned.to_dict() if self.pruned else None,
            "findings": [f.to_dict() for f in self.findings],
            "chunk_details": [c.to_dict() for c in self.chunks],
        }


# --- reading a report back (the JSON `signals verify-chain --format json` prints) -----------


def chain_report_from_dict(
    data: Any, source: str | Path | None = None, where: str = "chain"
) -> ChainReport:
    """A chain's report from its `to_dict`: the chunks, findings, loss and prune are read, the
    totals (records, sequences, window, verdict…) recomputed and required to match."""
    if not isinstance(data, dict):
        raise MalformedDocumentError("expected an object", path=source, field=where)
    for name in _REPORT_FIELDS:
        if name not in data:
            raise MalformedDocumentError(
                "required field is missing", path=source, field=f"{where}.{name}"
            )
    pruned = data["pruned"]
    report = ChainReport(
        chain_id=str(data["chain_id"]),
        location=str(data["location"]),
        trust_root_used=data["signatures"] == "verified",
        chunks=[
            ChunkEntry(**read_flat(ChunkEntry, item, source, f"{where}.chunk_details[{index}]"))
            for index, item in enumerate(read_list(data["chunk_details"], source, where))
        ],
        findings=[
            Finding(**read_flat(Finding, item, source, f"{where}.findings[{index}]"))
            for index, item in enumerate(read_list(data["findings"], source, where))
        ],
        loss=LossCounters.from_dict(data["loss"], source),
        pruned=None
        if pruned is None
        else PruneSummary(**read_flat(PruneSummary, pruned, source, f"{where}.pruned")),
    )
    again = report.to_dict()
    for name in _REPORT_FIELDS:
        if again[name] != data[name] or type(again[name]) is not type(data[name]):
            raise MalformedDocumentError(
                "disagrees with the chain's chunks and findings",
                path=source,
                field=f"{where}.{name}",
            )
    unknown = sorted(data.keys() - set(_REPORT_FIELDS))
    if unknown:
        raise MalformedDocumentError("unknown field", path=source, field=f"{where}.{unknown[0]}")
    return report


_REPORT_FIELDS: Final = tuple(ChainReport("", "").to_dict())


@dataclass(frozen=True)
class ChainVerification:
    """What `signals verify-chain` prints: every chain's report, passed when all passed."""

    chains: tuple[ChainReport, ...]

    @property
    def passed(self) -> bool:
        return all(chain.passed for chain in self.chains)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "chains": [chain.to_dict() for chain in self.chains]}

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> ChainVerification:
        if not isinstance(data, dict) or set(data) != {"passed", "chains"}:
            raise MalformedDocumentError(
                "expected an object of passed and chains", path=source, field="chain verification"
            )
        chains = tuple(
            chain_report_from_dict(item, source, f"chains[{index}]")
            for index, item in enumerate(read_list(data["chains"], source, "chains"))
        )
        result = cls(chains)
        if data["passed"] is not result.passed:
            raise MalformedDocumentError(
                "disagrees with the chains' verdicts", path=source, field="passed"
            )
        return result
