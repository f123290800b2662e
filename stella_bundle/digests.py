"""SHA-256 digests: of a file, of a stream as it is read, and the two ways documents write one.

Every file digest of the project is `file_sha256` (streamed by `hashlib.file_digest`), every
stream hashed while a reader consumes it goes through `HashingReader`, every stream hashed as
it is written through `HashingWriter`, and every check of a
written digest uses one of the two patterns here. `\\Z`, not `$`: `$` also
matches before a final newline, so "<64 hex>\\n" would pass. `[0-9a-f]`, not `\\w` or `\\d`:
only lowercase hex, as the schemas say.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Final, Protocol

# 64 lowercase hex digits: a sha256 as seals, manifests, prune records and keyids write it.
SHA256_HEX_RE: Final = re.compile(r"^[0-9a-f]{64}\Z")
# "sha256:" and 64 lowercase hex digits: node hashes, image digests, a map's SBOM digest.
PREFIXED_SHA256_RE: Final = re.compile(r"^sha256:[0-9a-f]{64}\Z")


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, streamed (OSError for the caller to word)."""
    return file_sha256_size(path)[0]


def file_sha256_size(path: str | Path) -> tuple[str, int]:
    """Hex sha256 of a file's bytes and how many bytes were read (a caller that knows the size
    to expect sees a file that changed while it was read)."""
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256")
        return digest.hexdigest(), handle.tell()


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...

    def flush(self) -> None: ...


class HashingWriter:
    """Hashes (`digest`) and counts (`count`) every byte written through it, then passes it on
    to `inner`; with no inner it only hashes and counts (what a write would produce, measured
    without writing it)."""

    def __init__(self, inner: _Writable | None = None) -> None:
        self._inner = inner
        self.digest = hashlib.sha256()
        self.count = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.count += len(data)
        if self._inner is not None:
            self._inner.write(data)
        return len(data)

    def flush(self) -> None:
        if self._inner is not None:
            self._inner.flush()


class HashingReader:
    """Wraps a binary stream; hashes (`digest`) and counts (`count`) every byte read through it,
    so a file or an archive member is digested in the same pass that parses it."""

    def __init__(self, inner: _Readable) -> None:
        self._inner = inner
        self.digest = hashlib.sha256()
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        self.digest.update(data)
        self.count += len(data)
        return data

    def readable(self) -> bool:
        return True

    def drain(self, block: int = 1 << 20) -> None:
        """Read the rest, so the digest and count cover the whole stream."""
        while self.read(block):
            pass
