"""Archive names and numbers: one spelling per path, and only plain non-negative sizes.

Class 6 of issue 9. The hostile archives are a valid bundle built here with members added or
headers rewritten by hand: the NFC and NFD spellings of one path (and other Unicode or case
twins), a non-NFC name alone or only in the signed manifest, and every way to write a size
that is not a plain non-negative number (a pax `size` of `-5`, `+5`, ` 5`, `1_0`, Arabic-Indic
digits; a ustar octal `-7`; a negative GNU base-256 size; a pax record length with a sign).
Each is refused as a hostile archive: exit 2, one line naming the bundle and the entry or
field, nothing written (not even the output directory), within seconds.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stella_bundle.bundle.manifest import Manifest
from tests.bundle.bundle_helpers import (
    SOURCE_DATE_EPOCH,
    build_reproducible,
    make_inputs,
    read_members,
    resign_manifest,
    snapshot,
)
from tests.conftest import CliResult, cpu_seconds

Members = list[tuple[str, bytes]]

NFC = unicodedata.normalize("NFC", "function-maps/caf\u00e9-notes.txt")
NFD = unicodedata.normalize("NFD", NFC)


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory, test_keys: Any) -> Members:

    inputs = make_inputs(tmp_path_factory.mktemp("names-inputs"), test_keys)
    output = tmp_path_factory.mktemp("names-built") / "demo.stella.bundle.tgz"
    build_reproducible(inputs.function_map, inputs.evidence, test_keys.signer("builder"), output)
    return read_members(output)


# --- raw tar writing (the project's writer refuses these names, as it should) ---------------


def _header(name: str, size: int, pax: dict[str, str] | None = None) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = int(SOURCE_DATE_EPOCH)
    if pax:
        info.pax_headers = pax
        return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8")
    return info.tobuf(format=tarfile.USTAR_FORMAT, encoding="utf-8")


def _padded(data: bytes) -> bytes:
    return data + b"\0" * ((-len(data)) % 512)


def _with_field(header: bytes, start: int, end: int, value: bytes) -> bytes:
    """Rewrite one ustar field and recompute the header checksum."""
    block = bytearray(header[:512])
    block[start:end] = value.ljust(end - start, b"\0")[: end - start]
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block) + header[512:]


def _archive(entries: list[bytes]) -> bytes:
    return gzip.compress(b"".join(entries) + b"\0" * 1024, mtime=0)


def _plain(members: Members) -> list[bytes]:
    return [_header(name, len(data)) + _padded(data) for name, data in members]


def _run(
    run_cli: Callable[..., CliResult],
    tmp_path: Path,
    archive: bytes,
    trust_root: Path,
    command: str = "verify",
) -> CliResult:
    bundle = tmp_path / "hostile.stella.bundle.tgz"
    bundle.write_bytes(archive)
    out = tmp_path / "out"
    before = snapshot(tmp_path)
    started = cpu_seconds()
    if command == "verify":
        result = run_cli(
            "bundle", "verify", bundle, "--trust-root", trust_root, "--output-dir", out
        )
    else:
        result = run_cli("bundle", "inspect", bundle)
    assert cpu_seconds() - started < 20
    assert snapshot(tmp_path) - before == set(), "a refused archive writes nothing"
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert str(bundle) in lines[0], lines[0]
    return result


# --- Unicode twins -----------------------------------------------------------------------


def _twins(first: str, second: str) -> Callable[[Members], list[bytes]]:
    def make(members: Members) -> list[bytes]:
        return _plain([*members[:2], (first, b"one\n"), (second, b"two\n"), *members[2:]])

    return make


TWIN_CASES: dict[str, tuple[Callable[[Members], list[bytes]], str]] = {
    "nfc-then-nfd": (_twins(NFC, NFD), "not Unicode-normalised (NFC)"),
    "nfd-then-nfc": (_twins(NFD, NFC), "not Unicode-normalised (NFC)"),
    "nfd-alone": (lambda m: _plain([*m[:2], (NFD, b"x\n"), *m[2:]]), "(NFC)"),
    "case-twins": (
        _twins("function-maps/Notes.txt", "function-maps/notes.txt"),
        "Unicode/case twin of",
    ),
    "compatibility-twins": (  # U+FB01 LATIN SMALL LIGATURE FI is NFC but NFKC "fi"
        _twins("function-maps/\ufb01le.txt", "function-maps/file.txt"),
        "Unicode/case twin of",
    ),
    "zero-width-space-twin": (
        _twins("function-maps/notes.txt", "function-maps/no\u200btes.txt"),
        "invisible or control character U+200B",
    ),
    "right-to-left-override": (
        lambda m: _plain([*m[:2], ("function-maps/\u202etxt.exe", b"x\n"), *m[2:]]),
        "U+202E",
    ),
    "c1-control": (
        lambda m: _plain([*m[:2], ("function-maps/a\u0085b", b"x\n"), *m[2:]]),
        "U+0085",
    ),
    "nbsp-twin": (
        _twins("function-maps/a b.txt", "function-maps/a\u00a0b.txt"),
        "Unicode/case twin of",
    ),
    "nfd-in-a-pax-path": (
        lambda m: [
            *_plain(m[:2]),
            _header(NFC, 3) + _padded(b"ab\n"),
            _header("function-maps/x.txt", 3, {"path": NFD}) + _padded(b"cd\n"),
            *_plain(m[2:]),
        ],
        "(NFC)",
    ),
}


@pytest.mark.parametrize("case", sorted(TWIN_CASES))
@pytest.mark.parametrize("command", ["verify", "inspect"])
def test_unicode_twins_are_refused(
    case: str,
    command: str,
    members: Members,
    tmp_path: Path,
    test_keys: Any,
    run_cli: Callable[..., CliResult],
) -> None:
    make, expected = TWIN_CASES[case]
    result = _run(run_cli, tmp_path, _archive(make(members)), test_keys.trust_root, command)
    assert expected in result.stderr, result.stderr


def test_twins_signed_into_the_manifest_fail_the_manifest_step(
    members: Members, tmp_path: Path, test_keys: Any, run_cli: Callable[..., CliResult]
) -> None:
    """Even a builder key holder cannot list both spellings: the signed manifest is refused
    (the manifest step fails, exit 2, naming the field: malformed signed content is refused,
    one line and nothing written, no report)."""
    signed = resign_manifest(
        [*members, (NFC, b"one\n"), ("function-maps/Caf\u00e9-notes.txt", b"two\n")],
        test_keys.signer("builder"),
    )
    bundle = tmp_path / "twins.stella.bundle.tgz"
    bundle.write_bytes(_archive(_plain(signed[:2])))
    out = tmp_path / "out"
    before = snapshot(tmp_path)
    result = run_cli(
        "bundle", "verify", bundle, "--trust-root", test_keys.trust_root, "--output-dir", out
    )
    assert result.exit_code == 2, result.stderr  # a malformed signed manifest is bad input
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "predicate.files[" in result.stderr and "twin" in result.stderr
    assert "Unicode/case twin" in result.stderr and "no report written" in result.stderr
    assert snapshot(tmp_path) == before


def test_nfd_name_in_the_manifest_is_refused(members: Members) -> None:
    import json

    from stella_bundle.errors import MalformedDocumentError

    statement = json.loads(dict(members)["manifest.json"])
    statement["predicate"]["files"][0]["path"] = NFD
    with pytest.raises(MalformedDocumentError) as caught:
        Manifest.from_statement(statement, Path("manifest.json"))
    assert "(NFC)" in caught.value.describe()
    assert "predicate.files[0].path" in caught.value.describe()


def test_the_builder_writes_no_name_the_reader_refuses(tmp_path: Path) -> None:
    from stella_bundle.bundle.tarwriter import ReproducibleTarWriter
    from stella_bundle.errors import InputError

    with open(tmp_path / "x.tgz", "wb") as out, ReproducibleTarWriter(out, 0) as writer:
        writer.add_bytes(NFC, b"1")
        with pytest.raises(InputError, match="twin"):
            writer.add_bytes(NFC.upper(), b"2")
        with pytest.raises(InputError, match="NFC"):
            writer.add_bytes(NFD, b"3")


# --- sizes that are not plain non-negative numbers -------------------------------------------


def _pax_size(value: str) -> Callable[[Members], list[bytes]]:
    def make(members: Members) -> list[bytes]:
        name, data = members[2]
        return [
            *_plain(members[:2]),
            _header(name, len(data), {"size": value}) + _padded(data),
            *_plain(members[3:]),
        ]

    return make


def _ustar_size(value: bytes) -> Callable[[Members], list[bytes]]:
    def make(members: Members) -> list[bytes]:
        name, data = members[2]
        return [
            *_plain(members[:2]),
            _with_field(_header(name, len(data)), 124, 136, value) + _padded(data),
            *_plain(members[3:]),
        ]

    return make


def _pax_record(record: bytes) -> Callable[[Members], list[bytes]]:
    def make(members: Members) -> list[bytes]:
        name, data = members[2]
        extended = _with_field(_header("././@PaxHeader", len(record)), 156, 157, b"x")
        return [
            *_plain(members[:2]),
            extended + _padded(record),
            _header(name, len(data)) + _padded(data),
            *_plain(members[3:]),
        ]

    return make


SIZE_CASES: dict[str, tuple[Callable[[Members], list[bytes]], str]] = {
    "pax-negative": (_pax_size("-5"), "pax 'size'"),
    "pax-negative-zero-padded": (_pax_size("-0000000000512"), "pax 'size'"),
    "pax-plus-sign": (_pax_size("+5"), "pax 'size'"),
    "pax-leading-space": (_pax_size(" 5"), "pax 'size'"),
    "pax-underscore": (_pax_size("1_0"), "pax 'size'"),
    "pax-arabic-indic-digits": (_pax_size("\u0665"), "pax 'size'"),
    "pax-empty": (_pax_size(""), "pax 'size'"),
    "pax-4301-digits": (_pax_size("9" * 4301), "pax 'size'"),
    "ustar-negative-octal": (_ustar_size(b"-0000000007"), "size is not octal digits"),
    "ustar-0o-prefix": (_ustar_size(b"0o7"), "size is not octal digits"),
    "gnu-base256-negative": (_ustar_size(b"\xff" * 12), "negative size"),
    "pax-record-length-signed": (_pax_record(b"+12 size=5\n"), "pax header record"),
    "pax-record-length-negative": (_pax_record(b"-12 size=5\n"), "pax header record"),
}


@pytest.mark.parametrize("case", sorted(SIZE_CASES))
def test_size_not_a_plain_number_is_refused(
    case: str,
    members: Members,
    tmp_path: Path,
    test_keys: Any,
    run_cli: Callable[..., CliResult],
) -> None:
    make, expected = SIZE_CASES[case]
    result = _run(run_cli, tmp_path, _archive(make(members)), test_keys.trust_root)
    assert expected in result.stderr, result.stderr


def test_raw_writer_round_trip_still_passes(
    members: Members, tmp_path: Path, test_keys: Any, run_cli: Callable[..., CliResult]
) -> None:
    """The hand-written archive of the unchanged members verifies: the refusals above are due
    to the one field each case changes, not to how these tests write tar files."""
    bundle = tmp_path / "same.stella.bundle.tgz"
    bundle.write_bytes(_archive(_plain(members)))
    out = tmp_path / "out"
    result = run_cli(
        "bundle", "verify", bundle, "--trust-root", test_keys.trust_root, "--output-dir", out
    )
    assert result.exit_code == 0, result.stderr
    assert io.BytesIO((out / "verification-report.json").read_bytes()).read(1) == b"{"
