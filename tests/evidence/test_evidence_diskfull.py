"""Disk full on a tiny tmpfs: a clear error, the sealed chain intact, nothing half-renamed."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from evidence_support import COLLECTOR, make_record

from stella_bundle.errors import DiskFullError
from stella_bundle.evidence.chain import verify_chain
from stella_bundle.evidence.layout import parse_name
from stella_bundle.evidence.reader import iter_chain_records
from stella_bundle.evidence.writer import ChunkWriter, WriterConfig


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_disk_full_is_clear_and_leaves_the_sealed_chain_intact(
    tiny_tmpfs: Path, test_keys: Any
) -> None:
    config = WriterConfig(max_size_mb=0.03, flush_interval_seconds=0)
    writer = ChunkWriter.open(tiny_tmpfs, "full", test_keys.signer("collector"), config, COLLECTOR)
    with pytest.raises(DiskFullError) as caught:
        for index in range(100_000):
            writer.append(make_record(index))
    acknowledged = writer.acknowledged
    message = caught.value.describe()
    assert "no space left on device" in message and "full" in message
    assert acknowledged > 100
    # The writer refuses more work with the same clear reason, and closes without writing.
    with pytest.raises(DiskFullError, match="stopped after an earlier error"):
        writer.append(make_record(0))
    writer.close()

    chain = tiny_tmpfs / "full"
    names = sorted(p.name for p in chain.iterdir())
    assert not [n for n in names if n.endswith(".tmp")], names
    sealed = {parse_name(n)[0] for n in names if n.endswith(".seal.dsse.json")}  # type: ignore[index]
    chunks = {parse_name(n)[0] for n in names if n.endswith(".ndjson.zst")}  # type: ignore[index]
    assert sealed and sealed == chunks, "a chunk without its seal (or the reverse)"
    report = verify_chain(chain, test_keys.trust_root)
    assert {f.code for f in report.findings if f.severity == "error"} == {"no_final_seal"}

    # With space again, the next start recovers the open chunk and the chain completes.
    subprocess.run(["mount", "-o", "remount,size=8m", str(tiny_tmpfs)], check=True)
    with ChunkWriter.open(
        tiny_tmpfs, "full", test_keys.signer("collector"), config, COLLECTOR
    ) as again:
        assert again.recovered and again.recovered[0].records >= 0
    report = verify_chain(chain, test_keys.trust_root)
    assert report.passed, [f.to_dict() for f in report.findings]
    names_back = [r["function_name"] for r in iter_chain_records(chain)]
    assert names_back[:acknowledged] == [f"r_{i}" for i in range(acknowledged)]
    assert len(names_back) == len(set(names_back))
