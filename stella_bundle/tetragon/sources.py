"""Where Tetragon's JSON lines come from: export files (with their rotated, possibly gzipped
backups), a live export file followed across rotations, or standard input.

Every reader is bounded: a line longer than `max_line_bytes` is skipped up to its newline
without being held in memory, and reported with its number (`Line.data` is None).
Tetragon's daemon rotates `export-filename` by renaming it to `<stem>-<time><ext>` (gzipped
when `export-file-compress` is set) and opening a new file; a follower keeps the open file
(inode + offset) until it has read it to the end, so no line is lost or read twice.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final, NamedTuple, cast

import orjson

from ..compression import open_maybe_compressed
from ..errors import InputError
from ..fsutil import write_bytes_atomic

# Tetragon's events are a few KiB; arguments and stacks can reach hundreds of KiB. A line
# past this is refused (counted, named) rather than parsed.
DEFAULT_MAX_LINE_BYTES: Final = 4 * 1024 * 1024
_DISCARD_BLOCK: Final = 1 << 20
_READ_BLOCK: Final = 1 << 20


class Line(NamedTuple):
    """One line (without its newline); a tuple because millions are made per run."""

    source: str
    number: int
    data: bytes | None  # None: longer than the limit, skipped


# Consecutive lines of one source: (source, number of the first, the lines' bytes or None).
LineBlock = tuple[str, int, list[bytes | None]]


def read_lines(handle: IO[bytes], source: str, max_line_bytes: int) -> Iterator[Line]:
    """Lines of a finished stream (a final line without newline counts as a line)."""
    for _, first, parts in read_blocks(handle, source, max_line_bytes):
        for number, data in enumerate(parts, first):
            yield Line(source, number, data)


def read_blocks(
    handle: IO[bytes] | _Range | _Available, source: str, max_line_bytes: int, first_number: int = 1
) -> Iterator[LineBlock]:
    """`read_lines` a block at a time: read in blocks and split (`split_lines`), at most one
    block and one line's worth held at a time."""
    read = handle.read
    number = first_number - 1
    carry = b""
    skipping = False  # inside a line already longer than the limit
    while True:
        block = read(_READ_BLOCK)
        if not block:
            break
        parts = split_lines(block)
        tail = parts.pop()
        if parts:
            if skipping:  # the first part ends the over-long line
                skipping = False
                lines = [None, *_bounded(parts[1:], max_line_bytes)]
            else:
                if carry:
                    parts[0] = carry + parts[0]
                lines = _bounded(parts, max_line_bytes)
            yield source, number + 1, lines
            number += len(lines)
            carry = tail
        elif not skipping:
            carry += tail
        if not skipping and len(carry) > max_line_bytes:
            carry = b""
            skipping = True
    if skipping:
        yield source, number + 1, [None]
    elif carry:
        yield source, number + 1, [carry]


def split_lines(block: bytes) -> list[bytes]:
    """`block.split(b"\\n")`, faster for long lines: CPython splits on one byte comparing
    byte by byte, while `find` runs memchr (a third of the instructions for Tetragon's
    lines of 1-2 KB). Short lines (blank ones, hostile input) are split in C as before."""
    if block.count(b"\n", 0, 4096) > 16:
        return block.split(b"\n")
    parts: list[bytes] = []
    add, find = parts.append, block.find
    start = 0
    end = find(b"\n")
    while end >= 0:
        add(block[start:end])
        start = end + 1
        end = find(b"\n", start)
    add(block[start:])
    return parts


def _bounded(parts: list[bytes], max_line_bytes: int) -> list[bytes | None]:
    """The lines, those over the limit as None."""
    if not parts or max(map(len, parts)) <= max_line_bytes:
        return cast(list[bytes | None], parts)
    return [part if len(part) <= max_line_bytes else None for part in parts]


def range_blocks(
    handle: IO[bytes], start: int, end: int, source: str, max_line_bytes: int, first_number: int
) -> Iterator[LineBlock]:
    """The lines of a plain file that begin at a byte offset in [start, end), numbered from
    `first_number`, exactly as `read_lines` gives them. So byte ranges cut anywhere give, one
    after the other, the file's lines: a line belongs to the range it begins in (its end is
    read past `end`; one over the limit is skipped as `read_lines` skips it)."""
    if start:
        handle.seek(start - 1)
        left = end - start  # the line begun before `start` ends at a newline in [start-1, end-1)
        while True:
            piece = handle.read(min(_READ_BLOCK, left))
            cut = piece.find(b"\n")
            if cut >= 0:
                handle.seek(cut + 1 - len(piece), os.SEEK_CUR)
                break
            left -= len(piece)
            if not piece or left <= 0:
                return  # no line begins in the range: it lies inside an earlier one
    else:
        handle.seek(0)
    yield from read_blocks(_Range(handle, end), source, max_line_bytes, first_number)


class _Range:
    """A file read up to `end`, then on to the end of the line that runs across `end`."""

    def __init__(self, handle: IO[bytes], end: int) -> None:
        self._read = handle.read
        self._left = end - handle.tell()
        self._across = False  # the range's last line goes on past `end`

    def read(self, size: int) -> bytes:
        if self._left > 0:
            data = self._read(min(size, self._left))
            self._left = self._left - len(data) if data else 0
            self._across = not self._left and not data.endswith(b"\n")
            return data
        if self._across:
            data = self._read(size)
            cut = data.find(b"\n")
            if cut >= 0 or not data:
                self._across = False
                return data[: cut + 1] if cut >= 0 else data
            return data
        return b""


def _discard_rest(readline: Callable[[int], bytes]) -> bool:
    """Skip to the end of an over-long line; True when its newline was found."""
    while True:
        block = readline(_DISCARD_BLOCK)
        if not block:
            return False
        if block.endswith(b"\n"):
            return True


def open_export(path: Path) -> IO[bytes]:
    """An export file or a backup, gunzipped by magic (not by name) within the toolkit's
    decompression bounds (size and ratio: a gzip bomb fails naming the file)."""
    return open_maybe_compressed(path, error=InputError, accept=("gzip",))


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
    for source, first, parts in file_blocks(paths, max_line_bytes):
        for number, data in enumerate(parts, first):
            yield Line(source, number, data)


def file_blocks(paths: list[Path], max_line_bytes: int) -> Iterator[LineBlock]:
    for path in paths:
        with open_export(path) as handle:
            try:
                yield from read_blocks(handle, str(path), max_line_bytes)
            except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
                raise InputError(f"cannot read: {exc}", path=path) from exc


def stdin_blocks(stream: IO[bytes], max_line_bytes: int) -> Iterator[LineBlock]:
    """Standard input's lines, a block at a time (as files are read)."""
    return read_blocks(_Available(stream), "<stdin>", max_line_bytes)


class _Available:
    """A stream read as its data comes (`read1`): a live pipe's lines (`tetra getevents |`)
    are not held back until a whole block has arrived. Same lines, in smaller blocks."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._read = getattr(stream, "read1", stream.read)

    def read(self, size: int) -> bytes:
        return cast(bytes, self._read(size))


@dataclass
class FollowCursor:
    """Where a follower stopped: the file (inode, and the sha256 of its first line, which
    finds it again once renamed or gzipped) and the bytes of complete lines read from it."""

    inode: int
    offset: int
    head_sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"inode": self.inode, "offset": self.offset, "head_sha256": self.head_sha256}

    @classmethod
    def load(cls, path: Path) -> FollowCursor | None:
        """The saved cursor, or None when there is none yet."""
        try:
            data = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError) as exc:
            raise InputError(f"unreadable follow cursor: {exc}", path=path) from exc
        if (
            not isinstance(data, dict)
            or type(data.get("inode")) is not int
            or type(data.get("offset")) is not int
            or data["offset"] < 0
            or not isinstance(data.get("head_sha256"), str | None)
        ):
            raise InputError(
                "expected {inode, offset, head_sha256} as written by --cursor", path=path
            )
        return cls(data["inode"], data["offset"], data["head_sha256"])

    def save(self, path: Path) -> None:
        write_bytes_atomic(path, orjson.dumps(self.to_dict()) + b"\n")


def _line_digest(data: bytes) -> str:
    return hashlib.sha256(data.rstrip(b"\n")).hexdigest()


def _head_digest(path: Path, max_line_bytes: int) -> str | None:
    """sha256 of the first line of a plain or gzipped file (None when empty or unreadable)."""
    try:
        with open_export(path) as handle:
            first = handle.readline(max_line_bytes + 1)
    except (InputError, OSError, EOFError, zlib.error):
        return None
    return _line_digest(first) if first else None


class ExportFollower:
    """Follows Tetragon's live export file across renames and truncation.

    Stops when `stop` is set, or after `idle_seconds` without a new line (None: never). With a
    `cursor` from an earlier run it resumes where that run stopped: in the live file, or in
    the backup the file was rotated to (then the later backups), so a restart neither loses
    nor repeats a line. `cursor` always holds the position after the last line yielded.
    """

    def __init__(
        self,
        path: Path,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        *,
        poll_seconds: float = 0.1,
        idle_seconds: float | None = None,
        stop: threading.Event | None = None,
        cursor: FollowCursor | None = None,
    ) -> None:
        self.path = path
        self.max_line_bytes = max_line_bytes
        self.poll_seconds = poll_seconds
        self.idle_seconds = idle_seconds
        self.stop = stop or threading.Event()
        self.rotations = 0
        self.files: list[str] = []
        self.cursor = cursor
        # The saved position matched no file any more (backups pruned meanwhile): some lines
        # may never have been read. Counted by the caller.
        self.position_lost = False

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

    def _resume(self) -> tuple[int, Iterator[Line]]:
        """(offset to start the live file at, lines of rotated files still to read)."""
        saved = self.cursor
        if saved is None:
            return 0, iter(())
        try:
            live_inode: int | None = os.stat(self.path).st_ino
        except FileNotFoundError:
            live_inode = None
        if live_inode == saved.inode and (
            saved.head_sha256 is None
            or _head_digest(self.path, self.max_line_bytes) == saved.head_sha256
        ):
            return saved.offset, iter(())
        backups = rotated_backups(self.path)
        for index, backup in enumerate(backups):
            same_inode = backup.stat().st_ino == saved.inode and backup.suffix != ".gz"
            if same_inode or (
                saved.head_sha256 is not None
                and _head_digest(backup, self.max_line_bytes) == saved.head_sha256
            ):
                return 0, self._read_backups(backups[index:], saved.offset)
        self.position_lost = True
        return 0, iter(())

    def _read_backups(self, backups: list[Path], offset: int) -> Iterator[Line]:
        for position, backup in enumerate(backups):
            with open_export(backup) as handle:
                handle.seek(offset if position == 0 else 0)
                try:
                    yield from read_lines(handle, str(backup), self.max_line_bytes)
                except (OSError, EOFError, zlib.error) as exc:
                    raise InputError(f"cannot read: {exc}", path=backup) from exc

    def lines(self) -> Iterator[Line]:
        start_offset, rotated = self._resume()
        yield from rotated
        opened = None
        last_activity = time.monotonic()
        while opened is None:
            opened = self._open()
            if opened is None:
                if self._should_stop(last_activity):
                    return
                self.stop.wait(self.poll_seconds)
        handle, inode = opened
        head = None
        if start_offset:
            head = self.cursor.head_sha256 if self.cursor else None
            if os.fstat(handle.fileno()).st_size >= start_offset:
                handle.seek(start_offset)
        self.cursor = FollowCursor(inode, handle.tell(), head)
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
                        if not skipping:
                            self.cursor.offset = handle.tell()
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
                    line = pending + data
                    pending = b""
                    if self.cursor.offset == 0:
                        self.cursor.head_sha256 = _line_digest(line)
                    self.cursor.offset = handle.tell()
                    yield Line(source, number, line)
                    continue
                # End of the open file: rotated, truncated, or simply nothing new yet.
                try:
                    current = os.stat(self.path)
                except FileNotFoundError:
                    current = None
                if current is not None and current.st_ino != inode:
                    # Renamed away: the writer has closed it, so what is left is final.
                    yield from self._drain(handle, source, number, pending, skipping)
                    self.cursor.offset = handle.tell()
                    handle.close()
                    reopened = self._open()
                    while reopened is None:  # renamed, the new file not created yet
                        if self._should_stop(last_activity):
                            return
                        self.stop.wait(self.poll_seconds)
                        reopened = self._open()
                    handle, inode = reopened
                    self.cursor = FollowCursor(inode, 0, None)
                    source = self.files[-1]
                    self.rotations += 1
                    number, pending, skipping = 0, b"", False
                    continue
                if current is not None and current.st_size < handle.tell():
                    handle.seek(0)  # truncated in place (copytruncate)
                    self.cursor = FollowCursor(inode, 0, None)
                    number, pending, skipping = 0, b"", False
                    continue
                if self._should_stop(last_activity):
                    # A line still without its newline is left for the next run (the
                    # cursor stops before it): the writer may not have finished it.
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
