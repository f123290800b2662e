"""Crash-safe file writing: temp name, fsync, rename, fsync the directory.

Nothing half-written is ever visible under the final name (DESIGN.md §7).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .errors import InputError, InternalError


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Failures that come from the output path the user chose (exit 2), not from our code.
_OUTPUT_REFUSALS = frozenset({errno.EISDIR, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR})


@contextlib.contextmanager
def atomic_writer(path: str | Path, mode: int = 0o644) -> Iterator[IO[bytes]]:
    """Yield a binary file; on success it replaces `path` atomically, on error it vanishes."""
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise InputError("output directory does not exist", path=directory)
    if target.is_dir():  # os.replace would fail only after all the work
        raise InputError("the output is an existing directory; expected a file name", path=target)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:  # a read-only or foreign directory: the user's choice of output
        raise InputError(f"cannot write here: {exc.strerror}", path=target) from exc
    tmp_path = Path(tmp_name)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_path, target)
        fsync_directory(directory)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InputError("no space left on device; nothing was written", path=target) from exc
        if isinstance(exc, OSError) and exc.errno in _OUTPUT_REFUSALS:
            raise InputError(f"cannot write file: {exc.strerror}", path=target) from exc
        if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
            raise InternalError(f"cannot write file: {exc.strerror}", path=target) from exc
        raise


def write_bytes_atomic(path: str | Path, data: bytes, mode: int = 0o644) -> None:
    with atomic_writer(path, mode) as handle:
        handle.write(data)


_KINDS = {
    0o010000: "a FIFO",
    0o020000: "a character device",
    0o040000: "a directory",
    0o060000: "a block device",
    0o140000: "a socket",
}


def open_regular_file(path: str | Path) -> IO[bytes]:
    """Open a file that must be a regular file (a chain's seal or chunk, a part index...).

    Opened without blocking, so a FIFO planted in its place is refused instead of hanging
    the reader. Raises `InputError` (or `FileNotFoundError` for a missing file, which callers
    report in their own terms) naming the file.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", path=path) from exc
    try:
        kind = os.fstat(fd).st_mode & 0o170000
        if kind != 0o100000:
            raise InputError(
                f"expected a regular file, found {_KINDS.get(kind, 'something else')}", path=path
            )
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular_file(path: str | Path) -> bytes:
    """`open_regular_file` and read it all; every failure an `InputError` naming the file."""
    try:
        with open_regular_file(path) as handle:
            return handle.read()
    except FileNotFoundError as exc:
        raise InputError("file not found", path=path) from exc
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", path=path) from exc
