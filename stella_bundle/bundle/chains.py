"""Evidence chain reconstruction while the archive streams by (collector role).

A chunk precedes its seal in the archive, so the chunk's facts (file sha256, content sha256,
record count) wait for the seal; each chain keeps only its last link. Seals are parsed with
`evidence.seal.parse_seal` and their signatures checked against the trust root's collector role.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..attest.keys import fingerprint
from ..attest.statement import EVIDENCE_CHUNK_PREDICATE
from ..attest.trustroot import TrustRoot
from ..attest.verifier import AttestationVerifier
from ..canonical import saturating_sum
from ..errors import (
    EvidenceChainError,
    MalformedDocumentError,
    SchemaValidationError,
    StellaError,
)
from ..evidence.layout import chunk_name
from ..evidence.prune_record import PruneRecord, parse_prune_record
from ..evidence.seal import parse_seal, seal_digest
from ..evidence.timecheck import (
    ChainTimes,
    ChunkTimes,
    record_time_findings,
    seal_time_findings,
)
from ..timeutil import utc_now
from .observations_view import TimeSpan
from .steps import StepOutcome


@dataclass(frozen=True)
class ChunkFacts:
    sequence: int
    file_sha256: str
    size: int
    content_sha256: str
    content_bytes: int
    records: int
    source: str
    times: ChunkTimes | None = None


@dataclass
class ChainState:
    chain_id: str
    first_sequence: int | None = None
    last_sequence: int | None = None
    last_seal_sha256: str | None = None
    pending: ChunkFacts | None = None
    chunks: int = 0
    records: int = 0
    gaps: list[dict[str, Any]] = field(default_factory=list)
    final: bool = False
    events_lost: int = 0
    loss: dict[str, int] = field(default_factory=dict)
    first_observed_at: str | None = None
    last_observed_at: str | None = None
    times: ChainTimes = field(default_factory=ChainTimes)
    signers: dict[str, str] = field(default_factory=dict)
    prune: PruneRecord | None = None
    declared_start: int | None = None
    declared_link: tuple[int, str] | None = None


class ChainVerifier:
    def __init__(
        self, verifier: AttestationVerifier, trust_root: TrustRoot, steps: dict[str, StepOutcome]
    ) -> None:
        self.verifier = verifier
        self.trust_root = trust_root
        self.steps = steps
        self.chains: dict[str, ChainState] = {}

    def _chain(self, chain_id: str) -> ChainState:
        if chain_id not in self.chains:
            self.chains[chain_id] = ChainState(chain_id)
        return self.chains[chain_id]

    def _fail(self, error: StellaError) -> None:
        self.steps["evidence-chains"].fail(error)

    def chunk(self, chain_id: str, facts: ChunkFacts) -> None:
        chain = self._chain(chain_id)
        if chain.pending is not None:
            self._fail(EvidenceChainError("chunk without its seal", path=chain.pending.source))
        chain.pending = facts

    def seal(self, chain_id: str, sequence: int, data: bytes, name: str) -> None:
        chain = self._chain(chain_id)
        facts, chain.pending = chain.pending, None
        try:
            parsed = parse_seal(data, name)
        except (MalformedDocumentError, StellaError) as exc:
            self.steps["schemas"].fail(
                SchemaValidationError(exc.message, path=name, field=exc.field)
            )
            return
        try:
            verified = self.verifier.verify_statement(
                json.loads(data), "collector", source=name, predicate_type=EVIDENCE_CHUNK_PREDICATE
            )
        except StellaError as exc:
            self._fail(exc)
            return
        for key in verified.signers:
            chain.signers[key.keyid] = fingerprint(key)
        predicate = parsed.predicate
        if predicate.chain_id != chain_id or predicate.sequence != sequence:
            self._fail(
                EvidenceChainError(
                    f"seal names chain {predicate.chain_id!r} sequence {predicate.sequence}, but "
                    "sits at another place in the archive",
                    path=name,
                )
            )
            return
        if facts is None or facts.sequence != sequence:
            self._fail(EvidenceChainError("seal without its chunk", path=name))
            return
        if parsed.subject_sha256 != facts.file_sha256 or parsed.subject_name != chunk_name(
            sequence
        ):
            self._fail(
                EvidenceChainError(
                    "the chunk's sha256 is not the one its seal signs (chunk altered)",
                    path=facts.source,
                )
            )
        content = predicate.content
        if (content.sha256, content.records, content.bytes) != (
            facts.content_sha256,
            facts.records,
            facts.content_bytes,
        ):
            self._fail(
                EvidenceChainError(
                    f"uncompressed content differs from the seal ({facts.records} records, "
                    f"{facts.content_bytes} bytes; seal says {content.records}, {content.bytes})",
                    path=facts.source,
                )
            )
        problems = seal_time_findings(predicate, chain.times, self.verifier.now or utc_now())
        if facts.times is not None:
            problems += record_time_findings(facts.times, predicate)
        for problem in problems:
            self._fail(EvidenceChainError(f"{problem.code}: {problem.message}", path=name))
        chain.times.advance(predicate)
        self._link(chain, sequence, predicate.previous, name)
        chain.last_sequence = sequence
        chain.last_seal_sha256 = seal_digest(data)
        chain.chunks += 1
        chain.records += facts.records
        chain.final = predicate.final
        chain.events_lost = saturating_sum(chain.events_lost, predicate.loss.total)
        for counter, value in predicate.loss.counters().items():
            chain.loss[counter] = saturating_sum(chain.loss.get(counter, 0), value)
        if predicate.first_observed_at and (
            chain.first_observed_at is None or predicate.first_observed_at < chain.first_observed_at
        ):
            chain.first_observed_at = predicate.first_observed_at
        if predicate.last_observed_at and (
            chain.last_observed_at is None or predicate.last_observed_at > chain.last_observed_at
        ):
            chain.last_observed_at = predicate.last_observed_at

    def _link(self, chain: ChainState, sequence: int, previous: Any, name: str) -> None:
        if chain.last_sequence is None:
            chain.first_sequence = sequence
            if sequence != 1 and previous is not None:
                # Starts after pruned chunks: accepted only with the chain's prune record.
                chain.declared_start = sequence
                chain.declared_link = (previous.sequence, previous.sha256)
            elif sequence != 1:
                chain.gaps.append({"missing_from": 1, "missing_to": sequence - 1})
                self._fail(
                    EvidenceChainError(
                        f"chain starts at sequence {sequence} without a link or a prune record",
                        path=name,
                    )
                )
            return
        expected = chain.last_sequence + 1
        if sequence != expected:
            chain.gaps.append({"missing_from": expected, "missing_to": sequence - 1})
            self._fail(
                EvidenceChainError(
                    f"gap: sequences {expected}..{sequence - 1} are missing before this seal",
                    path=name,
                )
            )
            return
        if previous is None:
            self._fail(
                EvidenceChainError(
                    "seal declares no previous link in the middle of the chain", path=name
                )
            )
        elif previous.sequence != chain.last_sequence or previous.sha256 != chain.last_seal_sha256:
            self._fail(
                EvidenceChainError(
                    f"broken link: previous seal {previous.sequence} sha256 {previous.sha256[:16]}… "
                    f"is not the seal before it ({chain.last_sequence}, "
                    f"{(chain.last_seal_sha256 or '')[:16]}…)",
                    path=name,
                )
            )

    def prune_record(self, chain_id: str, data: bytes, name: str) -> None:
        """A collector-signed prune record declares where a pruned chain now starts."""
        chain = self._chain(chain_id)
        try:
            parsed = parse_prune_record(data, name)
        except StellaError as exc:
            self.steps["schemas"].fail(
                SchemaValidationError(exc.message, path=name, field=exc.field)
            )
            return
        if parsed.record.chain_id != chain_id:
            self._fail(
                EvidenceChainError(
                    f"prune record names chain {parsed.record.chain_id!r}", path=name
                )
            )
            return
        try:
            self.verifier.verify_signers(parsed.envelope, "collector", name)
        except StellaError as exc:
            self._fail(exc)
            return
        chain.prune = parsed.record

    def finish(self, step: StepOutcome) -> None:
        for chain in self.chains.values():
            if chain.pending is not None:
                self._fail(EvidenceChainError("chunk without its seal", path=chain.pending.source))
            if chain.declared_start is None:
                continue
            prune = chain.prune
            if prune is None or chain.declared_link != (
                prune.last_sequence,
                prune.last_seal_sha256,
            ):
                chain.gaps.append({"missing_from": 1, "missing_to": chain.declared_start - 1})
                self._fail(
                    EvidenceChainError(
                        f"chain {chain.chain_id} starts at sequence {chain.declared_start} but "
                        "no signed prune record declares that start (removed seals and link)",
                        path=f"evidence/{chain.chain_id}/",
                    )
                )
        if not self.chains:
            self._fail(EvidenceChainError("the bundle holds no evidence chain"))

    def window(self) -> tuple[str | None, str | None]:
        """Earliest and latest observation over every chain, as the seals declare them."""
        span = TimeSpan()
        for chain in self.chains.values():
            span.add_window(chain.first_observed_at, chain.last_observed_at)
        return span.first, span.last

    def summary(self) -> str:
        chunks = sum(c.chunks for c in self.chains.values())
        lost = sum(c.events_lost for c in self.chains.values())
        finals = sum(1 for c in self.chains.values() if c.final)
        return (
            f"{len(self.chains)} chain(s), {chunks} chunk(s), no gap, every link and content "
            f"digest matches; {finals} with a final seal; {lost} event(s) lost (counted in seals)"
        )

    def report(self) -> list[dict[str, Any]]:
        rows = []
        for chain_id in sorted(self.chains):
            chain = self.chains[chain_id]
            rows.append(
                {
                    "chain_id": chain_id,
                    "chunks": chain.chunks,
                    "records": chain.records,
                    "first_sequence": chain.first_sequence,
                    "last_sequence": chain.last_sequence,
                    "gaps": chain.gaps,
                    "final_seal_present": chain.final,
                    "events_lost": chain.events_lost,
                    "loss": dict(sorted(chain.loss.items())),
                    "first_observed_at": chain.first_observed_at,
                    "last_observed_at": chain.last_observed_at,
                    "signers": [
                        {"keyid": keyid, "fingerprint": fp}
                        for keyid, fp in sorted(chain.signers.items())
                    ],
                }
            )
        return rows

    def attestations(self) -> list[dict[str, Any]]:
        """One entry per chain: its last seal, signed by the collector role."""
        entries = []
        for chain_id in sorted(self.chains):
            chain = self.chains[chain_id]
            if chain.last_seal_sha256 is None or chain.last_sequence is None:
                continue
            entries.append(
                {
                    "uri": f"evidence/{chain_id}/{chain.last_sequence:010d}.seal.dsse.json",
                    "digest": {"sha256": chain.last_seal_sha256},
                    "role": "collector",
                    "signers": [
                        {
                            "keyid": keyid,
                            "fingerprint": fp,
                            "roles": self.trust_root.roles_of(keyid),
                        }
                        for keyid, fp in sorted(chain.signers.items())
                    ],
                }
            )
        return entries
