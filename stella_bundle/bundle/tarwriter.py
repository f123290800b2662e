"""A reproducible gzip tar writer: fixed headers, no names, streaming from files.

Same entries and mtime give the same bytes: ustar headers with uid/gid 0, no user or group
names, mode 0644, one mtime for every entry, and a gzip header without file name and with
mtime 0. Entries are written in the order given (`bundle.layout.entry_order` sorts them).
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO

from ..compression import GZIP_WRITE_LEVEL, GzipWriter
from ..errors import ArchiveError, InputError
from ..formats.manifest import check_member_name, name_key

BLOCK = 512
COPY_CHUNK = 1 << 20
COMPRESS_LEVEL = GZIP_WRITE_LEVEL


class ReproducibleTarWriter:
    """Writes `path`-named regular files into a gzip tar on an open binary stream."""

    def __init__(
        self,
        output: IO[bytes],
        mtime: int,
        *,
        progress: Callable[[int], None] | None = None,
        compress_level: int = COMPRESS_LEVEL,
    ) -> None:
        self._mtime = int(mtime)
        self._progress = progress
        self._gzip = GzipWriter(output, compress_level)
        self._names: set[str] = set()
        self._closed = False

    def __enter__(self) -> ReproducibleTarWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()

    def _header(self, name: str, size: int) -> bytes:
        # The reader's name rules, so the builder never writes a bundle the verifier refuses.
        try:
            check_member_name(name, name)
        except ArchiveError as exc:
            raise InputError(f"bundle entry name cannot be stored: {exc.message}") from exc
        if name_key(name) in self._names:
            raise InputError(f"duplicate bundle entry {name!r} (or a Unicode/case twin of it)")
        self._names.add(name_key(name))
        info = tarfile.TarInfo(name)
        info.size = size
        info.mtime = self._mtime
        info.mode = 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.type = tarfile.REGTYPE
        try:
            return info.tobuf(format=tarfile.USTAR_FORMAT, encoding="utf-8", errors="strict")
        except ValueError as exc:  # name too long for ustar, or not encodable
            raise InputError(f"bundle entry name cannot be stored: {exc}", path=name) from exc

    def _pad(self, size: int) -> None:
        remainder = size % BLOCK
        if remainder:
            self._gzip.write(b"\0" * (BLOCK - remainder))

    def add_bytes(self, name: str, data: bytes) -> str:
        """Add an in-memory file; return its sha256 hex."""
        self._gzip.write(self._header(name, len(data)))
        self._gzip.write(data)
        self._pad(len(data))
        if self._progress:
            self._progress(len(data))
        return hashlib.sha256(data).hexdigest()

    def add_file(self, name: str, source: Path, size: int) -> str:
        """Stream a file of known size into the archive; return its sha256 hex.

        The size is re-checked while copying: a file that changes under us is an error, not a
        silently inconsistent archive.
        """
        try:
            with open(source, "rb") as handle:
                return self.add_blocks(
                    name, iter(lambda: handle.read(COPY_CHUNK), b""), size, source
                )
        except OSError as exc:
            raise InputError(f"cannot read: {exc.strerror}", path=source) from exc

    def add_blocks(
        self,
        name: str,
        blocks: Iterator[bytes],
        size: int,
        origin: Path,
        sha256: str | None = None,
    ) -> str:
        """Stream blocks of bytes (of `origin`, named in errors) that must total `size` into
        the archive; return their sha256 hex, or `sha256` unchecked when the blocks vouch for
        it themselves (a streamed view: its chunks' files must be the ones it was hashed from)."""
        digest = _Unhashed(sha256) if sha256 is not None else hashlib.sha256()
        self._gzip.write(self._header(name, size))
        copied = 0
        for block in blocks:
            copied += len(block)
            if copied > size:
                break
            digest.update(block)
            self._gzip.write(block)
            if self._progress:
                self._progress(len(block))
        if copied != size:
            raise InputError(
                f"file changed while the bundle was written (expected {size} bytes)", path=origin
            )
        self._pad(size)
        return digest.hexdigest()

    def add_deflated(self, name: str, deflated: Path, crc: int, size: int, sha256: str) -> str:
        """Add a file whose bytes were deflated beforehand into `deflated` (a finished
        `compression.DeflateSegment` of `size` bytes with CRC-32 `crc`, whose sha256 the caller
        took as it wrote them); return that sha256."""
        self._gzip.write(self._header(name, size))
        self._gzip.splice(deflated, crc, size)
        self._pad(size)
        if self._progress:
            self._progress(size)
        return sha256

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._gzip.write(b"\0" * (2 * BLOCK))
        self._gzip.close()


class _Unhashed:
    """A digest already known: `update` does nothing."""

    def __init__(self, hexdigest: str) -> None:
        self._hexdigest = hexdigest

    def update(self, data: bytes) -> None:
        pass

    def hexdigest(self) -> str:
        return self._hexdigest
