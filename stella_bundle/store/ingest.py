"""Putting evidence into a store: sealed chains verified first, or plain NDJSON marked unsigned.

A sealed chain is verified whole with the project's chain verifier and a trust root (seals,
collector signatures, links, digests, time rules) before any of it is stored; a chain still
being written passes with its sealed chunks (the open tail is not evidence yet). Its chunks are
then read back through the evidence reader, which checks each chunk against its seal again, so
what is stored is what was verified even if the files changed in between.

One ingest is one store transaction over every chain given: it lands whole or not at all.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from ..compression import DEFAULT_LIMITS, BoundedInflater
from ..coverage.inputs import evidence_chain_dirs
from ..digests import file_sha256
from ..errors import EvidenceChainError, InputError
from ..evidence.chain import ChainReport, verify_chain
from ..evidence.layout import chunk_name
from ..evidence.reader import iter_chain_records_files
from ..evidence.report import ERROR
from ..evidence.seal import parse_seal
from ..formats.record import validate_record
from ..formats.trust_root import TrustRoot
from ..observations.ndjson import iter_json_lines
from .base import ChunkConflictError, IngestResult, ObservationStore, Provenance, StoreChunk
from .config import DEFAULT_MAX_BATCH_SIZE
from .rows import canonical_time, fast_decode

MAX_HINT_DAYS = 31


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
    declared = parsed.predicate.content
    # The toolkit's bounded inflater (ratio and size); at most what the seal declares + 1.
    reader = BoundedInflater(
        io.BytesIO(compressed),
        "zstd",
        path,
        replace(DEFAULT_LIMITS, max_bytes=declared.bytes + 1),
        corrupt_error=EvidenceChainError,
    )
    content = b"".join(iter(lambda: reader.read(declared.bytes + 1 - reader.total), b""))
    # The compressed bytes are the ones the verifier measured (same sha256), so their content
    # is the content whose digest it checked; its size is checked again, its hash is not.
    if len(content) != declared.bytes:
        raise EvidenceChainError(
            "chunk content differs from its sealed size; nothing stored", path=path
        )
    return content


def sealed_days(chains: Sequence[VerifiedChain]) -> set[dt.date]:
    """The UTC days the seals' windows span: where the records should fall (a hint only; a
    record outside its seal's window still gets stored)."""
    days: set[dt.date] = set()
    for chain in chains:
        for entry in chain.report.chunks:
            if entry.first_observed_at and entry.last_observed_at:
                first = dt.date.fromisoformat(canonical_time(entry.first_observed_at)[:10])
                last = dt.date.fromisoformat(canonical_time(entry.last_observed_at)[:10])
                if (last - first).days > MAX_HINT_DAYS:
                    continue  # a window that wide is no hint worth a partition per day
                days.update(first + dt.timedelta(days=n) for n in range((last - first).days + 1))
    return days


def ingest_evidence(
    store: ObservationStore, evidence: str | Path, trust_root: TrustRoot | None
) -> IngestResult:
    """Verify then store every chain under `evidence` (an evidence or chain directory)."""
    if trust_root is None:
        raise InputError(
            "a trust root is required: evidence is verified before it is stored",
            field="--trust-root",
        )
    chains = verify_chains(evidence, trust_root)
    store.prepare_days(sealed_days(chains))

    def chunks() -> Iterator[StoreChunk]:
        for chain in chains:
            yield from chain_chunks(chain)

    result = store.store_chunks(chunks())
    result.chains = [
        {
            "chain_id": c.report.chain_id,
            "chunks": len(c.report.chunks),
            "records": c.report.records,
            "final_seal": c.report.final_seal,
            "events_lost": c.report.events_lost,
            "warnings": sorted({f.code for f in c.report.findings if f.severity != ERROR}),
        }
        for c in chains
    ]
    return result


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
            raise InputError("observation file not found", path=path)
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
