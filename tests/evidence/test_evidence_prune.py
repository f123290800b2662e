"""Retention: prune removes old sealed chunks, signs a record, and verify-chain accepts it."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from evidence_support import COLLECTOR, make_record

from stella_bundle.errors import EvidenceChainError, InputError
from stella_bundle.evidence.chain import verify_chain
from stella_bundle.evidence.layout import PRUNE_RECORD_NAME, chunk_name, seal_name
from stella_bundle.evidence.prune import parse_duration, prune_chain
from stella_bundle.evidence.reader import iter_chain_records
from stella_bundle.evidence.writer import ChunkWriter, WriterConfig

LATER = dt.datetime.now(dt.UTC) + dt.timedelta(days=4)


def test_prune_removes_old_chunks_and_the_chain_still_verifies(
    build_chain: Any, tmp_path: Path, test_keys: Any
) -> None:
    chain = build_chain(tmp_path)
    before = verify_chain(chain, test_keys.trust_root)
    result = prune_chain(chain, 72 * 3600, test_keys.signer("collector"), now=LATER)
    assert result.removed_sequences == [1, 2, 3, 4, 5]  # never the head
    assert not (chain / chunk_name(1)).exists() and not (chain / seal_name(5)).exists()
    report = verify_chain(chain, test_keys.trust_root)
    assert report.passed, [f.to_dict() for f in report.findings]
    pruned = next(f for f in report.findings if f.code == "pruned")
    collector_keyid = json.loads(test_keys.public("collector").read_text())["keyid"]
    assert pruned.key == collector_keyid and "1-5" in pruned.message
    assert report.pruned is not None and report.pruned.records_removed == 100
    # Pruning never hides a loss: the removed seals' counters are carried by the record.
    assert report.events_lost == before.events_lost == 5
    assert [r["function_name"] for r in iter_chain_records(chain)] == [
        f"r_{i}" for i in range(100, 119)
    ]


def test_second_prune_is_cumulative(build_chain: Any, tmp_path: Path, test_keys: Any) -> None:
    chain = build_chain(tmp_path)
    prune_chain(chain, 3600, test_keys.signer("collector"), now=LATER)
    config = WriterConfig(max_records=10)
    with ChunkWriter.open(
        tmp_path, chain.name, test_keys.signer("collector"), config, COLLECTOR
    ) as writer:
        for index in range(25):
            writer.append(make_record(1000 + index))
    result = prune_chain(chain, 3600, test_keys.signer("collector"), now=LATER)
    assert result.removed_sequences == [6, 7, 8]
    assert result.record is not None and result.record.first_sequence == 1
    assert result.record.previous_prune_sha256 is not None
    report = verify_chain(chain, test_keys.trust_root)
    assert report.passed and report.pruned is not None and report.pruned.last_sequence == 8


def test_nothing_old_enough_is_left_alone(build_chain: Any, tmp_path: Path, test_keys: Any) -> None:
    chain = build_chain(tmp_path)
    result = prune_chain(chain, 72 * 3600, test_keys.signer("collector"))
    assert result.removed_sequences == [] and not (chain / PRUNE_RECORD_NAME).exists()


@pytest.mark.parametrize("role", ["stranger", "auditor"])
def test_prune_record_signed_by_a_wrong_key_is_rejected(
    build_chain: Any, tmp_path: Path, test_keys: Any, run_cli: Any, role: str
) -> None:
    chain = build_chain(tmp_path)
    result = run_cli(
        "signals", "prune", chain, "--older-than", "0s", "--key", test_keys.private(role)
    )
    assert result.exit_code == 0, result.stderr
    report = verify_chain(chain, test_keys.trust_root)
    assert {"prune_rejected", "gap"} <= report.codes() and not report.passed
    verdict = run_cli("signals", "verify-chain", chain, "--trust-root", test_keys.trust_root)
    assert verdict.exit_code == 1 and "prune_rejected" in verdict.stdout


def test_prune_cli_reports_and_dry_run(
    build_chain: Any, tmp_path: Path, test_keys: Any, run_cli: Any
) -> None:
    chain = build_chain(tmp_path)
    key = test_keys.private("collector")
    dry = run_cli(
        "signals",
        "prune",
        tmp_path,
        "--older-than",
        "0s",
        "--key",
        key,
        "--dry-run",
        "--format",
        "json",
    )
    assert dry.exit_code == 0 and json.loads(dry.stdout)["chains"][0]["removed_sequences"] == [
        1,
        2,
        3,
        4,
        5,
    ]
    assert (chain / seal_name(1)).exists()
    done = run_cli(
        "signals",
        "prune",
        chain,
        "--older-than",
        "0s",
        "--key",
        key,
        "--trust-root",
        test_keys.trust_root,
    )
    assert done.exit_code == 0 and "removed sequences 1-5" in done.stdout
    verdict = run_cli("signals", "verify-chain", chain, "--trust-root", test_keys.trust_root)
    assert verdict.exit_code == 0 and "pruned" in verdict.stdout


def test_a_broken_chain_is_not_pruned(build_chain: Any, tmp_path: Path, test_keys: Any) -> None:
    chain = build_chain(tmp_path)
    (chain / chunk_name(2)).write_bytes(b"not zstd")
    with pytest.raises(EvidenceChainError, match="refusing to prune"):
        prune_chain(chain, 0, test_keys.signer("collector"), now=LATER)
    assert (chain / seal_name(1)).exists()


def test_interrupted_prune_is_reported_and_still_verifies(
    build_chain: Any, tmp_path: Path, test_keys: Any
) -> None:
    chain = build_chain(tmp_path)
    kept = {
        name: (chain / name).read_bytes()
        for name in (chunk_name(4), seal_name(4), chunk_name(5), seal_name(5))
    }
    prune_chain(chain, 0, test_keys.signer("collector"), now=LATER)
    for name, data in kept.items():  # as if the removal had stopped half-way
        (chain / name).write_bytes(data)
    report = verify_chain(chain, test_keys.trust_root)
    assert report.passed and "prune_incomplete" in report.codes()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("72h", 259200), ("30m", 1800), ("7d", 604800), ("90s", 90), ("2w", 1209600)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "72", "h", "-1h", "1.5h", "3y"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(InputError, match="invalid duration"):
        parse_duration(text)


def test_prune_record_conforms_to_its_schema(
    build_chain: Any, tmp_path: Path, test_keys: Any
) -> None:
    from stella_bundle.attest.dsse import parse_envelope
    from stella_bundle.schema import validate_document

    chain = build_chain(tmp_path)
    prune_chain(chain, 0, test_keys.signer("collector"), now=LATER)
    envelope = parse_envelope(json.loads((chain / PRUNE_RECORD_NAME).read_bytes()))
    statement = json.loads(envelope.payload)
    assert statement["predicateType"] == "https://stella.ops/predicates/evidence-prune/v1"
    validate_document("evidence-prune", statement["predicate"], PRUNE_RECORD_NAME)
