"""Reading NDJSON observation files (plain or zstd-compressed) with file:line errors."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from ..compression import DEFAULT_LIMITS, open_maybe_compressed
from ..formats.record import validate_record
from ..jsonio import parse_json_line


def open_ndjson(path: str | Path) -> IO[bytes]:
    """Open a file for line reading, transparently decompressing zstd (by magic, not name),
    bounded in size and compression ratio (`compression.DEFAULT_LIMITS`: decompression bombs);
    corrupt or bomb data raise naming the file."""
    return open_maybe_compressed(path, DEFAULT_LIMITS, accept=("zstd",))


def iter_json_lines(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for every non-empty line; errors name file and line."""
    with open_ndjson(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            yield number, parse_json_line(line, path, number)


def iter_observations(paths: Iterable[str | Path]) -> Iterator[dict[str, Any]]:
    """Validated observation records from NDJSON files, in file order."""
    for path in paths:
        for number, value in iter_json_lines(path):
            yield validate_record(value, path, number)
