"""Where Tetragon's JSON lines come from: export files (with their rotated, possibly gzipped
backups), a live export file followed across rotations, or standard input.

Every reader is bounded: a line longer than `max_line_bytes` is skipped up to its newline
without being held in memory, and reported with its number (`Line.data` is None).
Tetragon's daemon rotates `export-filename` by renaming it to `<stem>-<time><ext>` (gzipped
when `export-file-compress` is set) and opening a new file; a follower keeps the open file
(inode + offset) until it has read it to the end, so no line is lost or read twice.
"""

from __future__ import annotations

import gzip
import os
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Final, NamedTuple

from ..errors import InputError

# Tetragon's events are a few KiB; arguments and stacks can reach hundreds of KiB. A line
# past this is refused (counted, named) rather than parsed.
DEFAULT_MAX_LINE_BYTES: Final = 4 * 1024 * 1024
_DISCARD_BLOCK: Final = 1 << 20
_READ_BLOCK: Final = 1 << 20
GZIP_MAGIC: Final = b"\x1f\x8b"


class Line(NamedTuple):
    """One line (without its newline); a tuple because millions are made per run."""

    source: str
    number: int
    data: bytes | None  # None: longer than the limit, skipped


def read_lines(handle: IO[bytes], source: str, max_line_bytes: int) -> Iterator[Line]:
    """Lines of a finished stream (a final line without newline counts as a line).

    Read in blocks and split in C: at most one block and one line's worth held at a time.
    """
    read = handle.read
    number = 0
    carry = b""
    skipping = False  # inside a line already longer than the limit
    while True:
        block = read(_READ_BLOCK)
        if not block:
            break
        parts = block.split(b"\n")
        tail = parts.pop()
        if parts:
            if skipping:
                skipping = False
                number += 1
                yield Line(source, number, None)
                del parts[0]
            elif carry:
                parts[0] = carry + parts[0]
            for data in parts:
                number += 1
                yield Line(source, number, data if len(data) <= max_line_bytes else None)
            carry = tail
        elif not skipping:
            carry += tail
        if not skipping and len(carry) > max_line_bytes:
            carry = b""
            skipping = True
    if skipping:
        yield Line(source, number + 1, None)
    elif carry:
        yield Line(source, number + 1, carry)


def _discard_rest(readline: Callable[[int], bytes]) -> bool:
    """Skip to the end of an over-long line; True when its newline was found."""
    while True:
        block = readline(_DISCARD_BLOCK)
        if not block:
            return False
        if block.endswith(b"\n"):
            return True


def open_export(path: Path) -> IO[bytes]:
    """An export file or a backup, gunzipped by magic (not by name)."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - returned to the caller
    except OSError as exc:
        raise InputError(f"cannot open: {exc.strerror}", path=path) from exc
    if handle.read(2) == GZIP_MAGIC:
        handle.seek(0)
        return gzip.GzipFile(fileobj=handle, mode="rb")  # type: ignore[return-value]
    handle.seek(0)
    return handle


def rotated_backups(live: Path) -> list[Path]:
    """Backups of `live` oldest first: `<stem>-<YYYY-MM-DDTHH-MM-SS.mmm><ext>[.gz]`.

    The timestamp in the name orders them (it sorts as text); the live file comes after.
    """
    stem, ext = live.stem, live.suffix
    found = []
    directory = live.parent if str(live.parent) else Path(".")
    for entry in directory.iterdir():
        name = entry.name
        if entry == live or not name.startswith(stem + "-"):
            continue
        middle = name[len(stem) + 1 :]
        for ending in (ext + ".gz", ext):
            if ext and middle.endswith(ending):
                found.append((middle[: -len(ending)], entry))
                break
    return [entry for _, entry in sorted(found)]


def file_lines(paths: list[Path], max_line_bytes: int) -> Iterator[Line]:
    for path in paths:
        with open_export(path) as handle:
            try:
                yield from read_lines(handle, str(path), max_line_bytes)
            except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
                raise InputError(f"cannot read: {exc}", path=path) from exc


def stdin_lines(stream: IO[bytes], max_line_bytes: int) -> Iterator[Line]:
    yield from read_lines(stream, "<stdin>", max_line_bytes)


class ExportFollower:
    """Follows Tetragon's live export file across renames and truncation.

    Stops when `stop` is set, or after `idle_seconds` without a new line (None: never).
    """

    def __init__(
        self,
        path: Path,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        *,
        poll_seconds: float = 0.1,
        idle_seconds: float | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.path = path
        self.max_line_bytes = max_line_bytes
        self.poll_seconds = poll_seconds
        self.idle_seconds = idle_seconds
        self.stop = stop or threading.Event()
        self.rotations = 0
        self.files: list[str] = []

    def _open(self) -> tuple[IO[bytes], int] | None:
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - closed by lines()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise InputError(f"cannot open: {exc.strerror}", path=self.path) from exc
        inode = os.fstat(handle.fileno()).st_ino
        self.files.append(f"{self.path} (inode {inode})")
        return handle, inode

    def lines(self) -> Iterator[Line]:
        opened = None
        last_activity = time.monotonic()
        while opened is None:
            opened = self._open()
            if opened is None:
                if self._should_stop(last_activity):
                    return
                self.stop.wait(self.poll_seconds)
        handle, inode = opened
        source = self.files[-1]
        number = 0
        pending = b""
        skipping = False  # inside an over-long line whose end has not arrived yet
        limit = self.max_line_bytes + 1
        try:
            while True:
                data = handle.readline(limit - len(pending))
                if data:
                    last_activity = time.monotonic()
                    if skipping:
                        skipping = not data.endswith(b"\n")
                        continue
                    if not data.endswith(b"\n"):
                        pending += data
                        if len(pending) >= limit:
                            number += 1
                            yield Line(source, number, None)
                            pending = b""
                            skipping = True
                        continue
                    number += 1
                    yield Line(source, number, pending + data)
                    pending = b""
                    continue
                # End of the open file: rotated, truncated, or simply nothing new yet.
                try:
                    current = os.stat(self.path)
                except FileNotFoundError:
                    current = None
                if current is not None and current.st_ino != inode:
                    # Renamed away: the writer has closed it, so what is left is final.
                    yield from self._drain(handle, source, number, pending, skipping)
                    handle.close()
                    reopened = self._open()
                    if reopened is None:
                        continue
                    handle, inode = reopened
                    source = self.files[-1]
                    self.rotations += 1
                    number, pending, skipping = 0, b"", False
                    continue
                if current is not None and current.st_size < handle.tell():
                    handle.seek(0)  # truncated in place (copytruncate)
                    number, pending, skipping = 0, b"", False
                    continue
                if self._should_stop(last_activity):
                    yield from self._drain(handle, source, number, pending, skipping)
                    return
                self.stop.wait(self.poll_seconds)
        finally:
            handle.close()

    def _drain(
        self, handle: IO[bytes], source: str, number: int, pending: bytes, skipping: bool
    ) -> Iterator[Line]:
        if skipping:
            skipping = not _discard_rest(handle.readline)
            if skipping:
                return
        if pending:
            rest = handle.readline(self.max_line_bytes + 1 - len(pending))
            pending += rest
            number += 1
            if len(pending) > self.max_line_bytes and not pending.endswith(b"\n"):
                _discard_rest(handle.readline)
                yield Line(source, number, None)
            else:
                yield Line(source, number, pending)
        for line in read_lines(handle, source, self.max_line_bytes):
            yield Line(source, number + line.number, line.data)

    def _should_stop(self, last_activity: float) -> bool:
        if self.stop.is_set():
            return True
        return (
            self.idle_seconds is not None and time.monotonic() - last_activity >= self.idle_seconds
        )
