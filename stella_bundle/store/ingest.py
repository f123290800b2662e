"""Putting evidence into a store: sealed chains verified as they are stored, or plain NDJSON
marked unsigned.

A sealed chain goes through the project's chain verifier with a trust root (seals, collector
signatures, links, digests, time rules) in the same pass that stores it (`ChainIngest`): the
seals, signatures and links are checked first, each chunk file is then read once, measured for
the verifier and, when it is the sealed chunk, decoded into the store transaction; the verifier
reports a chunk's findings as the chunk is read and the rest when the chain's last chunk is,
and a chain that does not pass raises inside the transaction (at its first error), so nothing
of the ingest is kept. A chain still being written passes with its
sealed chunks (the open tail is not evidence yet). What is stored is what was verified: the
very bytes measured are the ones stored.

One ingest is one store transaction over every chain given: it lands whole or not at all.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from ..compression import DEFAULT_LIMITS, BoundedInflater
from ..coverage.inputs import evidence_chain_dirs
from ..digests import file_sha256
from ..errors import EvidenceChainError, InputError
from ..evidence.chain import (
    ChainReport,
    ChainVerifyOptions,
    read_chain_dir,
    verify_chain,
)
from ..evidence.layout import chunk_name
from ..evidence.measure import ChunkMeasure, chunk_times, measure_chunk
from ..evidence.reader import iter_chain_records_files
from ..evidence.report import ERROR, ChunkEntry
from ..evidence.seal import parse_seal
from ..formats.record import validate_record
from ..formats.trust_root import TrustRoot
from ..fsutil import open_regular_file
from ..observations.ndjson import iter_json_lines
from ..timeutil import canonical_timestamp
from .base import ChunkConflictError, IngestResult, ObservationStore, Provenance, StoreChunk
from .config import DEFAULT_MAX_BATCH_SIZE
from .rows import decoded_times, fast_decode

MAX_HINT_DAYS = 31
# Chunks the verifier measures itself when it finishes (files the ingest could not read):
# in parallel like `verify_chain`.
CHUNK_WORKERS = 2


@dataclass(frozen=True)
class VerifiedChain:
    directory: Path
    report: ChainReport


def verify_chains(evidence: str | Path, trust_root: TrustRoot) -> list[VerifiedChain]:
    """Verify every chain under `evidence`; the first chain that fails stops the ingest."""
    chains = []
    for directory in evidence_chain_dirs(evidence):
        report = verify_chain(directory, trust_root, require_signatures=True, allow_open=True)
        if not report.passed:
            errors = [f for f in report.findings if f.severity == ERROR]
            first = errors[0]
            more = f" (and {len(errors) - 1} more finding(s))" if len(errors) > 1 else ""
            raise EvidenceChainError(
                f"chain {report.chain_id} failed verification, nothing stored: "
                f"{first.code}: {first.message}{more}",
                path=directory,
            )
        chains.append(VerifiedChain(directory, report))
    return chains


def chain_chunks(chain: VerifiedChain) -> Iterator[StoreChunk]:
    """The verified chain's sealed chunks, read again and checked against their seals.

    Each chunk is decompressed (bounded by its sealed size) and its digests checked, then its
    records go through the verifier's msgspec fast path, the sealed line kept as the stored
    text; a chunk the fast path does not accept is read by the evidence reader instead
    (validate_record per line, errors naming the line).
    """
    directory = chain.directory
    report = chain.report

    def opener(sequence: int) -> IO[bytes]:
        return open(directory / chunk_name(sequence), "rb")

    for entry in report.chunks:
        if entry.digest != "ok" or entry.seal_file is None or entry.seal_sha256 is None:
            continue
        seal_path = directory / entry.seal_file
        seal = seal_path.read_bytes()
        if hashlib.sha256(seal).hexdigest() != entry.seal_sha256:
            raise EvidenceChainError(
                "seal changed after it was verified; nothing stored", path=seal_path
            )
        provenance = Provenance(
            report.chain_id, entry.sequence, entry.seal_sha256, tuple(entry.signers), True
        )
        content = _sealed_content(directory, entry.sequence, seal, str(seal_path))
        decoded = fast_decode(report.chain_id, entry.sequence, content)
        if decoded is not None:
            yield StoreChunk(provenance, seal=seal, prepared=decoded)
            continue
        records = list(
            iter_chain_records_files(
                report.chain_id, {entry.sequence: seal}, opener, location=str(directory)
            )
        )
        yield StoreChunk(provenance, records, seal)


def _sealed_content(directory: Path, sequence: int, seal: bytes, seal_source: str) -> bytes:
    """The chunk's uncompressed bytes: the file's digest checked against the seal again, and
    the content's size (read no further than one byte past it: a bomb stops there)."""
    parsed = parse_seal(seal, seal_source)
    path = directory / chunk_name(sequence)
    compressed = path.read_bytes()
    if hashlib.sha256(compressed).hexdigest() != parsed.subject_sha256:
        raise EvidenceChainError("chunk changed after it was verified; nothing stored", path=path)
    return _inflate(compressed, parsed.predicate.content.bytes, path)


def _inflate(compressed: bytes, declared: int, path: Path) -> bytes:
    """Sealed compressed bytes inflated, no further than one byte past the sealed size."""
    # The toolkit's bounded inflater (ratio and size); at most what the seal declares + 1.
    reader = BoundedInflater(
        io.BytesIO(compressed),
        "zstd",
        path,
        replace(DEFAULT_LIMITS, max_bytes=declared + 1),
        corrupt_error=EvidenceChainError,
    )
    content = b"".join(iter(lambda: reader.read(declared + 1 - reader.total), b""))
    # The compressed bytes are the ones whose digest was checked (same sha256), so their
    # content is the content whose digest was checked; its size is checked again.
    if len(content) != declared:
        raise EvidenceChainError(
            "chunk content differs from its sealed size; nothing stored", path=path
        )
    return content


def sealed_days(chains: Sequence[VerifiedChain]) -> set[dt.date]:
    """The UTC days the seals' windows span: where the records should fall (a hint only; a
    record outside its seal's window still gets stored)."""
    return set().union(*(_seal_days(chain.report.chunks) for chain in chains))


def _seal_days(entries: Iterable[ChunkEntry]) -> set[dt.date]:
    days: set[dt.date] = set()
    for entry in entries:
        if entry.first_observed_at and entry.last_observed_at:
            first = dt.date.fromisoformat(canonical_timestamp(entry.first_observed_at)[:10])
            last = dt.date.fromisoformat(canonical_timestamp(entry.last_observed_at)[:10])
            if (last - first).days > MAX_HINT_DAYS:
                continue  # a window that wide is no hint worth a partition per day
            days.update(first + dt.timedelta(days=n) for n in range((last - first).days + 1))
    return days


class ChainIngest:
    """One chain stored while it is verified: the chain verifier (evidence/chain.py, the one
    implementation of the chain rules) is told the directory's layout and fed its seals first
    (signatures and links decided, so each chunk's signers are known), then each chunk's
    measure as the chunk is read for storing. The first error it reports stops the ingest
    there: the chunks after it are not read, and the caller's store transaction rolls back.

    Each chunk file is read and inflated once: measured for the verifier from those bytes and,
    when they are the sealed ones (file and content digests as sealed), decoded for the store,
    so the server copies chunk N while chunk N+1 is verified and decoded.
    """

    def __init__(self, directory: Path, trust_root: TrustRoot) -> None:
        self.files = read_chain_dir(directory)
        self.machine = self.files.machine(
            trust_root,
            ChainVerifyOptions(require_signatures=True, allow_open=True, workers=CHUNK_WORKERS),
        )
        self.stored: dict[int, str] = {}  # sequence -> seal sha256 of the chunks given to store
        self.report: ChainReport | None = None

    def fail_early(self) -> None:
        """A seal, signature or link that fails already fails the chain: decided whole (every
        chunk measured) before anything is stored, so the message is the verifier's full one."""
        if any(f.severity == ERROR for f in self.machine.decided):
            self.finish()

    def days(self) -> set[dt.date]:
        return _seal_days(self.machine.entries.values())

    def chunks(self) -> Iterator[StoreChunk]:
        machine, files = self.machine, self.files
        for sequence in sorted(machine.parsed):
            seal = machine.parsed[sequence]
            entry = machine.entries[sequence]
            path = files.directory / chunk_name(sequence)
            try:
                with open_regular_file(path) as handle:
                    compressed = handle.read()
            except (OSError, InputError):
                continue  # measured (and reported) by the verifier when it finishes
            declared = seal.predicate.content
            # The bound the verifier applies to a chunk it opens itself (evidence/chain.py);
            # the records' times are folded below, from the decoding when there is one.
            blocks: list[bytes] = []
            measure = measure_chunk(
                io.BytesIO(compressed), declared.bytes + (1 << 20), blocks, with_times=False
            )
            if (
                measure.error
                or measure.sha256 != seal.subject_sha256
                or measure.content_sha256 != declared.sha256
                or measure.content_bytes != declared.bytes
                or entry.seal_sha256 is None
            ):
                # Not the sealed chunk: the verifier fails the chain once it can tell.
                if measure.error is None:
                    measure = replace(measure, times=chunk_times(blocks))
                self.feed(sequence, measure)
                continue
            # The content whose digest was just measured equal to the sealed one.
            content = b"".join(blocks)
            decoded = fast_decode(files.chain_id, sequence, content, measure.records)
            times = chunk_times(blocks) if decoded is None else decoded_times(decoded)
            del blocks
            self.feed(sequence, replace(measure, times=times))
            provenance = Provenance(
                files.chain_id, sequence, entry.seal_sha256, tuple(entry.signers), True
            )
            self.stored[sequence] = entry.seal_sha256
            seal_bytes = files.seals[sequence]
            if decoded is not None:
                yield StoreChunk(provenance, seal=seal_bytes, prepared=decoded)
                continue
            records = list(
                iter_chain_records_files(
                    files.chain_id,
                    {sequence: seal_bytes},
                    functools.partial(_reopen, compressed),
                    location=str(files.directory),
                )
            )
            yield StoreChunk(provenance, records, seal_bytes)

    def feed(self, sequence: int, measure: ChunkMeasure) -> None:
        """A chunk's measure to the verifier; the first error it decides from it ends the
        ingest there (raised inside the store transaction: rolled back)."""
        decided = len(self.machine.decided)
        self.machine.chunk(sequence, measure)
        for finding in self.machine.decided[decided:]:
            if finding.severity == ERROR:
                raise EvidenceChainError(
                    f"chain {self.files.chain_id} failed verification, nothing stored: "
                    f"{finding.code}: {finding.message} (decided at chunk {sequence}; the "
                    "chunks after it were not read)",
                    path=self.files.directory,
                )

    def finish(self) -> ChainReport:
        """The verifier's decision; a failing chain raises (nothing of the ingest is kept)."""
        report = self.machine.finish()
        self.report = report
        if not report.passed:
            errors = [f for f in report.findings if f.severity == ERROR]
            first = errors[0]
            more = f" (and {len(errors) - 1} more finding(s))" if len(errors) > 1 else ""
            raise EvidenceChainError(
                f"chain {report.chain_id} failed verification, nothing stored: "
                f"{first.code}: {first.message}{more}",
                path=self.files.directory,
            )
        verified = {
            e.sequence: e.seal_sha256
            for e in report.chunks
            if e.digest == "ok" and e.seal_file is not None and e.seal_sha256 is not None
        }
        if verified != self.stored:  # cannot happen when the chain passes; checked anyway
            raise EvidenceChainError(
                f"chain {report.chain_id}: the chunks read for storing are not the verified "
                "ones, nothing stored",
                path=self.files.directory,
            )
        return report


def _reopen(data: bytes, _sequence: int) -> IO[bytes]:
    return io.BytesIO(data)


def ingest_evidence(
    store: ObservationStore, evidence: str | Path, trust_root: TrustRoot | None
) -> IngestResult:
    """Verify and store every chain under `evidence` (an evidence or chain directory), in one
    store transaction that keeps nothing unless every chain passes (`ChainIngest`)."""
    if trust_root is None:
        raise InputError(
            "a trust root is required: evidence is verified before it is stored",
            field="--trust-root",
        )
    chains = [ChainIngest(directory, trust_root) for directory in evidence_chain_dirs(evidence)]
    for chain in chains:
        chain.fail_early()
    store.prepare_days(set().union(*(chain.days() for chain in chains)))

    def chunks() -> Iterator[StoreChunk]:
        for chain in chains:
            yield from chain.chunks()
            chain.finish()  # raises inside the store transaction: rolled back

    result = store.store_chunks(chunks())
    result.chains = [_chain_summary(chain.report) for chain in chains if chain.report is not None]
    return result


def _chain_summary(report: ChainReport) -> dict[str, Any]:
    return {
        "chain_id": report.chain_id,
        "chunks": len(report.chunks),
        "records": report.records,
        "final_seal": report.final_seal,
        "events_lost": report.events_lost,
        "warnings": sorted({f.code for f in report.findings if f.severity != ERROR}),
    }


def ndjson_chain_id(digest: str) -> str:
    return f"ndjson-{digest[:16]}"


def ndjson_chunks(path: str | Path, batch: int = DEFAULT_MAX_BATCH_SIZE) -> list[StoreChunk]:
    """A plain NDJSON file as unsigned chunks of `batch` records (every line validated first:
    a bad line stores nothing). Chain `ndjson-<sha256 prefix>`, seal_sha256 = the file's sha256,
    so ingesting the same file again adds nothing."""
    file_sha = file_sha256(path)
    chain_id = ndjson_chain_id(file_sha)
    records: list[dict[str, Any]] = [
        validate_record(value, path, number) for number, value in iter_json_lines(path)
    ]
    return [
        StoreChunk(
            Provenance(chain_id, index + 1, file_sha, (), signed=False),
            records[start : start + batch],
        )
        for index, start in enumerate(range(0, len(records), batch))
    ]


def ingest_ndjson(
    store: ObservationStore, paths: Sequence[str | Path], batch: int = DEFAULT_MAX_BATCH_SIZE
) -> IngestResult:
    chunks: list[StoreChunk] = []
    for path in paths:
        if not Path(path).is_file():
            found = Path(path)
            what = (
                "observation file not found"
                if not found.exists()
                else "expected an NDJSON file, found a directory (give --evidence DIR for a "
                "sealed chain)"
                if found.is_dir()
                else "expected an NDJSON file, found no regular file (a device or FIFO)"
            )
            raise InputError(what, path=path)
        chunks += ndjson_chunks(path, batch)
    return store.store_chunks(chunks)


def raise_conflicts(result: IngestResult, store: ObservationStore) -> None:
    """Turn refused chunks into the error the CLI reports (one line, every conflict named)."""
    if not result.conflicts:
        return
    first = result.conflicts[0]
    more = f" (and {len(result.conflicts) - 1} more)" if len(result.conflicts) > 1 else ""
    raise ChunkConflictError(
        f"store {store.display_url}: conflicting chunk, nothing stored: {first.describe()}{more}"
    )
