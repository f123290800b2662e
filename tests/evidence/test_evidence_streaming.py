"""The chain state machine reports each finding when the event that decides it arrives.

A chain of 50 chunks broken at its second: the finding is reported before chunk 3 is fed, and
the report at the end is the one `verify-chain` gives on the directory, whatever the order the
events came in (directory order, archive order, reversed, or without a declared layout).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stella_bundle.attest.dsse import parse_envelope, sign_payload
from stella_bundle.canonical import canonical_bytes
from stella_bundle.errors import EvidenceChainError
from stella_bundle.evidence.chain import (
    ChainStateMachine,
    ChainVerifyOptions,
    Finding,
    read_chain_dir,
    verify_chain,
)
from stella_bundle.evidence.layout import chunk_name, seal_name
from stella_bundle.evidence.measure import measure_chunk
from stella_bundle.evidence.report import BROKEN_LINK, ERROR, TAMPERED_CHUNK, ChainReport
from stella_bundle.formats.trust_root import TrustRoot
from stella_bundle.store import open_store
from stella_bundle.store.ingest import ingest_evidence

CHUNKS = 50


@pytest.fixture
def chain(build_chain: Callable[..., Path], tmp_path: Path) -> Path:
    return build_chain(tmp_path / "evidence", chunks=CHUNKS, per_chunk=2)


@pytest.fixture
def root(test_keys: Any) -> TrustRoot:
    return TrustRoot.load(test_keys.trust_root)


def _break_link(chain: Path, sequence: int, signer: Any) -> None:
    """Seal `sequence` re-signed by the collector key, naming a predecessor that is not there."""
    path = chain / seal_name(sequence)
    envelope = parse_envelope(json.loads(path.read_bytes()))
    statement = json.loads(envelope.payload)
    statement["predicate"]["previous"]["sha256"] = "0" * 64
    signed = sign_payload(canonical_bytes(statement), envelope.payload_type, [signer])
    path.write_bytes(canonical_bytes(signed.to_dict()))


def _tamper_chunk(chain: Path, sequence: int) -> None:
    path = chain / chunk_name(sequence)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _measure(chain: Path, sequence: int) -> Any:
    with open(chain / chunk_name(sequence), "rb") as handle:
        return measure_chunk(handle, None)


def _machine(chain: Path, root: TrustRoot, reported: list[Finding]) -> ChainStateMachine:
    return ChainStateMachine(
        chain.name,
        root,
        location=str(chain),
        options=ChainVerifyOptions(require_signatures=True),
        on_finding=reported.append,
    )


def _same(report: ChainReport, expected: ChainReport) -> None:
    assert [f.to_dict() for f in report.findings] == [f.to_dict() for f in expected.findings]
    assert [c.to_dict() for c in report.chunks] == [c.to_dict() for c in expected.chunks]
    assert report.passed == expected.passed


def _errors_at(findings: list[Finding], code: str) -> list[int | None]:
    return [f.sequence for f in findings if f.code == code and f.severity == ERROR]


def test_a_broken_link_at_chunk_2_of_50_is_reported_before_chunk_3(
    chain: Path, root: TrustRoot, test_keys: Any
) -> None:
    _break_link(chain, 2, test_keys.signer("collector"))
    reported: list[Finding] = []
    machine = _machine(chain, root, reported)
    machine.expect(range(1, CHUNKS + 1), prune_record=False)
    reported_before: dict[int, list[Finding]] = {}
    for sequence in range(1, CHUNKS + 1):  # archive order: chunk, then its seal
        reported_before[sequence] = list(reported)
        machine.chunk(sequence, _measure(chain, sequence))
        machine.seal(sequence, (chain / seal_name(sequence)).read_bytes())
    assert _errors_at(reported_before[2], BROKEN_LINK) == []
    assert _errors_at(reported_before[3], BROKEN_LINK) == [2]  # seal 2 decided it
    report = machine.finish()
    _same(report, verify_chain(chain, root))
    assert all(finding in report.findings for finding in reported)
    assert not report.passed


def test_a_tampered_chunk_2_of_50_is_reported_before_chunk_3(chain: Path, root: TrustRoot) -> None:
    _tamper_chunk(chain, 2)
    reported: list[Finding] = []
    # Store ingest's order: the directory's seals first, then each chunk as it is read.
    machine = read_chain_dir(chain).machine(root, ChainVerifyOptions(), reported.append)
    assert reported == []
    reported_before: dict[int, list[Finding]] = {}
    for sequence in range(1, CHUNKS + 1):
        reported_before[sequence] = list(reported)
        machine.chunk(sequence, _measure(chain, sequence))
    assert _errors_at(reported_before[2], TAMPERED_CHUNK) == []
    assert _errors_at(reported_before[3], TAMPERED_CHUNK) == [2]
    _same(machine.finish(), verify_chain(chain, root))


def test_a_chunk_matching_no_seal_waits_for_every_seal(chain: Path, root: TrustRoot) -> None:
    # Fed before the seals after it, chunk 2 might be a later sequence's chunk (reordered): its
    # finding is decided once every seal is in, and is then the one the directory gives.
    _tamper_chunk(chain, 2)
    reported: list[Finding] = []
    machine = _machine(chain, root, reported)
    machine.expect(range(1, CHUNKS + 1), prune_record=False)
    for sequence in range(1, CHUNKS + 1):
        machine.chunk(sequence, _measure(chain, sequence))
        machine.seal(sequence, (chain / seal_name(sequence)).read_bytes())
        if sequence < CHUNKS:
            assert _errors_at(reported, TAMPERED_CHUNK) == []
    assert _errors_at(reported, TAMPERED_CHUNK) == [2]
    _same(machine.finish(), verify_chain(chain, root))


def _several_defects(chain: Path, signer: Any) -> None:
    _break_link(chain, 7, signer)
    _tamper_chunk(chain, 12)
    (chain / seal_name(20)).unlink()  # a gap
    (chain / chunk_name(20)).unlink()
    (chain / chunk_name(30)).write_bytes((chain / chunk_name(31)).read_bytes())  # reordered copy
    (chain / "stray.txt").write_text("x")


@pytest.mark.parametrize("order", ["directory", "archive", "reversed", "no layout"])
def test_one_report_whatever_the_order_of_events(
    chain: Path, root: TrustRoot, test_keys: Any, order: str
) -> None:
    _several_defects(chain, test_keys.signer("collector"))
    expected = verify_chain(chain, root)
    files = read_chain_dir(chain)
    reported: list[Finding] = []
    machine = _machine(chain, root, reported)
    if order != "no layout":
        machine.expect(files.seals, prune_record=False)
    sequences = sorted(files.seals.keys() | files.chunks)
    if order == "reversed":
        sequences.reverse()
    if order == "directory":
        for sequence in sequences:
            if sequence in files.seals:
                machine.seal(sequence, files.seals[sequence])
    for sequence in sequences:
        if sequence in files.chunks:
            machine.chunk(sequence, _measure(chain, sequence))
        if sequence in files.seals and order != "directory":
            machine.seal(sequence, files.seals[sequence])
    for name in files.others:
        machine.other(name)
    if order == "no layout":
        assert reported == []  # nothing can be known not to come
    report = machine.finish()
    _same(report, expected)
    assert sorted(map(repr, reported)) == sorted(map(repr, report.findings))


def test_an_event_the_layout_did_not_announce_is_judged_at_the_end(
    chain: Path, root: TrustRoot
) -> None:
    files = read_chain_dir(chain)
    machine = _machine(chain, root, [])
    machine.expect(range(1, CHUNKS), prune_record=False)  # the last seal not announced
    for sequence in sorted(files.seals):
        machine.chunk(sequence, _measure(chain, sequence))
        machine.seal(sequence, files.seals[sequence])
    _same(machine.finish(), verify_chain(chain, root))


def test_store_ingest_stops_at_the_first_error(
    chain: Path, root: TrustRoot, tmp_path: Path
) -> None:
    _tamper_chunk(chain, 2)
    with open_store(f"sqlite:///{tmp_path / 's.sqlite'}", initialise=True) as store:
        with pytest.raises(EvidenceChainError, match="decided at chunk 2; the chunks after it"):
            ingest_evidence(store, chain, root)
        assert store.status().records == 0
