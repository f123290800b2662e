"""Every zstd or gzip decompression of outside data goes through `BoundedInflater`.

A few KB of zstd can inflate to gigabytes (of newlines, say), and a reader without a bound
spends minutes on them before any record check runs. The inflater counts the compressed
bytes it consumed and the bytes it produced and refuses, naming the file, as soon as either
the output passes an absolute limit or the ratio of the two passes a ratio limit (judged only
past a floor, so small files of zeros are fine). Corrupt data becomes the same one-line error.
The bundle reader's gzip layer has its own accounting (`bundle.reader.ReaderLimits`), with the
same rule.

gzip goes through ISA-L (`isal`, the igzip of Intel's ISA-L: standard gzip, read by `gzip -d` and
`tar -xzf`), which inflates about twice and deflates (at its level 2) about fifteen times as fast
as zlib; both release the GIL, so a reader thread inflates while the caller parses. The gzip
framing around ISA-L's raw deflate is read here (`GzipMembers`), as GNU gzip reads it: what
`gzip -d` (so `tar -xzf`) refuses in any member, or after the last, is refused, so a file we
read is one the auditor's tools read alike.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import zstandard
from isal import isal_zlib

from .errors import MalformedDocumentError, StellaError

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"
# isal's stubs declare its error as an instance; it is the exception class corrupt data raises.
ISAL_ERROR: type[Exception] = isal_zlib.error  # type: ignore[assignment]

MiB = 1024**2
GiB = 1024**3

Format = Literal["zstd", "gzip"]

# The gzip header's FLG bits (RFC 1952 2.3.1; GNU gzip's names for bits 5 to 7).
_FHCRC = 0x02
_FEXTRA = 0x04
_FNAME = 0x08
_FCOMMENT = 0x10
_ENCRYPTED = 0x20
_RESERVED = 0xC0


@dataclass(frozen=True)
class InflateLimits:
    """How far one compressed input may inflate."""

    # Absolute bound of the decompressed bytes of one input.
    max_bytes: int = 8 * GiB
    # zstd over our JSON lines stays under ~50:1; zstd can reach 30000:1, so 1000:1 is a bomb.
    max_ratio: int = 1000
    # The ratio is judged only past this many decompressed bytes (small files of zeros pass).
    ratio_floor: int = 1 * MiB
    # Compressed bytes handed to the decompressor per read. Both decompressors read ahead
    # (zstd 128 KiB, gzip 128 KiB), and the ratio can only be judged on what they consumed:
    # 66 KB of zstd frames, read at once, may inflate to 66 MB before the ratio shows. Small
    # reads make a bomb trip at the floor (1 KiB x 1000 = the 1 MiB floor), before a reader
    # has spent seconds on the lines it produced.
    read_size: int = 1024


DEFAULT_LIMITS = InflateLimits()
# deflate cannot exceed ~1032:1, so gzip needs a lower ratio (JSON lines stay under ~20:1).
GZIP_LIMITS = InflateLimits(max_ratio=200)


# ISA-L's levels run 0-3; at 2 (its default) it deflates our JSON lines to within ~1.5x of
# gzip -6's size at ~15x its speed, and evidence chunks (already zstd) cost it next to nothing.
GZIP_WRITE_LEVEL = isal_zlib.ISAL_DEFAULT_COMPRESSION


# The gzip header every bundle starts with: deflate, no flags (no file name), mtime 0, no extra
# flags, OS 255 (unknown): what `gzip.compress(data, mtime=0)` writes, the same for any input.
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


class DeflateSegment:
    """Raw deflate (ISA-L) of a run of bytes onto `output`, with their CRC-32 and length: a
    piece of a gzip stream that can be made apart from the rest and spliced in whole
    (`GzipWriter.splice`). `finish` ends it with a sync flush: byte-aligned, not final, and
    nothing after it refers back into it, so the segments' concatenation is one valid deflate
    stream. Same bytes written the same way give the same output (one version of ISA-L)."""

    def __init__(self, output: IO[bytes], level: int = GZIP_WRITE_LEVEL) -> None:
        self._output = output
        self._deflate = isal_zlib.compressobj(level, isal_zlib.DEFLATED, -isal_zlib.MAX_WBITS)
        self.crc = 0
        self.size = 0

    def write(self, data: bytes) -> int:
        self._output.write(self._deflate.compress(data))
        self.crc = isal_zlib.crc32(data, self.crc)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        """Nothing to do: the segment is flushed once, by `finish`."""

    def finish(self, final: bool = False) -> None:
        flush = isal_zlib.Z_FINISH if final else isal_zlib.Z_SYNC_FLUSH
        self._output.write(self._deflate.flush(flush))


class GzipWriter:
    """A standard gzip stream onto `output` (which it does not close), reproducible: no file
    name and mtime 0 in the header, so the same bytes in give the same bytes out (for one
    version of ISA-L: pyproject.toml holds `isal` to one minor series). Deflated by segments:
    `splice` ends the current one and copies in a segment deflated beforehand (the bundle's
    view, deflated while it was first read), so its bytes are not inflated and deflated again;
    the trailer's CRC-32 combines the segments'."""

    def __init__(self, output: IO[bytes], level: int = GZIP_WRITE_LEVEL) -> None:
        self._output = output
        self._level = level
        self._crc = 0
        self._size = 0
        output.write(GZIP_HEADER)
        self._segment = DeflateSegment(output, level)
        self._closed = False

    def write(self, data: bytes) -> int:
        return self._segment.write(data)

    def _end_segment(self, final: bool) -> None:
        segment = self._segment
        segment.finish(final)
        self._crc = isal_zlib.crc32_combine(self._crc, segment.crc, segment.size)
        self._size += segment.size

    def splice(self, deflated: Path, crc: int, size: int) -> None:
        """Append a `DeflateSegment` finished into the file `deflated`, of `size` bytes whose
        CRC-32 is `crc`."""
        self._end_segment(final=False)
        with open(deflated, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                self._output.write(block)
        self._crc = isal_zlib.crc32_combine(self._crc, crc, size)
        self._size += size
        self._segment = DeflateSegment(self._output, self._level)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._end_segment(final=True)
        self._output.write(self._crc.to_bytes(4, "little"))
        self._output.write((self._size & 0xFFFFFFFF).to_bytes(4, "little"))


def default_limits(compression: Format) -> InflateLimits:
    return GZIP_LIMITS if compression == "gzip" else DEFAULT_LIMITS


def compression_of(head: bytes) -> Format | None:
    """The format announced by a file's first bytes (magic, never the name)."""
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    return None


class _Counting:
    """Counts the compressed bytes the decompressor pulls from the source (and shows them to
    `frames`, which follows zstd's frame structure)."""

    def __init__(self, source: Any, read_size: int, frames: ZstdFrames | None = None) -> None:
        self._source = source
        self._read_size = read_size
        self._frames = frames
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        # A short read is allowed of a stream: both decompressors ask again.
        data: bytes = self._source.read(
            self._read_size if size is None or size < 0 else min(size, self._read_size)
        )
        if self._frames is not None:
            self._frames.feed(data, self.count)
        self.count += len(data)
        return data

    def readable(self) -> bool:
        return True


class ZstdFrames:
    """Follows the frames of a zstd stream as its bytes go by, by their headers and block
    headers (no decompression): python-zstandard's stream reader returns what a truncated last
    frame held and stops without an error, where `zstd -d` fails ("premature end"), so a chunk
    cut short read as its first records here and as an error for the auditor's tool. At the end
    of the input a frame must have ended (and one at least been read)."""

    def __init__(self) -> None:
        self._pending = b""  # bytes of the structure being read (header, block header)
        self._skip = 0  # bytes to pass over (block contents, skippable frames, checksums)
        self._state = "magic"
        self._checksum = False
        self._descriptor = 0
        self.frames = 0

    def feed(self, data: bytes, offset: int) -> None:
        if not data:
            if self._state != "magic" or self._skip or self._pending:
                raise ZstdFault(
                    f"the data ends inside zstd frame {self.frames} (at byte {offset}; "
                    "zstd -d: 'premature end')"
                )
            if not self.frames:
                raise ZstdFault("no zstd frame (zstd -d: 'unexpected end of file')")
            return
        position = 0
        while position < len(data):
            if self._skip:
                step = min(self._skip, len(data) - position)
                self._skip -= step
                position += step
                continue
            need = self._need()
            take = min(need - len(self._pending), len(data) - position)
            self._pending += data[position : position + take]
            position += take
            if len(self._pending) == need:
                self._advance()

    def _need(self) -> int:
        """The size of the structure read next (RFC 8878 3.1.1)."""
        state = self._state
        if state in ("magic", "skippable"):
            return 4
        if state == "descriptor":
            return 1
        if state == "header":  # window descriptor, dictionary id, content size
            descriptor = self._descriptor
            single = descriptor & 0x20
            size_bytes = (1 if single else 0, 2, 4, 8)[descriptor >> 6]
            return (0 if single else 1) + (0, 1, 2, 4)[descriptor & 3] + size_bytes
        return 3  # a block header

    def _advance(self) -> None:
        pending, self._pending = self._pending, b""
        state = self._state
        if state == "magic":
            magic = int.from_bytes(pending, "little")
            if magic == 0xFD2FB528:
                self._state = "descriptor"
                self.frames += 1
            elif magic & 0xFFFFFFF0 == 0x184D2A50:
                self._state = "skippable"
                self.frames += 1
            else:
                self._state = "magic"  # not zstd: the decompressor names it
        elif state == "skippable":
            self._skip = int.from_bytes(pending, "little")
            self._state = "magic"
        elif state == "descriptor":
            self._descriptor = pending[0]
            self._checksum = bool(pending[0] & 0x04)
            self._state = "header"
            if self._need() == 0:
                self._state = "block"
        elif state == "header":
            self._state = "block"
        else:  # a block header: last-block bit, type, size
            header = int.from_bytes(pending, "little")
            kind, size = (header >> 1) & 3, header >> 3
            self._skip = 1 if kind == 1 else size
            if header & 1:
                self._skip += 4 if self._checksum else 0
                self._state = "magic"


class ZstdFault(ValueError):
    """A zstd stream that `zstd -d` refuses and the stream reader does not (truncated)."""


# What gzip -d also reads as a later member of a .gz file (gzip's get_method).
_GZIP_OTHER_FORMATS = {
    b"\x1f\x9e": "old (pre-1.0)",
    b"\x1f\x1e": "pack",
    b"\x1f\x9d": "compress (LZW)",
    b"\x1f\xa0": "LZH",
}


class GzipFault(ValueError):
    """gzip framing that GNU gzip refuses (a header, a trailer, bytes after the last member)."""


class GzipMembers:
    """The decompressed bytes of a gzip stream of one or more members, read as GNU gzip reads
    it (`gzip -d`, so `tar -xzf`), not as Python's or ISA-L's gzip readers do, which skip over
    what gzip refuses. In every member (not only the first): the magic, method 8 (deflate), no
    encrypted or reserved flag bits, the header's CRC-16 when it has one, the trailer's CRC-32
    and length. After the last member: nothing, or zero bytes to the end (gzip ignores them
    silently); anything else is refused (gzip warns "trailing garbage ignored" and exits 2, so
    `tar -xzf` fails). gzip's other formats in a later member (pack, LZW, LZH, the old
    `1f 9e` magic) are refused too: stricter than gzip, and no bundle is written so.
    The deflate data itself goes to ISA-L's raw inflater."""

    # An empty member is 20 bytes and inflates to nothing, so no ratio trips on a file of
    # them, while each costs a few microseconds here: 1 GB of them would be minutes of CPU.
    # Real inputs have one member (ours, Tetragon's backups) or a few (`cat a.gz b.gz`).
    MAX_MEMBERS = 65_536

    def __init__(self, source: Any) -> None:
        self._source = source
        self._buffer = b""  # compressed bytes read and not yet used
        self._position = 0  # offset in the compressed stream of self._buffer[0]
        self._inflate: Any = None  # the current member's raw inflater, None between members
        self._crc = 0
        self._size = 0
        self._member = 0  # the current (or last) member's number, from 1
        self._start = 0  # the compressed offset where it starts
        self._ended = False

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes (at least one unless the stream has ended)."""
        if size is None or size < 0:
            size = 1 << 20
        parts: list[bytes] = []
        got = 0
        while got < size and not self._ended:
            if self._inflate is None and not self._next_member():
                self._ended = True
                break
            if not self._buffer and not self._fill():
                raise GzipFault(
                    f"{self._where()}: the data ends inside its deflate stream "
                    "(gzip -d: 'unexpected end of file')"
                )
            inflate = self._inflate
            buffer = self._buffer
            data = inflate.decompress(buffer, size - got)
            rest = inflate.unused_data if inflate.eof else inflate.unconsumed_tail
            self._position += len(buffer) - len(rest)
            self._buffer = rest
            if data:
                self._crc = isal_zlib.crc32(data, self._crc)
                self._size += len(data)
                parts.append(data)
                got += len(data)
            if inflate.eof:
                self._trailer()
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _where(self) -> str:
        return f"gzip member {self._member} (at byte {self._start})"

    def _fill(self) -> bool:
        data = self._source.read(-1)
        if not data:
            return False
        self._buffer = self._buffer + data if self._buffer else data
        return True

    def _take(self, count: int, what: str) -> bytes:
        while len(self._buffer) < count:
            if not self._fill():
                raise GzipFault(
                    f"{self._where()}: the data ends inside its {what} "
                    "(gzip -d: 'unexpected end of file')"
                )
        data = self._buffer[:count]
        self._buffer = self._buffer[count:]
        self._position += count
        return data

    def _skip_string(self, crc: int, what: str) -> int:
        """Pass a NUL-ended header string (not kept: gzip bounds neither), folded into `crc`."""
        while True:
            end = self._buffer.find(b"\0")
            if end >= 0:
                return isal_zlib.crc32(self._take(end + 1, what), crc)
            crc = isal_zlib.crc32(self._take(len(self._buffer), what), crc)
            if not self._fill():
                raise GzipFault(
                    f"{self._where()}: the data ends inside its {what} "
                    "(gzip -d: 'unexpected end of file')"
                )

    def _next_member(self) -> bool:
        """Read the next member's header; False at the end of the stream."""
        if not self._buffer and not self._fill():
            if self._member == 0:
                raise GzipFault("empty file: no gzip member")
            return False
        if self._member and self._buffer[0] == 0:
            self._zeros_to_end()
            return False
        self._member += 1
        self._start = self._position
        if self._member > self.MAX_MEMBERS:
            raise GzipFault(
                f"more than {self.MAX_MEMBERS} gzip members (at byte {self._position}; "
                "a bomb of empty members?)"
            )
        if self._member > 1 and self._buffer[:2] in _GZIP_OTHER_FORMATS:
            raise GzipFault(
                f"{self._where()}: in gzip's {_GZIP_OTHER_FORMATS[self._buffer[:2]]} format, "
                "not gzip (gzip -d reads it, Python's tarfile does not): refused"
            )
        if self._member > 1 and not GZIP_MAGIC.startswith(self._buffer[:2]):
            raise GzipFault(
                f"data after the last gzip member, at byte {self._position} (gzip -d: "
                "'trailing garbage ignored', exit 2, so tar -xzf fails)"
            )
        header = self._take(10, "header")
        if header[:2] != GZIP_MAGIC:
            raise GzipFault(f"not gzip data (magic bytes {header[:2].hex()}, expected 1f8b)")
        method, flags = header[2], header[3]
        if method != 8:
            raise GzipFault(
                f"{self._where()}: compression method {method} in the gzip header, which "
                "gzip -d refuses (only 8, deflate)"
            )
        if flags & (_ENCRYPTED | _RESERVED):
            # RFC 1952: a decompressor must refuse them; gzip -d does ("is encrypted", "has
            # flags 0x80"), Python's and ISA-L's readers ignore them.
            raise GzipFault(
                f"{self._where()}: reserved flag bits set in the gzip header (0x{flags:02x}), "
                "which gzip -d refuses"
            )
        crc = isal_zlib.crc32(header)
        if flags & _FEXTRA:
            field = self._take(2, "header's extra field")
            crc = isal_zlib.crc32(field, crc)
            crc = isal_zlib.crc32(
                self._take(int.from_bytes(field, "little"), "header's extra field"), crc
            )
        if flags & _FNAME:
            crc = self._skip_string(crc, "header's file name")
        if flags & _FCOMMENT:
            crc = self._skip_string(crc, "header's comment")
        if flags & _FHCRC:
            stored = int.from_bytes(self._take(2, "header's CRC-16"), "little")
            if stored != crc & 0xFFFF:
                raise GzipFault(
                    f"{self._where()}: header CRC-16 {stored:04x}, the header's is "
                    f"{crc & 0xFFFF:04x} (gzip -d refuses it)"
                )
        self._inflate = isal_zlib.decompressobj(-isal_zlib.MAX_WBITS)
        self._crc = 0
        self._size = 0
        return True

    def _trailer(self) -> None:
        crc, size = struct.unpack("<II", self._take(8, "trailer (CRC-32 and length)"))
        if crc != self._crc:
            raise GzipFault(
                f"{self._where()}: CRC-32 of its data is {self._crc:08x}, its trailer says "
                f"{crc:08x} (gzip -d: 'crc error')"
            )
        if size != self._size & 0xFFFFFFFF:
            raise GzipFault(
                f"{self._where()}: {self._size} bytes of data, its trailer says {size} "
                "(gzip -d: 'length error')"
            )
        self._inflate = None

    def close(self) -> None:
        """Nothing to release (the caller owns the source)."""

    def _zeros_to_end(self) -> None:
        """Zero bytes after the last member, to the end (gzip ignores them silently)."""
        while True:
            nonzero = len(self._buffer) - len(self._buffer.lstrip(b"\0"))
            if nonzero < len(self._buffer):
                raise GzipFault(
                    f"data after the last gzip member, at byte {self._position + nonzero} "
                    "(gzip -d: 'trailing garbage ignored', exit 2, so tar -xzf fails)"
                )
            self._position += len(self._buffer)
            self._buffer = b""
            if not self._fill():
                return


class BoundedInflater(io.RawIOBase):
    """The decompressed bytes of `source` (anything with `read(size)`), bounded by `limits`.

    A bomb raises `error` (an input error by default), corrupt data `corrupt_error` (default:
    `error`), both naming `name`; `what` says what was inflated ("zstd chunk", "archive"...).
    """

    def __init__(
        self,
        source: Any,
        compression: Format,
        name: str | Path,
        limits: InflateLimits | None = None,
        *,
        error: type[StellaError] = MalformedDocumentError,
        corrupt_error: type[StellaError] | None = None,
        what: str | None = None,
    ) -> None:
        super().__init__()
        self.limits = limits or default_limits(compression)
        self._counting = _Counting(
            source, self.limits.read_size, ZstdFrames() if compression == "zstd" else None
        )
        self.compression = compression
        self.name_ = str(name)
        self._error = error
        self._corrupt_error = corrupt_error or error
        self._what = what or f"{compression} data"
        self.total = 0
        self._inner: Any
        if compression == "zstd":
            self._inner = zstandard.ZstdDecompressor().stream_reader(
                self._counting,  # type: ignore[arg-type]  # any object with read()
                read_size=self.limits.read_size,
                read_across_frames=True,
                closefd=False,
            )
        else:
            self._inner = GzipMembers(self._counting)

    @property
    def compressed(self) -> int:
        return self._counting.count

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self._pull(1 << 20), b""))
        return self._pull(size)

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.total

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Forward only (by inflating and discarding, within the bounds): what a reader that
        resumes at a saved offset needs."""
        target = offset if whence == io.SEEK_SET else self.total + offset
        if whence not in (io.SEEK_SET, io.SEEK_CUR) or target < self.total:
            raise io.UnsupportedOperation("a decompressing stream seeks forward only")
        while self.total < target and self._pull(min(target - self.total, 1 << 20)):
            pass
        return self.total

    def readinto(self, buffer: Any) -> int:
        data = self._pull(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _pull(self, size: int) -> bytes:
        try:
            data: bytes = self._inner.read(size)
        except (zstandard.ZstdError, ZstdFault) as exc:
            raise self._corrupt_error(f"corrupt zstd data: {exc}", path=self.name_) from exc
        except (GzipFault, zlib.error, ISAL_ERROR) as exc:
            raise self._corrupt_error(
                f"corrupt or truncated gzip data: {exc}", path=self.name_
            ) from exc
        except OSError as exc:
            raise self._error(f"cannot read: {exc}", path=self.name_) from exc
        self.total += len(data)
        limits = self.limits
        if self.total > limits.max_bytes:
            raise self._error(
                f"{self._what} decompresses past the limit of {limits.max_bytes} bytes "
                f"({self.compression} bomb?)",
                path=self.name_,
            )
        if self.total > limits.ratio_floor and self.total > limits.max_ratio * max(
            self.compressed, 1
        ):
            raise self._error(
                f"{self._what} expands more than {limits.max_ratio}:1 ({self.compression} bomb?)",
                path=self.name_,
            )
        return data

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            super().close()


def open_maybe_compressed(
    path: str | Path,
    limits: InflateLimits | None = None,
    *,
    error: type[StellaError] = MalformedDocumentError,
    accept: tuple[Format, ...] = ("zstd", "gzip"),
    buffer_size: int = 1 << 20,
) -> IO[bytes]:
    """Open a file for reading, inflating the `accept`ed formats (by magic, not by name)
    within `limits` (default: the format's); other files are read as they are."""
    try:
        raw = open(path, "rb")  # noqa: SIM115 - returned to the caller
    except OSError as exc:
        raise error(f"cannot open: {exc.strerror}", path=path) from exc
    try:
        head = raw.read(4)
        raw.seek(0)
    except OSError as exc:
        raw.close()
        raise error(f"cannot read: {exc.strerror}", path=path) from exc
    compression = compression_of(head)
    if compression is None or compression not in accept:
        return raw
    inflater = _OwningInflater(raw, compression, path, limits, error=error)
    return io.BufferedReader(inflater, buffer_size=buffer_size)


class _OwningInflater(BoundedInflater):
    """A `BoundedInflater` that closes the file it reads."""

    def __init__(
        self,
        raw: IO[bytes],
        compression: Format,
        name: str | Path,
        limits: InflateLimits | None,
        *,
        error: type[StellaError],
    ) -> None:
        super().__init__(raw, compression, name, limits, error=error)
        self._raw = raw

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._raw.close()
