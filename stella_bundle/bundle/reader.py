"""Reading a gzip tar as hostile input, streaming, without extracting anything.

A small ustar/pax parser (not `tarfile`): `tarfile` reads a pax header of any declared size
into memory and accepts links, devices and odd names by default. Every refusal raises
`ArchiveError` with its own message before the member's content is read, so a caller that
writes only after iteration finished has written nothing for a hostile archive.
"""

from __future__ import annotations

import queue
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..compression import GZIP_MAGIC, BoundedInflater, InflateLimits
from ..errors import ArchiveError, clipped
from ..formats.manifest import check_member_name, name_key

BLOCK = 512
READ_CHUNK = 1 << 20

GiB = 1024**3
MiB = 1024**2


@dataclass(frozen=True)
class ReaderLimits:
    """Bounds that turn a decompression bomb or an absurd header into a clear refusal."""

    max_member_size: int = 16 * GiB
    # Decompressed bytes of the whole tar stream.
    max_total_size: int = 256 * GiB
    # deflate cannot exceed ~1032:1; real bundles (zstd chunks, JSON) stay far below 100:1.
    max_ratio: int = 200
    # The ratio is judged only past this many decompressed bytes (tiny archives of zeros are fine).
    ratio_floor: int = 64 * MiB
    max_members: int = 1_000_000
    # pax / GNU long-name headers are read into memory, so they are capped.
    max_extended_header: int = 1 * MiB


@dataclass(frozen=True)
class ArchiveMember:
    name: str
    size: int
    mtime: int
    mode: int


class MemberStream:
    """Read-only view of the current member's bytes; only valid until the next member."""

    def __init__(self, reader: SafeTarReader, member: ArchiveMember) -> None:
        self._reader = reader
        self.member = member
        self.remaining = member.size

    def read(self, size: int = -1) -> bytes:
        if self.remaining <= 0:
            return b""
        if size < 0 or size > self.remaining:
            size = min(self.remaining, READ_CHUNK) if size < 0 else self.remaining
        data = self._reader._read_exact(size, f"content of {self.member.name}")
        self.remaining -= len(data)
        return data

    def readable(self) -> bool:
        return True

    def iter_chunks(self, size: int = READ_CHUNK) -> Iterator[bytes]:
        while self.remaining > 0:
            yield self.read(min(size, self.remaining))

    def read_all(self, limit: int) -> bytes:
        """The whole member in memory; refused past `limit` bytes (documents, not bulk data)."""
        if self.member.size > limit:
            raise ArchiveError(
                f"member is {self.member.size} bytes, over the {limit}-byte limit for documents",
                path=self.member.name,
            )
        return b"".join(self.iter_chunks())


def _octal(field: bytes, what: str, source: str) -> int:
    if field and field[0] in (0x80, 0xFF):  # GNU base-256 for large numbers
        if field[0] == 0xFF:
            raise ArchiveError(f"negative {what} in tar header", path=source)
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    # Octal digits only: int(text, 8) would also take a sign ("-7": a negative size), "0o",
    # underscores and surrounding whitespace.
    if _OCTAL_RE.fullmatch(text) is None:
        raise ArchiveError(f"corrupt tar header: {what} is not octal digits", path=source)
    return int(text, 8)


_OCTAL_RE = re.compile(rb"[0-7]+")
_DECIMAL_RE = re.compile(r"[0-9]{1,20}")


def _decimal(text: str, what: str, source: str) -> int:
    """A pax number: ASCII decimal digits only (no sign, no spaces, no underscores, no
    non-ASCII digits, which int() would all accept), at most 20 digits (above 2**64)."""
    if _DECIMAL_RE.fullmatch(text) is None:
        raise ArchiveError(
            f"pax {what!r} is {text[:40]!r}, expected a non-negative decimal integer",
            path=source,
        )
    return int(text)


def _numbers(header: bytes, source: str) -> tuple[int, int]:
    """(mode, mtime) of a header, every numeric field checked: GNU tar refuses a header whose
    uid or gid is not a number, and tarfile silently ends the archive at one (an extended
    header's too), so the members after it are not the ones read here. uid and gid stay
    unused."""
    _octal(header[108:116], "uid", source)
    _octal(header[116:124], "gid", source)
    return _octal(header[100:108], "mode", source), _octal(header[136:148], "mtime", source)


def _checksum_ok(header: bytes, source: str) -> bool:
    """False for a wrong or unreadable checksum: either way the block is not a header (most
    often a member's content read as one, after a header declared too small a size)."""
    try:
        stored = _octal(header[148:156], "checksum", source)
    except ArchiveError:
        return False
    unsigned = sum(header[:148]) + 8 * 32 + sum(header[156:])
    signed = sum((b - 256 if b > 127 else b) for b in header[:148] + b" " * 8 + header[156:])
    return stored in (unsigned, signed)


_TYPE_REFUSALS = {
    b"1": "hard link",
    b"2": "symbolic link",
    b"3": "character device node",
    b"4": "block device node",
    b"6": "FIFO (named pipe)",
}


class SafeTarReader:
    """Iterate the regular files of a gzip tar: `for member, stream in reader:`."""

    def __init__(
        self,
        raw: IO[bytes],
        source: str,
        limits: ReaderLimits | None = None,
        *,
        prefetch: bool = True,
    ) -> None:
        self.source = source
        self.limits = limits or ReaderLimits()
        magic = raw.read(2)
        if magic != GZIP_MAGIC:
            raise ArchiveError("not a gzip-compressed tar (bad magic bytes)", path=source)
        # The one bounded inflater of the toolkit: total size and compression ratio.
        inflater = BoundedInflater(
            _Prefixed(magic, raw),
            "gzip",
            source,
            InflateLimits(
                max_bytes=self.limits.max_total_size,
                max_ratio=self.limits.max_ratio,
                ratio_floor=self.limits.ratio_floor,
                # Far below the 64 MiB floor even at deflate's 1032:1; large reads for speed.
                read_size=READ_CHUNK // 8,
            ),
            error=ArchiveError,
            what="archive",
        )
        self._gzip: BoundedInflater | _Prefetcher = _Prefetcher(inflater) if prefetch else inflater
        self.decompressed = 0
        self.members = 0
        self._seen: dict[str, str] = {}  # name_key -> the name first met
        self._pending: MemberStream | None = None
        self._last_name = ""
        self._files: set[str] = set()  # name_key of each file
        self._directories: set[str] = set()  # name_key of each directory (entries and parents)

    def close(self) -> None:
        """Stop the decompression thread (iteration may have stopped early)."""
        if isinstance(self._gzip, _Prefetcher):
            self._gzip.close()

    @classmethod
    def open(cls, path: str | Path, limits: ReaderLimits | None = None) -> _OpenReader:
        return _OpenReader(Path(path), limits)

    # --- the decompressed stream, with bomb checks ------------------------------------------

    def _read_exact(self, size: int, what: str) -> bytes:
        parts = []
        wanted = size
        while wanted > 0:
            data = self._gzip.read(min(wanted, READ_CHUNK))
            if not data:
                raise ArchiveError(f"archive truncated while reading {what}", path=self.source)
            self._account(len(data))
            parts.append(data)
            wanted -= len(data)
        return b"".join(parts) if len(parts) != 1 else parts[0]

    def _account(self, count: int) -> None:
        # Bounds (size, ratio) are the inflater's; this is the position in the tar stream.
        self.decompressed += count

    def _skip(self, size: int) -> None:
        while size > 0:
            step = min(size, READ_CHUNK)
            self._read_exact(step, "member content")
            size -= step

    # --- members ---------------------------------------------------------------------------

    def __iter__(self) -> Iterator[tuple[ArchiveMember, MemberStream]]:
        overrides: dict[str, Any] = {}
        # The extended records met since the last member ('x', 'L', 'K'): a member named by
        # two of them is read differently by GNU tar (the pax path, else the last record)
        # and tarfile (the first), so it is refused rather than read one way.
        extended: list[bytes] = []
        while True:
            if self._pending is not None:
                pending = self._pending
                self._pending = None
                self._skip(pending.remaining + _padding(pending.member.size))
            header = self._read_exact(BLOCK, "a tar header")
            if header == b"\0" * BLOCK:
                if extended:
                    raise ArchiveError(
                        "extended header with no member after it (tarfile refuses the "
                        "archive, GNU tar ignores the header)",
                        path=self.source,
                    )
                self._finish()
                return
            if not _checksum_ok(header, self.source):
                raise ArchiveError(
                    f"corrupt tar header at byte {self.decompressed - BLOCK} (checksum mismatch"
                    f"{self._after()}; expected a ustar header there)",
                    path=self.source,
                )
            typeflag = header[156:157]
            size = _octal(header[124:136], "size", self.source)
            if typeflag in (b"x", b"g", b"L", b"K"):
                _numbers(header, self.source)
                self._extended(typeflag, size, overrides, extended)
                continue
            name, size = _member_name(header, typeflag, size, overrides, self.source)
            overrides = {}
            extended = []
            member = self._admit(name, typeflag, size, header)
            if member is None:  # a directory entry: checked, carries no content
                continue
            stream = MemberStream(self, member)
            self._last_name = member.name
            self._pending = stream
            yield member, stream

    def _after(self) -> str:
        """`, after member 'NAME'`: where a corrupt header sits, for the error line."""
        last = self._last_name
        return f", after member {clipped(last)!r}" if last else ""

    def _extended(
        self, typeflag: bytes, size: int, overrides: dict[str, Any], extended: list[bytes]
    ) -> None:
        """Read one extended record ('x', 'g', 'L', 'K') into `overrides` for the next member."""
        if size > self.limits.max_extended_header:
            raise ArchiveError(
                f"extended header of {size} bytes exceeds the limit of "
                f"{self.limits.max_extended_header}",
                path=self.source,
            )
        body = self._read_exact(size, "an extended header") if size else b""
        self._skip(_padding(size))
        if typeflag == b"g":
            _check_global(_parse_pax(body, self.source), self.source)
            return
        if typeflag in extended:
            kind = "pax extended headers" if typeflag == b"x" else "GNU long-name records"
            raise ArchiveError(
                f"two {kind} for one member (GNU tar takes the last, tarfile the first)",
                path=self.source,
            )
        extended.append(typeflag)
        if typeflag in (b"L", b"K") and b"\0" not in body:
            # GNU tar and tarfile read a long name up to its NUL, on into the block's padding
            # past the declared size: without one within the size, they read another name.
            raise ArchiveError(
                "GNU long-name record without a NUL within its declared size (GNU tar and "
                "tarfile read on past it)",
                path=self.source,
            )
        if typeflag == b"x":
            overrides.update(_parse_pax(body, self.source))
        elif typeflag == b"L":
            overrides["GNU.longname"] = _decode(body.split(b"\0", 1)[0], self.source)
        else:
            overrides["linkpath"] = _decode(body.split(b"\0", 1)[0], self.source)
        if "path" in overrides and "GNU.longname" in overrides:
            raise ArchiveError(
                "member named by both a GNU long name and a pax path (GNU tar takes "
                "the pax path, tarfile the one read last)",
                path=self.source,
            )

    def _admit(
        self, raw_name: str, typeflag: bytes, size: int, header: bytes
    ) -> ArchiveMember | None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise ArchiveError(
                f"more than {self.limits.max_members} members (limit)", path=self.source
            )
        if typeflag in _TYPE_REFUSALS:
            target = _decode(header[157:257].split(b"\0", 1)[0], self.source)
            raise ArchiveError(
                f"{_TYPE_REFUSALS[typeflag]} {raw_name!r}"
                + (f" -> {target!r}" if target else "")
                + " refused: bundles hold regular files only",
                path=self.source,
            )
        is_directory = typeflag == b"5"
        if not is_directory and typeflag not in (b"0", b"\0", b""):
            raise ArchiveError(
                f"member {raw_name!r} has unsupported tar type {typeflag!r}", path=self.source
            )
        name = raw_name.rstrip("/") if is_directory else raw_name
        check_member_name(name, self.source)
        key = name_key(name)
        if key in self._seen:
            earlier = self._seen[key]
            if earlier == name:
                raise ArchiveError(f"duplicate entry name {name!r} refused", path=self.source)
            raise ArchiveError(
                f"entry name {name!r} is a Unicode/case twin of {earlier!r} refused",
                path=self.source,
            )
        self._seen[key] = name
        self._check_tree(name, key, is_directory)
        if is_directory and size:
            # tarfile reads the next header where the content starts (and stops there), GNU
            # tar skips it with an error: a member hidden behind a directory is refused.
            raise ArchiveError(
                f"directory entry {clipped(name)!r} declares {size} bytes of content "
                "(a directory carries none)",
                path=self.source,
            )
        if size > self.limits.max_member_size:
            raise ArchiveError(
                f"member {name!r} declares {size} bytes, over the limit of "
                f"{self.limits.max_member_size} bytes",
                path=self.source,
            )
        mode, mtime = _numbers(header, self.source)
        if is_directory:
            return None
        return ArchiveMember(name=name, size=size, mtime=mtime, mode=mode)

    def _check_tree(self, name: str, key: str, is_directory: bool) -> None:
        """A name that is a file and also a directory of another entry is refused: GNU tar
        cannot extract both ("Not a directory"), so what it extracts is not what was read."""
        if not is_directory:
            if key in self._directories:
                raise ArchiveError(
                    f"file {clipped(name)!r} is also a directory of another entry", path=self.source
                )
            self._files.add(key)
        else:
            self._directories.add(key)
        parts = key.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent in self._files:
                raise ArchiveError(
                    f"entry {clipped(name)!r} lies under {clipped(parent)!r}, a file in this "
                    "archive",
                    path=self.source,
                )
            self._directories.add(parent)

    def _finish(self) -> None:
        """After the end marker's first zero block only zeros may follow, up to the end of the
        gzip data: GNU tar and tarfile stop at the marker and never show what lies past it,
        while `tar -i` (--ignore-zeros) and tarfile's ignore_zeros=True read on and extract
        the members hidden there. Refused, naming the first byte that is not zero."""
        marker = self.decompressed - BLOCK
        while True:
            data = self._gzip.read(READ_CHUNK)
            if not data:
                return
            at = self.decompressed
            self._account(len(data))
            zeros = len(data) - len(data.lstrip(b"\0"))
            if zeros < len(data):
                offset = at + zeros
                where = (
                    "inside the end-of-archive marker (its second zero block)"
                    if offset < marker + 2 * BLOCK
                    else f"after the end-of-archive marker (at byte {marker})"
                )
                raise ArchiveError(
                    f"non-zero data at byte {offset} of the tar stream, {where}: GNU tar and "
                    "tarfile stop at the marker, tar -i and ignore_zeros read on",
                    path=self.source,
                )


class _Prefetcher:
    """Inflates ahead in a thread (zlib releases the GIL), a few blocks deep, so decompression
    overlaps the hashing and parsing of the previous blocks. Errors surface on `read`."""

    DEPTH = 4

    def __init__(self, source: Any) -> None:
        self._source = source
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=self.DEPTH)
        self._stop = threading.Event()
        self._current = b""
        self._offset = 0
        self._finished = False
        self._thread = threading.Thread(target=self._run, name="bundle-inflate", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._source.read(READ_CHUNK)
            except BaseException as exc:  # handed to the reader, which knows what it means
                self._put(exc)
                return
            self._put(data)
            if not data:
                return

    def _put(self, item: bytes | BaseException) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def read(self, size: int) -> bytes:
        parts = []
        while size > 0:
            if self._offset == len(self._current):
                if self._finished:
                    break
                item = self._queue.get()
                if isinstance(item, BaseException):
                    self._finished = True
                    raise item
                if not item:
                    self._finished = True
                    break
                self._current, self._offset = item, 0
            # A view, copied once by the join (a whole item is returned as it is).
            piece = memoryview(self._current)[self._offset : self._offset + size]
            self._offset += len(piece)
            size -= len(piece)
            parts.append(piece)
        if len(parts) == 1 and len(parts[0]) == len(self._current):
            return self._current
        return b"".join(parts)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class _Prefixed:
    """Puts back the magic bytes we peeked at."""

    def __init__(self, prefix: bytes, inner: IO[bytes]) -> None:
        self._prefix = prefix
        self._inner = inner

    def read(self, size: int = -1) -> bytes:
        if self._prefix:
            head, self._prefix = self._prefix, b""
            if size < 0:
                return head + self._inner.read()
            return head + self._inner.read(max(size - len(head), 0))
        return self._inner.read(size)

    def readable(self) -> bool:
        return True


class _OpenReader:
    """Context manager owning the file handle of a `SafeTarReader`."""

    def __init__(self, path: Path, limits: ReaderLimits | None) -> None:
        self._path = path
        self._limits = limits
        self._handle: IO[bytes] | None = None
        self._reader: SafeTarReader | None = None

    def __enter__(self) -> SafeTarReader:
        try:
            self._handle = open(self._path, "rb")
        except OSError as exc:
            raise ArchiveError(f"cannot open: {exc.strerror}", path=self._path) from exc
        self._reader = SafeTarReader(self._handle, str(self._path), self._limits)
        return self._reader

    def __exit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.close()
        if self._handle is not None:
            self._handle.close()


def _member_name(
    header: bytes, typeflag: bytes, size: int, overrides: dict[str, Any], source: str
) -> tuple[str, int]:
    """The member's name and size: the header's, or its extended records'."""
    name = _decode(header[0:100].split(b"\0", 1)[0], source)
    if header[257:263] == b"ustar\0":  # POSIX ustar: a prefix field
        prefix = _decode(header[345:500].split(b"\0", 1)[0], source)
        if prefix:
            name = prefix + "/" + name
    elif typeflag != b"S" and header[345:500].count(0) != 155:
        # GNU and v7 headers have no prefix field (GNU keeps times and sparse data there):
        # GNU tar ignores those bytes, tarfile prepends them to the name.
        raise ArchiveError(
            f"member {clipped(name)!r}: a GNU or v7 header with bytes in the ustar prefix "
            "field (GNU tar and tarfile read different names)",
            path=source,
        )
    if "GNU.longname" in overrides:
        name = str(overrides["GNU.longname"])
    if "path" in overrides:
        name = str(overrides["path"])
    if "size" in overrides:
        size = _decimal(str(overrides["size"]), "size", source)
    if any(key.startswith("GNU.sparse.") for key in overrides):
        # A pax sparse member (GNU tar --sparse --format=pax) is a type '0' entry whose
        # content is a sparse map plus data under a made-up name: read as a regular file
        # it would give another name and other bytes than tar does. Refused, like 'S'.
        sparse_name = str(overrides.get("GNU.sparse.name", name))
        raise ArchiveError(
            f"sparse member {sparse_name!r} refused: bundles hold regular files only",
            path=source,
        )
    return name, size


def _padding(size: int) -> int:
    return (-size) % BLOCK


def _decode(raw: bytes, source: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ArchiveError(f"member name {raw!r} is not UTF-8", path=source) from exc


# pax keywords that change what a member is (its name, its size, its link, how its name is
# decoded, a sparse map). In a local header ('x') the reader honours path and size and refuses
# the rest; in a global one ('g') GNU tar and tarfile apply them to every later member while
# a reader that skips 'g' headers would not: refused there.
_GLOBAL_REFUSED = ("path", "size", "linkpath", "hdrcharset")


def _check_global(fields: dict[str, str], source: str) -> None:
    for key in sorted(fields):
        if key in _GLOBAL_REFUSED or key.startswith("GNU.sparse."):
            raise ArchiveError(
                f"global pax header sets {key!r} (GNU tar and tarfile apply it to every "
                "member after it): refused",
                path=source,
            )


def _parse_pax(body: bytes, source: str) -> dict[str, str]:
    """pax records: `<length> <key>=<value>\\n`."""
    fields: dict[str, str] = {}
    position = 0
    while position < len(body):
        space = body.find(b" ", position)
        if space < 0:
            if body[position:].strip(b"\0"):
                # GNU tar fails on them ("missing length"); tarfile skips them.
                raise ArchiveError("malformed pax header: bytes after its last record", path=source)
            break
        digits = body[position:space]
        if re.fullmatch(rb"[0-9]{1,20}", digits) is None:
            raise ArchiveError("malformed pax header record length", path=source)
        length = int(digits)
        if length <= space - position or position + length > len(body):
            raise ArchiveError("malformed pax header record length", path=source)
        if body[position + length - 1] != 0x0A:  # GNU tar: "missing newline"
            raise ArchiveError("malformed pax header record (no newline at its end)", path=source)
        record = body[space + 1 : position + length - 1]
        key, sep, value = record.partition(b"=")
        if not sep:
            raise ArchiveError("malformed pax header record (no '=')", path=source)
        fields[_decode(key, source)] = _decode(value, source)
        position += length
    return fields
