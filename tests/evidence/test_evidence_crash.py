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


def test_sigkill_at_random_moments_loses_nothing_acknowledged(
    tmp_path: Path, test_keys: Any
) -> None:
    rng = random.Random(SEED)
    signer = test_keys.signer("collector")
    acknowledged: dict[int, int] = {}
    acknowledged_loss: dict[int, int] = {}
    killed_before_open = 0
    for run in range(KILLS):
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child never returns
            os.close(read_fd)
            _child(tmp_path, run, signer, write_fd)
        os.close(write_fd)
        time.sleep(rng.uniform(0.0, 0.25))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        with os.fdopen(read_fd, "rb") as pipe:
            output = pipe.read().decode()
        acks = re.findall(r"ack (\d+) (\d+)", output)
        acknowledged[run] = int(acks[-1][0]) if acks else 0
        acknowledged_loss[run] = int(acks[-1][1]) if acks else 0
        killed_before_open += "open" not in output
        # Whatever instant the kill hit, every sealed chunk verifies (the tail is still open).
        interim = verify_chain(tmp_path / "crashy", test_keys.trust_root, allow_open=True)
        broken = [f.to_dict() for f in interim.findings if f.severity == "error"]
        assert {f["code"] for f in broken} <= {"empty_chain"}, broken  # empty: killed early

    # The next start recovers the tail; a clean stop ends the chain.
    with ChunkWriter.open(tmp_path, "crashy", signer, CONFIG, COLLECTOR) as writer:
        assert writer.head.sequence >= 1
    report = verify_chain(tmp_path / "crashy", test_keys.trust_root)
    assert report.passed, [f.to_dict() for f in report.findings if f.severity == "error"]
    assert "recovered" in report.codes()

    present: dict[int, list[int]] = defaultdict(list)
    for record in iter_chain_records(tmp_path / "crashy"):
        run_name, index = record["function_name"].split("_")
        present[int(run_name[3:])].append(int(index))
    for run in range(KILLS):
        indices = present.get(run, [])
        # In order, each exactly once, no hole: what survived is a prefix of what was written.
        assert indices == list(range(len(indices))), f"run {run}: not a clean prefix"
        assert len(indices) >= acknowledged[run], f"run {run}: lost acknowledged records"
    assert sum(acknowledged.values()) > 1000, "the runs wrote too little to test anything"
    assert report.loss.ring_buffer_dropped >= sum(acknowledged_loss.values())
    assert killed_before_open < KILLS // 2


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
    with ChunkWriter.open(tmp_path, "steps", signer, WriterConfig(max_records=10), COLLECTOR):
        pass
    report = verify_chain(tmp_path / "steps", test_keys.trust_root)
    assert report.passed, [f.to_dict() for f in report.findings]
    names = [r["function_name"] for r in iter_chain_records(tmp_path / "steps")]
    assert names == [f"r_{i}" for i in range(10)], state
