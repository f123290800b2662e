"""Crash safety: a writer process killed with SIGKILL at seeded random moments, again and again.

Each run is a forked child (the parent has the modules imported already, so runs are short):
it opens the chain (recovering what the previous run left), appends records named after the
run, flushes every few records and reports each acknowledged count over a pipe.
"""

from __future__ import annotations

import os
import random
import re
import signal
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from evidence_support import COLLECTOR, make_record

from stella_bundle.evidence import storage
from stella_bundle.evidence import writer as writer_module
from stella_bundle.evidence.chain import verify_chain
from stella_bundle.evidence.layout import (
    PARTIAL_STATE_SUFFIX,
    PARTIAL_SUFFIX,
    SEAL_SUFFIX,
    chunk_name,
    partial_name,
    seal_name,
)
from stella_bundle.evidence.reader import iter_chain_records
from stella_bundle.evidence.writer import ChunkWriter, WriterConfig

KILLS = 32
SEED = 20260123
CONFIG = WriterConfig(max_size_mb=0.02, max_records=45, flush_interval_seconds=0.002)


def _child(evidence: Path, run: int, signer: Any, ack_fd: int) -> None:
    """Write until killed; after each flush report `acknowledged records, acknowledged loss`."""
    try:
        writer = ChunkWriter.open(evidence, "crashy", signer, CONFIG, COLLECTOR)
        os.write(ack_fd, b"open\n")
        loss = 0
        index = 0
        while True:
            writer.append(make_record(index, run=f"run{run}"))
            index += 1
            if index % 10 == 0:
                writer.add_loss(ring_buffer_dropped=1)
                loss += 1
            if index % 7 == 0:
                acknowledged = writer.flush()
                os.write(ack_fd, b"ack %d %d\n" % (acknowledged, loss))
    finally:
        os._exit(0)


def _left_open_chunk(chain_dir: Path) -> bool:
    """Whether the directory holds an open chunk (or its state) that no seal covers yet."""
    for suffix in (PARTIAL_SUFFIX, PARTIAL_STATE_SUFFIX):
        for path in chain_dir.glob(f"*{suffix}"):
            sequence = int(path.name.removesuffix(suffix))
            if not (chain_dir / seal_name(sequence)).exists():
                return True
    return False


class KillRounds:
    """What the killed runs left: acknowledged records and loss per run, and what was on disk."""

    def __init__(self) -> None:
        self.acknowledged: dict[int, int] = {}
        self.acknowledged_loss: dict[int, int] = {}
        self.killed_before_open = 0
        # Some kill left an open chunk: the next start must seal it `recovered`. A run killed
        # between sealing a chunk and opening the next one leaves nothing to recover.
        self.left_open_chunk = False


class Lane:
    """One chain killed again and again: its directory, its seeded delays, what its runs left."""

    def __init__(self, evidence: Path, seed: int, rounds: KillRounds | None = None) -> None:
        self.evidence = evidence
        self.rng = random.Random(seed)
        self.rounds = rounds or KillRounds()


def _kill_lanes(lanes: list[Lane], keys: Any, run: int, max_delay: float) -> None:
    """One run per lane at once (each its own chain), each SIGKILLed at its own seeded moment;
    after the kill every chain verifies as open. The lanes' delays overlap instead of adding up."""
    signer = keys.signer("collector")
    children = []
    for lane in lanes:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child never returns
            os.close(read_fd)
            _child(lane.evidence, run, signer, write_fd)
        os.close(write_fd)
        children.append((time.monotonic() + lane.rng.uniform(0.0, max_delay), pid, read_fd, lane))
    for kill_at, pid, _, _ in sorted(children, key=lambda child: child[0]):
        time.sleep(max(0.0, kill_at - time.monotonic()))
        os.kill(pid, signal.SIGKILL)
    for _, pid, read_fd, lane in children:
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        with os.fdopen(read_fd, "rb") as pipe:
            output = pipe.read().decode()
        _record_run(lane, run, output, keys)


def _record_run(lane: Lane, run: int, output: str, keys: Any) -> None:
    rounds, evidence = lane.rounds, lane.evidence
    acks = re.findall(r"ack (\d+) (\d+)", output)
    rounds.acknowledged[run] = int(acks[-1][0]) if acks else 0
    rounds.acknowledged_loss[run] = int(acks[-1][1]) if acks else 0
    rounds.killed_before_open += "open" not in output
    # Whatever instant the kill hit (between publishing a chunk and its seal too), every
    # sealed chunk verifies and the tail is open, not broken.
    if not (evidence / "crashy").is_dir():  # killed before the writer made its directory
        return
    rounds.left_open_chunk |= _left_open_chunk(evidence / "crashy")
    interim = verify_chain(evidence / "crashy", keys.trust_root, allow_open=True)
    broken = [f.to_dict() for f in interim.findings if f.severity == "error"]
    assert {f["code"] for f in broken} <= {"empty_chain"}, broken  # empty: killed early


def _kill_repeatedly(
    evidence: Path,
    keys: Any,
    seed: int,
    kills: int,
    max_delay: float,
    first_run: int = 0,
    rounds: KillRounds | None = None,
) -> KillRounds:
    """Start and SIGKILL a writer `kills` times; after each kill the chain verifies as open."""
    lane = Lane(evidence, seed, rounds)
    for run in range(first_run, first_run + kills):
        _kill_lanes([lane], keys, run, max_delay)
    return lane.rounds


def _check_recovered_chain(evidence: Path, keys: Any, rounds: KillRounds) -> None:
    """The next start recovers the tail, a clean stop ends the chain; nothing acknowledged lost."""
    # Every run may have been killed before its first record (a loaded machine forks and
    # opens slowly: at load 11-14, a third of the 80 ms runs each time), leaving no chunk to
    # seal or recover: then the chain starts at this open.
    chain = evidence / "crashy"
    wrote = chain.is_dir() and any(
        path.name.endswith((PARTIAL_SUFFIX, PARTIAL_STATE_SUFFIX, SEAL_SUFFIX))
        for path in chain.iterdir()
    )
    with ChunkWriter.open(evidence, "crashy", keys.signer("collector"), CONFIG, COLLECTOR) as w:
        assert (w.head.sequence >= 1) == wrote, (w.head, wrote)
    report = verify_chain(evidence / "crashy", keys.trust_root)
    assert report.passed, [f.to_dict() for f in report.findings if f.severity == "error"]
    assert ("recovered" in report.codes()) == rounds.left_open_chunk, report.codes()
    present: dict[int, list[int]] = defaultdict(list)
    for record in iter_chain_records(evidence / "crashy"):
        run_name, index = record["function_name"].split("_")
        present[int(run_name[3:])].append(int(index))
    for run, count in rounds.acknowledged.items():
        indices = present.get(run, [])
        # In order, each exactly once, no hole: what survived is a prefix of what was written.
        assert indices == list(range(len(indices))), f"run {run}: not a clean prefix"
        assert len(indices) >= count, f"run {run}: lost acknowledged records"
    assert report.loss.ring_buffer_dropped >= sum(rounds.acknowledged_loss.values())


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing_acknowledged(
    tmp_path: Path, test_keys: Any
) -> None:
    # A loaded machine writes less per run, and more of its kills land before the forked
    # writer has even opened the chain (a third of them at load 9): kill again (other seeds,
    # same chain) until the runs have written enough and enough kills hit a writing writer,
    # up to eight rounds.
    rounds = KillRounds()
    for round_ in range(8):
        _kill_repeatedly(
            tmp_path,
            test_keys,
            SEED + round_,
            KILLS,
            max_delay=0.25,
            first_run=round_ * KILLS,
            rounds=rounds,
        )
        if _enough(rounds):
            break
    _check_recovered_chain(tmp_path, test_keys, rounds)
    assert rounds.left_open_chunk, "no kill landed while a chunk was open"
    assert sum(rounds.acknowledged.values()) > 1000, "the runs wrote too little to test anything"
    killed_writing = len(rounds.acknowledged) - rounds.killed_before_open
    assert killed_writing >= KILLS // 2, f"{killed_writing} kills after the writer opened"


def _enough(rounds: KillRounds) -> bool:
    killed_writing = len(rounds.acknowledged) - rounds.killed_before_open
    return (
        rounds.left_open_chunk
        and sum(rounds.acknowledged.values()) > 1000
        and killed_writing >= KILLS // 2
    )


@pytest.mark.slow
def test_sigkill_scenario_is_stable_over_50_repeats(tmp_path: Path, test_keys: Any) -> None:
    """The scenario above, 50 times with other seeds (short runs, so kills land mid-seal often).
    Five repeats at a time, each on its own chain: the waits before the kills overlap (they were
    most of the test's time, one after another)."""
    for first in range(0, 50, 5):
        lanes = [Lane(tmp_path / f"repeat-{r}", SEED + r) for r in range(first, first + 5)]
        for run in range(6):
            _kill_lanes(lanes, test_keys, run, max_delay=0.08)
        for lane in lanes:
            _check_recovered_chain(lane.evidence, test_keys, lane.rounds)


def _die_at(module: Any, name: str, call: int) -> None:
    """Replace module.name so that its `call`-th call kills the process instead (a crash)."""
    original = getattr(module, name)
    calls = [0]

    def dying(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == call:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    setattr(module, name, dying)


@pytest.mark.parametrize(
    ("module", "name", "call", "state"),
    [
        (storage.os, "replace", 1, "seal written, nothing renamed"),
        (storage.os, "replace", 2, "chunk renamed, seal not"),
        (writer_module, "remove_quietly", 1, "sealed, partial not removed"),
    ],
)
def test_crash_at_each_step_of_sealing(
    tmp_path: Path, test_keys: Any, module: Any, name: str, call: int, state: str
) -> None:
    signer = test_keys.signer("collector")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child dies inside the seal
        try:
            writer = ChunkWriter.open(
                tmp_path, "steps", signer, WriterConfig(max_records=10), COLLECTOR
            )
            for index in range(10):
                writer.append(make_record(index))
            writer.flush()
            _die_at(module, name, call)
            writer.append(make_record(10))  # the 11th record seals chunk 1 first
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status), f"the child did not crash at: {state}"
    # Before any restart, a reader sees an open chain, never a broken one.
    live = verify_chain(tmp_path / "steps", test_keys.trust_root, allow_open=True)
    errors = {f.code for f in live.findings if f.severity == "error"}
    assert errors <= {"empty_chain"}, state  # the first chunk: nothing sealed yet
    with ChunkWriter.open(tmp_path, "steps", signer, WriterConfig(max_records=10), COLLECTOR):
        pass
    report = verify_chain(tmp_path / "steps", test_keys.trust_root)
    assert report.passed, [f.to_dict() for f in report.findings]
    names = [r["function_name"] for r in iter_chain_records(tmp_path / "steps")]
    assert names == [f"r_{i}" for i in range(10)], state


def _crash_between_chunk_and_seal(evidence: Path, signer: Any) -> Path:
    """A chain whose second chunk was published and whose writer died before its seal."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child dies inside the seal
        try:
            writer = ChunkWriter.open(
                evidence, "tail", signer, WriterConfig(max_records=10), COLLECTOR
            )
            for index in range(20):
                writer.append(make_record(index))
            writer.flush()
            _die_at(storage.os, "replace", 2)
            writer.append(make_record(20))
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status)
    return evidence / "tail"


def test_chunk_without_seal_is_the_open_tail_only_beside_its_partial(
    tmp_path: Path, test_keys: Any
) -> None:
    chain = _crash_between_chunk_and_seal(tmp_path, test_keys.signer("collector"))
    assert (chain / chunk_name(2)).exists() and not (chain / seal_name(2)).exists()
    live = verify_chain(chain, test_keys.trust_root, allow_open=True)
    assert live.passed, [f.to_dict() for f in live.findings if f.severity == "error"]
    assert ("open_chunk", 2) in {(f.code, f.sequence) for f in live.findings}
    assert [c.sequence for c in live.chunks] == [1] and live.records == 10  # not evidence

    # Beyond the head, or with no open chunk beside it, a chunk without a seal is an orphan.
    (chain / chunk_name(2)).rename(chain / chunk_name(3))
    moved = verify_chain(chain, test_keys.trust_root, allow_open=True)
    assert ("orphan_chunk", 3) in {(f.code, f.sequence) for f in moved.findings}
    (chain / chunk_name(3)).rename(chain / chunk_name(2))
    (chain / partial_name(2)).unlink()
    alone = verify_chain(chain, test_keys.trust_root, allow_open=True)
    assert ("orphan_chunk", 2) in {(f.code, f.sequence) for f in alone.findings}
    assert not alone.passed
