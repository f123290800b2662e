"""The bundle's evidence chains, judged by the one chain verifier (`evidence.chain`).

Each chain's members are fed to a `ChainStateMachine` as the archive streams by: a chunk's
measure (taken by the bundle's single record pass, `records.RecordPass`), a seal's bytes, the
prune record. No chain rule lives here: this module only turns the verifier's findings into the
`evidence-chains` step (every error finding fails it, the finding code leading the message)
and its reports into the verification report's rows. `signals verify-chain` on the same chain
gives the same findings.

Bundle policy, not a chain rule: a chain without a final seal is accepted (as `verify-chain
--allow-open` does) and reported with `final_seal_present: false`; `bundle build` ships what
the collector sealed so far.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from ..attest.keys import fingerprint
from ..bundle.layout import PRUNE_RE, SEAL_RE
from ..bundle.observations_view import TimeSpan
from ..errors import (
    BundleContentsError,
    EvidenceChainError,
    MalformedDocumentError,
    SchemaValidationError,
    StellaError,
)
from ..evidence.chain import ChainStateMachine, ChainVerifyOptions
from ..evidence.measure import ChunkMeasure
from ..evidence.prune_record import parse_prune_record
from ..evidence.report import ERROR, GAP, ChainReport
from ..formats.roles import RoleName
from ..formats.seal import CHAIN_ID_RE
from ..formats.trust_root import TrustRoot
from .steps import StepOutcome

# Members of a directory whose name is not a chain id are refused (file-list) and judged as one
# chain of this name, so the pass still ends with a report.
_INVALID = "invalid-chain-id"
# The bundle's pass reads each chunk once, in archive order: no parallel measuring.
OPTIONS = ChainVerifyOptions(require_signatures=True, allow_open=True, workers=1)


class ChainVerifier:
    def __init__(
        self, trust_root: TrustRoot, steps: dict[str, StepOutcome], now: dt.datetime | None
    ) -> None:
        self.trust_root = trust_root
        self.steps = steps
        self.now = now
        self.machines: dict[str, ChainStateMachine] = {}
        self.reports: dict[str, ChainReport] = {}
        # The chains' seals and prune records as the verified manifest lists them.
        self.listed_seals: dict[str, set[int]] = {}
        self.listed_prunes: set[str] = set()

    def expect(self, names: Iterable[str]) -> None:
        """The chains' layout as the verified manifest lists it: each chain's verifier decides
        its findings as the members stream by (a member the manifest does not list makes
        that chain's verifier decide at the end)."""
        for name in names:
            if match := SEAL_RE.match(name):
                self.listed_seals.setdefault(match.group("chain"), set()).add(
                    int(match.group("seq"))
                )
            elif match := PRUNE_RE.match(name):
                self.listed_prunes.add(match.group("chain"))

    def _machine(self, chain_id: str) -> ChainStateMachine:
        if chain_id not in self.machines:
            if not CHAIN_ID_RE.match(chain_id):
                # Judged like any member the layout does not allow; the pass goes on so that
                # the report is still written.
                self.steps["file-list"].fail(
                    BundleContentsError(
                        f"invalid chain id {chain_id!r} (expected 1-128 characters of A-Z a-z "
                        "0-9 . _ - starting with a letter or digit)",
                        path=f"evidence/{chain_id}/",
                    )
                )
                chain_id = _INVALID
            if chain_id not in self.machines:
                machine = self.machines[chain_id] = ChainStateMachine(
                    chain_id,
                    self.trust_root,
                    location=f"evidence/{chain_id}",
                    options=OPTIONS,
                    now=self.now,
                )
                if chain_id in self.listed_seals or chain_id in self.listed_prunes:
                    machine.expect(
                        self.listed_seals.get(chain_id, set()),
                        prune_record=chain_id in self.listed_prunes,
                    )
        return self.machines[chain_id]

    def _schema_failure(self, exc: StellaError, name: str) -> None:
        self.steps["schemas"].fail(SchemaValidationError(exc.message, path=name, field=exc.field))

    def chunk(self, chain_id: str, sequence: int, measure: ChunkMeasure) -> None:
        self._machine(chain_id).chunk(sequence, measure)

    def seal(self, chain_id: str, sequence: int, data: bytes, name: str) -> None:
        malformed = self._machine(chain_id).seal(sequence, data)
        if malformed is not None:  # also a `tampered_seal` finding of the chain
            self._schema_failure(malformed, name)

    def prune_record(self, chain_id: str, data: bytes, name: str) -> None:
        try:
            parse_prune_record(data, name)
        except (MalformedDocumentError, StellaError) as exc:  # also `prune_rejected`
            self._schema_failure(exc, name)
        self._machine(chain_id).prune_record(data)

    def finish(self, step: StepOutcome) -> None:
        for chain_id in sorted(self.machines):
            report = self.reports[chain_id] = self.machines[chain_id].finish()
            for finding in report.findings:
                if finding.severity == ERROR:
                    where = f"evidence/{chain_id}/{finding.file or ''}"
                    step.fail(EvidenceChainError(f"{finding.code}: {finding.message}", path=where))
        if not self.machines:
            step.fail(EvidenceChainError("the bundle holds no evidence chain"))

    def window(self) -> tuple[str | None, str | None]:
        """Earliest and latest observation over every chain, as the seals declare them."""
        span = TimeSpan()
        for report in self.reports.values():
            span.add_window(report.first_observed_at, report.last_observed_at)
        return span.first, span.last

    def summary(self) -> str:
        chunks = sum(len(r.chunks) for r in self.reports.values())
        lost = sum(r.events_lost for r in self.reports.values())
        finals = sum(1 for r in self.reports.values() if r.final_seal)
        return (
            f"{len(self.reports)} chain(s), {chunks} chunk(s), no gap, every link and content "
            f"digest matches; {finals} with a final seal; {lost} event(s) lost (counted in seals)"
        )

    def _signers(self, report: ChainReport) -> list[dict[str, Any]]:
        keyids = sorted({k for entry in report.chunks for k in entry.signers})
        rows = []
        for keyid in keyids:
            key = self.trust_root.keys.get(keyid)
            if key is not None:
                rows.append({"keyid": keyid, "fingerprint": fingerprint(key)})
        return rows

    def report(self) -> list[dict[str, Any]]:
        rows = []
        for chain_id in sorted(self.reports):
            report = self.reports[chain_id]
            rows.append(
                {
                    "chain_id": chain_id,
                    "chunks": len(report.chunks),
                    "records": report.records,
                    "first_sequence": report.first_sequence,
                    "last_sequence": report.last_sequence,
                    "gaps": [_gap(f.expected) for f in report.findings if f.code == GAP],
                    "final_seal_present": report.final_seal,
                    "events_lost": report.events_lost,
                    "loss": report.loss.counters(),
                    "first_observed_at": report.first_observed_at,
                    "last_observed_at": report.last_observed_at,
                    "signers": self._signers(report),
                    "findings": [f.to_dict() for f in report.findings],
                }
            )
        return rows

    def attestations(self) -> list[dict[str, Any]]:
        """One entry per chain: its last seal, signed by the collector role."""
        entries = []
        for chain_id in sorted(self.reports):
            report = self.reports[chain_id]
            last = report.chunks[-1] if report.chunks else None
            if last is None or last.seal_sha256 is None:
                continue
            entries.append(
                {
                    "uri": f"evidence/{chain_id}/{last.seal_file}",
                    "digest": {"sha256": last.seal_sha256},
                    "role": RoleName.COLLECTOR.value,
                    "signers": [
                        dict(row, roles=self.trust_root.roles_of(row["keyid"]))
                        for row in self._signers(report)
                    ],
                }
            )
        return entries


def _gap(expected: str | None) -> dict[str, int]:
    low, _, high = (expected or "0-0").partition("-")
    return {"missing_from": int(low), "missing_to": int(high or low)}
