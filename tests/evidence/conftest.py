"""Fixtures of the evidence tests: a collector identity and a chain builder."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from evidence_support import COLLECTOR, make_record

from stella_bundle.evidence.writer import ChunkWriter, WriterConfig
from stella_bundle.formats.seal import CollectorInfo


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
