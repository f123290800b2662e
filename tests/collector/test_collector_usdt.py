"""USDT: probes resolved from .note.stapsdt, semaphores raised only while attached, and
CPython's python:audit events observed as map nodes (a script run by a copy of Debian's
/usr/bin/python3.11)."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from collector_support import REPO_ROOT

from stella_bundle.collector.features import KernelFeatures
from stella_bundle.collector.loader import ProbeRuntime, ProbeSet
from stella_bundle.collector.plan import build_plan
from stella_bundle.collector.session import Collector, CollectorConfig, MemorySink
from stella_bundle.collector.usdt import ARG_REG, ARG_REG_DEREF, find_probe, parse_arg
from stella_bundle.formats.function_map import ExpectedNode
from stella_bundle.formats.record import validate_record

PYTHON = "/usr/bin/python3.11"
PYTHON_PURL = "pkg:deb/debian/python3.11@3.11.2"
SCRIPT = REPO_ROOT / "tests" / "data" / "collector" / "audit_workload.py"


@pytest.fixture(scope="module")
def python311() -> str:
    if not Path(PYTHON).exists():
        pytest.skip(f"{PYTHON} (Debian's python3.11, with USDT notes) is not installed")
    return PYTHON


def test_argument_specs_parse() -> None:
    assert parse_arg("8@%rbx").kind == ARG_REG and parse_arg("8@%rbx").reg_offset == 5 * 8
    deref = parse_arg("-4@-20(%rbp)")
    assert (deref.kind, deref.size, deref.value, deref.reg_offset) == (ARG_REG_DEREF, -4, -20, 32)
    with pytest.raises(ValueError, match="unsupported"):
        parse_arg("8@%xmm0")


def _semaphore(pid: int, binary: str, file_offset: int) -> int:
    """The 2-byte USDT semaphore as the process sees it (through /proc/PID/mem)."""
    real = str(Path(binary).resolve())
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[5] != real:
            continue
        start, end = (int(x, 16) for x in fields[0].split("-"))
        offset = int(fields[2], 16)
        if offset <= file_offset < offset + (end - start):
            with open(f"/proc/{pid}/mem", "rb") as mem:
                mem.seek(start + file_offset - offset)
                return int.from_bytes(mem.read(2), "little")
    raise AssertionError("semaphore not mapped")


def _nodes(binary: str) -> list[ExpectedNode]:
    return [
        ExpectedNode.create(PYTHON_PURL, event, binary_path=binary, probe_types=("usdt",))
        for event in ("socket.connect", "open", "subprocess.Popen")
    ]


def _released_semaphore(pid: int, binary: str, file_offset: int, wait_s: float = 10.0) -> int:
    """The semaphore once the links are gone (0), or what it is after `wait_s`, for the
    assertion to name: a link's release may finish just after its close returns."""
    deadline = time.monotonic() + wait_s
    value = _semaphore(pid, binary, file_offset)
    while value != 0 and time.monotonic() < deadline:
        time.sleep(0.2)
        value = _semaphore(pid, binary, file_offset)
    return value


@pytest.fixture
def private_python(python311: str, tmp_path: Path) -> str:
    """Debian's python3.11 copied to a file of this test's own. The kernel raises a USDT
    semaphore for every link on the binary's inode, machine-wide: on /usr/bin/python3.11 a
    test in the other xdist worker attaching python:audit (test_collector_confidence.py) moved
    it too. A copy is another inode that nothing else attaches to; it finds its standard
    library under /usr as the original does."""
    copy = tmp_path / "bin" / "python3.11"
    copy.parent.mkdir()
    shutil.copy2(python311, copy)
    return str(copy)


@pytest.mark.ebpf
def test_python_audit_events_observed_with_safe_arguments_and_semaphore_only_while_attached(
    ebpf: None, features: KernelFeatures, private_python: str, tmp_path: Path
) -> None:
    python311 = private_python
    audit = find_probe(python311, "python:audit")
    assert audit.semaphore_offset > 0 and len(audit.args) == 2
    nodes = _nodes(python311)
    plan = build_plan(nodes, features)
    assert not plan.unobservable
    assert {s.attach_type for s in plan.specs} == {"usdt"}
    target = tmp_path / "audited.txt"
    process = subprocess.Popen(
        [python311, str(SCRIPT), str(target)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        assert process.stdout.readline().strip() == "ready"
        before = _semaphore(process.pid, python311, audit.semaphore_offset)
        sink = MemorySink()
        collector = Collector(
            plan,
            ProbeRuntime(ProbeSet.open(), features),
            sink,
            CollectorConfig(mode="coverage", pids=(process.pid,)),
        )
        collector.start()
        stop = threading.Event()
        thread = threading.Thread(target=collector.run, kwargs={"should_stop": stop.is_set})
        thread.start()
        try:
            # Three audit nodes, one probe: one link (one semaphore reference).
            assert len(collector.links) == 1
            during = _semaphore(process.pid, python311, audit.semaphore_offset)
            process.stdin.write("go\n")
            process.stdin.flush()
            done: dict[str, Any] = json.loads(process.stdout.readline())
            time.sleep(1.0)
        finally:
            stop.set()
            thread.join()
            collector.stop()
        after = _released_semaphore(process.pid, python311, audit.semaphore_offset)
        process.stdin.write("bye\n")
        process.stdin.flush()
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
    assert (before, during, after) == (0, 1, 0)
    by_node: dict[str, list[dict[str, Any]]] = {}
    for record in sink.records:
        validate_record(dict(record))
        by_node.setdefault(record["node_hash"], []).append(record)
    connect, opened, popen = nodes
    assert popen.node_hash not in by_node  # the script never starts a subprocess
    (connect_record,) = by_node[connect.node_hash]
    assert connect_record["function_name"] == "socket.connect"
    assert connect_record["probe_type"] == "usdt" and connect_record["kind"] == "net"
    assert connect_record["details"] == {
        "event": "socket.connect",
        "address": "127.0.0.1",
        "port": done["port"],
    }
    assert connect_record["binary_path"] == python311 and connect_record["pid"] == process.pid
    opens = [r["details"] for r in by_node[opened.node_hash]]
    assert all(
        r["function_name"] == "open" and r["kind"] == "file" for r in by_node[opened.node_hash]
    )
    written = next(d for d in opens if d.get("path") == str(target))
    assert written["mode"] == "w" and isinstance(written["flags"], int)


@pytest.mark.ebpf
def test_usdt_probe_by_name_and_missing_notes_reported_at_map_load(
    ebpf: None, features: KernelFeatures, python311: str, tmp_path: Path
) -> None:
    no_notes = tmp_path / "true"
    shutil.copy("/bin/true", no_notes)
    nodes = [
        ExpectedNode.create(
            PYTHON_PURL, "python:gc__start", binary_path=python311, probe_types=("usdt",)
        ),
        ExpectedNode.create(
            "pkg:generic/true@1", "socket.connect", binary_path=str(no_notes), probe_types=("usdt",)
        ),
        ExpectedNode.create(
            PYTHON_PURL, "python:no__such", binary_path=python311, probe_types=("usdt",)
        ),
    ]
    plan = build_plan(nodes, features)
    (spec,) = plan.specs
    assert spec.program == "stella_usdt_node" and spec.ref_ctr_offset > 0
    reasons = {u.symbol: u.reason for u in plan.unobservable}
    assert "has no .note.stapsdt" in reasons["socket.connect"]
    assert str(no_notes) in reasons["socket.connect"]
    assert "python:no__such is not among the binary's probes" in reasons["python:no__such"]
