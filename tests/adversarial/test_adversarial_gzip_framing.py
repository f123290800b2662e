"""gzip framing read as GNU gzip reads it, in every member and after the last.

The auditor opens a bundle with `tar -xzf` (so `gzip -d`); Python's and ISA-L's gzip readers
skip over things gzip refuses (reserved or encrypted flag bits and, in Python's, the header's
CRC-16), and the previous reader checked the flag bits of the first member only. Every gzip
reader goes through `compression.GzipMembers`; here `gzip` itself is the oracle: what we read,
it reads to the same bytes, and what it refuses (exit 1, or 2 for trailing garbage, which makes
`tar -xzf` fail), we refuse with one line naming the member and its offset.
"""

from __future__ import annotations

import io
import itertools
import shutil
import struct
import subprocess
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, cast

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from stella_bundle.bundle.reader import SafeTarReader
from stella_bundle.compression import BoundedInflater
from stella_bundle.errors import ArchiveError, MalformedDocumentError
from tests.adversarial.inflate_oracle import assert_inflates_as_tool
from tests.bundle.bundle_helpers import snapshot
from tests.conftest import CliResult, cpu_seconds, scaled_examples

pytestmark = pytest.mark.skipif(shutil.which("gzip") is None, reason="needs GNU gzip")


def member(
    data: bytes,
    *,
    flags: int = 0,
    method: int = 8,
    extra: bytes = b"",
    header_crc: int | None = None,
    crc: int | None = None,
    size: int | None = None,
) -> bytes:
    """One gzip member; `flags` as given (FEXTRA, FNAME, FCOMMENT, FHCRC fields follow it),
    the header CRC-16, trailer CRC-32 and length right unless given."""
    header = b"\x1f\x8b" + bytes([method, flags]) + b"\0\0\0\0\0\xff"
    if flags & 0x04:
        header += struct.pack("<H", len(extra)) + extra
    if flags & 0x08:
        header += b"name.tar\0"
    if flags & 0x10:
        header += b"a comment\0"
    if flags & 0x02:
        header += struct.pack(
            "<H", zlib.crc32(header) & 0xFFFF if header_crc is None else header_crc
        )
    deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = deflate.compress(data) + deflate.flush()
    trailer = struct.pack(
        "<II",
        zlib.crc32(data) if crc is None else crc,
        len(data) if size is None else size,
    )
    return header + body + trailer


def gzip_verdict(data: bytes, tmp_path: Path) -> tuple[int, bytes]:
    """`gzip -t`'s exit code and `gzip -dc`'s output."""
    path = tmp_path / "oracle.gz"
    path.write_bytes(data)
    test = subprocess.run(["gzip", "-t", str(path)], capture_output=True)
    out = subprocess.run(["gzip", "-dc", str(path)], capture_output=True)
    return test.returncode, out.stdout


def ours(data: bytes) -> bytes:
    return BoundedInflater(io.BytesIO(data), "gzip", "x.log.gz").read()


FIRST = member(b"first member\n")

# A later member (or what follows the last one) that gzip -d refuses: what our line says.
REFUSED = {
    "encrypted flag in member 2": (FIRST + member(b"x", flags=0x20), "member 2 (at byte 33)"),
    "reserved flag 0x40 in member 2": (FIRST + member(b"x", flags=0x40), "reserved flag bits"),
    "reserved flag 0x80 in member 3": (
        FIRST + member(b"y") + member(b"x", flags=0x80),
        "gzip member 3",
    ),
    "method 7 in member 2": (FIRST + member(b"x", method=7), "compression method 7"),
    "header CRC-16 wrong in member 2": (
        FIRST + member(b"x", flags=0x02, header_crc=0x1234),
        "header CRC-16 1234",
    ),
    "header CRC-16 wrong in member 1": (member(b"x", flags=0x02, header_crc=1), "gzip member 1"),
    "CRC-32 wrong in member 2": (FIRST + member(b"x", crc=1), "its trailer says 00000001"),
    "length wrong in member 2": (FIRST + member(b"x", size=7), "its trailer says 7"),
    "trailing garbage": (FIRST + b"garbage", "data after the last gzip member, at byte 33"),
    "zeros then garbage": (FIRST + b"\0" * 10 + b"g", "at byte 43"),
    "a lone 1f byte": (FIRST + b"\x1f", "ends inside its header"),
    "a truncated header": (FIRST + b"\x1f\x8b\x08\x00", "ends inside its header"),
    "a truncated deflate stream": (FIRST + member(b"x" * 100)[:-12], "ends inside"),
    "a truncated trailer": (FIRST + member(b"x")[:-3], "ends inside its trailer"),
    "an extra field past the end": (
        FIRST + member(b"x", flags=0x04, extra=b"ab")[:13],
        "ends inside its header's extra field",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_what_gzip_refuses_in_any_member_is_refused(case: str, tmp_path: Path) -> None:
    data, says = REFUSED[case]
    code, _ = gzip_verdict(data, tmp_path)
    assert code != 0, "gzip itself must refuse the case"
    with pytest.raises(MalformedDocumentError) as caught:
        ours(data)
    line = str(caught.value)
    assert "\n" not in line and "x.log.gz" in line and says in line, line


ACCEPTED = {
    "two members": FIRST + member(b"second\n"),
    "an empty member between": FIRST + member(b"") + member(b"third\n"),
    "trailing zero bytes": FIRST + b"\0" * 5000,
    "every optional header field": member(
        b"fields\n", flags=0x01 | 0x02 | 0x04 | 0x08 | 0x10, extra=b"AB\x02\x00hi"
    )
    + member(b"more\n", flags=0x02 | 0x08),
}


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_what_gzip_reads_is_read_to_the_same_bytes(case: str, tmp_path: Path) -> None:
    data = ACCEPTED[case]
    code, out = gzip_verdict(data, tmp_path)
    assert code == 0
    assert ours(data) == out
    # In small reads too (members and headers cut across reads).
    inflater = BoundedInflater(io.BytesIO(data), "gzip", "x.log.gz")
    assert b"".join(iter(lambda: inflater.read(3), b"")) == out


def test_gzip_other_formats_in_a_later_member_are_refused(tmp_path: Path) -> None:
    # gzip -d also reads the old gzip magic (and pack, LZW, LZH) as a later member; Python's
    # tarfile does not, so an auditor's two tools would disagree: refused, naming the format.
    data = FIRST + b"\x1f\x9e" + member(b"x")[2:]
    assert gzip_verdict(data, tmp_path)[0] == 0
    with pytest.raises(MalformedDocumentError, match=r"gzip member 2 .*old \(pre-1.0\) format"):
        ours(data)


_MEMBERS = st.lists(
    st.tuples(
        st.binary(max_size=300),
        st.sampled_from([0, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1E, 0x20, 0x40, 0x80]),
        st.sampled_from([8, 8, 8, 0, 7]),
        st.sampled_from(["right", "right", "right", "crc", "size", "header_crc"]),
    ),
    min_size=1,
    max_size=4,
)
_TAILS = st.one_of(
    st.just(b""),
    st.binary(max_size=40).map(lambda tail: b"\0" * len(tail)),
    st.binary(min_size=1, max_size=40).filter(lambda tail: tail[:1] != b"\x1f"),
    st.sampled_from([b"\x1f", b"\x1f\x8b", b"\x1f\x8b\x08\x00\0\0\0\0\0\xff"]),
)


@settings(
    max_examples=scaled_examples(150),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(members=_MEMBERS, tail=_TAILS)
# Found by this test against the earlier reader (ISA-L's, the first member's flags checked):
@example(members=[(b"", 0, 8, "right"), (b"", 0x20, 8, "right")], tail=b"")
def test_differential_against_gzip(
    members: list[tuple[bytes, int, int, str]], tail: bytes, tmp_path: Path
) -> None:
    """Whatever we read, gzip -d reads to the same bytes; whatever gzip refuses, we refuse."""
    data = b"".join(
        member(
            body,
            flags=flags,
            method=method,
            extra=b"ex",
            crc=1 if fault == "crc" else None,
            size=len(body) + 1 if fault == "size" else None,
            header_crc=(0 if fault == "header_crc" else None),
        )
        if fault != "header_crc" or flags & 0x02
        else member(body, flags=flags, method=method, extra=b"ex")
        for body, flags, method, fault in members
    )
    data += tail
    assert_inflates_as_tool(data, "gzip", "x.log.gz", gzip_verdict(data, tmp_path))


# --- the bundle: what the auditor's tar and Python's tarfile do ---------------------------------


def _verify(
    bundle: Path, tmp_path: Path, test_keys: Any, run_cli: Callable[..., CliResult]
) -> CliResult:
    return run_cli(
        "bundle",
        "verify",
        bundle,
        "--trust-root",
        test_keys.trust_root,
        "--output-dir",
        tmp_path / "out",
    )


def _tar_extracts(bundle: Path, into: Path) -> bool:
    into.mkdir()
    return subprocess.run(["tar", "-xzf", str(bundle), "-C", str(into)]).returncode == 0


@pytest.mark.parametrize(
    ("tail", "says"),
    [
        (member(b"\0" * 1024, flags=0x80), "gzip member 2 (at byte"),
        (member(b"\0" * 1024, crc=0), "CRC-32 of its data"),
        (b"trailing text", "data after the last gzip member"),
    ],
    ids=["reserved-flags-in-member-2", "crc-in-member-2", "trailing-garbage"],
)
def test_bundle_with_a_later_member_gzip_refuses_is_refused(
    tail: bytes,
    says: str,
    tmp_path: Path,
    built_bundle: Path,
    test_keys: Any,
    run_cli: Callable[..., CliResult],
) -> None:
    # The tar ends in the first member; the second holds zeros past the end marker, which
    # tarfile never reads: only gzip -d (so tar -xzf) sees the fault.
    bundle = tmp_path / "later.stella.bundle.tgz"
    bundle.write_bytes(built_bundle.read_bytes() + tail)
    assert not _tar_extracts(bundle, tmp_path / "tar")
    before = snapshot(tmp_path)
    result = _verify(bundle, tmp_path, test_keys, run_cli)
    assert result.exit_code == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert says in line and str(bundle) in line, line
    assert snapshot(tmp_path) == before
    with pytest.raises(ArchiveError, match="gzip"), SafeTarReader.open(bundle) as reader:
        for _ in reader:
            pass


def test_bundle_with_trailing_zeros_or_an_empty_member_passes_and_extracts_alike(
    tmp_path: Path,
    built_bundle: Path,
    test_keys: Any,
    run_cli: Callable[..., CliResult],
) -> None:
    bundle = tmp_path / "padded.stella.bundle.tgz"
    bundle.write_bytes(built_bundle.read_bytes() + member(b"\0" * 512) + b"\0" * 4096)
    result = _verify(bundle, tmp_path, test_keys, run_cli)
    assert result.exit_code == 0, result.stderr
    assert _tar_extracts(bundle, tmp_path / "tar")
    with tarfile.open(bundle) as archive:
        for info in archive:
            assert info.isfile() or info.isdir()
            if info.isfile():
                handle = archive.extractfile(info)
                assert handle is not None
                assert (tmp_path / "tar" / info.name).read_bytes() == handle.read()


# --- the tar reader over any member split: the same files as tar and tarfile -------------------


def _small_tar() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (
            ("manifest.json", b'{"a": 1}\n'),
            ("evidence/host-a/0000000001.ndjson.zst", bytes(range(256)) * 9),
            ("caf\u00e9/" + "d" * 120 + ".json", b"{}"),
            ("empty", b""),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_763_700_000
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _files_by_tar(archive: Path, into: Path) -> list[tuple[str, bytes]] | None:
    into.mkdir()
    if subprocess.run(["tar", "-xzf", str(archive), "-C", str(into)]).returncode != 0:
        return None
    return sorted(
        (str(p.relative_to(into)), p.read_bytes()) for p in into.rglob("*") if p.is_file()
    )


_HEADER_FORMS = st.sampled_from([0, 0x08, 0x10, 0x04, 0x02, 0x1E])


@settings(
    max_examples=scaled_examples(40),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    cuts=st.lists(st.integers(0, 12 * 512), max_size=5),
    forms=st.lists(_HEADER_FORMS, min_size=6, max_size=6),
    zeros=st.sampled_from([0, 1, 600]),
)
def test_any_member_split_reads_as_tar_and_tarfile_read_it(
    cuts: list[int], forms: list[int], zeros: int, tmp_path: Path
) -> None:
    """The tar stream cut into gzip members anywhere (inside headers and contents), each with
    its own optional header fields, zeros after the last: the reader yields the files GNU tar
    extracts and tarfile reads, byte for byte."""
    raw = _small_tar()
    points = sorted({0, *(min(cut, len(raw)) for cut in cuts), len(raw)})
    data = (
        b"".join(
            member(raw[start:end], flags=forms[number], extra=b"xy")
            for number, (start, end) in enumerate(itertools.pairwise(points))
        )
        + b"\0" * zeros
    )
    archive = tmp_path / f"split-{len(list(tmp_path.iterdir()))}.tgz"
    archive.write_bytes(data)
    reader = SafeTarReader(io.BytesIO(data), str(archive), prefetch=False)
    ours = sorted((m.name, s.read_all(1 << 20)) for m, s in reader)
    with tarfile.open(archive) as tar:
        theirs = sorted(
            (info.name, cast(IO[bytes], tar.extractfile(info)).read())
            for info in tar
            if info.isfile()
        )
    assert ours == theirs
    assert _files_by_tar(archive, tmp_path / f"x-{archive.stem}") == ours


def test_a_file_of_empty_gzip_members_is_refused_quickly() -> None:
    # 20 bytes each, inflating to nothing: no ratio trips, and each costs a few microseconds.
    data = member(b"x") + member(b"") * 70_000
    started = cpu_seconds()
    with pytest.raises(MalformedDocumentError, match="more than 65536 gzip members"):
        ours(data)
    assert cpu_seconds() - started < 5
    assert ours(member(b"x") + member(b"") * 1000) == b"x"  # a few are fine
