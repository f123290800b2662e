"""The project's tar reader against `tarfile` and GNU `tar` on generated archives.

Every header form the reader accepts (ustar with prefix, GNU ././@LongLink names, pax path and
size records, base-256 numbers) must give the same members and bytes as both; every form it
refuses by design (links, devices, absolute or escaping paths, sparse, non-NFC, invisible
characters, duplicates and twins) is refused with its own one-line `ArchiveError` naming the
member, while `tarfile` and GNU tar both take the archive: the reader is stricter on purpose.
"""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import tarfile
import tempfile
import unicodedata
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from stella_bundle.bundle.reader import SafeTarReader
from stella_bundle.errors import ArchiveError
from stella_bundle.formats.manifest import name_key
from tests.conftest import scaled_examples

Members = list[tuple[str, bytes]]

# Bounded: the whole file stays well under 20 s on the shared 2-core machine.
_SETTINGS = settings(
    max_examples=scaled_examples(25),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
_ENV = {**os.environ, "LC_ALL": "C.UTF-8"}

# NFC letters outside ASCII too (pax path records, UTF-8 in ustar/GNU fields); no controls,
# no invisible characters, no backslash: what docs/bundles.md says a bundle name may hold.
_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.éüßΩжあ日"
_component = st.text(_ALPHABET, min_size=1, max_size=40).filter(lambda c: c not in (".", ".."))
_name = st.lists(_component, min_size=1, max_size=5).map("/".join)


def _acceptable(names: list[str]) -> bool:
    """No twins, and no name is also a directory of another (GNU tar could not extract both)."""
    keys = [name_key(n) for n in names]
    dirs = {name_key("/".join(n.split("/")[:i])) for n in names for i in range(1, n.count("/") + 1)}
    return len(set(keys)) == len(keys) and not dirs & set(keys)


_members = st.lists(st.tuples(_name, st.binary(max_size=1500)), min_size=1, max_size=5).filter(
    lambda ms: _acceptable([n for n, _ in ms])
)


def _write(fmt: int, add: Callable[[tarfile.TarFile], None]) -> bytes:
    """An uncompressed tar written by `tarfile` in one format."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt, encoding="utf-8") as archive:
        add(archive)
    return buffer.getvalue()


def _regular(
    name: str, data: bytes, mtime: int = 1_700_000_000, pax: dict[str, str] | None = None
) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = mtime
    info.mode = 0o644
    if pax:
        info.pax_headers = dict(pax)
    return info, io.BytesIO(data)


def _project(archive: bytes) -> list[tuple[str, bytes, int]]:
    reader = SafeTarReader(io.BytesIO(archive), "gen.tar.gz", prefetch=False)
    return [(m.name, stream.read_all(1 << 30), m.mtime) for m, stream in reader]


def _tarfile(archive: bytes) -> list[tuple[str, bytes, int]]:
    out = []
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for member in tar:
            handle = tar.extractfile(member)
            assert member.isfile() and handle is not None
            out.append((member.name, handle.read(), int(member.mtime)))
    return out


def _gnu_tar(archive: bytes) -> tuple[list[str], dict[str, bytes]]:
    """GNU tar's listing (order) and what `tar -xf` extracts (bytes), into a temp dir."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.tar.gz"
        path.write_bytes(archive)
        listing = subprocess.run(
            ["tar", "--quoting-style=literal", "-tzf", str(path)],
            capture_output=True,
            check=True,
            env=_ENV,
        ).stdout.decode("utf-8")
        out = Path(tmp) / "x"
        out.mkdir()
        subprocess.run(["tar", "-xzf", str(path), "-C", str(out)], check=True, env=_ENV)
        files = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
        return listing.splitlines(), files


def _assert_same(archive: bytes, expected: Members, *, compare_mtime: bool = True) -> None:
    ours = _project(archive)
    theirs = _tarfile(archive)
    assert [(n, d) for n, d, _ in ours] == expected
    assert [(n, d) for n, d, _ in theirs] == expected
    if compare_mtime:
        assert [m for *_, m in ours] == [m for *_, m in theirs]
    listing, files = _gnu_tar(archive)
    assert listing == [n for n, _ in expected]
    assert files == dict(expected)


def _patch(raw: bytes, header_at: int, field: slice, value: bytes) -> bytes:
    """Rewrite one numeric field of the header at `header_at` and fix its checksum."""
    header = bytearray(raw[header_at : header_at + 512])
    assert len(value) == field.stop - field.start
    header[field] = value
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return raw[:header_at] + bytes(header) + raw[header_at + 512 :]


def _headers(raw: bytes) -> list[int]:
    """Offset of each member's own (last) header block."""
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        return [m.offset_data - 512 for m in tar.getmembers()]


def _base256(value: int, width: int) -> bytes:
    return bytes([0x80]) + value.to_bytes(width - 1, "big")


# --- forms both sides accept ------------------------------------------------------------------


@_SETTINGS
@given(_members)
def test_ustar_with_prefix_split(members: Members) -> None:
    # ustar: names up to 255 bytes, split into prefix + name; what tarfile cannot split is not ustar.
    def add(archive: tarfile.TarFile) -> None:
        for name, data in members:
            archive.addfile(*_regular(name, data))

    try:
        raw = _write(tarfile.USTAR_FORMAT, add)
    except ValueError:
        assume(False)
    _assert_same(gzip.compress(raw), members)


@_SETTINGS
@given(_members, st.lists(st.integers(0, 2**60), min_size=5, max_size=5))
def test_gnu_longlink_names_and_base256_mtime(members: Members, mtimes: list[int]) -> None:
    # GNU: names over 100 bytes go to ././@LongLink ('L') headers; mtimes of 8**11 and above
    # are written base-256 by tarfile.
    def add(archive: tarfile.TarFile) -> None:
        for (name, data), mtime in zip(members, mtimes, strict=False):
            archive.addfile(*_regular(name, data, mtime))

    raw = _write(tarfile.GNU_FORMAT, add)
    _assert_same(gzip.compress(raw), members)


def test_gnu_longlink_is_really_written() -> None:
    # The property above only covers 'L' if long names are drawn: this one always is.
    name = "d/" + "é" * 80 + "/" + "x" * 120
    raw = _write(tarfile.GNU_FORMAT, lambda a: a.addfile(*_regular(name, b"long", 8**12)))
    assert b"././@LongLink" in raw
    _assert_same(gzip.compress(raw), [(name, b"long")])


@_SETTINGS
@given(_members)
def test_pax_path_records(members: Members) -> None:
    # pax: long and non-ASCII names are written as `path` records.
    def add(archive: tarfile.TarFile) -> None:
        for name, data in members:
            archive.addfile(*_regular(name, data))

    raw = _write(tarfile.PAX_FORMAT, add)
    _assert_same(gzip.compress(raw), members)


@_SETTINGS
@given(_members)
def test_pax_size_record_overrides_header(members: Members) -> None:
    # A pax `size` record with the ustar size field zeroed, as for members over 8 GiB: the record
    # is the size. (mtime is not compared: the reader keeps the header's, not pax `mtime`.)
    def add(archive: tarfile.TarFile) -> None:
        for name, data in members:
            archive.addfile(*_regular(name, data, pax={"size": str(len(data))}))

    raw = _write(tarfile.PAX_FORMAT, add)
    for offset in _headers(raw):
        raw = _patch(raw, offset, slice(124, 136), b"00000000000\0")
    _assert_same(gzip.compress(raw), members, compare_mtime=False)


@_SETTINGS
@given(_members)
def test_base256_size_and_mode(members: Members) -> None:
    # Base-256 (GNU) numbers in the size and mode fields, any value: all three decode them.
    def add(archive: tarfile.TarFile) -> None:
        for name, data in members:
            archive.addfile(*_regular(name, data))

    raw = _write(tarfile.GNU_FORMAT, add)
    for offset, (_, data) in zip(_headers(raw), members, strict=True):
        raw = _patch(raw, offset, slice(124, 136), _base256(len(data), 12))
        raw = _patch(raw, offset, slice(100, 108), _base256(0o644, 8))
    _assert_same(gzip.compress(raw), members)


def test_directory_entries_and_global_pax_header() -> None:
    # Directory entries carry no content; a pax global header ('g') sets nothing we read.
    def add(archive: tarfile.TarFile) -> None:
        directory = tarfile.TarInfo("dir")
        directory.type = tarfile.DIRTYPE
        directory.mode = 0o755
        archive.addfile(directory)
        archive.addfile(*_regular("dir/ä.txt", b"x" * 513))

    buffer = io.BytesIO()
    with tarfile.open(
        fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "g"}
    ) as archive:
        add(archive)
    archive_gz = gzip.compress(buffer.getvalue())
    assert _project(archive_gz) == [("dir/ä.txt", b"x" * 513, 1_700_000_000)]
    listing, files = _gnu_tar(archive_gz)
    assert listing == ["dir/", "dir/ä.txt"]
    assert files == {"dir/ä.txt": b"x" * 513}


# --- forms the reader refuses by design, which tarfile and GNU tar take -------------------------


def _special(name: str, kind: bytes, link: str = "") -> Callable[[tarfile.TarFile], None]:
    def add(archive: tarfile.TarFile) -> None:
        if kind == tarfile.LNKTYPE:
            archive.addfile(*_regular(link, b"target"))
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = link
        info.mode = 0o644
        archive.addfile(info)

    return add


def _files(*members: tuple[str, bytes]) -> Callable[[tarfile.TarFile], None]:
    def add(archive: tarfile.TarFile) -> None:
        for name, data in members:
            archive.addfile(*_regular(name, data))

    return add


_NFD = unicodedata.normalize("NFD", "café.txt")

_REFUSED: dict[str, tuple[Callable[[tarfile.TarFile], None], str, str]] = {
    # form: (archive contents, member named in the message, what the message says)
    "symlink": (_special("ln", tarfile.SYMTYPE, "target"), "ln", "symbolic link"),
    "hardlink": (_special("hl", tarfile.LNKTYPE, "t.txt"), "hl", "hard link"),
    "char device": (_special("cdev", tarfile.CHRTYPE), "cdev", "character device node"),
    "block device": (_special("bdev", tarfile.BLKTYPE), "bdev", "block device node"),
    "fifo": (_special("pipe", tarfile.FIFOTYPE), "pipe", "FIFO (named pipe)"),
    "absolute path": (_files(("/etc/x", b"1")), "/etc/x", "absolute path"),
    "dot-dot": (_files(("../x", b"1")), "../x", "escapes the archive root"),
    "inner dot-dot": (_files(("a/../../x", b"1")), "a/../../x", "escapes the archive root"),
    "non-NFC name": (_files((_NFD, b"1")), _NFD, "is not Unicode-normalised (NFC)"),
    "invisible character": (_files(("a\u200bb", b"1")), "a\u200bb", "invisible"),
    "duplicate": (_files(("a.txt", b"1"), ("a.txt", b"2")), "a.txt", "duplicate entry name"),
    "case twin": (_files(("Café", b"1"), ("café", b"2")), "café", "Unicode/case twin"),
    "compatibility twin": (_files(("ﬁle", b"1"), ("file", b"2")), "file", "Unicode/case twin"),
}


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=["gnu", "pax"])
@pytest.mark.parametrize("form", sorted(_REFUSED))
def test_refused_by_design(form: str, fmt: int) -> None:
    add, member, says = _REFUSED[form]
    archive = gzip.compress(_write(fmt, add))
    _assert_refused(archive, member, says)


def _assert_refused(archive: bytes, member: str, says: str) -> None:
    with pytest.raises(ArchiveError) as caught:
        _project(archive)
    message = str(caught.value)
    assert "\n" not in message
    assert says in message
    assert repr(member) in message
    # Both others take the archive (listing every member), which is the point: stricter on purpose.
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        assert member in tar.getnames()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.tar.gz"
        path.write_bytes(archive)
        listed = subprocess.run(
            ["tar", "--quoting-style=literal", "-tzf", str(path)],
            capture_output=True,
            check=True,
            env=_ENV,
        ).stdout.decode("utf-8")
    assert member.lstrip("/") in listed


@pytest.mark.parametrize("fmt", ["gnu", "pax"])
def test_sparse_refused(tmp_path: Path, fmt: str) -> None:
    # GNU tar writes a sparse file as type 'S' (gnu) or as a type '0' entry with GNU.sparse.*
    # pax records, a made-up name and a sparse map ahead of the data (pax): read as a regular
    # file the latter gave another name and other bytes than tar and tarfile (fixed: refused).
    source = tmp_path / "src"
    (source / "d").mkdir(parents=True)
    with open(source / "d" / "hole", "wb") as handle:
        handle.truncate(1 << 20)
    archive = tmp_path / "s.tar.gz"
    subprocess.run(
        ["tar", "--sparse", f"--format={fmt}", "-czf", str(archive), "-C", str(source), "d/hole"],
        check=True,
        env=_ENV,
    )
    says = "unsupported tar type b'S'" if fmt == "gnu" else "sparse member"
    _assert_refused(archive.read_bytes(), "d/hole", says)
    with tarfile.open(archive) as tar:
        handle = tar.extractfile("d/hole")
        assert handle is not None and handle.read() == b"\0" * (1 << 20)


def test_negative_base256_mtime_refused() -> None:
    # tarfile writes an mtime before 1970 base-256 with the sign bit; GNU tar reads it. The
    # reader refuses every negative number (docs/bundles.md: "negative base-256").
    raw = _write(tarfile.GNU_FORMAT, lambda a: a.addfile(*_regular("old.txt", b"1", -86400)))
    archive = gzip.compress(raw)
    with pytest.raises(ArchiveError, match="negative mtime in tar header") as caught:
        _project(archive)
    assert "\n" not in str(caught.value)
    assert _tarfile(archive) == [("old.txt", b"1", -86400)]
    assert _gnu_tar(archive) == (["old.txt"], {"old.txt": b"1"})
