"""Where `bundle verify` draws the line between a refusal and a FAILED report.

errors.py defines the exit codes once: 2 for input that is not what it claims (InputError),
1 for evidence that was examined and did not pass (VerificationFailure). The first failing
step decides: malformed content (not JSON, not an envelope, a record off its schema) is
refused like a hostile archive, in one line naming the step and the file, exit 2, nothing
written; well-formed content that fails a check gets the FAILED report, exit 1. Content
altered after signing fails the file list before anything reads it as malformed: a report.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zstandard

from tests.bundle.bundle_helpers import read_members, resign_manifest, snapshot, write_members
from tests.conftest import CliResult

Members = list[tuple[str, bytes]]

# Each verification inline and with worker processes (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("chunk_workers")


@pytest.fixture(scope="module")
def members(built_bundle: Path) -> Members:
    return read_members(built_bundle)


def _named(members: Members, suffix: str) -> str:
    return next(name for name, _ in members if name.endswith(suffix))


def _replace(members: Members, name: str, data: bytes) -> Members:
    return [(n, data if n == name else d) for n, d in members]


def _record_off_schema(members: Members) -> tuple[Members, str]:
    name = _named(members, "0000000001.ndjson.zst")
    raw = zstandard.ZstdDecompressor().decompress(dict(members)[name], max_output_size=1 << 24)
    lines = raw.splitlines()
    lines[0] = lines[0].replace(b'"probe_type":"uprobe"', b'"probe_type":"telepathy"')
    return _replace(
        members, name, zstandard.ZstdCompressor().compress(b"\n".join(lines) + b"\n")
    ), name


def _verify(
    members: Members, tmp_path: Path, test_keys: Any, run_cli: Callable[..., CliResult]
) -> tuple[CliResult, Path, set[str]]:
    bundle = write_members(tmp_path / "b.stella.bundle.tgz", members)
    out = tmp_path / "out"
    before = snapshot(tmp_path)
    result = run_cli(
        "bundle", "verify", bundle, "--trust-root", test_keys.trust_root, "--output-dir", out
    )
    return result, out, snapshot(tmp_path) - before


def test_a_manifest_envelope_that_is_not_json_is_refused(
    members: Members, tmp_path: Path, test_keys: Any, run_cli: Callable[..., CliResult]
) -> None:
    result, _, written = _verify(
        _replace(members, "manifest.dsse.json", b"{not json"), tmp_path, test_keys, run_cli
    )
    assert result.exit_code == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "step 'manifest-signature'" in line and "manifest.dsse.json" in line, line
    assert "no report written" in line and written == set()


@pytest.mark.parametrize("what", ["seal not json", "map envelope not json", "record off schema"])
def test_malformed_signed_content_is_refused_without_a_report(
    what: str,
    members: Members,
    tmp_path: Path,
    test_keys: Any,
    run_cli: Callable[..., CliResult],
) -> None:
    # Signed into the manifest by the builder: the file list passes, the content is malformed.
    if what == "seal not json":
        name = _named(members, "0000000001.seal.dsse.json")
        changed, step = _replace(members, name, b"{not json"), "schemas"
    elif what == "map envelope not json":
        name = _named(members, "-function-map.dsse.json")
        changed, step = _replace(members, name, b"[1, 2"), "function-map-signature"
    else:
        changed, name = _record_off_schema(members)
        step = "schemas"
    result, _, written = _verify(
        resign_manifest(changed, test_keys.signer("builder")), tmp_path, test_keys, run_cli
    )
    assert result.exit_code == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert f"step '{step}'" in line and name in line and "no report written" in line, line
    assert written == set()


@pytest.mark.parametrize("what", ["wrong role", "altered after signing"])
def test_well_formed_content_that_fails_a_check_gets_the_failed_report(
    what: str,
    members: Members,
    tmp_path: Path,
    test_keys: Any,
    run_cli: Callable[..., CliResult],
) -> None:
    if what == "wrong role":
        # A well-formed envelope signed by a key the trust root holds for another role.
        changed, step = (
            resign_manifest(members, test_keys.signer("collector")),
            "manifest-signature",
        )
    else:
        # The record off its schema, but the manifest not re-signed: the digest fails first.
        changed, step = _record_off_schema(members)[0], "file-list"
    result, out, _ = _verify(changed, tmp_path, test_keys, run_cli)
    assert result.exit_code == 1, result.stderr
    assert f"step '{step}'" in result.stderr
    report = json.loads((out / "verification-report.json").read_text())["predicate"]
    assert report["verification_result"] == "FAILED"
    failed = [s for s in report["steps"] if s["status"] == "failed"]
    assert failed[0]["name"] == step and failed[0]["exit_code"] == 1, failed
