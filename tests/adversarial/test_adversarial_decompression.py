"""Decompression bombs: every zstd and gzip reader is bounded in ratio and size.

Class 7 of issue 9. The bombs are made here: concatenated zstd frames of newlines (about
66 KB inflating to 2 GiB) and gzip members of newlines (1 MiB inflating to 1 GiB), plus the
same bombs made of one endless line, and a corrupt stream. Every command that reads
observations, schema documents, Tetragon exports or evidence chunks refuses each within
seconds (the unbounded readers spent minutes) with exit 2 and one line naming the file,
writing nothing outside its output directory.
"""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zstandard

from tests.bundle.bundle_helpers import BundleInputs, make_inputs, snapshot
from tests.conftest import CliResult, cpu_seconds

# CPU seconds (tests/conftest.py cpu_seconds: wall time stretches with the load): each refusal
# must come well within this (an unbounded read takes minutes).
SECONDS = 20
MiB = 1 << 20


def _zstd_bomb(block: bytes, frames: int) -> bytes:
    frame = zstandard.ZstdCompressor(level=3).compress(block)
    return frame * frames


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("bombs")
    made = {
        # 32 frames of 64 MiB of newlines: 2 GiB of blank lines.
        "zstd-newlines": _zstd_bomb(b"\n" * (64 * MiB), 32),
        # One 2 GiB line: never a newline to stop a line reader.
        "zstd-one-line": _zstd_bomb(b"a" * (64 * MiB), 32),
        # A valid record first, then the bomb: the bound is not only on the first block.
        "zstd-after-a-record": zstandard.ZstdCompressor().compress(
            b'{"node_hash": "sha256:' + b"0" * 64 + b'"}\n'
        )
        + _zstd_bomb(b"\n" * (64 * MiB), 32),
        "zstd-corrupt": b"\x28\xb5\x2f\xfd" + b"\xff" * 64,
    }
    paths = {}
    for name, data in made.items():
        path = directory / f"{name}.ndjson.zst"
        path.write_bytes(data)
        paths[name] = path
    assert len(made["zstd-newlines"]) < 100_000
    gz = gzip.compress(b"\n" * (64 * MiB), compresslevel=9, mtime=0) * 16
    assert len(gz) < 2 * MiB
    paths["gzip-newlines"] = directory / "tetragon-2026-11-21T05-00-00.000.log.gz"
    paths["gzip-newlines"].write_bytes(gz)
    return paths


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, test_keys: Any) -> BundleInputs:
    return make_inputs(tmp_path_factory.mktemp("bomb-inputs"), test_keys)


def _check(result: CliResult, started: float, path: Path, *expected: str) -> None:
    elapsed = cpu_seconds() - started
    assert elapsed < SECONDS, f"took {elapsed:.1f} CPU s"
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0], lines[0]
    for text in expected:
        assert text in lines[0], lines[0]


COMMANDS: dict[str, Callable[[Path, BundleInputs, Any, Path], list[Any]]] = {
    "function-map-verify": lambda bomb, inputs, keys, out: [
        "function-map", "verify", "--function-map", inputs.function_map,
        "--observations", bomb, "--output", out / "result.json",
    ],
    "function-map-verify-workers": lambda bomb, inputs, keys, out: [
        "function-map", "verify", "--function-map", inputs.function_map,
        "--observations", bomb, "--observations", bomb, "--workers", "2",
    ],
    "observations-import": lambda bomb, inputs, keys, out: [
        "observations", "import", bomb, "--target", out / "evidence",
        "--key", keys.private("collector"),
    ],
    "schema-validate": lambda bomb, inputs, keys, out: ["schema", "validate", bomb],
    "schema-validate-kind": lambda bomb, inputs, keys, out: [
        "schema", "validate", bomb, "--kind", "observation-record",
    ],
    "observations-query": lambda bomb, inputs, keys, out: [
        "observations", "query", "--observations", bomb,
    ],
    "observations-query-summary": lambda bomb, inputs, keys, out: [
        "observations", "query", "--observations", bomb, "--summary",
    ],
    "observations-timeline": lambda bomb, inputs, keys, out: [
        "observations", "timeline", "--observations", bomb,
    ],
    "observations-ingest": lambda bomb, inputs, keys, out: [
        "observations", "ingest", bomb, "--store", f"sqlite:///{out / 'store.sqlite'}",
    ],
    "tetragon-hot-symbols": lambda bomb, inputs, keys, out: [
        "tetragon", "hot-symbols", "--observations", bomb,
    ],
}  # fmt: skip

ZSTD_BOMBS = {
    "zstd-newlines": "bomb?",
    "zstd-one-line": "bomb?",
    "zstd-after-a-record": "",
    "zstd-corrupt": "corrupt zstd data",
}


@pytest.mark.parametrize("bomb", sorted(ZSTD_BOMBS))
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_zstd_bomb_is_refused_by_every_reader(
    command: str,
    bomb: str,
    bombs: dict[str, Path],
    inputs: BundleInputs,
    test_keys: Any,
    tmp_path: Path,
    run_cli: Callable[..., CliResult],
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    before = snapshot(tmp_path)
    started = cpu_seconds()
    result = run_cli(*COMMANDS[command](bombs[bomb], inputs, test_keys, out))
    expected = ZSTD_BOMBS[bomb]
    if bomb == "zstd-after-a-record":
        # The one record before the bomb may be refused first (it is not a valid record):
        # either way the file is named, in one line, quickly.
        expected = ""
    _check(result, started, bombs[bomb], *([expected] if expected else []))
    outside = {p for p in snapshot(tmp_path) - before if not p.startswith("out")}
    assert outside == set()
    assert not (out / "evidence").exists() or not any((out / "evidence").rglob("*.zst"))


def _tetragon(
    run_cli: Callable[..., CliResult], inputs: BundleInputs, keys: Any, out: Path, *files: Any
) -> CliResult:
    return run_cli(
        "tetragon", "ingest", *files, "--function-map", inputs.function_map,
        "--target", out / "evidence", "--key", keys.private("collector"),
    )  # fmt: skip


def test_gzip_bomb_export_is_refused(
    bombs: dict[str, Path],
    inputs: BundleInputs,
    test_keys: Any,
    tmp_path: Path,
    run_cli: Callable[..., CliResult],
) -> None:
    out = tmp_path / "out"
    before = snapshot(tmp_path)
    started = cpu_seconds()
    result = _tetragon(run_cli, inputs, test_keys, out, bombs["gzip-newlines"])
    _check(result, started, bombs["gzip-newlines"], "expands more than 200:1")
    assert {p for p in snapshot(tmp_path) - before if not p.startswith("out")} == set()


def test_gzip_bomb_rotated_backup_is_refused(
    bombs: dict[str, Path],
    inputs: BundleInputs,
    test_keys: Any,
    tmp_path: Path,
    run_cli: Callable[..., CliResult],
) -> None:
    """Tetragon's rotated backups (gzipped by the daemon) are read before the live file."""
    exports = tmp_path / "exports"
    exports.mkdir()
    live = exports / "tetragon.log"
    live.write_bytes(b"")
    backup = exports / bombs["gzip-newlines"].name
    shutil.copyfile(bombs["gzip-newlines"], backup)
    out = tmp_path / "out"
    before = snapshot(tmp_path)
    started = cpu_seconds()
    result = _tetragon(run_cli, inputs, test_keys, out, "--export-file", live)
    _check(result, started, backup, "bomb?")
    assert {p for p in snapshot(tmp_path) - before if not p.startswith("out")} == set()


def test_zstd_bomb_in_an_evidence_chunk(
    bombs: dict[str, Path],
    inputs: BundleInputs,
    test_keys: Any,
    tmp_path: Path,
    run_cli: Callable[..., CliResult],
) -> None:
    """A chain whose chunk is replaced by a bomb: verify-chain, inspect and function-map
    verify --evidence stop within seconds, naming the chunk (the digest no longer matches the
    seal, so verify-chain fails the chain: exit 1; the readers refuse it: exit 2)."""
    evidence = tmp_path / "evidence"
    shutil.copytree(inputs.evidence, evidence)
    chunk = sorted(evidence.rglob("0000000001.ndjson.zst"))[0]
    shutil.copyfile(bombs["zstd-newlines"], chunk)
    started = cpu_seconds()
    verdict = run_cli("signals", "verify-chain", evidence, "--trust-root", test_keys.trust_root)
    assert cpu_seconds() - started < SECONDS
    assert verdict.exit_code == 1, verdict.stderr
    assert chunk.name in verdict.stdout + verdict.stderr
    # Blank lines are refused as records at once; one endless line meets the bound.
    shutil.copyfile(bombs["zstd-one-line"], chunk)
    started = cpu_seconds()
    inspected = run_cli("signals", "inspect", chunk, "--limit", "0")
    _check(inspected, started, chunk, "bomb?")


def test_the_bounds_keep_real_data(tmp_path: Path) -> None:
    """The bounds refuse bombs, not data: 30 MiB of distinct records at the collector's zstd
    level (about 60:1) read back whole, in 1 KiB reads, quickly."""
    from stella_bundle.compression import open_maybe_compressed

    line = (
        b'{"node_hash":"sha256:%064d","function_name":"SSL_write","probe_type":"uprobe",'
        b'"observed_at":"2026-11-21T05:%02d:%02d.%06dZ","pid":%d}\n'
    )
    data = b"".join(
        line % (i % 97, (i // 60_000_000) % 60, (i // 1_000_000) % 60, i % 1_000_000, 4000 + i % 50)
        for i in range(0, 160_000 * 37, 37)
    )
    path = tmp_path / "real.ndjson.zst"
    path.write_bytes(zstandard.ZstdCompressor(level=3).compress(data))
    started = cpu_seconds()
    with open_maybe_compressed(path) as handle:
        assert handle.read() == data
    assert cpu_seconds() - started < SECONDS


@pytest.mark.parametrize("flags", [0x20, 0x40, 0x80])
def test_gzip_with_reserved_flag_bits_is_refused_as_gzip_refuses_it(
    flags: int,
    tmp_path: Path,
    built_bundle: Path,
    test_keys: Any,
    run_cli: Callable[..., CliResult],
) -> None:
    # RFC 1952: reserved FLG bits must be refused; `gzip -d` (so `tar -xzf`) does ("stdin is
    # encrypted", "has flags 0x80"), Python's and ISA-L's gzip readers ignore them: the
    # bundle verified PASSED that the auditor's tar then could not open.
    import subprocess

    data = bytearray(built_bundle.read_bytes())
    data[3] |= flags
    bundle = tmp_path / "flags.stella.bundle.tgz"
    bundle.write_bytes(bytes(data))
    assert subprocess.run(["gzip", "-t", str(bundle)], capture_output=True).returncode != 0
    out = tmp_path / "out"
    before = snapshot(tmp_path)
    result = run_cli(
        "bundle", "verify", bundle, "--trust-root", test_keys.trust_root, "--output-dir", out
    )
    assert result.exit_code == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "reserved flag bits set in the gzip header" in line and str(bundle) in line
    assert snapshot(tmp_path) == before
    # Every other gzip reader goes through the same inflater.
    from stella_bundle.compression import BoundedInflater
    from stella_bundle.errors import MalformedDocumentError

    plain = bytearray(gzip.compress(b"{}\n"))
    plain[3] |= flags
    import io

    with pytest.raises(MalformedDocumentError, match="reserved flag bits"):
        BoundedInflater(io.BytesIO(bytes(plain)), "gzip", "x.json.gz").read()
