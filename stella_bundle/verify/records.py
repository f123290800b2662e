"""The records' side of verification: each chunk decompressed once, the view compared.

A chunk's decompressed bytes feed, in one pass, its content digest, the function-map
verifier's aggregator (which validates every line and names file and line on error) and the
tally the observations view is compared with: when the view is one chain in its own order,
a Poly1305 tag of each block of the chunk's lines under a key drawn for it here (the view must
be these pieces, in chunk order), else a multiset of lines. `scan_chunk` needs nothing from the rest of the pass, so large chunks are
scanned in worker processes (`chunkwork.ChunkWork`) and their `ChunkScan`s folded in archive
order by `RecordPass.apply`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.poly1305 import Poly1305

from ..bundle.observations_view import (
    OBSERVED_AT_TAIL,
    RecordMultiset,
    keys_are_plain,
    observed_at_of,
    plain_block_keys,
)
from ..bundle.reader import ArchiveMember
from ..coverage.scan import AggregateState, BlockScan, ObservationAggregator
from ..errors import (
    ArchiveError,
    EvidenceChainError,
    MalformedDocumentError,
    SchemaValidationError,
)
from ..evidence.measure import ChunkMeasure
from ..evidence.timecheck import ChunkTimes
from ..formats.manifest import ORDER_CHAIN, ORDER_MERGED
from ..formats.scope import Scope

if TYPE_CHECKING:  # chunkwork runs this module's scans
    from .chunkwork import ChunkWork
from ..bundle.streams import LineTally, iter_zstd_blocks, whole_line_blocks
from ..digests import HashingReader
from .steps import StepOutcome

READ_BLOCK = 1 << 20


@dataclass(frozen=True)
class ChunkLimits:
    # One evidence chunk's uncompressed NDJSON; the writer rotates long before this.
    max_bytes: int = 4 * 1024**3
    max_ratio: int = 1000
    # Real chunks (zstd over JSON lines) stay under ~50:1; judged past 8 MiB of output.
    ratio_floor: int = 8 * 1024**2


@dataclass(frozen=True)
class ChunkSpec:
    """What scanning one chunk needs besides its bytes, the same in a worker process as in
    the main pass: the aggregator's map nodes, window and scope, and how the view is tallied."""

    expected: tuple[str, ...]
    window_from: str | None
    window_to: str | None
    scope: Scope | None
    chain_order: bool
    limits: ChunkLimits
    # ORDER_CHAIN: tag the pieces (False when the view is compared by spans, `chain_view`).
    tag_pieces: bool = True
    # `chain_view`: a one-time Poly1305 key drawn for this chunk, to tag its whole content
    # with (`ChunkScan.content_tag`), which the view's span of it must give.
    content_key: bytes | None = None

    @classmethod
    def of(
        cls,
        aggregator: ObservationAggregator,
        chain_order: bool,
        limits: ChunkLimits,
        tag_pieces: bool = True,
    ) -> ChunkSpec:
        return cls(
            tuple(aggregator.expected),
            aggregator.window_from,
            aggregator.window_to,
            aggregator.scope,
            chain_order,
            limits,
            tag_pieces,
        )


# A piece of a chain-order view: its length, a one-time Poly1305 key drawn at random when the
# chunk was scanned and the tag of its bytes under that key. The key is drawn after the bundle
# exists, so its author cannot make other bytes give the tag (a forgery succeeds with
# probability under 2^-86 for a piece of a few MiB), and the tag costs a third of a sha256:
# the view is compared with the chunks, which their seals' content sha256 vouch for.
Piece = tuple[int, bytes, bytes]


def piece_of(lines: bytes) -> Piece:
    key = os.urandom(32)
    return len(lines), key, Poly1305.generate_tag(key, lines)


@dataclass(frozen=True)
class ChunkScan:
    """One chunk's records, measured and folded; plain values, so a worker can return it."""

    content_sha256: str
    content_bytes: int
    records: int  # non-blank lines
    times: ChunkTimes
    aggregate: AggregateState
    # The first record error (message, path, line, field): the schemas step fails with it.
    error: tuple[str, str | None, int | None, str | None] | None
    # A hostile chunk (a zstd bomb, a line over the limit): the archive is refused.
    refusal: tuple[str, str | None, int | None, str | None] | None
    # ORDER_MERGED: the lines' multiset (sum, count); ORDER_CHAIN: the lines, each ended by a
    # newline, as pieces of the view, one per block of the chunk (`Piece`; none when not
    # `ChunkSpec.tag_pieces`).
    multiset: tuple[int, int] | None
    pieces: tuple[Piece, ...] | None
    # ORDER_CHAIN: whether the content is its lines, each a record ended by a newline (no
    # blank line), whose key any reader of the view takes alike however the view is cut
    # (`keys_are_plain`), the keys in order; the first and last key (None: no lines).
    plain: bool = False
    key_span: tuple[str, str] | None = None
    content_tag: bytes | None = None  # under `ChunkSpec.content_key`


def scan_chunk(stream: Any, name: str, spec: ChunkSpec) -> ChunkScan:
    """Decompress once; validate, fold and tally every record (run in a worker process for
    large chunks: `ChunkWork`). Reads `stream` (the compressed member) to its end."""
    content = hashlib.sha256()
    mac = Poly1305(spec.content_key) if spec.content_key is not None else None
    content_bytes = 0
    limits = spec.limits
    times = ChunkTimes()
    aggregator = ObservationAggregator(spec.expected, spec.window_from, spec.window_to, spec.scope)
    multiset = None if spec.chain_order else RecordMultiset()
    pieces = _Pieces(spec.tag_pieces) if spec.chain_order else None

    def blocks() -> Iterator[bytes]:
        nonlocal content_bytes
        for block in iter_zstd_blocks(
            stream,
            name,
            max_bytes=limits.max_bytes,
            max_ratio=limits.max_ratio,
            ratio_floor=limits.ratio_floor,
        ):
            content.update(block)
            if mac is not None:
                mac.update(block)
            content_bytes += len(block)
            yield block

    lines = LineTally(name, multiset)
    scan = BlockScan(aggregator, name)
    aggregator.times = times  # the scan folds each record's times as it reads it
    error = None
    try:
        # One cut into whole-line blocks and one line count per block, shared by the scan and
        # the tally; after a bad record the tally still sees every line (the digests too).
        for block in whole_line_blocks(blocks(), name):
            newlines = block.count(b"\n")
            records = False
            scan.keys = None
            if error is None:
                try:
                    records = scan.feed(block, newlines)
                except MalformedDocumentError as exc:
                    error = (
                        (exc.message, exc.path, exc.line, exc.field)
                        if isinstance(exc, SchemaValidationError)
                        else (exc.message, name, exc.line, exc.field)
                    )
            lines.feed_lines(block, newlines, records)
            if pieces is not None:
                pieces.feed(block, newlines, records, scan.keys)
        lines.finish()
    except ArchiveError as exc:
        return ChunkScan(
            "",
            0,
            0,
            times,
            aggregator.export(),
            None,
            (exc.message, exc.path, exc.line, exc.field),
            None,
            None,
        )
    finally:
        aggregator.times = None
    while stream.read(READ_BLOCK):  # the member's digest covers every byte
        pass
    return ChunkScan(
        content_sha256=content.hexdigest(),
        content_bytes=content_bytes,
        records=lines.lines,
        times=times.finish(),
        aggregate=aggregator.export(),
        error=error,
        refusal=None,
        multiset=(multiset.total, multiset.count) if multiset is not None else None,
        pieces=tuple(pieces.pieces) if pieces is not None else None,
        plain=pieces is not None and pieces.ordered,
        key_span=pieces.span() if pieces is not None else None,
        content_tag=mac.finalize() if mac is not None else None,
    )


class _Pieces:
    """A chunk's lines as pieces of a chain-order view, one per block (`Piece`), and whether
    all of them have plain keys in order (`ChunkScan.keys`)."""

    def __init__(self, tag: bool = True) -> None:
        self.tag = tag
        self.pieces: list[Piece] = []
        self.ordered = True
        self.first: str | None = None
        self.last = ""

    def feed(self, block: bytes, newlines: int, records: bool, keys: list[str] | None) -> None:
        # A block the scan folded whole is its lines, each ended by a newline, as they are.
        whole = records and block.endswith(b"\n")
        if not whole:  # a block of blank lines too: no piece, but the chunk is not its lines
            self.ordered = False
            if not block.strip():  # blank lines only (a bomb of newlines): none to tally
                return
        lines = block if whole else b"".join(x + b"\n" for x in block.split(b"\n") if x.strip())
        if not lines:
            return
        if self.tag:
            self.pieces.append(piece_of(lines))
        if not self.ordered:
            return
        if not keys or not keys_are_plain(block, newlines):
            self.ordered = False
            return
        if keys[0] < self.last or keys != sorted(keys):
            self.ordered = False
            return
        if self.first is None:
            self.first = keys[0]
        self.last = keys[-1]

    def span(self) -> tuple[str, str] | None:
        return (self.first, self.last) if self.ordered and self.first is not None else None


class RecordPass:
    def __init__(self, steps: dict[str, StepOutcome], limits: ChunkLimits) -> None:
        self.steps = steps
        self.limits = limits
        self.view_order = ORDER_MERGED
        self.chain_records = RecordMultiset()
        # ORDER_CHAIN: the chunks' lines as pieces of the view (`Piece`), in order, and
        # whether every chunk's keys are plain and in order, chunk after chunk (`ChunkScan`).
        self.chain_pieces: list[Piece] = []
        self.chain_plain = True
        self.chain_last_key = ""
        self.chain_lines = 0
        self.view_records = RecordMultiset()
        self.view_lines = 0
        self.view_pieces_match = False
        # ORDER_CHAIN: compare the view with the chunks by their content digests as it streams
        # by, beside the chunks' scans (`chain_view`), instead of by pieces after them.
        self.view_by_spans = False

    def spec(self, aggregator: ObservationAggregator) -> ChunkSpec:
        return ChunkSpec.of(
            aggregator,
            self.view_order == ORDER_CHAIN,
            self.limits,
            tag_pieces=not self.view_by_spans,
        )

    def apply(
        self,
        member: ArchiveMember,
        stream: HashingReader,
        scan: ChunkScan,
        aggregator: ObservationAggregator,
    ) -> ChunkMeasure:
        """Fold one chunk's scan into the pass, in archive order; what the seal must match."""
        if scan.refusal is not None:
            message, path, line, field = scan.refusal
            raise ArchiveError(message, path=path, line=line, field=field)
        if scan.error is not None:
            message, path, line, field = scan.error
            self.steps["schemas"].fail(
                SchemaValidationError(message, path=path, line=line, field=field)
            )
        aggregator.merge(scan.aggregate)
        aggregator.files.append(member.name)
        if scan.multiset is not None:
            self.chain_records.total += scan.multiset[0]
            self.chain_records.count += scan.multiset[1]
        if scan.pieces is not None:
            self.chain_pieces.extend(scan.pieces)
            if not scan.plain:
                self.chain_plain = False
            elif scan.key_span is not None:
                first, last = scan.key_span
                self.chain_plain = self.chain_plain and first >= self.chain_last_key
                self.chain_last_key = last
        self.chain_lines += scan.records
        return ChunkMeasure(
            sha256=stream.digest.hexdigest(),
            size=stream.count,
            content_sha256=scan.content_sha256,
            content_bytes=scan.content_bytes,
            records=scan.records,
            times=scan.times,
        )

    def view(self, name: str, stream: HashingReader, work: ChunkWork) -> None:
        """Tally the view's lines and check they are in observed_at order.

        Its lines are not parsed: once the tally equals the chains' (`view_matches_chains`)
        they are the collector's sealed lines, which were validated as they streamed by. Each
        block is summed up by `view_block` (in a worker process when there are some) and the
        summaries are folded in order; a chain-order view's pieces are tagged here, and while
        they match chains whose keys were found plain and in order, the blocks they cover are
        summed up from that alone (`_ViewBlocks`).
        """
        raw_blocks = iter(lambda: stream.read(READ_BLOCK), b"")
        order = _ViewOrder(self, name)
        if self.view_order != ORDER_CHAIN:
            for block in whole_line_blocks(raw_blocks, name):
                work.submit(view_block, (block, True), order.fold, len(block))
            return
        pieces = _PieceCheck(self.chain_pieces)
        blocks = _ViewBlocks(order, work, pieces if self.chain_plain else None)
        for block in whole_line_blocks(raw_blocks, name):
            pieces.feed(block)
            blocks.feed(block)
        blocks.finish()
        self.view_pieces_match = pieces.matched()

    def chain_view(
        self,
        stream: HashingReader,
        scans: list[tuple[Callable[[], ChunkScan], bytes | None]],
        declared: list[int | None],
        work: ChunkWork,
    ) -> bool:
        """`view` of a chain-order view without waiting for the chunks' scans: True when the
        view is exactly the contents of the chain's chunks (`scans`, in order), each of them
        its records, one per line, with plain keys in order, chunk after chunk. What `view`
        then finds is known without reading a line: as many view lines as chain lines, in
        order, its pieces matched. False when that is not shown: the caller verifies again by
        `view`, which finds what the view holds.

        The view is cut where each chunk's content ends by the sizes the seals declare
        (`declared`; a chunk without one waits for its scan). The first span is a prefix of
        the view: its sha256 is the member's own digest, copied at its end, and must be the
        content sha256 the chunk's scan found (the one its seal signs). Every later span is
        tagged with the one-time Poly1305 key its chunk's scan was given (`scans`: each scan
        and its key), as the scan tagged the chunk's content (a third of a sha256's cost; the
        key is drawn during verification, after the bundle exists, so its author cannot make
        other bytes give the tag). Each span's size and digest or tag must be its chunk's."""
        spans: list[tuple[int, bytes]] = []
        for index, size in enumerate(declared):
            scan_of, key = scans[index]
            if key is None and index:
                return False  # only the first span is a prefix of the view
            if size is None:
                size = scan_of().content_bytes
            mac = Poly1305(key) if key is not None else None
            left = size
            while left:
                data = stream.read(min(left, READ_BLOCK))
                if not data:
                    return False  # the view ends inside the span
                if mac is not None:
                    mac.update(data)
                left -= len(data)
            if mac is not None:
                spans.append((size, mac.finalize()))
            else:
                spans.append((size, stream.digest.copy().digest()))
        if stream.read(1):
            return False  # more bytes than the chunks hold
        last_key = ""
        lines = 0
        for (scan_of, key), (size, digest) in zip(scans, spans, strict=True):
            scan = scan_of()
            expected = scan.content_tag if key is not None else bytes.fromhex(scan.content_sha256)
            if (
                not _whole_and_plain(scan, last_key)
                or scan.content_bytes != size
                or expected is None
                or not hmac.compare_digest(digest, expected)
            ):
                return False
            if scan.key_span is not None:
                last_key = scan.key_span[1]
            lines += scan.records

        def summed_up() -> None:
            self.view_lines += lines
            self.view_pieces_match = True

        work.later(summed_up)
        return True

    def view_matches_chains(self) -> bool:
        if self.view_lines != self.chain_lines:
            return False
        if self.view_order == ORDER_CHAIN:  # the view file is the chain's lines, in order
            return self.view_pieces_match
        return self.view_records.hexdigest() == self.chain_records.hexdigest()


def _whole_and_plain(scan: ChunkScan, after: str) -> bool:
    """Whether a chunk's scan found its content to be its records, each ended by a newline,
    with plain keys in order from `after` on (what `RecordPass.apply` folds into chain_plain)."""
    if scan.refusal is not None or scan.error is not None or not scan.plain:
        return False
    return scan.key_span is None or scan.key_span[0] >= after


@dataclass(frozen=True)
class ViewBlock:
    """What the order check and the tally need of one whole-line block of the view."""

    lines: int  # non-blank
    first: str | None  # observed_at of the first line, of the last
    last: str | None
    disorder: int | None  # index of the first line whose key is below the one before it
    multiset: tuple[int, int] | None  # ORDER_MERGED: the lines' multiset (sum, count)


def view_block(block: bytes, merged: bool) -> ViewBlock:
    """Sum up one block of the view: its lines, their observed_at order, their multiset."""
    multiset = RecordMultiset() if merged else None
    fast = plain_block_keys(block)
    if fast is not None and fast == sorted(fast):
        # The builder's blocks, in order: no per-line work but the merged multiset's.
        if multiset is not None:
            multiset.add_many(block.split(b"\n")[:-1])
        return ViewBlock(
            len(fast),
            fast[0].decode() if fast else None,
            fast[-1].decode() if fast else None,
            None,
            (multiset.total, multiset.count) if multiset is not None else None,
        )
    lines = [line for line in block.split(b"\n") if line.strip()]
    if multiset is not None:
        multiset.add_many(lines)
    # ascii/replace as observed_at_of: a hostile view's bytes need not be UTF-8 (its lines
    # then cannot match the chains' validated records).
    keys = [m.decode("ascii", "replace") for m in OBSERVED_AT_TAIL.findall(block)]
    if len(keys) != len(lines):
        keys = [observed_at_of(line) for line in lines]
    disorder = next((i for i in range(1, len(keys)) if keys[i] < keys[i - 1]), None)
    return ViewBlock(
        len(lines),
        keys[0] if keys else None,
        keys[-1] if keys else None,
        disorder,
        (multiset.total, multiset.count) if multiset is not None else None,
    )


class _ViewOrder:
    """Folds the view's block summaries in order; the first line out of observed_at order
    fails the evidence-chains step, and the view's tally stops after its block."""

    def __init__(self, records: RecordPass, name: str) -> None:
        self.records = records
        self.name = name
        self.previous = ""
        self.line_base = 0
        self.failed = False

    def fold(self, block: ViewBlock) -> None:
        if self.failed:
            return
        records = self.records
        records.view_lines += block.lines
        if block.multiset is not None:
            records.view_records.total += block.multiset[0]
            records.view_records.count += block.multiset[1]
        if block.first is None or block.last is None:
            return
        if block.first < self.previous or block.disorder is not None:
            offset = 0 if block.first < self.previous else block.disorder or 0
            records.steps["evidence-chains"].fail(
                EvidenceChainError(
                    "observations view is not sorted by observed_at",
                    path=self.name,
                    line=self.line_base + offset + 1,
                )
            )
            self.failed = True
            return
        self.previous = block.last
        self.line_base += block.lines


class _PieceCheck:
    """Whether a byte stream is exactly the given pieces, in order: each piece's bytes tagged
    as they pass, under the piece's key, and compared with its tag (a chain-order view is its
    chunks' lines; each chunk's worker tagged its own pieces, so nothing running crosses
    chunks). `verified`: the bytes of the stream matched so far, piece by whole piece."""

    def __init__(self, pieces: list[Piece]) -> None:
        self._pieces = pieces
        self._index = -1
        self._left = 0
        self._mac: Poly1305 | None = None
        self.ok = True
        self.verified = 0
        self._next()

    def _next(self) -> None:
        """On to the next piece that is not empty (an empty piece matches nothing: trivially)."""
        self._index += 1
        while self._index < len(self._pieces) and self._pieces[self._index][0] == 0:
            self._index += 1
        if self._index < len(self._pieces):
            self._left, key, _tag = self._pieces[self._index]
            self._mac = Poly1305(key)
        else:
            self._left, self._mac = 0, None

    def feed(self, block: bytes) -> None:
        view = memoryview(block)
        while view and self.ok:
            if self._mac is None:
                self.ok = False  # more bytes than the pieces hold
                return
            take = min(self._left, len(view))
            self._mac.update(view[:take])
            view = view[take:]
            self._left -= take
            if self._left == 0:
                length, _key, tag = self._pieces[self._index]
                if not hmac.compare_digest(self._mac.finalize(), tag):
                    self.ok = False
                    return
                self.verified += length
                self._next()

    def matched(self) -> bool:
        return self.ok and self._index >= len(self._pieces)


class _ViewBlocks:
    """The view's blocks to their summaries, in order. With `pieces` (the chains' keys all
    plain and in order), a block is held until the pieces it lies in have matched: its lines
    are then chain lines, in order, each key read alike however the view is cut, so its summary
    is its line count and the keys of its first and last line, without `view_block`. From the
    first piece that does not match, every block (held or not) goes to `view_block` as without
    `pieces`; the summaries are the same either way, and so are the cuts (the caller's)."""

    def __init__(self, order: _ViewOrder, work: ChunkWork, pieces: _PieceCheck | None) -> None:
        self._order = order
        self._work = work
        self._pieces = pieces
        self._held: deque[tuple[int, bytes]] = deque()  # (end offset, block): < 2 pieces
        self._end = 0

    def feed(self, block: bytes) -> None:
        self._end += len(block)
        self._held.append((self._end, block))
        pieces = self._pieces
        if pieces is None or not pieces.ok:
            self._pieces = None
            self._flush()
            return
        while self._held and self._held[0][0] <= pieces.verified:
            self._fold_plain(self._held.popleft()[1])

    def finish(self) -> None:
        if self._pieces is not None and self._pieces.matched():
            while self._held and self._held[0][0] <= self._pieces.verified:
                self._fold_plain(self._held.popleft()[1])
        self._flush()

    def _flush(self) -> None:
        while self._held:
            block = self._held.popleft()[1]
            self._work.submit(view_block, (block, False), self._order.fold, len(block))

    def _fold_plain(self, block: bytes) -> None:
        # A matched block: whole lines of records, none blank, keys plain and in order.
        first = block[: block.index(b"\n")]
        last = block[block.rfind(b"\n", 0, len(block) - 1) + 1 : -1]
        summary = ViewBlock(
            block.count(b"\n"), observed_at_of(first), observed_at_of(last), None, None
        )
        self._work.later(lambda: self._order.fold(summary))
