"""Crash-safe commits of a sealed chunk: both files complete and fsynced before either rename."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from ..errors import DiskFullError, InternalError, StellaError
from ..fsutil import fsync_directory
from .layout import chunk_name, seal_name


def temp_path(chain_dir: Path, final_name: str) -> Path:
    """`.<final name>.tmp`: one writer per chain (locked), so the name can be fixed."""
    return chain_dir / f".{final_name}.tmp"


def storage_error(exc: OSError, path: Path, doing: str) -> StellaError:
    """A one-line error for a failed write; disk full says what survived."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(
            f"no space left on device while {doing}; every chunk sealed before is intact and "
            "the open chunk is recovered on the next start",
            path=path,
        )
    return InternalError(f"cannot write while {doing}: {exc.strerror}", path=path)


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def write_temp(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_quietly(*paths: Path) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def commit_chunk(chain_dir: Path, sequence: int, chunk_temp: Path, seal_bytes: bytes) -> None:
    """Publish a fsynced temp chunk and its seal under their final names.

    Everything that needs space happens before the first rename, so a full disk leaves no
    chunk without its seal; the temp files are removed on failure.
    """
    seal_temp = temp_path(chain_dir, seal_name(sequence))
    try:
        write_temp(seal_temp, seal_bytes)
        os.replace(chunk_temp, chain_dir / chunk_name(sequence))
        os.replace(seal_temp, chain_dir / seal_name(sequence))
        fsync_directory(chain_dir)
    except OSError as exc:
        remove_quietly(seal_temp, chunk_temp)
        raise storage_error(exc, chain_dir / seal_name(sequence), "sealing a chunk") from exc
