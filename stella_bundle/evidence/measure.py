"""Streaming measurement of a chunk: digest of the file, digest and size of its NDJSON."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import IO

from ..compression import DEFAULT_LIMITS, BoundedInflater
from ..digests import HashingReader
from ..errors import MalformedDocumentError
from .timecheck import ChunkTimes

# Refuse to inflate one chunk past this (decompression bombs); a seal's `content.bytes` is a
# tighter bound when it is known.
DEFAULT_MAX_CONTENT_BYTES = 8 * 1024**3
_READ_SIZE = 1 << 20


@dataclass(frozen=True)
class ChunkMeasure:
    sha256: str  # of the compressed file
    size: int
    content_sha256: str | None  # None when the data does not decompress
    content_bytes: int
    records: int  # newline-terminated lines
    error: str | None = None
    times: ChunkTimes | None = None  # the records' times, for the time rules


def measure_chunk(
    stream: IO[bytes],
    max_content_bytes: int | None = None,
    keep: list[bytes] | None = None,
    *,
    with_times: bool = True,
) -> ChunkMeasure:
    """Digests, sizes and line count of a chunk, and its records' times, in one pass.

    `keep`: the uncompressed blocks are appended to it (a caller that stores the chunk it
    measures inflates it once). `with_times=False` leaves `times` None: a caller that decodes
    the records anyway takes their times from its own decoding (`chunk_times` otherwise)."""
    limit = DEFAULT_MAX_CONTENT_BYTES if max_content_bytes is None else max_content_bytes
    source = HashingReader(stream)
    content_sha = hashlib.sha256()
    content_bytes = 0
    records = 0
    error = None
    times = ChunkTimes()
    # The toolkit's bounded inflater: a bomb stops at the ratio limit, not at `limit` bytes.
    reader = BoundedInflater(source, "zstd", "chunk", replace(DEFAULT_LIMITS, max_bytes=limit))
    try:
        while True:
            data = reader.read(4 * _READ_SIZE)
            if not data:
                break
            content_bytes += len(data)
            content_sha.update(data)
            if keep is not None:
                keep.append(data)
            records += data.count(b"\n")
            if with_times:
                times.feed(data)
    except MalformedDocumentError as exc:
        error = exc.message
    source.drain(_READ_SIZE)  # the rest of the file still counts for its digest
    return ChunkMeasure(
        sha256=source.digest.hexdigest(),
        size=source.count,
        content_sha256=None if error else content_sha.hexdigest(),
        content_bytes=content_bytes,
        records=records,
        error=error,
        times=None if error or not with_times else times.finish(),
    )


def chunk_times(blocks: list[bytes]) -> ChunkTimes:
    """The records' times of a chunk's uncompressed blocks, as `measure_chunk` folds them."""
    times = ChunkTimes()
    for block in blocks:
        times.feed(block)
    return times.finish()
