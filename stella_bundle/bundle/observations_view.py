"""The merged observations view: every chain's records, canonical, sorted, one NDJSON file.

The view's lines are the chunks' lines byte for byte (the collector writes canonical JSON and
seals those bytes), ordered by `observed_at` with an external merge sort (bounded runs spilled
to temporary files, then a k-way merge) so memory stays flat however much evidence there is.
The verifier proves the view holds exactly the chains' records without sorting anything: by
a tag of each block of the chunks' lines (the view must be these pieces, in order) when it is
one chain in its own order, else by an order-independent digest of the multiset of lines.
The build hashes and deflates a single chain's decompressed bytes as the view while worker
processes check every chunk (`check_chunk`: records, observed_at order, clean lines); the
archive takes the deflated bytes as they are. It writes a view file only when the workers say
the chain is not in order or not clean lines.
"""

from __future__ import annotations

import hashlib
import heapq
import multiprocessing
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard

from ..compression import DEFAULT_LIMITS, ZSTD_MAGIC, BoundedInflater, DeflateSegment
from ..coverage.fastdecode import decode_block
from ..coverage.scan import BlockScan, ObservationAggregator
from ..digests import PREFIXED_SHA256_RE, HashingReader, HashingWriter
from ..errors import InternalError, MalformedDocumentError, StellaError
from ..formats.manifest import ORDER_CHAIN, ORDER_MERGED
from ..heap import keep_freed_blocks
from ..observations.ndjson import open_ndjson
from ..timeutil import canonical_timestamp
from .streams import whole_line_blocks

# Python holds ~2.5x the line bytes per buffered line (bytes, str key, tuple, list slot).
RUN_BYTES = 16 * 1024 * 1024
# Chunk bytes (compressed) from which records are validated in worker processes, beside the
# main pass (forking one costs a few ms; 256 KiB of zstd is ~2-30 MB of lines).
PARALLEL_MIN_BYTES = 256 * 1024
WORKER_BLOCK = 1 << 20
READ_BLOCK = 1 << 20
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
    multiset: str | None
    sha256: str
    size: int
    # "chain": the view is one chain's lines in their own order (the verifier then compares it
    # piece by piece with each chunk's lines instead of hashing every line); "merged": else.
    order: str
    # True: the view is the decompressed bytes of `chunks` as they are (one chain, in order,
    # of clean lines; none for a chain without chunks) and was not written to the output file:
    # it was deflated as it was read, into `deflated` (a `compression.DeflateSegment` of `size`
    # bytes with CRC-32 `crc`), which the archive takes as it is (`add_deflated`).
    streamed: bool = False
    chunks: tuple[Path, ...] = ()
    # The sha256 of each chunk file as it was read: the chunks' own entries must be these
    # bytes (the build refuses a chunk that changed since).
    chunk_sha256: tuple[str, ...] = ()
    deflated: Path | None = None
    crc: int = 0


def view_blocks(output: Path) -> Iterator[bytes]:
    """The bytes of a view `write_merged_view` wrote to `output` (not `streamed`), by blocks."""
    with open(output, "rb") as handle:
        yield from iter(lambda: handle.read(READ_BLOCK), b"")


class TimeSpan:
    """Earliest and latest moment of a set of windows (canonical UTC strings compare in order)."""

    def __init__(self) -> None:
        self.first: str | None = None
        self.last: str | None = None

    def add_window(self, first: str | None, last: str | None) -> None:
        if first is not None:
            start = canonical_timestamp(first)
            if self.first is None or start < self.first:
                self.first = start
        if last is not None:
            end = canonical_timestamp(last)
            if self.last is None or end > self.last:
                self.last = end


def chunk_blocks(chunk: Path) -> Iterator[tuple[bytes, list[bytes]]]:
    """(block, its non-empty lines) for a chunk file, in whole-line blocks."""
    with open_ndjson(chunk) as handle:
        try:
            for block in whole_line_blocks(iter(lambda: handle.read(READ_BLOCK), b""), str(chunk)):
                lines = [line for line in block.split(b"\n") if line.strip()]
                if lines:
                    yield block, lines
        except zstandard.ZstdError as exc:
            raise MalformedDocumentError(f"corrupt zstd data: {exc}", path=chunk) from exc


def block_keys(block: bytes, lines: list[bytes]) -> list[str]:
    """The observed_at of each line: one regex pass over the block, line by line if it misses."""
    keys = [match.decode() for match in OBSERVED_AT_TAIL.findall(block)]
    if len(keys) != len(lines):
        keys = [observed_at_of(line) for line in lines]
    return keys


def _chain_lines(chunks: Sequence[Path]) -> Iterator[bytes]:
    for chunk in chunks:
        for _block, lines in chunk_blocks(chunk):
            yield from lines


def _sorted_runs(chunks: Sequence[Path], scratch: Path) -> list[Path]:
    """External sort of one chain whose records are out of order: bounded sorted runs."""
    runs: list[Path] = []
    buffer: list[tuple[str, bytes]] = []
    buffered = 0

    def spill() -> None:
        nonlocal buffered
        buffer.sort()
        with tempfile.NamedTemporaryFile(
            "wb", dir=scratch, prefix="run-", suffix=".ndjson", delete=False
        ) as run:
            run.writelines(line + b"\n" for _key, line in buffer)
        runs.append(Path(run.name))
        buffer.clear()
        buffered = 0

    for chunk in chunks:
        for block, lines in chunk_blocks(chunk):
            buffer.extend(zip(block_keys(block, lines), lines, strict=True))
            buffered += len(block) + 160 * len(lines)
            if buffered >= RUN_BYTES:
                spill()
    if buffer:
        spill()
    return runs


def _run_lines(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        for raw in handle:
            yield raw.rstrip(b"\n")


@dataclass(frozen=True)
class ChunkOrder:
    """What the view needs of one chunk: its records (non-blank lines), whether they are in
    observed_at order (first and last key), and whether its bytes are already the view's
    (`clean`: every line non-blank and ended by a newline)."""

    records: int
    in_order: bool
    first: str | None
    last: str | None
    clean: bool


# A chunk's error as a worker hands it back: class, message, path, line, field.
ChunkError = tuple[type[StellaError], str, str | None, int | None, str | None]


def check_chunk(path: str) -> tuple[ChunkError | None, ChunkOrder | None]:
    """Run in a worker process (or inline for small inputs): the function-map verifier's
    checks of every record of one chunk and its order for the view; the first error, or the
    order."""
    order = _ChunkOrderCheck()
    scan = BlockScan(ObservationAggregator(), path)
    try:
        with open_ndjson(path) as handle:
            # 1 MiB whole-line blocks: one worker per CPU, each holding one decoded block.
            for block in whole_line_blocks(iter(lambda: handle.read(WORKER_BLOCK), b""), path):
                newlines = block.count(b"\n")
                keys = plain_records_keys(block, newlines)
                if keys is None:
                    order.feed(block)
                    scan.feed(block, newlines)  # validates every line; raises naming a bad one
                else:
                    order.feed_keys(keys)
                    scan.line_base += newlines
    except StellaError as exc:
        return (type(exc), exc.message, exc.path, exc.line, exc.field), None
    except zstandard.ZstdError as exc:
        return (MalformedDocumentError, f"corrupt zstd data: {exc}", path, None, None), None
    return None, order.result()


_OBSERVED_AT_KEY = b'"observed_at"'


def keys_are_plain(block: bytes, newlines: int) -> bool:
    """Whether, in a block of valid records (one per line), each line's observed_at is what
    every reader of the raw line takes for its key (`plain_block_keys`, `block_keys`,
    `observed_at_of`), however the lines are cut into blocks, and is the decoded value: the
    block ends with a newline, holds no backslash (no escape, no quote inside a string: every
    `"observed_at":"` is a key, its raw value the decoded one) and as many `"observed_at"` as
    lines, each followed by `:"` (so each line holds exactly one, the required key)."""
    return (
        block.endswith(b"\n")
        and b"\\" not in block
        and block.count(_OBSERVED_AT_KEY) == newlines
        and block.count(_OBSERVED_AT) == newlines
    )


def plain_records_keys(block: bytes, newlines: int) -> list[str] | None:
    """The observed_at keys of a block of the collector's plain records, validated (what the
    map verifier's scan accepts without a map, window or scope), in one msgspec pass; None for
    any other block, which then takes the scan's own paths and `_ChunkOrderCheck.feed`. The
    keys are those `plain_block_keys` reads from the bytes (`keys_are_plain`)."""
    if not keys_are_plain(block, newlines):
        return None
    decoded = decode_block(block, newlines)
    if decoded is None:
        return None
    records, keys, _ = decoded
    # The only check the scan's fold adds without a map: hashes of nodes outside the map.
    if not all(map(PREFIXED_SHA256_RE.match, {record.node_hash for record in records})):
        return None
    return keys


class _ChunkOrderCheck:
    """Sees every whole-line block of a chunk: counts its records, checks their observed_at
    order and whether each block is already its non-blank lines, each ended by a newline."""

    def __init__(self) -> None:
        self.records = 0
        self.in_order = True
        self.clean = True
        self.first: str | None = None
        self.last = ""

    def feed_keys(self, keys: list[str]) -> None:
        """`feed` of a block whose keys `plain_records_keys` read (a clean block)."""
        if keys:
            self._fold(len(keys), keys[0], keys[-1], keys == sorted(keys))

    def _fold(self, count: int, first: str, last: str, ordered: bool) -> None:
        self.records += count
        if self.first is None:
            self.first = first
        if not ordered or first < self.last:
            self.in_order = False
        self.last = last

    def feed(self, block: bytes) -> None:
        fast = plain_block_keys(block)  # the collector's blocks: C-speed searches only
        if fast is not None:
            keys = [key.decode() for key in (fast[:1] + fast[-1:])] if fast else []
            ordered = fast == sorted(fast)
            count = len(fast)
        else:
            lines = [line for line in block.split(b"\n") if line.strip()]
            self.clean = self.clean and block.endswith(b"\n") and len(lines) == block.count(b"\n")
            keys = block_keys(block, lines)
            ordered = keys == sorted(keys)
            count = len(lines)
        if count:
            self._fold(count, keys[0], keys[-1], ordered)

    def result(self) -> ChunkOrder:
        return ChunkOrder(
            self.records, self.in_order, self.first, self.last if self.first else None, self.clean
        )


def _chain_in_order(orders: Sequence[ChunkOrder]) -> bool:
    last = ""
    for order in orders:
        if order.first is None or order.last is None:
            continue  # no records
        if not order.in_order or order.first < last:
            return False
        last = order.last
    return True


class _Validation:
    """Chunk checks (`check_chunk`) beside the main pass: worker processes for large inputs
    (the scan is CPU-bound Python), inline otherwise (each chunk checked when the pass reaches
    it, so the first error in chunk order is the one raised)."""

    def __init__(self, chunks: Sequence[Path]) -> None:
        self.pool: ProcessPoolExecutor | None = None
        self.futures: list[Future[Any]] = []
        self.done: dict[Path, ChunkOrder] = {}
        self.chunks = list(chunks)
        cpus = len(os.sched_getaffinity(0))
        total = sum(chunk.stat().st_size for chunk in chunks)
        if total >= PARALLEL_MIN_BYTES and cpus > 1:
            # The main pass only copies and hashes: every CPU checks chunks. The workers
            # inherit the allocator's thresholds: blocks freed are reused.
            keep_freed_blocks()
            self.pool = ProcessPoolExecutor(cpus, mp_context=multiprocessing.get_context("fork"))
            self.futures = [self.pool.submit(check_chunk, str(c)) for c in chunks]

    def inline_check(self, chunk: Path) -> None:
        if self.pool is None and chunk not in self.done:
            self.done[chunk] = _raise_or_order(check_chunk(str(chunk)))

    def orders(self) -> list[ChunkOrder]:
        """Every chunk's order, in chunk order; raises the first chunk's error."""
        if self.pool is None:
            for chunk in self.chunks:
                self.inline_check(chunk)
            return [self.done[chunk] for chunk in self.chunks]
        return [_raise_or_order(future.result()) for future in self.futures]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _raise_or_order(result: tuple[ChunkError | None, ChunkOrder | None]) -> ChunkOrder:
    error, order = result
    if error is not None:
        kind, message, path, line, field = error
        raise kind(message, path=path, line=line, field=field)
    assert order is not None
    return order


# The value of the first `"observed_at":"` of each line, and the rest of that line.
_FIRST_OBSERVED_AT = re.compile(rb'"observed_at":"([^"\n]*)"[^\n]*\n')


def plain_block_keys(block: bytes) -> list[bytes] | None:
    """The observed_at keys (bytes) of a whole-line block in which every line ends with a
    newline and holds `"observed_at":"` exactly once (as many first occurrences as newlines,
    and as many occurrences in all: so no line is blank), keys all ASCII (bytes order is then
    the str order `block_keys` gives); None for any other block, which takes the line-by-line
    path. The key is then what `observed_at_of` reads from its line (the only occurrence is
    the last one). C-speed searches only: the collector's blocks are all like this."""
    if not block.endswith(b"\n"):
        return None
    keys: list[bytes] = _FIRST_OBSERVED_AT.findall(block)
    lines = block.count(b"\n")
    if len(keys) != lines or block.count(_OBSERVED_AT) != lines or not b"".join(keys).isascii():
        return None
    return keys


def _content_blocks(chunk: Path, digests: list[str] | None = None) -> Iterator[bytes]:
    """A chunk's decompressed bytes, as they are (bounded as `open_ndjson` bounds them); the
    sha256 of its bytes on disk is appended to `digests` once they are read to the end."""
    try:
        raw = open(chunk, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise MalformedDocumentError(f"cannot open: {exc.strerror}", path=chunk) from exc
    with raw:
        hashing = HashingReader(raw)
        head = hashing.read(len(ZSTD_MAGIC))
        try:
            if head == ZSTD_MAGIC:
                inflater = BoundedInflater(_Prefixed(head, hashing), "zstd", chunk, DEFAULT_LIMITS)
                yield from iter(lambda: inflater.read(READ_BLOCK), b"")
            else:  # not compressed (`open_ndjson` reads such a file as it is)
                if head:
                    yield head
                yield from iter(lambda: hashing.read(READ_BLOCK), b"")
        except zstandard.ZstdError as exc:
            raise MalformedDocumentError(f"corrupt zstd data: {exc}", path=chunk) from exc
        except OSError as exc:
            raise MalformedDocumentError(f"cannot read: {exc.strerror}", path=chunk) from exc
    if digests is not None:
        digests.append(hashing.digest.hexdigest())


class _Prefixed:
    """`head` (already read) and then the rest of `rest`."""

    def __init__(self, head: bytes, rest: HashingReader) -> None:
        self._head = head
        self._rest = rest

    def read(self, size: int = -1) -> bytes:
        if self._head:
            data = self._head if size < 0 else self._head[:size]
            self._head = self._head[len(data) :]
            return data
        return self._rest.read(size)

    def readable(self) -> bool:
        return True


def write_merged_view(
    chains: Sequence[Sequence[Path]],
    output: Path,
    scratch: Path,
    meanwhile: Callable[[], None] | None = None,
) -> ViewStats:
    """Write every record line of every chain to `output`, sorted by observed_at.

    Records are validated first (the function-map verifier's scan; errors name chunk and
    line). A chain already in time order (the usual case: the collector appends as it goes)
    is streamed as it is; only a chain out of order goes through the external sort. Several
    sorted streams are merged by observed_at. `meanwhile` is called while worker processes
    still check the chunks (the caller's work that needs no view: it then costs no time).
    """
    validation = _Validation([chunk for chunks in chains for chunk in chunks])
    try:
        return _write_view(chains, output, scratch, validation, meanwhile)
    finally:
        validation.close()


def _write_view(
    chains: Sequence[Sequence[Path]],
    output: Path,
    scratch: Path,
    validation: _Validation,
    meanwhile: Callable[[], None] | None = None,
) -> ViewStats:
    streams: list[Iterator[bytes]] = []
    runs: list[Path] = []
    records = 0
    # The sha256 and size of a single chain's bytes, taken as the chain is read: the view when
    # it is in its own order and of clean lines (what `_write_batch` would write).
    sink: HashingWriter | None = None
    segment: DeflateSegment | None = None
    deflated = scratch / "observations.deflate"
    chunk_sha256: list[str] = []  # of each chunk's bytes on disk, in order
    if len(chains) == 1:
        # The usual case: one chain, in time order, of the collector's lines. Its view is its
        # chunks' bytes as they are, hashed and deflated for the archive while the chunks are
        # checked (order, records) beside this pass; written below (and the deflated bytes
        # dropped) only if they are not in order or not clean lines.
        with open(deflated, "wb") as handle:
            segment = DeflateSegment(handle)
            sink = HashingWriter(segment)
            for chunk in chains[0]:
                for block in _content_blocks(chunk, chunk_sha256):
                    sink.write(block)
                validation.inline_check(chunk)
            segment.finish()
    if meanwhile is not None:
        meanwhile()
    orders = iter(validation.orders())
    for chunks in chains:
        chain = [next(orders) for _ in chunks]
        records += sum(order.records for order in chain)
        in_order = _chain_in_order(chain)
        if sink is not None and in_order and all(order.clean for order in chain):
            digest = sink.digest.hexdigest()
            return ViewStats(
                records,
                None,
                digest,
                sink.count,
                ORDER_CHAIN,
                True,
                tuple(chains[0]),
                tuple(chunk_sha256),
                deflated,
                segment.crc if segment is not None else 0,
            )
        if in_order:
            streams.append(_chain_lines(chunks))
        else:
            chain_runs = _sorted_runs(chunks, scratch)
            runs += chain_runs
            streams += [_run_lines(run) for run in chain_runs]
    view_order = ORDER_CHAIN if len(chains) == 1 and not runs else ORDER_MERGED
    deflated.unlink(missing_ok=True)
    try:
        return _write_lines(streams, output, records, view_order)
    finally:
        for run in runs:
            run.unlink(missing_ok=True)


def _write_lines(
    streams: list[Iterator[bytes]], output: Path, records: int, view_order: str
) -> ViewStats:
    """The view from sorted streams of lines, merged by observed_at."""
    # The multiset is what the verifier compares a merged view by; a chain-order view is
    # compared by its pieces, so its lines need no hashing one by one.
    multiset = RecordMultiset() if view_order == ORDER_MERGED else None
    merged = streams[0] if len(streams) == 1 else heapq.merge(*streams, key=observed_at_of)
    with open(output, "wb") as handle:
        out = HashingWriter(handle)
        batch: list[bytes] = []
        for line in merged:
            batch.append(line)
            if len(batch) >= 4096:
                _write_batch(out, batch, multiset)
        _write_batch(out, batch, multiset)
    if multiset is not None and multiset.count != records:
        raise InternalError(f"merged view holds {multiset.count} of {records} records")
    return ViewStats(
        records,
        multiset.hexdigest() if multiset else None,
        out.digest.hexdigest(),
        out.count,
        view_order,
    )


def _write_batch(out: HashingWriter, batch: list[bytes], multiset: RecordMultiset | None) -> None:
    if not batch:
        return
    if multiset is not None:
        multiset.add_many(batch)
    out.write(b"\n".join(batch) + b"\n")
    batch.clear()
