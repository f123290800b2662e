"""The merged observations view: every chain's records, canonical, sorted, one NDJSON file.

The view's lines are the chunks' lines byte for byte (the collector writes canonical JSON and
seals those bytes), ordered by `observed_at` with an external merge sort (bounded runs spilled
to temporary files, then a k-way merge) so memory stays flat however much evidence there is.
An order-independent digest of the multiset of lines lets the verifier prove the view holds
exactly the chains' records without sorting anything itself.
"""

from __future__ import annotations

import hashlib
import heapq
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import zstandard

from ..errors import MalformedDocumentError
from ..functionmap.scan import ObservationAggregator
from ..observations.ndjson import open_ndjson
from ..timeutil import format_timestamp, parse_timestamp

# Python holds ~2.5x the line bytes per buffered line (bytes, str key, tuple, list slot).
RUN_BYTES = 16 * 1024 * 1024
_MODULUS = 1 << 256


class RecordMultiset:
    """Sum of the records' sha256 values modulo 2**256: equal for equal multisets, any order."""

    def __init__(self) -> None:
        self.total = 0
        self.count = 0

    def add(self, line: bytes) -> None:
        self.add_many((line,))

    def add_many(self, lines: Iterable[bytes]) -> None:
        """Fold many lines at once (the reduction runs in C: this is the verifier's hot loop)."""
        sha256 = hashlib.sha256
        digests = [sha256(line).digest() for line in lines]
        self.count += len(digests)
        # Reduced only when read: the sum grows by one bit per doubling of the count.
        self.total += sum(map(int.from_bytes, digests))

    def hexdigest(self) -> str:
        return (self.total % _MODULUS).to_bytes(32, "big").hex()


_OBSERVED_AT = b'"observed_at":"'
# The top-level observed_at of each canonical line of a block: only pid, pod_name, probe_type
# and purl may follow it. Lines this misses (escaped quotes) are handled by observed_at_of.
OBSERVED_AT_TAIL = re.compile(
    rb'"observed_at":"([^"\\\n]*)"(?:,"(?:pid|pod_name|probe_type|purl)":(?:"[^"\\\n]*"|[0-9]+))*\}$',
    re.MULTILINE,
)


def observed_at_of(line: bytes) -> str:
    """The top-level `observed_at` of a canonical record line, without parsing it.

    Canonical JSON sorts keys, so the only keys after `observed_at` are pid, pod_name,
    probe_type and purl (no unescaped quotes inside their values) while a nested `details`
    object comes before it: the last occurrence is the top-level one.
    """
    start = line.rfind(_OBSERVED_AT)
    if start < 0:
        return ""
    start += len(_OBSERVED_AT)
    end = line.find(b'"', start)
    return line[start:end].decode("ascii", "replace") if end > 0 else ""


@dataclass(frozen=True)
class ViewStats:
    records: int
    multiset: str
    sha256: str
    size: int


class TimeSpan:
    """Earliest and latest moment of a set of windows (canonical UTC strings compare in order)."""

    def __init__(self) -> None:
        self.first: str | None = None
        self.last: str | None = None

    def add_window(self, first: str | None, last: str | None) -> None:
        if first is not None:
            start = canonical_time(first)
            if self.first is None or start < self.first:
                self.first = start
        if last is not None:
            end = canonical_time(last)
            if self.last is None or end > self.last:
                self.last = end


def canonical_time(value: str) -> str:
    if len(value) == 27 and value.endswith("Z") and value[19] == ".":
        return value
    return format_timestamp(parse_timestamp(value))


def iter_chunk_lines(chunk: Path) -> Iterator[bytes]:
    """The record lines of a chunk file, after the map verifier's scan validated them all."""
    ObservationAggregator().scan_file(chunk)  # names file and line of the first bad record
    with open_ndjson(chunk) as handle:
        try:
            for raw in handle:
                line = raw.rstrip(b"\n")
                if line.strip():
                    yield line
        except zstandard.ZstdError as exc:
            raise MalformedDocumentError(f"corrupt zstd data: {exc}", path=chunk) from exc


def write_merged_view(chunks: Iterable[Path], output: Path, scratch: Path) -> ViewStats:
    """Write the sorted canonical NDJSON of all records in `chunks` to `output`."""
    runs: list[Path] = []
    buffer: list[tuple[str, bytes]] = []
    buffered = 0
    multiset = RecordMultiset()

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
        for line in iter_chunk_lines(chunk):
            multiset.add(line)
            buffer.append((observed_at_of(line), line))
            buffered += len(line) + 160
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
    return ViewStats(multiset.count, multiset.hexdigest(), digest.hexdigest(), size)


def _read_run(handle: IO[bytes]) -> Iterator[tuple[str, bytes]]:
    for raw in handle:
        key, _, line = raw.rstrip(b"\n").partition(b"\t")
        yield key.decode(), line
