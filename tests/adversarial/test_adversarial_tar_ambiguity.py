"""Header forms that GNU tar and Python's tarfile read differently from each other or from us.

A bundle verified by `bundle verify` must be the bundle an auditor then extracts with `tar` or
`tarfile`. Wherever the three can disagree about a member's name or where its content ends
(a global pax `path`, two name records for one member, a prefix field in a GNU or v7 header, a
directory carrying content, an extended header with no member after it), the reader refuses
the archive with one line naming the form, instead of picking one reading. Each case here is
shown to be read differently by the other two tools, so the refusal is not strictness for its
own sake.
"""

from __future__ import annotations

import gzip
import io
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stella_bundle.bundle.reader import SafeTarReader
from stella_bundle.errors import ArchiveError
from tests.conftest import scaled_examples


def _header(
    name: bytes,
    size: int,
    typeflag: bytes = b"0",
    magic: bytes = b"ustar\x0000",
    prefix: bytes = b"",
) -> bytes:
    block = bytearray(512)
    block[0 : len(name)] = name
    block[100:108] = b"0000644\0"
    block[108:116] = b"0000000\0"
    block[116:124] = b"0000000\0"
    block[124:136] = b"%011o\0" % size
    block[136:148] = b"%011o\0" % 1_700_000_000
    block[156:157] = typeflag
    block[257:265] = magic
    block[345 : 345 + len(prefix)] = prefix
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 512)


def _file(name: str, data: bytes, **kw: bytes) -> bytes:
    return _header(name.encode(), len(data), **kw) + _pad(data)  # type: ignore[arg-type]


def _pax(records: dict[str, str], typeflag: bytes = b"x") -> bytes:
    body = b""
    for key, value in records.items():
        record = f" {key}={value}\n".encode()
        length = len(record) + 1
        while len(str(length)) + len(record) != length:
            length = len(str(length)) + len(record)
        body += str(length).encode() + record
    return _header(b"././@PaxHeader", len(body), typeflag=typeflag) + _pad(body)


def _long_name(name: str) -> bytes:
    body = name.encode() + b"\0"
    return _header(b"././@LongLink", len(body), typeflag=b"L") + _pad(body)


def _archive(*blocks: bytes) -> bytes:
    return gzip.compress(b"".join(blocks) + b"\0" * 1024, mtime=0)


def _ours(archive: bytes) -> list[str]:
    reader = SafeTarReader(io.BytesIO(archive), "a.tgz", prefetch=False)
    return [member.name for member, _ in reader]


def _tarfile(archive: bytes) -> list[str] | str:
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            return tar.getnames()
    except tarfile.TarError as exc:
        return f"error: {exc}"


def _gnu_tar(archive: bytes) -> list[str] | str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.tgz"
        path.write_bytes(archive)
        listed = subprocess.run(
            ["tar", "--quoting-style=literal", "-tzf", str(path)],
            capture_output=True,
            env={"LC_ALL": "C.UTF-8", "PATH": "/usr/bin:/bin"},
        )
    if listed.returncode != 0:
        return "error: " + listed.stderr.decode(errors="replace").strip()
    return listed.stdout.decode().splitlines()


# form: (archive, what the message says)
_AMBIGUOUS: dict[str, tuple[bytes, str]] = {
    # tar: the last pax record wins (ccc); tarfile: the first (bbb).
    "two pax headers": (
        _archive(_pax({"path": "bbb"}), _pax({"path": "ccc"}), _file("zz", b"1")),
        "two pax extended headers",
    ),
    # tar: ccc; tarfile: aaa.
    "two long names": (
        _archive(_long_name("aaa"), _long_name("ccc"), _file("zz", b"1")),
        "two GNU long-name records",
    ),
    # tar: the pax path (bbb); tarfile: the long name (aaa).
    "long name then pax path": (
        _archive(_long_name("aaa"), _pax({"path": "bbb"}), _file("zz", b"1")),
        "both a GNU long name and a pax path",
    ),
    # tar: a.txt (no prefix in a GNU header); tarfile: junk/a.txt.
    "prefix in a GNU header": (
        _archive(_file("a.txt", b"1", magic=b"ustar  \0", prefix=b"junk")),
        "prefix field",
    ),
    # tar: a.txt; tarfile: pre/a.txt.
    "prefix in a v7 header": (
        _archive(_file("a.txt", b"1", magic=b"\0" * 8, prefix=b"pre")),
        "prefix field",
    ),
    # tarfile stops at the directory's content (lists only d); tar lists d and zz, then fails.
    "directory with content": (
        _archive(_header(b"d", 5, typeflag=b"5") + _pad(b"hello"), _file("zz", b"1")),
        "directory entry 'd' declares 5 bytes of content",
    ),
    # tarfile: "end of file header" error; tar: lists zz.
    "extended header with no member": (
        _archive(_file("zz", b"1"), _pax({"path": "bbb"})),
        "extended header with no member after it",
    ),
}


def _pax_body(body: bytes) -> bytes:
    return _header(b"././@PaxHeader", len(body), typeflag=b"x") + _pad(body)


_AMBIGUOUS["bytes after the last pax record"] = (
    # GNU tar: "Malformed extended header: missing length", exit 2; tarfile: reads aaaa.
    _archive(_pax_body(b"13 path=aaaa\nJUNK"), _file("zz", b"1")),
    "bytes after its last record",
)


# Forms both tools read alike, but not as the reader did before (it skipped 'g' headers and let
# the record read last name the member): refused too, with the forms above they belong to.
# form: (archive, what the message says, what both tools list)
_MISREAD: dict[str, tuple[bytes, str, list[str]]] = {
    "global pax path": (
        _archive(_pax({"path": "evil"}, b"g"), _file("a.txt", b"1"), _file("b.txt", b"2")),
        "global pax header sets 'path'",
        ["evil", "evil"],
    ),
    "pax path then long name": (
        _archive(_pax({"path": "bbb"}), _long_name("aaa"), _file("zz", b"1")),
        "both a GNU long name and a pax path",
        ["bbb"],
    ),
}


@pytest.mark.parametrize("form", sorted(_MISREAD))
def test_forms_the_reader_misread_are_refused(form: str) -> None:
    archive, says, listed = _MISREAD[form]
    assert _gnu_tar(archive) == _tarfile(archive) == listed
    with pytest.raises(ArchiveError) as caught:
        _ours(archive)
    assert says in str(caught.value)


@pytest.mark.parametrize("form", sorted(_AMBIGUOUS))
def test_ambiguous_header_forms_are_refused(form: str) -> None:
    archive, says = _AMBIGUOUS[form]
    # The point: the two reference tools do not agree, so no reading of ours can be "right".
    assert _gnu_tar(archive) != _tarfile(archive), form
    with pytest.raises(ArchiveError) as caught:
        _ours(archive)
    message = str(caught.value)
    assert says in message, message
    assert "\n" not in message


def test_unambiguous_forms_still_read() -> None:
    # An inert global header (a comment), one pax path, one long name, a POSIX prefix, an
    # empty directory entry: all three tools agree, and so do we.
    archive = _archive(
        _pax({"comment": "built by hand"}, b"g"),
        _pax({"path": "p/bbb"}),
        _file("ignored", b"1"),
        _long_name("l/" + "a" * 120),
        _file("ignored2", b"2"),
        _file("a.txt", b"3", prefix=b"pre"),
        _header(b"dir", 0, typeflag=b"5"),
        _file("dir/x", b"4"),
    )
    expected = ["p/bbb", "l/" + "a" * 120, "pre/a.txt", "dir/x"]
    assert _ours(archive) == expected
    assert [n for n in _tarfile(archive) if n != "dir"] == expected
    assert [n for n in _gnu_tar(archive) if n not in ("dir", "dir/")] == expected


def test_names_past_the_system_limits_are_refused_on_one_short_line() -> None:
    # A pax path may be up to the 1 MiB extended-header limit; echoed whole it made a
    # 40 KB "one line". Names are bounded as a file system bounds them (a component of at
    # most 255 bytes, a path of at most 4095) and echoed clipped.
    deep = "/".join(["d"] * 20_000)
    with pytest.raises(ArchiveError) as caught:
        _ours(_archive(_pax({"path": deep}), _file("zz", b"1")))
    assert "4095" in str(caught.value)
    assert len(str(caught.value)) < 600
    component = "a" * 256
    with pytest.raises(ArchiveError) as caught:
        _ours(_archive(_pax({"path": component}), _file("zz", b"1")))
    assert "255" in str(caught.value)
    assert len(str(caught.value)) < 600
    # At the limits: read.
    at_limit = "/".join(["b" * 255] * 16)[:4095].rstrip("/")
    assert _ours(_archive(_pax({"path": at_limit}), _file("zz", b"1"))) == [at_limit]


def test_a_header_declaring_too_small_a_size_is_named_by_place() -> None:
    # The member's content runs on into where the next header is read: that block was
    # reported as "checksum is not octal digits", naming neither the place nor the member.
    content = b"{" + b"x" * 1500 + b"}"
    short = _header(b"a.json", 10) + _pad(content)
    with pytest.raises(ArchiveError) as caught:
        _ours(_archive(short, _file("b.txt", b"1")))
    message = str(caught.value)
    assert "corrupt tar header at byte 1024" in message
    assert "after member 'a.json'" in message
    assert "checksum mismatch" in message


def _with(block: bytes, at: int, value: bytes) -> bytes:
    """`block` (a header and its content) with bytes at `at` replaced, checksum recomputed."""
    header = bytearray(block[:512])
    header[at : at + len(value)] = value
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header) + block[512:]


# Found by a differential fuzz of header bytes against GNU tar (tar -x, every member compared):
# forms GNU tar refuses (exit 2) that the reader read.
_GNU_REFUSES: dict[str, tuple[bytes, str]] = {
    # "Archive contains '000000x' where numeric uid_t value expected"
    "uid not a number": (_archive(_with(_file("a.txt", b"1"), 108, b"000000x\0")), "uid"),
    "gid not a number": (_archive(_with(_file("a.txt", b"1"), 116, b"0000/00\0")), "gid"),
    # Base-256 is a first byte of 0x80 (or 0xff, negative); 0x99 was taken as base-256 too.
    "base-256 with another first byte": (
        _archive(_with(_file("a.txt", b"1"), 100, b"\x99000644")),
        "mode is not octal digits",
    ),
    # "Malformed extended header: missing newline"
    "pax record without its newline": (
        _archive(_pax_body(b"13 path=aaaa "), _file("zz", b"1")),
        "no newline at its end",
    ),
}


@pytest.mark.parametrize("form", sorted(_GNU_REFUSES))
def test_forms_gnu_tar_refuses_are_refused(form: str) -> None:
    archive, says = _GNU_REFUSES[form]
    assert str(_gnu_tar(archive)).startswith("error"), _gnu_tar(archive)
    with pytest.raises(ArchiveError) as caught:
        _ours(archive)
    assert says in str(caught.value)


def test_a_long_name_without_its_nul_is_refused() -> None:
    # GNU tar and tarfile read a long name up to its NUL, past the declared size into the
    # block's padding; the reader stopped at the size: another name than both.
    body = b"l/" + b"y" * 127 + b"\0"
    record = _header(b"././@LongLink", 66, typeflag=b"L") + _pad(body)
    archive = _archive(record, _file("zz", b"1"))
    full = "l/" + "y" * 127
    assert _gnu_tar(archive) == _tarfile(archive) == [full]
    with pytest.raises(ArchiveError) as caught:
        _ours(archive)
    assert "without a NUL within its declared size" in str(caught.value)


def _gnu_extract(archive: bytes) -> list[tuple[str, bytes]] | str:
    """What `tar -xzf` writes (regular files: name and bytes), or its error."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.tgz"
        path.write_bytes(archive)
        out = Path(tmp) / "out"
        out.mkdir()
        done = subprocess.run(
            ["tar", "-xzf", str(path), "-C", str(out)],
            capture_output=True,
            env={"LC_ALL": "C.UTF-8", "PATH": "/usr/bin:/bin"},
        )
        if done.returncode != 0:
            return "error"
        return sorted(
            (str(p.relative_to(out)), p.read_bytes())
            for p in out.rglob("*")
            if p.is_file() and not p.is_symlink()
        )


def _fuzz_base() -> list[bytes]:
    return [
        _file("a/one.txt", b"1" * 700),
        _pax({"path": "p/" + "x" * 150}),
        _file("ignored", b"two"),
        _long_name("l/" + "y" * 127),
        _file("ignored2", b"three" * 100),
        _file("b.txt", b"four", prefix=b"pre"),
        _file("c.txt", b""),
    ]


_OFFSETS = st.one_of(
    st.integers(0, 511),  # anywhere in a header
    st.integers(100, 159),  # its numbers: mode, uid, gid, size, mtime, checksum
    st.integers(156, 157),  # type
    st.integers(257, 264),  # magic and version
    st.integers(345, 499),  # prefix
    st.integers(512, 1023),  # the first block of what follows (an extended record's body)
)
_BYTES = st.sampled_from(
    [0, 0x20, 0x2E, 0x2F, 0x30, 0x31, 0x37, 0x0A, 0x4C, 0x67, 0x78, 0x80, 0xFF]
)


@settings(max_examples=scaled_examples(40), deadline=None)
@example(block=0, edits=[(110, 0x78)])  # uid not a number
@example(block=0, edits=[(100, 0x99)])  # base-256 with a first byte other than 0x80
@example(block=3, edits=[(132, 0x31)])  # long-name size 66: its NUL past the size
@example(block=1, edits=[(673, 0x20)])  # pax record without its newline
@given(
    block=st.integers(0, 6),
    edits=st.lists(st.tuples(_OFFSETS, _BYTES | st.integers(0, 255)), min_size=1, max_size=3),
)
def test_what_the_reader_accepts_gnu_tar_extracts_alike(
    block: int, edits: list[tuple[int, int]]
) -> None:
    # Header bytes mutated (checksum recomputed): whenever the reader takes the archive, GNU
    # tar extracts the same files with the same bytes. This found the uid/gid, base-256,
    # pax newline and long-name NUL forms above.
    blocks = _fuzz_base()
    data = bytearray(blocks[block])
    for offset, value in edits:
        if offset < len(data):
            data[offset] = value
    blocks[block] = _with(bytes(data), 0, bytes(data[:1]))
    archive = _archive(*blocks)
    try:
        reader = SafeTarReader(io.BytesIO(archive), "a.tgz", prefetch=False)
        ours = sorted((m.name, s.read_all(1 << 20)) for m, s in reader)
    except ArchiveError:
        return
    assert _gnu_extract(archive) == ours


@pytest.mark.parametrize(
    ("blocks", "says"),
    [
        ((_file("d", b"1"), _file("d/x", b"2")), "lies under 'd', a file in this archive"),
        ((_file("d/x", b"2"), _file("d", b"1")), "file 'd' is also a directory of another"),
        ((_file("a/b/c", b"2"), _file("a/b", b"1")), "file 'a/b' is also a directory"),
        ((_header(b"d", 0, typeflag=b"5"), _file("d/x", b"2")), None),  # a directory: fine
        # A directory entry's numbers are checked as a file's are (GNU tar: "Archive contains
        # '151/7766440' where numeric time_t value expected").
        ((_with(_header(b"d", 0, typeflag=b"5"), 136, b"151/7766440\0"),), "mtime"),
    ],
    ids=["file then under it", "under it then file", "deeper", "directory entry", "dir mtime"],
)
def test_a_file_that_is_also_a_directory_is_refused(
    blocks: tuple[bytes, ...], says: str | None
) -> None:
    # Found by the same fuzz: GNU tar cannot extract both ("Cannot open: Not a directory"),
    # so the files it writes are not the ones the reader verified.
    archive = _archive(*blocks)
    if says is None:
        assert _ours(archive) == ["d/x"]
        assert _gnu_extract(archive) == [("d/x", b"2")]
        return
    assert _gnu_extract(archive) == "error"
    with pytest.raises(ArchiveError) as caught:
        _ours(archive)
    assert says in str(caught.value)


@pytest.mark.parametrize("block", [1, 3], ids=["pax header", "long-name header"])
@pytest.mark.parametrize(
    "field", [(100, b"0x00644\0"), (136, b"151/7766440\0"), (108, b"00L0000\0")]
)
def test_an_extended_header_whose_numbers_are_not_numbers_is_refused(
    block: int, field: tuple[int, bytes]
) -> None:
    # Found by the fuzz against tarfile: at such a header tarfile silently ends the archive
    # (the members after it vanish from getmembers()), while the reader read them all.
    blocks = _fuzz_base()
    blocks[block] = _with(blocks[block], *field)
    archive = _archive(*blocks)
    listed = _tarfile(archive)
    assert isinstance(listed, list) and "c.txt" not in listed
    with pytest.raises(ArchiveError, match="is not octal digits"):
        _ours(archive)


def _tarfile_ignoring_zeros(archive: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz", ignore_zeros=True) as tar:
        return tar.getnames()


def _gnu_tar_ignoring_zeros(archive: bytes) -> list[str] | str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.tgz"
        path.write_bytes(archive)
        listed = subprocess.run(["tar", "-i", "-tzf", str(path)], capture_output=True)
    return listed.stdout.decode().splitlines()


_ZERO = b"\0" * 512
_HIDDEN = _file("hidden.txt", b"shown by tar -i")
# form: (uncompressed tar, the offset named, where)
_AFTER_THE_MARKER: dict[str, tuple[bytes, int, str]] = {
    # GNU tar: "A lone zero block at 2", lists a.txt only; tar -i and tarfile's
    # ignore_zeros=True list hidden.txt too.
    "a member after one zero block": (
        _file("a.txt", b"1") + _ZERO + _HIDDEN + _ZERO * 2,
        1536,
        "inside the end-of-archive marker",
    ),
    "a member after the end marker": (
        _file("a.txt", b"1") + _ZERO * 2 + _HIDDEN + _ZERO * 2,
        2048,
        "after the end-of-archive marker (at byte 1024)",
    ),
    "a member after zero padding": (
        _file("a.txt", b"1") + _ZERO * 20 + _HIDDEN + _ZERO * 2,
        1024 + 20 * 512,
        "after the end-of-archive marker (at byte 1024)",
    ),
}


@pytest.mark.parametrize("form", sorted(_AFTER_THE_MARKER))
def test_a_member_hidden_after_the_end_marker_is_refused_naming_its_offset(form: str) -> None:
    tar, offset, where = _AFTER_THE_MARKER[form]
    archive = gzip.compress(tar, mtime=0)
    # The plain reading of both tools ends at the marker; each has a mode that reads on and
    # shows the hidden member: an auditor could be shown another content than was verified.
    assert _gnu_tar(archive) == _tarfile(archive) == ["a.txt"]
    assert _gnu_tar_ignoring_zeros(archive) == _tarfile_ignoring_zeros(archive)
    assert "hidden.txt" in _tarfile_ignoring_zeros(archive)
    with pytest.raises(ArchiveError) as caught:
        _ours(archive)
    message = str(caught.value)
    assert f"non-zero data at byte {offset} of the tar stream, {where}" in message, message
    assert "\n" not in message


@pytest.mark.parametrize("at", [0, 511], ids=["first byte", "last byte"])
def test_a_non_zero_byte_in_the_end_marker_is_refused(at: int) -> None:
    # a.txt's header and content, then the marker's two blocks at 1024 and 1536.
    tar = bytearray(_file("a.txt", b"1") + _ZERO * 2)
    tar[1536 + at] = 0x41
    with pytest.raises(ArchiveError, match=f"at byte {1536 + at} .*inside the end-of-archive"):
        _ours(gzip.compress(bytes(tar), mtime=0))
    # In its first block: where a header is read, so a corrupt header, named by place.
    tar[1536 + at] = 0
    tar[1024 + at] = 0x41
    with pytest.raises(ArchiveError, match="corrupt tar header at byte 1024 "):
        _ours(gzip.compress(bytes(tar), mtime=0))


@pytest.mark.parametrize("end", [_ZERO, _ZERO * 2, _ZERO * 40], ids=["one", "two", "forty"])
def test_zero_blocks_at_the_end_are_read_alike(end: bytes) -> None:
    archive = gzip.compress(_file("a.txt", b"1") + end, mtime=0)
    assert _ours(archive) == _gnu_tar(archive) == _tarfile(archive) == ["a.txt"]
