"""Streaming helpers shared by build and verify: hashing while reading, bounded zstd, bounded lines."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..compression import BoundedInflater, InflateLimits
from ..errors import ArchiveError

READ_CHUNK = 1 << 20
MAX_LINE = 1 << 20


def iter_zstd_blocks(
    source: Any, name: str, *, max_bytes: int, max_ratio: int, ratio_floor: int
) -> Iterator[bytes]:
    """Decompressed blocks of a zstd member, refusing a bomb before it is inflated (the
    toolkit's one bounded inflater; the ratio is judged on the compressed bytes consumed so
    far)."""
    inflater = BoundedInflater(
        source,
        "zstd",
        name,
        # 16 KiB reads: a bomb trips by 16 MiB of output; chunks of GBs still read quickly.
        InflateLimits(
            max_bytes=max_bytes, max_ratio=max_ratio, ratio_floor=ratio_floor, read_size=16384
        ),
        error=ArchiveError,
        what="zstd chunk",
    )
    return iter(lambda: inflater.read(READ_CHUNK), b"")


class LineTally:
    """Counts non-empty lines and folds each into a multiset digest, block by block."""

    def __init__(self, name: str, multiset: Any | None, sequence: Any | None = None) -> None:
        self.name = name
        self.multiset = multiset
        self.sequence = sequence  # a running hash of the lines, each ended by a newline
        self.lines = 0
        self._tail = b""

    def feed(self, block: bytes) -> None:
        data = self._tail + block if self._tail else block
        cut = data.rfind(b"\n")
        if cut < 0:
            self._tail = data
        else:
            self._tail = data[cut + 1 :]
            whole = data[: cut + 1]
            lines = whole.count(b"\n")
            if whole.startswith(b"{") and whole.count(b"\n{") == lines - 1:
                # Every line starts with "{", so none is blank: the collector's lines, folded
                # without splitting unless the multiset needs them one by one.
                self._fold_whole(whole, lines)
            elif whole.strip():  # blank lines only: nothing to fold, and no line split
                self._fold([line for line in whole[:-1].split(b"\n") if line.strip()])
        if len(self._tail) > MAX_LINE:
            raise ArchiveError(f"a line is longer than {MAX_LINE} bytes", path=self.name)

    def feed_lines(self, block: bytes, newlines: int, records: bool) -> None:
        """`feed` of a block cut at a line end, holding `newlines` newlines; `records`: every
        line of it is known to be a record (the scan's fast path took it), so none is blank
        and it is folded whole without another look."""
        if records and not self._tail and block.endswith(b"\n"):
            self._fold_whole(block, newlines)
        else:
            self.feed(block)

    def _fold(self, lines: list[bytes]) -> None:
        if not lines:
            return
        if self.multiset is not None:
            self.multiset.add_many(lines)
        if self.sequence is not None:
            self.sequence.update(b"\n".join(lines) + b"\n")
        self.lines += len(lines)

    def _fold_whole(self, whole: bytes, lines: int) -> None:
        """`_fold` of the `lines` lines of `whole`, none blank, each ended by a newline."""
        if self.multiset is not None:
            self.multiset.add_many(whole.split(b"\n")[:-1])
        if self.sequence is not None:
            self.sequence.update(whole)
        self.lines += lines

    def finish(self) -> None:
        if self._tail.strip():
            self._fold([self._tail])
        self._tail = b""


def whole_line_blocks(blocks: Iterator[bytes], name: str) -> Iterator[bytes]:
    """Re-cut blocks at line ends (the last may lack its newline); lines bounded in length.
    A block is copied once at most (joined with the tail before it), not twice (concatenated,
    then sliced), and not at all when it starts and ends at line ends."""
    tail = b""
    for block in blocks:
        cut = block.rfind(b"\n")
        if cut < 0:
            tail += block
        else:
            if tail or cut + 1 < len(block):
                yield b"".join((tail, memoryview(block)[: cut + 1]))
            else:
                yield block
            tail = block[cut + 1 :]
        if len(tail) > MAX_LINE:
            raise ArchiveError(f"a line is longer than {MAX_LINE} bytes", path=name)
    if tail:
        yield tail
