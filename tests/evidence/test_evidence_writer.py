"""Writer behaviour beyond the round trip: tick, loss without records, refusals, offline verify."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest
from evidence_support import COLLECTOR, FakeClock, make_record

from stella_bundle.errors import InputError
from stella_bundle.evidence.chain import verify_chain
from stella_bundle.evidence.layout import partial_name
from stella_bundle.evidence.seal import parse_seal
from stella_bundle.evidence.writer import ChunkWriter, WriterConfig


def _predicates(chain: Path) -> list[dict[str, Any]]:
    return [
        parse_seal(p.read_bytes()).predicate.to_dict()
        for p in sorted(chain.glob("*.seal.dsse.json"))
    ]


def test_tick_seals_by_age_and_flushes_by_interval(tmp_path: Path, test_keys: Any) -> None:
    clock = FakeClock(step=0)
    config = WriterConfig(max_age_seconds=10, flush_interval_seconds=1)
    writer = ChunkWriter.open(
        tmp_path, "ticking", test_keys.signer("collector"), config, COLLECTOR, clock=clock
    )
    writer.append(make_record(0))
    partial = tmp_path / "ticking" / partial_name(1)
    assert partial.stat().st_size == 0  # not yet handed to the kernel
    clock.now += 2
    writer.tick()
    assert partial.stat().st_size > 0 and writer.acknowledged == 1
    clock.now += 9
    writer.tick()
    assert not partial.exists()
    writer.close()
    reasons = [
        (p["reason"], p["final"], p["content"]["records"])
        for p in _predicates(tmp_path / "ticking")
    ]
    assert reasons == [("age", False, 1), ("shutdown", True, 0)]


def test_loss_without_records_lands_in_the_next_seal(tmp_path: Path, test_keys: Any) -> None:
    with ChunkWriter.open(
        tmp_path, "lossy", test_keys.signer("collector"), None, COLLECTOR
    ) as writer:
        writer.add_loss(ring_buffer_dropped=4, sampled_out=3, filtered_out=2)
        writer.add_loss(ring_buffer_dropped=1)
    (predicate,) = _predicates(tmp_path / "lossy")
    assert predicate["loss"] == {
        "ring_buffer_dropped": 5,
        "sampled_out": 3,
        "filtered_out": 2,
    }  # torn_records, optional, is written only when a crash tore lines (stella_bundle/formats)
    assert predicate["window"] == {"first_observed_at": None, "last_observed_at": None}
    report = verify_chain(tmp_path / "lossy", test_keys.trust_root)
    assert report.passed and report.events_lost == 10 and "events_lost" in report.codes()


def test_restart_after_clean_stop_continues_the_chain(tmp_path: Path, test_keys: Any) -> None:
    signer = test_keys.signer("collector")
    for start in (0, 10):
        with ChunkWriter.open(tmp_path, "restarts", signer, None, COLLECTOR) as writer:
            for index in range(start, start + 10):
                writer.append(make_record(index))
    predicates = _predicates(tmp_path / "restarts")
    assert [p["sequence"] for p in predicates] == [1, 2] and predicates[1]["previous"][
        "sequence"
    ] == 1
    assert verify_chain(tmp_path / "restarts", test_keys.trust_root).passed


def test_bad_records_and_arguments_are_refused_without_harm(tmp_path: Path, test_keys: Any) -> None:
    with ChunkWriter.open(
        tmp_path, "strict", test_keys.signer("collector"), None, COLLECTOR
    ) as writer:
        writer.append(make_record(0))
        bad = make_record(1)
        bad["pid"] = 1.5
        with pytest.raises(InputError, match="pid"):
            writer.append(bad)
        with pytest.raises(InputError, match="ring_buffer_dropped"):
            writer.add_loss(ring_buffer_dropped=-1)
        writer.append(make_record(2))
    assert verify_chain(tmp_path / "strict", test_keys.trust_root).records == 2
    with pytest.raises(InputError, match="invalid chain id"):
        ChunkWriter.open(tmp_path, "../escape", test_keys.signer("collector"), None, COLLECTOR)


def test_verify_opens_no_socket(
    build_chain: Any, tmp_path: Path, test_keys: Any, no_network: Any
) -> None:
    chain = build_chain(tmp_path)
    assert verify_chain(chain, test_keys.trust_root).passed


def test_verify_chain_works_from_another_directory(
    build_chain: Any, tmp_path: Path, test_keys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_chain(tmp_path / "evidence")
    monkeypatch.chdir(tmp_path / "evidence" / "chain-t")
    assert verify_chain(".", test_keys.trust_root).chain_id == "chain-t"


@pytest.mark.netns
def test_verify_chain_in_a_namespace_without_network(
    build_chain: Any, tmp_path: Path, test_keys: Any, netns_cli: Any
) -> None:
    chain = build_chain(tmp_path)
    result = netns_cli("signals", "verify-chain", chain, "--trust-root", test_keys.trust_root)
    assert result.exit_code == 0, result.stderr
    assert "PASSED" in result.stdout


def test_the_head_says_whether_the_chain_was_left_cleanly(tmp_path: Path, test_keys: Any) -> None:
    """What a restarted collector reads to declare an unclean restart (collector/run.py)."""
    signer = test_keys.signer("collector")
    with ChunkWriter.open(tmp_path, "c", signer, WriterConfig(), COLLECTOR) as writer:
        assert writer.head.final is None  # a new chain: nothing to say
        writer.append(make_record(0))
    writer = ChunkWriter.open(tmp_path, "c", signer, WriterConfig(), COLLECTOR)
    assert writer.head.final is True  # stopped cleanly: final seal
    writer.append(make_record(1))
    writer.flush()
    writer._chunk.close_files()  # type: ignore[union-attr]  # a crash: the partial stays
    os.close(writer._lock_fd)
    writer = ChunkWriter.open(tmp_path, "c", signer, WriterConfig(), COLLECTOR)
    assert [r.records for r in writer.recovered] == [1]
    assert writer.head.final is False  # the recovered seal is the head
    writer.close(final=False)
    writer = ChunkWriter.open(tmp_path, "c", signer, WriterConfig(), COLLECTOR)
    assert writer.head.final is False
    writer.close(final=True)


@pytest.mark.parametrize(
    "config",
    [WriterConfig(max_records=7), WriterConfig(max_size_mb=0.002), WriterConfig()],
    ids=["by-records", "by-size", "no-rotation"],
)
def test_a_run_of_encoded_lines_writes_what_they_write_one_by_one(
    tmp_path: Path, test_keys: Any, config: WriterConfig
) -> None:
    """`append_encoded_run` (runs that fit a chunk, runs across a rotation, runs of one) gives
    the chunks, seals and windows that `append_encoded` gives line by line."""
    from stella_bundle.evidence.encoding import encode_record

    records = [make_record(i) for i in range(60)]
    random.Random(7).shuffle(records)  # windows from unordered times
    lines = [encode_record(r) for r in records]
    times = [r["observed_at"] for r in records]
    for name in ("one-by-one", "runs"):
        clock = FakeClock(step=0)
        signer = test_keys.signer("collector")
        target = tmp_path / name
        with ChunkWriter.open(target, "c", signer, config, COLLECTOR, clock=clock) as writer:
            if name == "one-by-one":
                for line, at in zip(lines, times, strict=True):
                    writer.append_encoded(line, at)
            else:
                start = 0  # runs that fill a chunk exactly, overflow it by one, span chunks
                for size in (1, 6, 3, 5, 13, 2, 30):
                    part = slice(start, start + size)
                    start += size
                    writer.append_encoded_run(
                        b"\n".join(lines[part]), "\n".join(times[part]), size,
                        min(times[part]), max(times[part]),
                    )  # fmt: skip
    one, runs = tmp_path / "one-by-one" / "c", tmp_path / "runs" / "c"
    assert [p.name for p in sorted(one.iterdir())] == [p.name for p in sorted(runs.iterdir())]
    for path in sorted(one.glob("*.ndjson.zst")):
        assert (runs / path.name).read_bytes() == path.read_bytes()
    strip = ("sealed_at", "previous")
    assert [{k: v for k, v in p.items() if k not in strip} for p in _predicates(one)] == [
        {k: v for k, v in p.items() if k not in strip} for p in _predicates(runs)
    ]
    assert len(_predicates(one)) > (1 if config.max_records or config.max_size_mb < 1 else 0)
