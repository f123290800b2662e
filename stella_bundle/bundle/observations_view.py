"""The merged observations view: every chain's records, canonical, sorted, one NDJSON file.

Sorted with an external merge sort (bounded runs spilled to temporary files, then a k-way
merge) so memory stays flat however much evidence there is. An order-independent digest of
the record multiset lets the verifier prove the view holds exactly the chains' records.
"""

from __future__ import annotations

import hashlib
import heapq
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..canonical import canonical_record_bytes
from ..observations.ndjson import iter_json_lines
from ..observations.record import validate_record
from ..timeutil import format_timestamp, parse_timestamp

RUN_BYTES = 32 * 1024 * 1024
_MODULUS = 1 << 256


class RecordMultiset:
    """Sum of the records' sha256 values modulo 2**256: equal for equal multisets, any order."""

    def __init__(self) -> None:
        self.total = 0
        self.count = 0

    def add(self, canonical_line: bytes) -> None:
        self.total = (
            self.total + int.from_bytes(hashlib.sha256(canonical_line).digest())
        ) % _MODULUS
        self.count += 1

    def hexdigest(self) -> str:
        return self.total.to_bytes(32, "big").hex()


def sort_key(record: dict[str, Any], line: bytes) -> tuple[str, bytes]:
    return str(record.get("observed_at", "")), line


@dataclass(frozen=True)
class ViewStats:
    records: int
    multiset: str
    sha256: str
    size: int
    first_observed_at: str | None
    last_observed_at: str | None


class TimeSpan:
    """Earliest and latest moment the records speak of (canonical UTC strings compare in order)."""

    def __init__(self) -> None:
        self.first: str | None = None
        self.last: str | None = None

    def add(self, record: dict[str, Any]) -> None:
        observed = str(record["observed_at"])
        start = canonical_time(str(record.get("first_observed_at") or observed))
        end = canonical_time(str(record.get("last_observed_at") or observed))
        if self.first is None or start < self.first:
            self.first = start
        if self.last is None or end > self.last:
            self.last = end


def canonical_time(value: str) -> str:
    if len(value) == 27 and value.endswith("Z") and value[19] == ".":
        return value
    return format_timestamp(parse_timestamp(value))


def iter_chunk_records(chunk: Path) -> Iterator[dict[str, Any]]:
    for number, value in iter_json_lines(chunk):
        yield validate_record(value, chunk, number)


def write_merged_view(chunks: Iterable[Path], output: Path, scratch: Path) -> ViewStats:
    """Write the sorted canonical NDJSON of all records in `chunks` to `output`."""
    runs: list[Path] = []
    buffer: list[tuple[str, bytes]] = []
    buffered = 0
    multiset = RecordMultiset()
    span = TimeSpan()

    def spill() -> None:
        nonlocal buffered
        buffer.sort()
        with tempfile.NamedTemporaryFile(
            "wb", dir=scratch, prefix="run-", suffix=".ndjson", delete=False
        ) as run:
            for key, line in buffer:
                run.write(key.encode() + b"\t" + line + b"\n")
        runs.append(Path(run.name))
        buffer.clear()
        buffered = 0

    for chunk in chunks:
        for record in iter_chunk_records(chunk):
            line = canonical_record_bytes(record)
            multiset.add(line)
            span.add(record)
            buffer.append(sort_key(record, line))
            buffered += len(line) + 64
            if buffered >= RUN_BYTES:
                spill()
    digest = hashlib.sha256()
    size = 0
    with open(output, "wb") as out:
        if runs:
            if buffer:
                spill()
            handles = [open(run, "rb") for run in runs]  # noqa: SIM115 - closed below
            try:
                for _key, line in heapq.merge(*(_read_run(h) for h in handles)):
                    data = line + b"\n"
                    digest.update(data)
                    size += len(data)
                    out.write(data)
            finally:
                for handle in handles:
                    handle.close()
                for run in runs:
                    run.unlink(missing_ok=True)
        else:
            buffer.sort()
            for _key, line in buffer:
                data = line + b"\n"
                digest.update(data)
                size += len(data)
                out.write(data)
    return ViewStats(
        multiset.count, multiset.hexdigest(), digest.hexdigest(), size, span.first, span.last
    )


def _read_run(handle: IO[bytes]) -> Iterator[tuple[str, bytes]]:
    for raw in handle:
        key, _, line = raw.rstrip(b"\n").partition(b"\t")
        yield key.decode(), line
