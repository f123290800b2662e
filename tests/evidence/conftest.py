"""Fixtures of the evidence tests: typical records, a collector identity, chain builders."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stella_bundle.evidence.writer import ChunkWriter, CollectorInfo, WriterConfig

COLLECTOR = CollectorInfo(
    id="collector-test",
    host="host-1",
    boot_id="6f1c4a0e-2d7e-4b7d-9f2b-3a1c5e7d9b11",
    version="0.1.0",
    probe_set_sha256=hashlib.sha256(b"probes").hexdigest(),
)


def make_record(index: int, run: str = "r") -> dict[str, Any]:
    """A typical function observation; `function_name` carries the index for read-back checks."""
    second, micro = divmod(index, 1000)
    return {
        "node_hash": "sha256:" + hashlib.sha256(str(index % 97).encode()).hexdigest(),
        "function_name": f"{run}_{index}",
        "probe_type": "uprobe",
        "observed_at": f"2026-01-23T{second // 3600 % 24:02d}:{second // 60 % 60:02d}:{second % 60:02d}.{micro * 1000:06d}Z",
        "purl": "pkg:deb/debian/openssl@3.0.11",
        "pid": 1000 + index % 17,
        "comm": "nginx",
        "binary_path": "/usr/lib/x86_64-linux-gnu/libssl.so.3",
        "kind": "function",
    }


class FakeClock:
    """A monotonic clock that advances `step` seconds per call (age rotation without sleeping)."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@pytest.fixture
def collector() -> CollectorInfo:
    return COLLECTOR


@pytest.fixture
def build_chain(test_keys: Any) -> Callable[..., Path]:
    """Write `chunks` sealed chunks: `per_chunk` records each, one less in the final one."""

    def build(
        evidence_dir: Path, chunks: int = 6, per_chunk: int = 20, chain_id: str = "chain-t"
    ) -> Path:
        config = WriterConfig(max_records=per_chunk, flush_interval_seconds=60)
        counter = itertools.count()
        with ChunkWriter.open(
            evidence_dir, chain_id, test_keys.signer("collector"), config, COLLECTOR
        ) as writer:
            for _ in range(chunks * per_chunk - 2):
                writer.append(make_record(next(counter)))
            writer.add_loss(ring_buffer_dropped=3, sampled_out=2)
            writer.append(make_record(next(counter)))
        return evidence_dir / chain_id

    return build


def chain_records(chain_dir: Path) -> Iterator[dict[str, Any]]:
    from stella_bundle.evidence.reader import iter_chain_records

    return iter_chain_records(chain_dir)
