"""A read-only reader of bbolt database files (containerd's metadata store, meta.db).

containerd keeps container → image and image → digest in a bbolt file it holds open; asking
the daemon means a gRPC client or a `ctr` subprocess (~40 ms each, two per container), reading
the file takes a few page reads. bbolt is copy-on-write: a commit writes new pages, then the
meta page not holding the newest transaction; pages of the newest committed tree are reused
only after a later commit. So a tree read while the newest transaction id stays the same is
a consistent snapshot: `Snapshot` checks the id again after reading and the caller retries.

Layout (go.etcd.io/bbolt, page.go / bucket.go): 16-byte page headers (id, flags, count,
overflow); two meta pages at 0 and 1; branch elements (pos, ksize, child page id), leaf
elements (flags, pos, ksize, vsize) with key and value at `pos` from the element; a bucket
value is its root page id and sequence, followed by the page itself when inline (root 0).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Final

_MAGIC: Final = 0xED0CDAED
_VERSION: Final = 2
_PAGE_HEADER: Final = struct.Struct("<QHHI")
# After a meta page's header: magic, version, page size, flags, root bucket (page id, sequence),
# freelist page, high water page id, transaction id, FNV-1a checksum of the fields before it.
_META: Final = struct.Struct("<IIIIQQQQQQ")
_BRANCH_ELEMENT: Final = struct.Struct("<IIQ")
_LEAF_ELEMENT: Final = struct.Struct("<IIII")
_BUCKET_HEADER: Final = struct.Struct("<QQ")
_BRANCH_PAGE: Final = 0x01
_LEAF_PAGE: Final = 0x02
_META_PAGE: Final = 0x04
_BUCKET_LEAF: Final = 0x01
# A corrupt or torn page must not send the reader round a cycle or through a huge file: the
# depth of a tree, and the pages one snapshot may read (a lookup reads a few dozen).
_MAX_DEPTH: Final = 32
_MAX_PAGE_READS: Final = 4096
_FNV_OFFSET: Final = 0xCBF29CE484222325
_FNV_PRIME: Final = 0x100000001B3


class BoltError(Exception):
    """The file is no bbolt database, or changed while being read (try again)."""


def _unpack(layout: struct.Struct, buffer: bytes, offset: int) -> tuple[int, ...]:
    """`layout` at `offset`; a structure cut short (a torn or corrupt page) is a BoltError."""
    try:
        return layout.unpack_from(buffer, offset)
    except struct.error as exc:
        raise BoltError(f"a structure at offset {offset} runs past its page") from exc


def _fnv64a(data: bytes) -> int:
    value = _FNV_OFFSET
    for byte in data:
        value = ((value ^ byte) * _FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return value


class Bucket:
    """A bucket of one snapshot: its page (or inline page bytes)."""

    def __init__(self, snapshot: Snapshot, root: int, inline: bytes | None = None) -> None:
        self._snapshot = snapshot
        self._root = root
        self._inline = inline

    def items(self) -> Iterator[tuple[bytes, bytes, bool]]:
        """(key, value, is_bucket) in key order."""
        if self._inline is not None:
            yield from _leaf_items(self._inline, 0)
            return
        yield from self._snapshot.page_items(self._root, 0)

    def _find(self, key: bytes) -> tuple[bytes, bool] | None:
        if self._inline is not None:
            items: Iterator[tuple[bytes, bytes, bool]] = _leaf_items(self._inline, 0)
        else:
            items = self._snapshot.seek(self._root, key, 0)
        for found, value, is_bucket in items:
            if found == key:
                return value, is_bucket
        return None

    def get(self, key: bytes) -> bytes | None:
        """The value of a plain key (None when absent or a bucket)."""
        found = self._find(key)
        return found[0] if found is not None and not found[1] else None

    def bucket(self, key: bytes) -> Bucket | None:
        """The nested bucket `key` (None when absent or a plain key)."""
        found = self._find(key)
        return self._snapshot.bucket_of(found[0]) if found is not None and found[1] else None

    def buckets(self) -> Iterator[tuple[bytes, Bucket]]:
        for key, value, is_bucket in self.items():
            if is_bucket:
                yield key, self._snapshot.bucket_of(value)


def _leaf_items(page: bytes, offset: int) -> Iterator[tuple[bytes, bytes, bool]]:
    _, flags, count, _ = _unpack(_PAGE_HEADER, page, offset)
    if flags != _LEAF_PAGE:
        raise BoltError(f"expected a leaf page, found flags {flags:#x}")
    base = offset + _PAGE_HEADER.size
    for index in range(count):
        element = base + index * _LEAF_ELEMENT.size
        element_flags, pos, key_size, value_size = _unpack(_LEAF_ELEMENT, page, element)
        start = element + pos
        end = start + key_size + value_size
        if end > len(page):
            raise BoltError("a leaf element points past its page")
        yield (
            page[start : start + key_size],
            page[start + key_size : end],
            bool(element_flags & _BUCKET_LEAF),
        )


class Snapshot:
    """The newest committed tree of a bbolt file, read page by page with pread."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        first = os.pread(fd, 4096, 0)
        page_size = self._meta(first, 0)[0] if len(first) >= 4096 else 0
        if page_size < 1024 or page_size & (page_size - 1):
            raise BoltError("not a bbolt database (no valid first meta page)")
        self.page_size = page_size
        self._pages_read = 0
        self.txid, self.root, self.high_water = self._newest_meta()

    @staticmethod
    def _meta(page: bytes, offset: int) -> tuple[int, int, int, int]:
        """(page size, txid, root page, high water mark) of a valid meta page, else page size 0."""
        _, flags, _, _ = _unpack(_PAGE_HEADER, page, offset)
        fields = _unpack(_META, page, offset + _PAGE_HEADER.size)
        magic, version, page_size, _, root, _, _, high_water, txid, checksum = fields
        body = page[offset + _PAGE_HEADER.size : offset + _PAGE_HEADER.size + _META.size - 8]
        if flags != _META_PAGE or magic != _MAGIC or version != _VERSION:
            return 0, 0, 0, 0
        if _fnv64a(body) != checksum:
            return 0, 0, 0, 0
        return page_size, txid, root, high_water

    def _newest_meta(self) -> tuple[int, int, int]:
        pages = os.pread(self._fd, 2 * self.page_size, 0)
        if len(pages) < 2 * self.page_size:
            raise BoltError("a bbolt database shorter than its two meta pages")
        metas = [self._meta(pages, 0), self._meta(pages, self.page_size)]
        valid = [(txid, root, high) for size, txid, root, high in metas if size]
        if not valid:
            raise BoltError("no valid meta page")
        return max(valid)

    def unchanged(self) -> bool:
        """No commit happened since this snapshot was taken (its pages were not reused)."""
        try:
            return self._newest_meta()[0] == self.txid
        except BoltError:
            return False

    def root_bucket(self) -> Bucket:
        return Bucket(self, self.root)

    def bucket_of(self, value: bytes) -> Bucket:
        if len(value) < _BUCKET_HEADER.size:
            raise BoltError("a bucket value shorter than its header")
        root, _ = _unpack(_BUCKET_HEADER, value, 0)
        if root == 0:
            return Bucket(self, 0, value[_BUCKET_HEADER.size :])
        return Bucket(self, root)

    def _page(self, page_id: int) -> bytes:
        self._pages_read += 1
        if self._pages_read > _MAX_PAGE_READS:
            raise BoltError(f"more than {_MAX_PAGE_READS} pages read for one snapshot")
        if not 2 <= page_id < self.high_water:
            raise BoltError(f"page {page_id} outside the database")
        offset = page_id * self.page_size
        page = os.pread(self._fd, self.page_size, offset)
        if len(page) < self.page_size:
            raise BoltError(f"page {page_id} past the end of the file")
        overflow = _unpack(_PAGE_HEADER, page, 0)[3]
        if overflow:
            if page_id + overflow >= self.high_water:
                raise BoltError(f"page {page_id} overflows the database")
            page += os.pread(self._fd, overflow * self.page_size, offset + self.page_size)
        return page

    def seek(self, page_id: int, key: bytes, depth: int) -> Iterator[tuple[bytes, bytes, bool]]:
        """The items of the leaf page where `key` would be (branches: the last child whose
        first key is not after it)."""
        if depth > _MAX_DEPTH:
            raise BoltError("a tree deeper than any bbolt database holds")
        page = self._page(page_id)
        _, flags, count, _ = _unpack(_PAGE_HEADER, page, 0)
        if flags == _LEAF_PAGE:
            yield from _leaf_items(page, 0)
            return
        if flags != _BRANCH_PAGE or count == 0:
            raise BoltError(f"page {page_id}: expected a branch or leaf page, found {flags:#x}")
        child = 0
        for index in range(count):
            element = _PAGE_HEADER.size + index * _BRANCH_ELEMENT.size
            pos, key_size, page_of_child = _unpack(_BRANCH_ELEMENT, page, element)
            if index and page[element + pos : element + pos + key_size] > key:
                break
            child = page_of_child
        yield from self.seek(child, key, depth + 1)

    def page_items(self, page_id: int, depth: int) -> Iterator[tuple[bytes, bytes, bool]]:
        if depth > _MAX_DEPTH:
            raise BoltError("a tree deeper than any bbolt database holds")
        page = self._page(page_id)
        _, flags, count, _ = _unpack(_PAGE_HEADER, page, 0)
        if flags == _LEAF_PAGE:
            yield from _leaf_items(page, 0)
            return
        if flags != _BRANCH_PAGE:
            raise BoltError(f"page {page_id}: expected a branch or leaf page, found {flags:#x}")
        for index in range(count):
            child = _unpack(
                _BRANCH_ELEMENT, page, _PAGE_HEADER.size + index * _BRANCH_ELEMENT.size
            )[2]
            yield from self.page_items(child, depth + 1)


def open_snapshot(path: Path) -> tuple[int, Snapshot]:
    """(fd, snapshot) of the database at `path`; the caller closes fd."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return fd, Snapshot(fd)
    except BaseException:
        os.close(fd)
        raise
