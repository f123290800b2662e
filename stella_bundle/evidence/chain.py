"""Verification of an evidence chain: seals, signatures, links, chunk digests, named findings.

The chain rules exist once, in `ChainStateMachine`: a state machine fed events (a seal's bytes,
a chunk's measure, the prune record, stray names) in any order, that decides when finished.
`signals verify-chain` feeds it a directory (`verify_chain`, `verify_chain_files`: chunks
measured in parallel from an opener); `bundle verify` feeds it the members streamed out of the
archive (`verify.chains`: chunks measured by the bundle's one record pass). Both therefore give
the same findings on the same chain.
Steps, in order: prune record → seals parsed → signatures (collector role) → chunk digests →
sequence coverage → `previous` links → final seal → loss.

State kept: per seal its parsed form and digest, per chunk its measure (digests, sizes,
record times); never a record.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..attest.verifier import AttestationVerifier
from ..errors import (
    ExpiredTrustRootError,
    InputError,
    MalformedDocumentError,
    RoleError,
    SignatureError,
    StatementError,
    StellaError,
    ThresholdNotMetError,
)
from ..formats.prune import PruneRecord
from ..formats.roles import RoleName
from ..formats.trust_root import TrustRoot
from ..fsutil import open_regular_file, read_regular_file
from ..timeutil import utc_now
from .layout import (
    CHUNK_SUFFIX,
    LOCK_NAME,
    PARTIAL_STATE_SUFFIX,
    PARTIAL_SUFFIX,
    PRUNE_RECORD_NAME,
    SEAL_SUFFIX,
    chunk_name,
    find_chain_dirs,
    is_temporary,
    parse_name,
    partial_name,
    seal_name,
    validate_chain_id,
)
from .measure import ChunkMeasure, measure_chunk
from .prune_record import parse_prune_record
from .report import (
    BROKEN_LINK,
    DECLARED_START,
    DUPLICATED,
    EMPTY_CHAIN,
    ERROR,
    EVENTS_LOST,
    GAP,
    INFO,
    LEFTOVER_TEMP,
    MISSING_CHUNK,
    NO_FINAL_SEAL,
    OPEN_CHUNK,
    ORPHAN_CHUNK,
    PRUNE_INCOMPLETE,
    PRUNE_REJECTED,
    PRUNED,
    RECOVERED,
    REORDERED,
    SIGNATURES_NOT_CHECKED,
    TAMPERED_CHUNK,
    TAMPERED_SEAL,
    THRESHOLD_NOT_MET,
    TRUST_ROOT_EXPIRED,
    UNEXPECTED_FILE,
    UNSIGNED_SEAL,
    WARNING,
    WRONG_CHAIN,
    WRONG_ROLE,
    ChainReport,
    ChunkEntry,
    Finding,
    PruneSummary,
)
from .seal import ParsedSeal, parse_seal, seal_digest
from .timecheck import ChainTimes, record_time_findings, seal_time_findings

__all__ = [
    "ChainFiles",
    "ChainReport",
    "ChainStateMachine",
    "ChainVerifyOptions",
    "ChunkEntry",
    "ChunkOpener",
    "Finding",
    "load_trust_root",
    "read_chain_dir",
    "verify_chain",
    "verify_chain_files",
    "verify_evidence",
]

ChunkOpener = Callable[[int], IO[bytes]]


@dataclass(frozen=True)
class ChainVerifyOptions:
    """`require_signatures`: without a trust root the chain cannot pass (signatures unchecked).
    `allow_open`: a chain still being written (no final seal) passes with a warning.
    `workers`: chunks measured in parallel; 1 when the opener is not thread-safe (a tar stream).
    """

    require_signatures: bool = True
    allow_open: bool = False
    workers: int = 1


def verify_chain_files(
    chain_id: str,
    seals: Mapping[int, bytes],
    chunk_opener: ChunkOpener,
    trust_root: TrustRoot | None = None,
    *,
    chunk_sequences: Iterable[int] | None = None,
    prune_record: bytes | None = None,
    other_names: Iterable[str] = (),
    location: str = "",
    options: ChainVerifyOptions | None = None,
) -> ChainReport:
    """Verify a chain given as seal bytes by sequence and an opener of chunk files by sequence.

    `chunk_sequences`: the chunk files present (default: one per seal; the opener raises
    FileNotFoundError for a missing one). `other_names`: further file names in the chain
    directory (open chunks, temp files, strays), reported as findings.
    """
    machine = ChainStateMachine(
        chain_id, trust_root, location=location or chain_id, options=options or ChainVerifyOptions()
    )
    if prune_record is not None:
        machine.prune_record(prune_record)
    for sequence in sorted(seals):
        machine.seal(sequence, seals[sequence])
    machine.chunks_from(chunk_opener, set(seals) if chunk_sequences is None else chunk_sequences)
    for name in other_names:
        machine.other(name)
    return machine.finish()


@dataclass(frozen=True)
class ChainFiles:
    """A chain directory as read: its seals' bytes, chunk sequences, prune record, other names."""

    directory: Path
    chain_id: str
    seals: dict[int, bytes]
    chunks: set[int]
    prune_record: bytes | None
    others: list[str]

    def opener(self, sequence: int) -> IO[bytes]:
        return open_regular_file(self.directory / chunk_name(sequence))

    def machine(
        self, trust_root: TrustRoot | None, options: ChainVerifyOptions
    ) -> ChainStateMachine:
        """The chain's verification, fed every file; chunks not measured by the caller
        (`ChainStateMachine.chunk`) are measured through the opener when it finishes."""
        machine = ChainStateMachine(
            self.chain_id, trust_root, location=str(self.directory), options=options
        )
        if self.prune_record is not None:
            machine.prune_record(self.prune_record)
        for sequence in sorted(self.seals):
            machine.seal(sequence, self.seals[sequence])
        machine.chunks_from(self.opener, self.chunks)
        for name in self.others:
            machine.other(name)
        return machine


def read_chain_dir(chain_dir: str | Path) -> ChainFiles:
    """The files of the chain in `chain_dir` (its name is the chain id)."""
    directory = Path(chain_dir)
    if not directory.is_dir():
        raise InputError("expected a chain directory", path=directory)
    seals: dict[int, bytes] = {}
    chunks: set[int] = set()
    prune_bytes = None
    others = []
    for entry in sorted(os.listdir(directory)):
        parsed = parse_name(entry)
        if parsed is not None and parsed[1] == SEAL_SUFFIX:
            seals[parsed[0]] = read_regular_file(directory / entry)  # exit 2 if unreadable
        elif parsed is not None and parsed[1] == CHUNK_SUFFIX:
            chunks.add(parsed[0])
        elif entry == PRUNE_RECORD_NAME:
            prune_bytes = read_regular_file(directory / entry)
        elif entry != LOCK_NAME:
            others.append(entry)
    return ChainFiles(directory, directory.resolve().name, seals, chunks, prune_bytes, others)


def load_trust_root(trust_root: TrustRoot | str | Path | None) -> TrustRoot | None:
    if trust_root is None or isinstance(trust_root, TrustRoot):
        return trust_root
    return TrustRoot.load(trust_root)


def verify_chain(
    chain_dir: str | Path,
    trust_root: TrustRoot | str | Path | None = None,
    *,
    require_signatures: bool = True,
    allow_open: bool = False,
    workers: int | None = None,
) -> ChainReport:
    """Verify the chain in `chain_dir` (its name is the chain id); works from any directory."""
    files = read_chain_dir(chain_dir)
    options = ChainVerifyOptions(
        require_signatures=require_signatures,
        allow_open=allow_open,
        workers=workers if workers is not None else min(4, os.cpu_count() or 1),
    )
    return files.machine(load_trust_root(trust_root), options).finish()


def verify_evidence(
    path: str | Path,
    trust_root: TrustRoot | str | Path | None = None,
    **kwargs: Any,
) -> list[ChainReport]:
    """Every chain under `path` (an evidence directory, or one chain directory)."""
    directories = find_chain_dirs(Path(path))
    if not directories:
        raise InputError(
            "no evidence chain found (expected <chain_id>/NNNNNNNNNN.seal.dsse.json)", path=path
        )
    root = load_trust_root(trust_root)
    return [verify_chain(d, root, **kwargs) for d in directories]


class ChainStateMachine:
    """The evidence-chain rules over one chain, fed events, decided by `finish`.

    Events, in any order (a directory gives its prune record first, an archive last):
    `prune_record(bytes)`, `seal(sequence, bytes)` (parsed on arrival: the caller learns at
    once whether it is malformed), `chunk(sequence, measure)` for a chunk already measured (the
    bundle's record pass), or `chunks_from(opener, sequences)` for chunks measured when
    finishing (in parallel, each bounded by its seal's declared size), `other(name)` for any
    other file of the chain's directory.
    """

    def __init__(
        self,
        chain_id: str,
        trust_root: TrustRoot | None,
        *,
        location: str = "",
        options: ChainVerifyOptions | None = None,
        now: dt.datetime | None = None,
    ) -> None:
        validate_chain_id(chain_id)
        self.chain_id = chain_id
        self.trust_root = trust_root
        self.verifier = AttestationVerifier(trust_root, now=now) if trust_root is not None else None
        self.options = options or ChainVerifyOptions()
        self.report = ChainReport(
            chain_id, location or chain_id, trust_root_used=trust_root is not None
        )
        self.seals: dict[int, ParsedSeal | StellaError] = {}
        self.seal_digests: dict[int, str] = {}
        self.measures: dict[int, ChunkMeasure | str] = {}
        self.chunk_sequences: set[int] = set()
        self.opener: ChunkOpener | None = None
        self.prune_bytes: bytes | None = None
        self.other_names: list[str] = []
        self.entries: dict[int, ChunkEntry] = {}
        self.parsed: dict[int, ParsedSeal] = {}
        self.prune: PruneRecord | None = None
        self.start = 1
        self.signatures_usable = self.verifier is not None
        self.now = now or utc_now()
        self._seals_checked = False

    # --- events ------------------------------------------------------------------------------

    def prune_record(self, data: bytes) -> None:
        self.prune_bytes = data

    def seal(self, sequence: int, data: bytes) -> StellaError | None:
        """Take one seal file; return why it is malformed (it is also a finding), or None."""
        self.seal_digests[sequence] = seal_digest(data)
        try:
            # The statement's dict is not consulted again (the predicate holds it, typed): not
            # kept, so that a long chain streamed out of an archive costs less per seal.
            self.seals[sequence] = dataclasses.replace(
                parse_seal(data, seal_name(sequence)), statement={}
            )
        except (MalformedDocumentError, StatementError) as exc:
            self.seals[sequence] = exc
            return exc
        return None

    def chunk(self, sequence: int, measure: ChunkMeasure | str) -> None:
        """A chunk measured by the caller, or why it could not be ("missing", "unreadable")."""
        self.chunk_sequences.add(sequence)
        self.measures[sequence] = measure

    def chunks_from(self, opener: ChunkOpener, sequences: Iterable[int]) -> None:
        self.opener = opener
        self.chunk_sequences.update(sequences)

    def other(self, name: str) -> None:
        self.other_names.append(name)

    def finish(self) -> ChainReport:
        return self.run()

    def entry(self, sequence: int) -> ChunkEntry:
        if sequence not in self.entries:
            self.entries[sequence] = ChunkEntry(sequence)
        return self.entries[sequence]

    def seals_first(self) -> ChainReport:
        """Steps 1 to 3 now (prune record, seals, signatures), once: a caller that measures the
        chunks itself while it reads them learns first which seals stand and who signed them.
        `finish` then runs the remaining steps; the report is the one `finish` alone gives."""
        if not self._seals_checked:
            self._seals_checked = True
            self.check_prune_record()
            self.check_seals()
        return self.report

    def run(self) -> ChainReport:
        self.seals_first()
        self.check_chunks()
        self.check_coverage_and_links()
        self.check_final_and_loss()
        self.check_other_files()
        if self.trust_root is None:
            severity = ERROR if self.options.require_signatures else WARNING
            self.report.add(
                SIGNATURES_NOT_CHECKED,
                severity,
                "no trust root given: seal signatures and signer roles were NOT checked "
                "(digests and links only); pass --trust-root to verify who sealed the chain",
            )
        self.report.chunks = [self.entries[s] for s in sorted(self.entries)]
        return self.report

    # --- step 1: prune record ----------------------------------------------------------------

    def check_prune_record(self) -> None:
        if self.prune_bytes is None:
            return
        try:
            parsed = parse_prune_record(self.prune_bytes, PRUNE_RECORD_NAME)
        except MalformedDocumentError as exc:
            self.report.add(
                PRUNE_REJECTED,
                ERROR,
                f"prune record is malformed: {exc.describe()}",
                file=PRUNE_RECORD_NAME,
            )
            return
        record = parsed.record
        signers: list[str] = []
        accepted = True
        if record.chain_id != self.chain_id:
            self.report.add(
                PRUNE_REJECTED,
                ERROR,
                f"prune record names chain {record.chain_id!r}",
                file=PRUNE_RECORD_NAME,
            )
            accepted = False
        elif self.verifier is not None:
            try:
                keys = self.verifier.verify_signers(
                    parsed.envelope, RoleName.COLLECTOR, PRUNE_RECORD_NAME
                )
                signers = [k.keyid for k in keys]
            except (SignatureError, RoleError, ThresholdNotMetError, ExpiredTrustRootError) as exc:
                accepted = False
                self.report.add(
                    PRUNE_REJECTED,
                    ERROR,
                    f"prune record not signed by a trusted collector key: {exc.message}; the "
                    f"removal of sequences {record.first_sequence}-{record.last_sequence} is unexplained",
                    file=PRUNE_RECORD_NAME,
                )
        elif not parsed.envelope.signatures:
            accepted = False
            self.report.add(
                PRUNE_REJECTED, ERROR, "prune record carries no signature", file=PRUNE_RECORD_NAME
            )
        else:
            signers = [s.keyid for s in parsed.envelope.signatures]
        self.report.pruned = PruneSummary(
            record.first_sequence,
            record.last_sequence,
            record.records_removed,
            record.pruned_at,
            signers,
            accepted,
        )
        if not accepted:
            return
        self.prune = record
        self.start = record.last_sequence + 1
        self.report.loss.add(record.loss_removed)
        by = ", ".join(k[:16] for k in signers) or "unchecked key"
        self.report.add(
            PRUNED,
            INFO,
            f"sequences {record.first_sequence}-{record.last_sequence} ({record.records_removed} "
            f"records) were pruned at {record.pruned_at} by key {by}",
            key=signers[0] if signers else None,
        )

    # --- step 2 and 3: seals and their signatures ------------------------------------------------

    def check_seals(self) -> None:
        incomplete = []
        times = ChainTimes()
        for sequence in sorted(self.seals):
            seal = self.seals[sequence]
            name = seal_name(sequence)
            if sequence < self.start:
                incomplete.append(sequence)
                continue
            entry = self.entry(sequence)
            entry.seal_file = name
            entry.seal_sha256 = self.seal_digests[sequence]
            if isinstance(seal, StellaError):
                entry.signature = "failed"
                exc = seal
                self.report.add(
                    TAMPERED_SEAL,
                    ERROR,
                    f"seal is malformed: {exc.describe()}",
                    sequence=sequence,
                    file=name,
                )
                continue
            self.check_signature(seal, entry, name)
            predicate = seal.predicate
            entry.reason, entry.final, entry.sealed_at = (
                predicate.reason,
                predicate.final,
                predicate.sealed_at,
            )
            entry.first_observed_at = predicate.first_observed_at
            entry.last_observed_at = predicate.last_observed_at
            entry.loss = predicate.loss.to_dict()
            if predicate.chain_id != self.chain_id:
                self.report.add(
                    WRONG_CHAIN,
                    ERROR,
                    f"seal belongs to chain {predicate.chain_id!r}, not {self.chain_id!r}",
                    sequence=sequence,
                    file=name,
                )
                continue
            if predicate.sequence != sequence:
                digest = self.seal_digests[sequence]
                twins = [
                    s for s, other in self.seal_digests.items() if s != sequence and other == digest
                ]
                code = DUPLICATED if twins else REORDERED
                what = (
                    f"a copy of seal {twins[0]}"
                    if twins
                    else f"the seal of sequence {predicate.sequence}"
                )
                self.report.add(
                    code,
                    ERROR,
                    f"file {name} holds {what}",
                    sequence=sequence,
                    file=name,
                    expected=str(sequence),
                    actual=str(predicate.sequence),
                )
                continue
            for problem in seal_time_findings(predicate, times, self.now):
                self.report.add(problem.code, ERROR, problem.message, sequence=sequence, file=name)
            times.advance(predicate)
            self.parsed[sequence] = seal
        if incomplete and self.prune is not None:
            last = self.prune.last_sequence
            if last in self.seals and self.seal_digests[last] != self.prune.last_seal_sha256:
                self.report.add(
                    BROKEN_LINK,
                    ERROR,
                    f"seal {last} differs from the one the prune record names",
                    sequence=last,
                    file=seal_name(last),
                    expected=self.prune.last_seal_sha256,
                    actual=self.seal_digests[last],
                )
            self.report.add(
                PRUNE_INCOMPLETE,
                WARNING,
                f"files of pruned sequences {incomplete[0]}-{incomplete[-1]} are still present "
                "(an interrupted prune; rerun it); they were not verified",
            )

    def check_signature(self, seal: ParsedSeal, entry: ChunkEntry, name: str) -> None:
        if not seal.envelope.signatures:
            entry.signature = "unsigned"
            self.report.add(
                UNSIGNED_SEAL,
                ERROR,
                "seal carries no signature",
                sequence=entry.sequence,
                file=name,
            )
            return
        if self.verifier is None or not self.signatures_usable:
            entry.signers = [s.keyid for s in seal.envelope.signatures]
            return
        try:
            keys = self.verifier.verify_signers(seal.envelope, RoleName.COLLECTOR, name)
        except ExpiredTrustRootError as exc:
            self.signatures_usable = False
            self.report.add(TRUST_ROOT_EXPIRED, ERROR, exc.describe())
            return
        except RoleError as exc:
            entry.signature = "wrong_role"
            self.report.add(WRONG_ROLE, ERROR, exc.message, sequence=entry.sequence, file=name)
            return
        except ThresholdNotMetError as exc:
            entry.signature = "failed"
            self.report.add(
                THRESHOLD_NOT_MET, ERROR, exc.message, sequence=entry.sequence, file=name
            )
            return
        except SignatureError as exc:
            entry.signature = "failed"
            self.report.add(
                TAMPERED_SEAL,
                ERROR,
                f"signature does not verify: {exc.message}",
                sequence=entry.sequence,
                file=name,
            )
            return
        entry.signature = "verified"
        entry.signers = [k.keyid for k in keys]

    # --- step 4: chunk digests -------------------------------------------------------------------

    def measure_all(self, sequences: list[int]) -> dict[int, ChunkMeasure | str]:
        """The fed measures, and the opener's chunks measured now (in parallel)."""
        given = {s: self.measures[s] for s in sequences if s in self.measures}
        pending = [s for s in sequences if s not in self.measures]
        measured = self.measure_opened(pending)
        return {s: given[s] if s in given else measured[s] for s in sequences}

    def measure_opened(self, sequences: list[int]) -> dict[int, ChunkMeasure | str]:
        opener = self.opener
        if opener is None:
            return dict.fromkeys(sequences, "missing")

        def one(sequence: int) -> ChunkMeasure | str:
            seal = self.parsed.get(sequence)
            # A chunk may not inflate past what its seal declares (plus slack for tampering
            # to show as a digest mismatch rather than as a refusal).
            limit = None if seal is None else seal.predicate.content.bytes + (1 << 20)
            try:
                with opener(sequence) as stream:
                    return measure_chunk(stream, limit)
            except FileNotFoundError:
                return "missing"
            except OSError as exc:
                return f"unreadable: {exc.strerror}"
            except InputError as exc:  # not a regular file (a FIFO would block the reader)
                return f"unreadable: {exc.message}"

        if self.options.workers > 1 and len(sequences) > 1:
            with ThreadPoolExecutor(self.options.workers) as pool:
                return dict(zip(sequences, pool.map(one, sequences), strict=True))
        return {sequence: one(sequence) for sequence in sequences}

    def open_tail_sequence(self) -> int | None:
        """The sequence after the head when its chunk is published but its seal not yet.

        The writer renames the chunk, then the seal, and removes the open chunk last: a chunk
        at head + 1 whose `.partial` is still present is the open tail caught (or killed)
        between the two renames, not an orphan. It is reported as the open chunk it still is;
        the next start rebuilds it from the partial and seals it `recovered`.
        """
        tail = max(max(self.seals, default=0), self.start - 1) + 1
        if (
            tail in self.chunk_sequences
            and tail not in self.seals
            and partial_name(tail) in self.other_names
        ):
            return tail
        return None

    def check_chunks(self) -> None:
        open_tail = self.open_tail_sequence()
        sequences = sorted(
            s for s in self.chunk_sequences | set(self.parsed) if s >= self.start and s != open_tail
        )
        measures = self.measure_all(sequences)
        by_subject: dict[str, list[int]] = {}
        for sealed_sequence, sealed in self.parsed.items():
            by_subject.setdefault(sealed.subject_sha256, []).append(sealed_sequence)
        for sequence in sequences:
            measure = measures[sequence]
            entry = self.entry(sequence)
            name = chunk_name(sequence)
            seal = self.parsed.get(sequence)
            if isinstance(measure, str):
                if seal is not None or sequence in self.chunk_sequences:
                    entry.digest = "missing"
                    self.report.add(
                        MISSING_CHUNK,
                        ERROR,
                        f"chunk file is {measure}; its seal is present",
                        sequence=sequence,
                        file=name,
                    )
                continue
            entry.chunk_file = name
            entry.chunk_sha256 = measure.sha256
            entry.chunk_bytes = measure.size
            entry.records = measure.records
            entry.content_bytes = measure.content_bytes
            if sequence not in self.seals:
                self.report.add(
                    ORPHAN_CHUNK,
                    ERROR,
                    "chunk without a seal: its records are not evidence",
                    sequence=sequence,
                    file=name,
                )
                continue
            if seal is None:
                continue  # the seal itself was already reported
            if measure.sha256 == seal.subject_sha256:
                self.check_content(seal, measure, entry, name)
                continue
            entry.digest = "mismatch"
            owners = [s for s in by_subject.get(measure.sha256, []) if s != sequence]
            if owners:
                owner = owners[0]
                owner_measure = measures.get(owner)
                intact_original = (
                    isinstance(owner_measure, ChunkMeasure)
                    and owner_measure.sha256 == measure.sha256
                )
                code = DUPLICATED if intact_original else REORDERED
                what = "a copy of chunk" if intact_original else "the chunk sealed as sequence"
                self.report.add(
                    code,
                    ERROR,
                    f"file {name} holds {what} {owner}",
                    sequence=sequence,
                    file=name,
                    expected=str(sequence),
                    actual=str(owner),
                )
                continue
            detail = ""
            content = seal.predicate.content
            if measure.error:
                detail = f"; it is {measure.error}"
            elif measure.records != content.records:
                detail = (
                    f"; it holds {measure.records} records where the seal says {content.records}"
                )
            self.report.add(
                TAMPERED_CHUNK,
                ERROR,
                f"chunk digest differs from the sealed digest{detail}",
                sequence=sequence,
                file=name,
                expected=f"sha256:{seal.subject_sha256}",
                actual=f"sha256:{measure.sha256}",
            )

    def check_content(
        self, seal: ParsedSeal, measure: ChunkMeasure, entry: ChunkEntry, name: str
    ) -> None:
        content = seal.predicate.content
        problems = []
        if measure.error:
            problems.append(measure.error)
        if measure.content_sha256 is not None and measure.content_sha256 != content.sha256:
            problems.append("content digest differs")
        if measure.records != content.records:
            problems.append(f"{measure.records} records, sealed {content.records}")
        if measure.content_bytes != content.bytes:
            problems.append(f"{measure.content_bytes} bytes, sealed {content.bytes}")
        if not problems:
            entry.digest = "ok"
            if measure.times is not None:
                for problem in record_time_findings(measure.times, seal.predicate):
                    self.report.add(
                        problem.code, ERROR, problem.message, sequence=entry.sequence, file=name
                    )
            return
        entry.digest = "mismatch"
        self.report.add(
            TAMPERED_CHUNK,
            ERROR,
            "chunk matches its sealed file digest but not its sealed content: "
            + "; ".join(problems),
            sequence=entry.sequence,
            file=name,
            expected=f"sha256:{content.sha256}",
            actual=f"sha256:{measure.content_sha256}",
        )

    # --- step 5 and 6: coverage and links ----------------------------------------------------------

    def check_coverage_and_links(self) -> None:
        present = sorted(s for s in self.seals if s >= self.start)
        if not present:
            if self.prune is None:
                self.report.add(EMPTY_CHAIN, ERROR, "no seal: the chain holds no evidence")
            else:
                self.report.add(
                    EMPTY_CHAIN, ERROR, "every seal was pruned; nothing remains to verify"
                )
            return
        first = present[0]
        first_seal = self.parsed.get(first)
        if (
            self.prune is None
            and first > 1
            and first_seal is not None
            and first_seal.predicate.previous is None
        ):
            self.start = first
            self.entry(first).link = "start"
            self.report.add(
                DECLARED_START,
                WARNING,
                f"the chain declares its start at sequence {first}",
                sequence=first,
            )
        missing = [s for s in range(self.start, present[-1] + 1) if s not in self.seals]
        for low, high in _ranges(missing):
            span = f"sequence {low}" if low == high else f"sequences {low}-{high}"
            self.report.add(
                GAP,
                ERROR,
                f"{span} missing: no seal (chunk deleted or never delivered)",
                sequence=low,
                expected=f"{low}-{high}",
            )
        for sequence in present:
            seal = self.parsed.get(sequence)
            if seal is None:
                continue
            entry = self.entry(sequence)
            if entry.link == "start":
                continue
            self.check_link(sequence, seal, entry)

    def check_link(self, sequence: int, seal: ParsedSeal, entry: ChunkEntry) -> None:
        previous = seal.predicate.previous
        name = seal_name(sequence)
        if sequence == self.start and self.prune is not None:
            expected_seq, expected_sha = self.prune.last_sequence, self.prune.last_seal_sha256
        elif sequence == 1:
            if previous is None:
                entry.link = "start"
                return
            expected_seq, expected_sha = 0, None
        else:
            expected_seq = sequence - 1
            expected_sha = self.seal_digests.get(expected_seq)
            if expected_sha is None:
                entry.link = "not_checked"  # the gap is reported already
                return
        if previous is None or previous.sequence != expected_seq or previous.sha256 != expected_sha:
            entry.link = "broken"
            self.report.add(
                BROKEN_LINK,
                ERROR,
                f"`previous` does not name seal {expected_seq} as found "
                "(that seal was altered or replaced, or this one was moved)",
                sequence=sequence,
                file=name,
                expected=f"{expected_seq}:{expected_sha}",
                actual=f"{previous.sequence}:{previous.sha256}" if previous else "null",
            )
            return
        entry.link = "ok"

    # --- step 7 and 8: tail and loss -------------------------------------------------------------

    def check_final_and_loss(self) -> None:
        present = sorted(s for s in self.seals if s >= self.start)
        recovered = []
        for sequence in present:
            seal = self.parsed.get(sequence)
            if seal is None:
                continue
            self.report.loss.add(seal.predicate.loss)
            if seal.predicate.reason == "recovered":
                recovered.append(sequence)
        if recovered:
            torn = sum(self.parsed[s].predicate.loss.torn_records for s in recovered)
            self.report.add(
                RECOVERED,
                INFO,
                f"{len(recovered)} chunk(s) were recovered after an unclean stop "
                f"(sequences {_describe(recovered)}); {torn} torn line(s) counted as lost",
            )
        if present:
            head_seal = self.parsed.get(present[-1])
            if head_seal is None or not head_seal.predicate.final:
                severity = WARNING if self.options.allow_open else ERROR
                self.report.add(
                    NO_FINAL_SEAL,
                    severity,
                    f"the last seal ({present[-1]}) is not final: the writer did not stop cleanly "
                    "or the chain is still open, so truncation of the tail cannot be excluded",
                    sequence=present[-1],
                )
        if self.report.loss.total:
            loss = self.report.loss
            self.report.add(
                EVENTS_LOST,
                WARNING,
                f"{loss.total} events were not recorded: {loss.ring_buffer_dropped} dropped by the "
                f"ring buffer, {loss.sampled_out} sampled out, {loss.filtered_out} filtered out, "
                f"{loss.torn_records} torn by a crash",
                actual=str(loss.total),
            )

    def check_other_files(self) -> None:
        for name in self.other_names:
            parsed = parse_name(name)
            if parsed is not None and parsed[1] in (PARTIAL_SUFFIX, PARTIAL_STATE_SUFFIX):
                if parsed[1] == PARTIAL_SUFFIX:
                    mid_seal = (
                        " (its chunk is published, its seal not yet)"
                        if parsed[0] == self.open_tail_sequence()
                        else ""
                    )
                    self.report.add(
                        OPEN_CHUNK,
                        WARNING,
                        f"open chunk not sealed yet{mid_seal}: its records are not evidence "
                        "until sealed",
                        sequence=parsed[0],
                        file=name,
                    )
            elif is_temporary(name):
                self.report.add(
                    LEFTOVER_TEMP, INFO, "temporary file of an interrupted write", file=name
                )
            else:
                self.report.add(
                    UNEXPECTED_FILE, WARNING, "file is not part of the chain format", file=name
                )


def _ranges(values: list[int]) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    for value in values:
        if ranges and value == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], value)
        else:
            ranges.append((value, value))
    return ranges


def _describe(values: list[int]) -> str:
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in _ranges(values))
