"""Round trip: 100,000 records through many rotations (size, age, count); verify and read back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from evidence_support import COLLECTOR, FakeClock, make_record

from stella_bundle.attest.dsse import parse_envelope
from stella_bundle.evidence.chain import verify_chain
from stella_bundle.evidence.reader import iter_chain_records
from stella_bundle.evidence.writer import ChunkWriter, WriterConfig
from stella_bundle.schema import validate_document

RECORDS = 100_000


@pytest.mark.slow
def test_round_trip_100k_records_rotating_by_size_age_and_count(
    tmp_path: Path, test_keys: Any
) -> None:
    # Records are ~330 bytes (1,200 of them stay under 0.5 MiB: the count limit fires), except
    # a run of 1.2 KB records (the size limit fires first) and a slow phase (age fires first).
    config = WriterConfig(
        max_size_mb=0.5, max_age_seconds=1.0, max_records=1200, flush_interval_seconds=0.5
    )
    clock = FakeClock(step=1 / 300_000)
    records = [make_record(i) for i in range(RECORDS)]
    for record in records[70_000:80_000]:
        record["details"] = {"path": "/srv/data/" + "x" * 900, "argv": ["a", "b"]}
    signer = test_keys.signer("collector")
    writer = ChunkWriter.open(tmp_path, "round-trip", signer, config, COLLECTOR, clock=clock)
    for index, record in enumerate(records):
        clock.step = 1 / 300 if 40_000 <= index < 60_000 else 1 / 300_000
        writer.append(record)
    writer.close()
    chain = tmp_path / "round-trip"

    report = verify_chain(chain, test_keys.trust_root)
    assert report.passed, [f.to_dict() for f in report.findings]
    assert report.records == RECORDS
    assert report.final_seal

    seals = []
    for seal_path in sorted(chain.glob("*.seal.dsse.json")):
        statement = json.loads(parse_envelope(json.loads(seal_path.read_bytes())).payload)
        validate_document("evidence-chunk", statement, seal_path)
        seals.append(statement["predicate"])
    by_count = [p for p in seals if p["reason"] == "size" and p["content"]["records"] == 1200]
    by_size = [
        p
        for p in seals
        if p["reason"] == "size"
        and p["content"]["records"] < 1200
        and p["content"]["bytes"] > 0.95 * config.max_size_bytes
    ]
    by_age = [p for p in seals if p["reason"] == "age" and p["content"]["records"] < 1200]
    assert len(by_count) >= 10 and len(by_size) >= 5 and len(by_age) >= 5, (
        len(by_count),
        len(by_size),
        len(by_age),
    )
    assert all(p["content"]["bytes"] <= config.max_size_bytes for p in seals)
    assert [p["reason"] for p in seals].count("shutdown") == 1 and seals[-1]["final"] is True
    assert [p["sequence"] for p in seals] == list(range(1, len(seals) + 1))

    back = list(iter_chain_records(chain))
    assert back == records
