"""Reading NDJSON observation files (plain or zstd-compressed) with file:line errors."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import zstandard

from ..errors import MalformedDocumentError
from .record import validate_record

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

# Refuse to inflate one compressed file past this many bytes (decompression bombs).
DEFAULT_MAX_DECOMPRESSED = 8 * 1024**3


class _LimitedReader(io.RawIOBase):
    """Raises once more than `limit` bytes have come out of `inner`."""

    def __init__(self, inner: IO[bytes], limit: int, source: str) -> None:
        self._inner = inner
        self._remaining = limit
        self._limit = limit
        self._source = source

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._inner.read(len(buffer))
        self._remaining -= len(data)
        if self._remaining < 0:
            raise MalformedDocumentError(
                f"decompressed size exceeds the limit of {self._limit} bytes (decompression bomb?)",
                path=self._source,
            )
        buffer[: len(data)] = data
        return len(data)


def open_ndjson(path: str | Path, max_decompressed: int = DEFAULT_MAX_DECOMPRESSED) -> IO[bytes]:
    """Open a file for line reading, transparently decompressing zstd (by magic, not name)."""
    try:
        raw = open(path, "rb")  # noqa: SIM115 - returned to the caller
    except OSError as exc:
        raise MalformedDocumentError(f"cannot open: {exc.strerror}", path=path) from exc
    if raw.read(4) == ZSTD_MAGIC:
        raw.seek(0)
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        limited = _LimitedReader(reader, max_decompressed, str(path))
        return io.BufferedReader(limited, buffer_size=1 << 20)
    raw.seek(0)
    return raw


def iter_json_lines(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for every non-empty line; errors name file and line."""
    with open_ndjson(path) as handle:
        try:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    yield number, json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
                    raise MalformedDocumentError(
                        f"malformed NDJSON: {reason}", path=path, line=number
                    ) from exc
                except RecursionError as exc:  # json's C scanner gives up near 1000 levels
                    raise MalformedDocumentError(
                        "malformed NDJSON: nested too deeply", path=path, line=number
                    ) from exc
        except zstandard.ZstdError as exc:
            raise MalformedDocumentError(f"corrupt zstd data: {exc}", path=path) from exc


def iter_observations(paths: Iterable[str | Path]) -> Iterator[dict[str, Any]]:
    """Validated observation records from NDJSON files, in file order."""
    for path in paths:
        for number, value in iter_json_lines(path):
            yield validate_record(value, path, number)
