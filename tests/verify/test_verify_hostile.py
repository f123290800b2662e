"""Hostile archives: each refused with its own message, nothing written outside the output dir.

Archive-level refusals (exit 2) write nothing at all; trust refusals (exit 1) write only the
FAILED report into the output directory.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import json
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zstandard

from stella_bundle.bundle.layout import entry_order
from stella_bundle.formats.trust_root import TrustRoot
from tests.bundle.bundle_helpers import (
    BundleInputs,
    hostile_tar,
    read_members,
    resign_manifest,
    snapshot,
    write_members,
)

# Each verification inline and with worker processes (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("chunk_workers")


@pytest.fixture(scope="module")
def members(built_bundle: Path) -> list[tuple[str, bytes]]:
    return read_members(built_bundle)


def _head(members: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    return members[:2]


def _run_verify(run_cli: Any, tmp_path: Path, bundle: Path, trust_root: Path, *extra: str) -> Any:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    out = work / "out"
    before = snapshot(tmp_path)
    result = run_cli(
        "bundle", "verify", bundle, "--trust-root", trust_root, "--output-dir", out, *extra
    )
    created = snapshot(tmp_path) - before
    outside = {p for p in created if not p.startswith("work/out")}
    assert not outside, f"created outside the output directory: {outside}"
    return result, out


def _entry(name: str, kind: bytes, **attrs: Any) -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type = kind
        for key, value in attrs.items():
            if not key.startswith("_"):
                setattr(info, key, value)
        data = attrs.get("_data", b"")
        info.size = len(data) if kind == tarfile.REGTYPE else 0
        tar.addfile(info, io.BytesIO(data) if data else None)

    return add


ARCHIVE_CASES = {
    "dotdot": (_entry("../escape.txt", tarfile.REGTYPE, _data=b"x"), "escapes the archive root"),
    "absolute": (_entry("/tmp/stella-abs.txt", tarfile.REGTYPE, _data=b"x"), "absolute path"),
    "symlink": (_entry("evidence/link", tarfile.SYMTYPE, linkname="/etc/passwd"), "symbolic link"),
    "hardlink": (_entry("evidence/hard", tarfile.LNKTYPE, linkname="manifest.json"), "hard link"),
    "device": (_entry("evidence/dev", tarfile.CHRTYPE, devmajor=1, devminor=3), "device node"),
    "fifo": (_entry("evidence/fifo", tarfile.FIFOTYPE), "FIFO"),
    "duplicate": (_entry("manifest.json", tarfile.REGTYPE, _data=b"{}"), "duplicate entry name"),
}


@pytest.mark.parametrize("case", sorted(ARCHIVE_CASES))
def test_hostile_entry_is_refused(
    case: str, tmp_path: Path, members: list[tuple[str, bytes]], test_keys: Any, run_cli: Any
) -> None:
    add, message = ARCHIVE_CASES[case]
    if case == "duplicate":
        data = hostile_tar(_head(members), add)
    else:
        data = hostile_tar(_head(members) + members[2:5], add)
    bundle = tmp_path / f"{case}.stella.bundle.tgz"
    bundle.write_bytes(data)
    result, out = _run_verify(run_cli, tmp_path, bundle, test_keys.trust_root)
    assert result.exit_code == 2, result.stderr
    assert "step 'archive'" in result.stderr and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir()), "nothing may be written"
    assert not (tmp_path.parent / "escape.txt").exists()
    assert not Path("/tmp/stella-abs.txt").exists()
    inspected = run_cli("bundle", "inspect", bundle)
    assert inspected.exit_code == 2 and message in inspected.stderr


def test_member_over_the_declared_limit_is_refused(
    tmp_path: Path, built_bundle: Path, test_keys: Any, run_cli: Any
) -> None:
    result, out = _run_verify(
        run_cli, tmp_path, built_bundle, test_keys.trust_root, "--max-member-size", "1K"
    )
    assert result.exit_code == 2
    assert "over the limit of 1024 bytes" in result.stderr
    assert not out.exists()


def test_gzip_bomb_is_refused(
    tmp_path: Path, members: list[tuple[str, bytes]], test_keys: Any, run_cli: Any
) -> None:
    """A tar member of 256 MiB of zeros, deflated ~1000:1, hidden in a 250 KiB file."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    header = b""
    for name, data in _head(members):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        header += info.tobuf(format=tarfile.USTAR_FORMAT) + data + bytes(-len(data) % 512)
    info = tarfile.TarInfo("observations/bomb-observations.ndjson")
    info.size = 256 << 20
    parts = [compressor.compress(header + info.tobuf(format=tarfile.USTAR_FORMAT))]
    zeros = bytes(1 << 20)
    for _ in range(256):
        parts.append(compressor.compress(zeros))
    parts.append(compressor.compress(bytes(1024)) + compressor.flush())
    bundle = tmp_path / "bomb.stella.bundle.tgz"
    bundle.write_bytes(b"".join(parts))
    assert bundle.stat().st_size < 1 << 20
    result, out = _run_verify(run_cli, tmp_path, bundle, test_keys.trust_root)
    assert result.exit_code == 2
    assert "gzip bomb" in result.stderr
    assert not out.exists()


@functools.cache
def _zstd_bomb() -> bytes:
    """256 MiB in a few KiB (made once: compressing it takes a second)."""
    return zstandard.ZstdCompressor(level=19).compress((bytes(1 << 19) + b"\n") * 512)


def test_zstd_bomb_inside_a_chunk_is_refused(
    tmp_path: Path, members: list[tuple[str, bytes]], test_keys: Any, run_cli: Any
) -> None:
    """A chunk (listed and signed by the builder) inflating to 256 MiB from a few KiB."""
    bomb = _zstd_bomb()
    assert len(bomb) < 64 << 10
    swapped = [
        (name, bomb if name.endswith("0000000001.ndjson.zst") else data) for name, data in members
    ]
    bundle = write_members(
        tmp_path / "zbomb.stella.bundle.tgz", resign_manifest(swapped, test_keys.signer("builder"))
    )
    result, out = _run_verify(run_cli, tmp_path, bundle, test_keys.trust_root)
    assert result.exit_code == 2
    assert "zstd bomb" in result.stderr and "0000000001.ndjson.zst" in result.stderr
    assert not out.exists()


def test_unlisted_extra_file_fails(
    tmp_path: Path, members: list[tuple[str, bytes]], test_keys: Any, run_cli: Any
) -> None:
    # In the builder's order, so the archive is well-formed and only the manifest is at fault.
    extra = sorted(
        [*members, ("evidence/host-a/notes.txt", b"hi")], key=lambda m: entry_order(m[0])
    )
    bundle = write_members(tmp_path / "extra.stella.bundle.tgz", extra)
    result, out = _run_verify(run_cli, tmp_path, bundle, test_keys.trust_root)
    assert result.exit_code == 1
    assert "step 'file-list'" in result.stderr
    assert "evidence/host-a/notes.txt" in result.stderr and "not in the manifest" in result.stderr
    report = json.loads((out / "verification-report.json").read_text())["predicate"]
    assert report["verification_result"] == "FAILED"


def test_listed_file_missing_fails(
    tmp_path: Path, members: list[tuple[str, bytes]], test_keys: Any, run_cli: Any
) -> None:
    dropped = next(n for n, _ in members if n.endswith("0000000002.seal.dsse.json"))
    bundle = write_members(
        tmp_path / "missing.stella.bundle.tgz", [(n, d) for n, d in members if n != dropped]
    )
    result, _ = _run_verify(run_cli, tmp_path, bundle, test_keys.trust_root)
    assert result.exit_code == 1
    assert "step 'file-list'" in result.stderr
    assert dropped in result.stderr and "missing from the archive" in result.stderr


def test_manifest_signed_without_builder_role_fails(
    tmp_path: Path, members: list[tuple[str, bytes]], test_keys: Any, run_cli: Any
) -> None:
    bundle = write_members(
        tmp_path / "role.stella.bundle.tgz", resign_manifest(members, test_keys.signer("collector"))
    )
    result, out = _run_verify(run_cli, tmp_path, bundle, test_keys.trust_root)
    assert result.exit_code == 1
    assert "step 'manifest-signature'" in result.stderr
    assert "without the 'builder' role" in result.stderr
    steps = json.loads((out / "verification-report.json").read_text())["predicate"]["steps"]
    assert [s["status"] for s in steps][2:] == ["failed"] + ["skipped"] * 5
    assert steps[2]["error_type"] == "RoleError"


def test_manifest_signed_by_unknown_key_fails(
    tmp_path: Path, members: list[tuple[str, bytes]], test_keys: Any, run_cli: Any
) -> None:
    bundle = write_members(
        tmp_path / "stranger.stella.bundle.tgz",
        resign_manifest(members, test_keys.signer("stranger")),
    )
    result, _ = _run_verify(run_cli, tmp_path, bundle, test_keys.trust_root)
    assert result.exit_code == 1
    assert "step 'manifest-signature'" in result.stderr


def test_function_map_signed_by_wrong_role_fails(
    tmp_path: Path, bundle_inputs: BundleInputs, test_keys: Any, run_cli: Any
) -> None:
    from stella_bundle.attest.signing import sign_to_file
    from stella_bundle.bundle.build import build_bundle

    fm = tmp_path / "fm" / "demo-function-map.dsse.json"
    fm.parent.mkdir()
    sign_to_file(bundle_inputs.statement, [test_keys.signer("collector")], fm)
    bundle = build_bundle(
        function_maps=[fm],
        evidence=[bundle_inputs.evidence],
        signer=test_keys.signer("builder"),
        output=tmp_path / "fmrole.stella.bundle.tgz",
    ).output
    result, out = _run_verify(run_cli, tmp_path, bundle, test_keys.trust_root)
    assert result.exit_code == 1
    assert "step 'function-map-signature'" in result.stderr
    assert "without the 'function-map' role" in result.stderr
    steps = {
        s["name"]: s
        for s in json.loads((out / "verification-report.json").read_text())["predicate"]["steps"]
    }
    assert steps["manifest-signature"]["status"] == "passed"
    assert steps["coverage"]["status"] == "skipped"


def test_expired_trust_root_fails(
    tmp_path: Path, built_bundle: Path, test_keys: Any, run_cli: Any
) -> None:
    root = TrustRoot.load(test_keys.trust_root)
    root.expires = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    expired = tmp_path / "expired-trust-root.json"
    root.save(expired)
    result, _ = _run_verify(run_cli, tmp_path, built_bundle, expired)
    assert result.exit_code == 1
    assert "step 'trust-root'" in result.stderr and "expired" in result.stderr


def test_tampered_chunk_fails_file_list(
    tmp_path: Path, members: list[tuple[str, bytes]], test_keys: Any, run_cli: Any
) -> None:
    name = next(n for n, _ in members if n.endswith("0000000003.ndjson.zst"))
    other = zstandard.ZstdCompressor().compress(b"")
    bundle = write_members(
        tmp_path / "tampered.stella.bundle.tgz",
        [(n, other if n == name else d) for n, d in members],
    )
    result, _ = _run_verify(run_cli, tmp_path, bundle, test_keys.trust_root)
    assert result.exit_code == 1
    assert "step 'file-list'" in result.stderr and name in result.stderr


def test_resigned_tampered_chunk_fails_the_chain(
    tmp_path: Path, members: list[tuple[str, bytes]], test_keys: Any, run_cli: Any
) -> None:
    """A builder that re-lists an altered chunk cannot forge the collector's seal."""
    name = next(n for n, _ in members if n.endswith("0000000003.ndjson.zst"))
    data = dict(members)[name]
    records = zstandard.ZstdDecompressor().decompress(data, max_output_size=1 << 24).splitlines()
    altered = zstandard.ZstdCompressor().compress(b"\n".join(records[:-1]) + b"\n")
    swapped = [(n, altered if n == name else d) for n, d in members]
    bundle = write_members(
        tmp_path / "rechain.stella.bundle.tgz",
        resign_manifest(swapped, test_keys.signer("builder")),
    )
    result, _ = _run_verify(run_cli, tmp_path, bundle, test_keys.trust_root)
    assert result.exit_code == 1
    assert "step 'evidence-chains'" in result.stderr and name in result.stderr


def test_not_gzip_is_refused(tmp_path: Path, test_keys: Any, run_cli: Any) -> None:
    bundle = tmp_path / "plain.stella.bundle.tgz"
    bundle.write_bytes(b"PK\x03\x04 not a tar")
    result, _ = _run_verify(run_cli, tmp_path, bundle, test_keys.trust_root)
    assert result.exit_code == 2 and "not a gzip-compressed tar" in result.stderr


def test_bad_record_is_named_by_file_and_line(
    tmp_path: Path, members: list[tuple[str, bytes]], test_keys: Any, run_cli: Any
) -> None:
    name = next(n for n, _ in members if n.endswith("0000000002.ndjson.zst"))
    raw = zstandard.ZstdDecompressor().decompress(dict(members)[name], max_output_size=1 << 24)
    lines = raw.splitlines()
    lines[2] = lines[2].replace(b'"probe_type":"uprobe"', b'"probe_type":"telepathy"')
    altered = zstandard.ZstdCompressor().compress(b"\n".join(lines) + b"\n")
    swapped = [(n, altered if n == name else d) for n, d in members]
    bundle = write_members(
        tmp_path / "badrec.stella.bundle.tgz", resign_manifest(swapped, test_keys.signer("builder"))
    )
    result, out = _run_verify(run_cli, tmp_path, bundle, test_keys.trust_root)
    assert result.exit_code == 2, result.stderr
    assert "step 'schemas'" in result.stderr
    assert f"{name}:3" in result.stderr and "probe_type" in result.stderr
    # A record that is not a record is malformed input: refused in one line, no report (the
    # seal no longer matching its chunk is not reported either: the first failing step decides).
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (out / "verification-report.json").exists()
