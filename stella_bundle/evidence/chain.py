"""Verification of an evidence chain: seals, signatures, links, chunk digests, named findings.

The chain rules exist once, in `ChainStateMachine`: a state machine fed events (a seal's bytes,
a chunk's measure, the prune record, stray names) in any order. Told the chain's layout (which
seals and whether a prune record will come: a directory listing), it decides each finding as
soon as the events it depends on have arrived and reports it then (`on_finding`, `decided`):
a broken link when the seal after the break arrives, a tampered chunk when its measure does,
so a caller can stop at the first error instead of reading the rest of the chain. `finish`
decides what only the whole chain can say (gaps, the final seal, loss, stray files) and gives
the report, whose findings are in the fixed order of the steps below whatever the order of
events, so one chain gives one report however it was fed.
`signals verify-chain` feeds it a directory (`verify_chain`, `verify_chain_files`: chunks
measured in parallel from an opener), store ingest the same directory with each chunk measured
as it is stored; `bundle verify` feeds it the members streamed out of the archive
(`verify.chains`: chunks measured by the bundle's one record pass). All therefore give the same
findings on the same chain.
Steps, in order: prune record → seals parsed → signatures (collector role) → chunk digests →
sequence coverage → `previous` links → final seal → loss.

State kept: per seal its parsed form and digest, per chunk its measure (digests, sizes,
record times); never a record.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
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
    machine.expect(seals, prune_record=prune_record is not None)
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
        self,
        trust_root: TrustRoot | None,
        options: ChainVerifyOptions,
        on_finding: Callable[[Finding], None] | None = None,
    ) -> ChainStateMachine:
        """The chain's verification, fed every file but the chunks; chunks not measured by the
        caller (`ChainStateMachine.chunk`) are measured through the opener when it finishes.
        The seals' and links' findings are decided on return (`decided`)."""
        machine = ChainStateMachine(
            self.chain_id,
            trust_root,
            location=str(self.directory),
            options=options,
            on_finding=on_finding,
        )
        machine.expect(self.seals, prune_record=self.prune_record is not None)
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


# Where a finding stands in the report: (step, part, sequence, order of decision). The steps run
# per sequence as events allow, so the report sorts by this key to keep one fixed order.
_PRUNE_STEP, _SEAL_STEP, _CHUNK_STEP, _COVERAGE_STEP, _TAIL_STEP, _FILES_STEP, _LAST_STEP = range(7)
_FindingKey = tuple[int, int, int, int]


class ChainStateMachine:
    """The evidence-chain rules over one chain, fed events, each finding reported when decided.

    Events, in any order (a directory gives its prune record first, an archive last):
    `prune_record(bytes)`, `seal(sequence, bytes)` (parsed on arrival: the caller learns at
    once whether it is malformed), `chunk(sequence, measure)` for a chunk already measured (the
    bundle's record pass, store ingest), or `chunks_from(opener, sequences)` for chunks measured
    when finishing (in parallel, each bounded by its seal's declared size), `other(name)` for
    any other file of the chain's directory.

    `expect(seals, prune_record=...)` declares which seals and whether a prune record will be
    fed. With it, a seal's rules (signature, sequence, times) and its link are decided as soon
    as it and every expected seal before it have arrived, and a chunk's as soon as its measure
    and its seal are in (a chunk that matches no seal waits for every seal: it may be another
    sequence's chunk). Without it nothing can be known not to come, and all is decided by
    `finish`. Each decided finding goes to `on_finding` and `decided` at once; it is final (the
    report holds it as it was reported). An event the declaration did not announce stops early
    decisions: the rest is decided by `finish`, over everything fed.
    """

    def __init__(
        self,
        chain_id: str,
        trust_root: TrustRoot | None,
        *,
        location: str = "",
        options: ChainVerifyOptions | None = None,
        now: dt.datetime | None = None,
        on_finding: Callable[[Finding], None] | None = None,
    ) -> None:
        validate_chain_id(chain_id)
        self.chain_id = chain_id
        self.trust_root = trust_root
        self.verifier = AttestationVerifier(trust_root, now=now) if trust_root is not None else None
        self.options = options or ChainVerifyOptions()
        self.on_finding = on_finding
        self.report = ChainReport(
            chain_id, location or chain_id, trust_root_used=trust_root is not None
        )
        self.decided: list[Finding] = []  # every finding, in the order decided
        self._keyed: list[tuple[_FindingKey, Finding]] = []
        self._order = itertools.count()
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
        # What is decided so far, step by step.
        self._expected_seals: set[int] | None = None  # None: no layout declared
        self._seal_order: list[int] = []  # the expected seals, ascending
        self._next_seal = 0  # index in _seal_order of the next seal to decide
        self._arrived = 0  # how many expected seals have arrived
        self._pending_chunks: set[int] = set()  # measured, not decided yet
        self._prune_expected = False
        self._streaming = False
        self._prune_checked = False
        self._times = ChainTimes()
        self._seals_done: set[int] = set()
        self._incomplete: list[int] = []  # seals of pruned sequences still present
        self._first_present: int | None = None
        self._coverage_start = 1  # where the chain starts for its gaps (a declared start)
        self._chunks_done: set[int] = set()

    # --- events ------------------------------------------------------------------------------

    def expect(self, seals: Iterable[int], *, prune_record: bool) -> None:
        """Declare the chain's layout before feeding it: every seal sequence that will be fed,
        and whether a prune record will be. Lets findings be decided as events arrive."""
        self._expected_seals = set(seals)
        self._seal_order = sorted(self._expected_seals)
        self._prune_expected = prune_record
        self._streaming = True
        self._advance()

    def prune_record(self, data: bytes) -> None:
        if self.prune_bytes is not None or (self._streaming and not self._prune_expected):
            self._streaming = False  # not announced: decided at the end over everything fed
        self.prune_bytes = data
        self._advance()

    def seal(self, sequence: int, data: bytes) -> StellaError | None:
        """Take one seal file; return why it is malformed (it is also a finding), or None."""
        if sequence in self.seals or (
            self._expected_seals is not None and sequence not in self._expected_seals
        ):
            self._streaming = False  # not announced, or fed twice: decided at the end
        else:
            self._arrived += 1
        self.seal_digests[sequence] = seal_digest(data)
        malformed: StellaError | None = None
        try:
            # The statement's dict is not consulted again (the predicate holds it, typed): not
            # kept, so that a long chain streamed out of an archive costs less per seal.
            self.seals[sequence] = dataclasses.replace(
                parse_seal(data, seal_name(sequence)), statement={}
            )
        except (MalformedDocumentError, StatementError) as exc:
            self.seals[sequence] = malformed = exc
        self._advance()
        return malformed

    def chunk(self, sequence: int, measure: ChunkMeasure | str) -> None:
        """A chunk measured by the caller, or why it could not be ("missing", "unreadable")."""
        if sequence in self.measures:
            self._streaming = False  # fed twice: decided at the end
        self.chunk_sequences.add(sequence)
        self.measures[sequence] = measure
        self._pending_chunks.add(sequence)
        self._advance()

    def chunks_from(self, opener: ChunkOpener, sequences: Iterable[int]) -> None:
        self.opener = opener
        self.chunk_sequences.update(sequences)

    def other(self, name: str) -> None:
        self.other_names.append(name)

    def entry(self, sequence: int) -> ChunkEntry:
        if sequence not in self.entries:
            self.entries[sequence] = ChunkEntry(sequence)
        return self.entries[sequence]

    def _add(
        self, where: tuple[int, int, int], code: str, severity: str, message: str, **details: Any
    ) -> None:
        """Decide a finding: `where` places it in the report (step, part, sequence)."""
        finding = Finding(code, severity, message, **details)
        self._keyed.append(((*where, next(self._order)), finding))
        self.decided.append(finding)
        if self.on_finding is not None:
            self.on_finding(finding)

    # --- deciding as events arrive -------------------------------------------------------------

    def _advance(self) -> None:
        """Decide what the events so far decide (nothing unless a layout was declared)."""
        if not self._streaming:
            return
        if not self._prune_checked:
            if self._prune_expected and self.prune_bytes is None:
                return  # the prune record moves the chain's start: wait for it
            self.check_prune_record()
        # Seals in sequence order: each once it and every expected seal before it are in.
        order = self._seal_order
        while self._next_seal < len(order):
            sequence = order[self._next_seal]
            if sequence not in self.seals or self._misplaced_undecided(sequence):
                break
            self._next_seal += 1
            self.decide_seal(sequence)
        for sequence in sorted(self._pending_chunks):
            if self._decide_chunk(sequence, final=False):
                self._pending_chunks.discard(sequence)

    def _misplaced_undecided(self, sequence: int) -> bool:
        """A seal holding another sequence's statement with no twin yet: a duplicate or a
        reordered seal, told apart once every seal is in."""
        seal = self.seals[sequence]
        return (
            isinstance(seal, ParsedSeal)
            and seal.predicate.chain_id == self.chain_id
            and seal.predicate.sequence != sequence
            and self._arrived < len(self._seal_order)
            and not self._twins(sequence)
        )

    def decide_seal(self, sequence: int) -> None:
        """A seal's rules (signature, sequence, times) and its link; in sequence order."""
        self._seals_done.add(sequence)
        self.check_seal(sequence)
        if sequence >= self.start:
            self.check_first_and_link(sequence)

    def _twins(self, sequence: int) -> list[int]:
        digest = self.seal_digests[sequence]
        return [s for s, other in self.seal_digests.items() if s != sequence and other == digest]

    # --- step 1: prune record ----------------------------------------------------------------

    def check_prune_record(self) -> None:
        if self._prune_checked:
            return
        self._prune_checked = True
        if self.prune_bytes is None:
            return
        key = (_PRUNE_STEP, 0, 0)
        try:
            parsed = parse_prune_record(self.prune_bytes, PRUNE_RECORD_NAME)
        except MalformedDocumentError as exc:
            self._add(
                key,
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
            self._add(
                key,
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
                self._add(
                    key,
                    PRUNE_REJECTED,
                    ERROR,
                    f"prune record not signed by a trusted collector key: {exc.message}; the "
                    f"removal of sequences {record.first_sequence}-{record.last_sequence} is unexplained",
                    file=PRUNE_RECORD_NAME,
                )
        elif not parsed.envelope.signatures:
            accepted = False
            self._add(
                key,
                PRUNE_REJECTED,
                ERROR,
                "prune record carries no signature",
                file=PRUNE_RECORD_NAME,
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
        self.start = self._coverage_start = record.last_sequence + 1
        self.report.loss.add(record.loss_removed)
        by = ", ".join(k[:16] for k in signers) or "unchecked key"
        self._add(
            key,
            PRUNED,
            INFO,
            f"sequences {record.first_sequence}-{record.last_sequence} ({record.records_removed} "
            f"records) were pruned at {record.pruned_at} by key {by}",
            key=signers[0] if signers else None,
        )

    # --- step 2 and 3: seals and their signatures ------------------------------------------------

    def check_seal(self, sequence: int) -> None:
        seal = self.seals[sequence]
        name = seal_name(sequence)
        if sequence < self.start:
            self._incomplete.append(sequence)
            return
        key = (_SEAL_STEP, 0, sequence)
        entry = self.entry(sequence)
        entry.seal_file = name
        entry.seal_sha256 = self.seal_digests[sequence]
        if isinstance(seal, StellaError):
            entry.signature = "failed"
            self._add(
                key,
                TAMPERED_SEAL,
                ERROR,
                f"seal is malformed: {seal.describe()}",
                sequence=sequence,
                file=name,
            )
            return
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
            self._add(
                key,
                WRONG_CHAIN,
                ERROR,
                f"seal belongs to chain {predicate.chain_id!r}, not {self.chain_id!r}",
                sequence=sequence,
                file=name,
            )
            return
        if predicate.sequence != sequence:
            twins = self._twins(sequence)
            code = DUPLICATED if twins else REORDERED
            what = (
                f"a copy of seal {twins[0]}"
                if twins
                else f"the seal of sequence {predicate.sequence}"
            )
            self._add(
                key,
                code,
                ERROR,
                f"file {name} holds {what}",
                sequence=sequence,
                file=name,
                expected=str(sequence),
                actual=str(predicate.sequence),
            )
            return
        for problem in seal_time_findings(predicate, self._times, self.now):
            self._add(key, problem.code, ERROR, problem.message, sequence=sequence, file=name)
        self._times.advance(predicate)
        self.parsed[sequence] = seal

    def check_incomplete_prune(self) -> None:
        """After every seal: the pruned sequences' files still present (an interrupted prune)."""
        incomplete = self._incomplete
        if not incomplete or self.prune is None:
            return
        key = (_SEAL_STEP, 1, 0)
        last = self.prune.last_sequence
        if last in self.seals and self.seal_digests[last] != self.prune.last_seal_sha256:
            self._add(
                key,
                BROKEN_LINK,
                ERROR,
                f"seal {last} differs from the one the prune record names",
                sequence=last,
                file=seal_name(last),
                expected=self.prune.last_seal_sha256,
                actual=self.seal_digests[last],
            )
        self._add(
            key,
            PRUNE_INCOMPLETE,
            WARNING,
            f"files of pruned sequences {incomplete[0]}-{incomplete[-1]} are still present "
            "(an interrupted prune; rerun it); they were not verified",
        )

    def check_signature(self, seal: ParsedSeal, entry: ChunkEntry, name: str) -> None:
        key = (_SEAL_STEP, 0, entry.sequence)
        if not seal.envelope.signatures:
            entry.signature = "unsigned"
            self._add(
                key,
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
            self._add(key, TRUST_ROOT_EXPIRED, ERROR, exc.describe())
            return
        except RoleError as exc:
            entry.signature = "wrong_role"
            self._add(key, WRONG_ROLE, ERROR, exc.message, sequence=entry.sequence, file=name)
            return
        except ThresholdNotMetError as exc:
            entry.signature = "failed"
            self._add(
                key, THRESHOLD_NOT_MET, ERROR, exc.message, sequence=entry.sequence, file=name
            )
            return
        except SignatureError as exc:
            entry.signature = "failed"
            self._add(
                key,
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
        """Every chunk not decided yet (at the end: the opener's chunks are measured now)."""
        open_tail = self.open_tail_sequence()
        sequences = sorted(
            s
            for s in self.chunk_sequences | set(self.parsed)
            if s >= self.start and s != open_tail and s not in self._chunks_done
        )
        self.measures.update(self.measure_all(sequences))
        for sequence in sequences:
            self._decide_chunk(sequence, final=True)

    def _all_seals_decided(self) -> bool:
        return self._next_seal == len(self._seal_order)

    def _decide_chunk(self, sequence: int, *, final: bool) -> bool:
        """The chunk step for one sequence; before the end (`final` false) only when what it
        says cannot change with events still to come. True when decided."""
        if not final:
            if sequence < self.start:
                self._chunks_done.add(sequence)  # pruned: not verified
                return True
            if sequence not in self._seals_done:
                return False  # its seal is still to come (or it has none: decided at the end)
        measure = self.measures[sequence]
        seal = self.parsed.get(sequence)
        owners: list[int] = []
        if (
            isinstance(measure, ChunkMeasure)
            and seal is not None
            and measure.sha256 != seal.subject_sha256
        ):
            owners = [
                s
                for s, sealed in self.parsed.items()
                if s != sequence and sealed.subject_sha256 == measure.sha256
            ]
            if not final and (
                (not owners and not self._all_seals_decided())
                or (owners and owners[0] not in self.measures)
            ):
                return False  # another sequence's chunk, or this one tampered: not known yet
        self._chunks_done.add(sequence)
        self.check_chunk(sequence, measure, seal, owners)
        return True

    def check_chunk(
        self, sequence: int, measure: ChunkMeasure | str, seal: ParsedSeal | None, owners: list[int]
    ) -> None:
        key = (_CHUNK_STEP, 0, sequence)
        entry = self.entry(sequence)
        name = chunk_name(sequence)
        if isinstance(measure, str):
            if seal is not None or sequence in self.chunk_sequences:
                entry.digest = "missing"
                self._add(
                    key,
                    MISSING_CHUNK,
                    ERROR,
                    f"chunk file is {measure}; its seal is present",
                    sequence=sequence,
                    file=name,
                )
            return
        entry.chunk_file = name
        entry.chunk_sha256 = measure.sha256
        entry.chunk_bytes = measure.size
        entry.records = measure.records
        entry.content_bytes = measure.content_bytes
        if sequence not in self.seals:
            self._add(
                key,
                ORPHAN_CHUNK,
                ERROR,
                "chunk without a seal: its records are not evidence",
                sequence=sequence,
                file=name,
            )
            return
        if seal is None:
            return  # the seal itself was already reported
        if measure.sha256 == seal.subject_sha256:
            self.check_content(seal, measure, entry, name)
            return
        entry.digest = "mismatch"
        if owners:
            owner = owners[0]
            owner_measure = self.measures.get(owner)
            intact_original = (
                isinstance(owner_measure, ChunkMeasure) and owner_measure.sha256 == measure.sha256
            )
            code = DUPLICATED if intact_original else REORDERED
            what = "a copy of chunk" if intact_original else "the chunk sealed as sequence"
            self._add(
                key,
                code,
                ERROR,
                f"file {name} holds {what} {owner}",
                sequence=sequence,
                file=name,
                expected=str(sequence),
                actual=str(owner),
            )
            return
        detail = ""
        content = seal.predicate.content
        if measure.error:
            detail = f"; it is {measure.error}"
        elif measure.records != content.records:
            detail = f"; it holds {measure.records} records where the seal says {content.records}"
        self._add(
            key,
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
        key = (_CHUNK_STEP, 0, entry.sequence)
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
                    self._add(
                        key,
                        problem.code,
                        ERROR,
                        problem.message,
                        sequence=entry.sequence,
                        file=name,
                    )
            return
        entry.digest = "mismatch"
        self._add(
            key,
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

    def check_first_and_link(self, sequence: int) -> None:
        """A seal at or after the start, in sequence order: the first one may declare the
        chain's start; each other one must name the seal before it."""
        if self._first_present is None:
            self._first_present = sequence
            first_seal = self.parsed.get(sequence)
            if (
                self.prune is None
                and sequence > 1
                and first_seal is not None
                and first_seal.predicate.previous is None
            ):
                self._coverage_start = sequence
                self.entry(sequence).link = "start"
                self._add(
                    (_COVERAGE_STEP, 0, 0),
                    DECLARED_START,
                    WARNING,
                    f"the chain declares its start at sequence {sequence}",
                    sequence=sequence,
                )
        seal = self.parsed.get(sequence)
        if seal is None:
            return
        entry = self.entry(sequence)
        if entry.link == "start":
            return
        self.check_link(sequence, seal, entry)

    def check_coverage(self) -> None:
        """After every seal: an empty chain, and the gaps between its start and its head."""
        present = sorted(s for s in self.seals if s >= self.start)
        if not present:
            message = (
                "no seal: the chain holds no evidence"
                if self.prune is None
                else "every seal was pruned; nothing remains to verify"
            )
            self._add((_COVERAGE_STEP, 0, 0), EMPTY_CHAIN, ERROR, message)
            return
        missing = [s for s in range(self._coverage_start, present[-1] + 1) if s not in self.seals]
        for low, high in _ranges(missing):
            span = f"sequence {low}" if low == high else f"sequences {low}-{high}"
            self._add(
                (_COVERAGE_STEP, 1, low),
                GAP,
                ERROR,
                f"{span} missing: no seal (chunk deleted or never delivered)",
                sequence=low,
                expected=f"{low}-{high}",
            )

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
            self._add(
                (_COVERAGE_STEP, 2, sequence),
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
        key = (_TAIL_STEP, 0, 0)
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
            self._add(
                key,
                RECOVERED,
                INFO,
                f"{len(recovered)} chunk(s) were recovered after an unclean stop "
                f"(sequences {_describe(recovered)}); {torn} torn line(s) counted as lost",
            )
        if present:
            head_seal = self.parsed.get(present[-1])
            if head_seal is None or not head_seal.predicate.final:
                severity = WARNING if self.options.allow_open else ERROR
                self._add(
                    key,
                    NO_FINAL_SEAL,
                    severity,
                    f"the last seal ({present[-1]}) is not final: the writer did not stop cleanly "
                    "or the chain is still open, so truncation of the tail cannot be excluded",
                    sequence=present[-1],
                )
        if self.report.loss.total:
            loss = self.report.loss
            self._add(
                key,
                EVENTS_LOST,
                WARNING,
                f"{loss.total} events were not recorded: {loss.ring_buffer_dropped} dropped by the "
                f"ring buffer, {loss.sampled_out} sampled out, {loss.filtered_out} filtered out, "
                f"{loss.torn_records} torn by a crash",
                actual=str(loss.total),
            )

    def check_other_files(self) -> None:
        key = (_FILES_STEP, 0, 0)
        for name in self.other_names:
            parsed = parse_name(name)
            if parsed is not None and parsed[1] in (PARTIAL_SUFFIX, PARTIAL_STATE_SUFFIX):
                if parsed[1] == PARTIAL_SUFFIX:
                    mid_seal = (
                        " (its chunk is published, its seal not yet)"
                        if parsed[0] == self.open_tail_sequence()
                        else ""
                    )
                    self._add(
                        key,
                        OPEN_CHUNK,
                        WARNING,
                        f"open chunk not sealed yet{mid_seal}: its records are not evidence "
                        "until sealed",
                        sequence=parsed[0],
                        file=name,
                    )
            elif is_temporary(name):
                self._add(
                    key, LEFTOVER_TEMP, INFO, "temporary file of an interrupted write", file=name
                )
            else:
                self._add(
                    key, UNEXPECTED_FILE, WARNING, "file is not part of the chain format", file=name
                )

    # --- the end ---------------------------------------------------------------------------------

    def finish(self) -> ChainReport:
        """Decide what is left and give the report (findings in the steps' fixed order)."""
        if self._expected_seals is not None and not self._streaming:
            self._restart()  # an event the layout did not announce: decide over all of it
        self.check_prune_record()
        for sequence in sorted(self.seals.keys() - self._seals_done):
            self.decide_seal(sequence)
        self.check_incomplete_prune()
        self.check_chunks()
        self.check_coverage()
        self.check_final_and_loss()
        self.check_other_files()
        if self.trust_root is None:
            severity = ERROR if self.options.require_signatures else WARNING
            self._add(
                (_LAST_STEP, 0, 0),
                SIGNATURES_NOT_CHECKED,
                severity,
                "no trust root given: seal signatures and signer roles were NOT checked "
                "(digests and links only); pass --trust-root to verify who sealed the chain",
            )
        self.report.findings = [finding for _, finding in sorted(self._keyed, key=_by_key)]
        self.report.chunks = [self.entries[s] for s in sorted(self.entries)]
        return self.report

    def _restart(self) -> None:
        """Forget every decision (not the events): `finish` then decides over all of them."""
        self.report = ChainReport(
            self.chain_id, self.report.location, trust_root_used=self.trust_root is not None
        )
        self._keyed = []
        self.entries = {}
        self.parsed = {}
        self.prune = None
        self.start = self._coverage_start = 1
        self.signatures_usable = self.verifier is not None
        self._prune_checked = False
        self._times = ChainTimes()
        self._seals_done = set()
        self._incomplete = []
        self._first_present = None
        self._chunks_done = set()


def _by_key(item: tuple[_FindingKey, Finding]) -> _FindingKey:
    return item[0]


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
