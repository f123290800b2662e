"""The records' side of verification: each chunk decompressed once, the view compared.

A chunk's decompressed bytes feed, in one pass, its content digest, the function-map
verifier's aggregator (which validates every line and names file and line on error) and the
tally the observations view is compared with: a running sha256 when the view is one chain in
its own order, else a multiset of lines.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import EvidenceChainError, MalformedDocumentError, SchemaValidationError
from ..evidence.measure import ChunkMeasure
from ..evidence.timecheck import ChunkTimes
from ..functionmap.scan import ObservationAggregator
from .coverage import scan_stream
from .observations_view import (
    OBSERVED_AT_TAIL,
    ORDER_CHAIN,
    ORDER_MERGED,
    RecordMultiset,
    observed_at_of,
    plain_block_keys,
)
from .reader import ArchiveMember
from .steps import StepOutcome
from .streams import HashingReader, LineTally, TeeReader, iter_zstd_blocks, whole_line_blocks

READ_BLOCK = 1 << 20


@dataclass(frozen=True)
class ChunkLimits:
    # One evidence chunk's uncompressed NDJSON; the writer rotates long before this.
    max_bytes: int = 4 * 1024**3
    max_ratio: int = 1000
    # Real chunks (zstd over JSON lines) stay under ~50:1; judged past 8 MiB of output.
    ratio_floor: int = 8 * 1024**2


class RecordPass:
    def __init__(self, steps: dict[str, StepOutcome], limits: ChunkLimits) -> None:
        self.steps = steps
        self.limits = limits
        self.view_order = ORDER_MERGED
        self.chain_records = RecordMultiset()
        self.chain_sequence = hashlib.sha256()
        self.chain_lines = 0
        self.view_records = RecordMultiset()
        self.view_lines = 0

    def chunk(
        self,
        member: ArchiveMember,
        stream: HashingReader,
        aggregator: ObservationAggregator,
    ) -> ChunkMeasure:
        """Decompress once; validate and tally every record; return what the seal must match."""
        content = hashlib.sha256()
        content_bytes = 0
        limits = self.limits
        times = ChunkTimes()

        def blocks() -> Iterator[bytes]:
            nonlocal content_bytes
            for block in iter_zstd_blocks(
                stream,
                member.name,
                max_bytes=limits.max_bytes,
                max_ratio=limits.max_ratio,
                ratio_floor=limits.ratio_floor,
                compressed=member.size,
            ):
                content.update(block)
                content_bytes += len(block)
                yield block

        chain_order = self.view_order == ORDER_CHAIN
        lines = LineTally(
            member.name,
            None if chain_order else self.chain_records,
            self.chain_sequence if chain_order else None,
        )
        reader = TeeReader(blocks(), lines)
        aggregator.times = times  # the scan folds each record's times as it reads it
        try:
            scan_stream(aggregator, reader, member.name)
        except MalformedDocumentError as exc:
            self.steps["schemas"].fail(
                exc
                if isinstance(exc, SchemaValidationError)
                else SchemaValidationError(
                    exc.message, path=member.name, line=exc.line, field=exc.field
                )
            )
        finally:
            aggregator.times = None
        reader.drain()  # the digests need every byte, valid or not
        lines.finish()
        self.chain_lines += lines.lines
        stream.drain()
        return ChunkMeasure(
            sha256=stream.digest.hexdigest(),
            size=stream.count,
            content_sha256=content.hexdigest(),
            content_bytes=content_bytes,
            records=lines.lines,
            times=times.finish(),
        )

    def view(self, name: str, stream: HashingReader) -> None:
        """Tally the view's lines and check they are in observed_at order.

        Its lines are not parsed: once the tally equals the chains' (`view_matches_chains`)
        they are the collector's sealed lines, which were validated as they streamed by.
        """
        previous = ""
        line_base = 0
        raw_blocks = iter(lambda: stream.read(READ_BLOCK), b"")
        for block in whole_line_blocks(raw_blocks, name):
            fast = plain_block_keys(block)
            if (
                fast is not None
                and (not fast or fast[0].decode() >= previous)
                and fast == sorted(fast)
            ):
                # The builder's blocks, in order: no per-line work but the merged multiset's.
                self.view_lines += len(fast)
                if self.view_order == ORDER_MERGED:
                    self.view_records.add_many(block.split(b"\n")[:-1])
                if fast:
                    previous = fast[-1].decode()
                line_base += len(fast)
                continue
            lines = [line for line in block.split(b"\n") if line.strip()]
            self.view_lines += len(lines)
            if self.view_order == ORDER_MERGED:
                self.view_records.add_many(lines)
            # ascii/replace as observed_at_of: a hostile view's bytes need not be UTF-8 (its
            # lines then cannot match the chains' validated records).
            keys = [m.decode("ascii", "replace") for m in OBSERVED_AT_TAIL.findall(block)]
            if len(keys) != len(lines):
                keys = [observed_at_of(line) for line in lines]
            if keys and (keys[0] < previous or keys != sorted(keys)):
                offset = next(
                    (i for i, key in enumerate(keys) if key < (keys[i - 1] if i else previous)), 0
                )
                self.steps["evidence-chains"].fail(
                    EvidenceChainError(
                        "observations view is not sorted by observed_at",
                        path=name,
                        line=line_base + offset + 1,
                    )
                )
                stream.drain()
                return
            if keys:
                previous = keys[-1]
            line_base += len(lines)

    def view_matches_chains(self, view_sha256: str | None) -> bool:
        if self.view_lines != self.chain_lines:
            return False
        if self.view_order == ORDER_CHAIN:  # the view file is the chain's lines, in order
            return view_sha256 == self.chain_sequence.hexdigest()
        return self.view_records.hexdigest() == self.chain_records.hexdigest()
