"""Probe health with real eBPF: a probed binary replaced on disk is re-resolved and reattached,
a link lost behind the collector's back is found and reattached, a binary that vanished and
came back is probed again. Each test first shows the failure is real (the calls are not
recorded without the health check), then that the health check brings them back."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from collector_support import WORKLOAD_PURL, WORKLOAD_SOURCE
from service_support import free_port, function_map_file, http_get, scrape, wait_for, wait_ready
from test_collector_scope_podman import (
    KERNEL_PICKUP_SECONDS,
    _finish,
    _start_container,
    _wait_for,
)
from test_collector_scope_podman import _nodes as _podman_nodes

# The podman image fixture (a local image holding its own workload and libcrypto).
from test_collector_scope_podman import image as _image_fixture  # noqa: F401

from stella_bundle.collector.features import KernelFeatures
from stella_bundle.collector.loader import ProbeRuntime, ProbeSet
from stella_bundle.collector.plan import build_plan
from stella_bundle.collector.session import Collector, CollectorConfig, MemorySink
from stella_bundle.evidence.chain import verify_chain
from stella_bundle.evidence.config import WriterConfig
from stella_bundle.evidence.reader import iter_chain_records
from stella_bundle.evidence.seal import parse_seal
from stella_bundle.evidence.writer import ChunkWriter
from stella_bundle.formats.function_map import ExpectedNode
from stella_bundle.formats.scope import Scope
from stella_bundle.formats.seal import CollectorInfo
from stella_bundle.functionmap.elf import index_binary

pytestmark = [pytest.mark.ebpf, pytest.mark.slow]


@pytest.fixture(scope="module")
def other_build(tmp_path_factory: pytest.TempPathFactory, workload_bin: Path) -> Path:
    """The workload built another way: other offsets, another build id (a new release)."""
    out = tmp_path_factory.mktemp("rebuilt") / "stella-workload"
    subprocess.run(
        ["gcc", "-O0", "-g", "-o", str(out), str(WORKLOAD_SOURCE), "-lcrypto"], check=True
    )
    old, new = index_binary(str(workload_bin)), index_binary(str(out))
    assert old.build_id != new.build_id
    assert old.functions["stella_work_parse"][1] != new.functions["stella_work_parse"][1]
    return out


def _nodes(binary: Path) -> list[ExpectedNode]:
    return [
        ExpectedNode.create(WORKLOAD_PURL, "stella_work_parse", binary_path=str(binary)),
        ExpectedNode.create(WORKLOAD_PURL, "stella_work_hot", binary_path=str(binary)),
    ]


def _run(binary: Path) -> None:
    """One run of the workload: calls stella_work_parse once."""
    subprocess.run([str(binary)], check=True, capture_output=True, timeout=60)


def _drain(collector: Collector) -> None:
    for _ in range(5):
        collector.runtime.poll(50)
        collector.process_pending()


def _parse_records(sink: MemorySink) -> list[dict[str, Any]]:
    return [r for r in sink.records if r["function_name"] == "stella_work_parse"]


@pytest.fixture
def collector(
    ebpf: None, workload_bin: Path, tmp_path: Path, features: KernelFeatures
) -> Iterator[tuple[Collector, MemorySink, Path]]:
    binary = tmp_path / "bin" / "stella-workload"
    binary.parent.mkdir()
    shutil.copy2(workload_bin, binary)
    sink = MemorySink()
    collector = Collector(
        build_plan(_nodes(binary), features),  # type: ignore[arg-type]
        ProbeRuntime(ProbeSet.open(), features),
        sink,
        # Trace mode: links stay attached after a hit; checks driven by the test.
        CollectorConfig(mode="trace", health_check_seconds=None),
    )
    collector.start()
    try:
        yield collector, sink, binary
    finally:
        collector.stop()


@pytest.mark.parametrize("how", ["closed", "reused"])
def test_a_lost_link_is_found_and_reattached(
    collector: tuple[Collector, MemorySink, Path], how: str
) -> None:
    c, sink, binary = collector
    parse = next(s.index for s in c.plan.specs if s.symbol == "stella_work_parse")
    assert c.check_health() == []  # healthy: nothing found, nothing done
    _run(binary)
    _drain(c)
    assert len(_parse_records(sink)) == 1
    link = c.links[parse]
    ids = c.runtime.link_identity(link)
    assert ids is not None
    fd = link.handle if link.raw_fd else c.runtime.lib.link_fd(link.handle)
    spare: list[int] = []
    if how == "closed":
        os.close(fd)
    else:  # the fd number now names a pipe: still open, no longer the link
        spare = list(os.pipe())
        os.dup2(spare[0], fd)
        spare.append(fd)
    try:
        _run(binary)
        _drain(c)
        assert len(_parse_records(sink)) == 1, "the lost link still recorded calls"
        (event,) = c.check_health()
        assert (event.reason, event.reattached, event.failed) == ("link_lost", 1, 0)
        assert "stella_work_parse" in event.describe()
        assert c.runtime.link_identity(c.links[parse]) not in (None, ids)
        assert c.reattached["link_lost"] == 1
        (named,) = sink.probe_reattachments
        assert (named.reason, named.binary_path, named.reattached, named.failed) == (
            "link_lost",
            None,
            1,
            0,
        )
        _run(binary)
        _drain(c)
        assert len(_parse_records(sink)) == 2
        assert c.check_health() == []  # the new link is healthy
        if how == "reused":
            os.fstat(fd)  # the collector did not close the fd it no longer owns
    finally:
        for number in spare:
            os.close(number)


def test_a_lost_link_inside_a_container_is_reattached_through_its_root(
    ebpf: None, workload_bin: Path, features: KernelFeatures, request: pytest.FixtureRequest
) -> None:
    """A container's own copies of the map's binaries are probed through /proc/PID/root; one
    of those links lost is found by the loop's own health check and attached there again."""
    reference, _ = request.getfixturevalue("_image_fixture")
    prefix = f"stella-health-{secrets.token_hex(3)}"
    sink = MemorySink()
    collector = Collector(
        build_plan(_podman_nodes(workload_bin), features),
        ProbeRuntime(ProbeSet.open(), features),
        sink,
        CollectorConfig(
            mode="trace",
            aggregation_ms=100,
            health_check_seconds=0.2,
            scope=Scope(container_name=f"{prefix}-*"),
        ),
    )
    collector.start()
    stop = threading.Event()
    thread = threading.Thread(target=collector.run, kwargs={"should_stop": stop.is_set})
    thread.start()
    name = f"{prefix}-lost"
    container: subprocess.Popen[str] | None = None
    try:
        container, _ = _start_container(
            name, reference, workload_bin, args=("--crypto",), own_files=True
        )
        _wait_for(
            lambda: sum(len(links) for links in collector.container_links.values()) == 2,
            KERNEL_PICKUP_SECONDS,
        )
        (links,) = collector.container_links.values()
        hot = next(i for i in links if collector.specs[i].symbol == "stella_work_hot")
        link = links[hot]
        assert link.raw_fd  # uprobe_multi here: the link is its fd
        os.close(link.handle)
        _wait_for(lambda: collector.reattached["link_lost"] == 1, 10)
        assert links[hot] is not link
        _finish(container)
        time.sleep(0.4)
    finally:
        stop.set()  # first: a loop still turning would keep the test process alive
        thread.join()
        try:
            if container is not None and container.poll() is None:
                subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True)
                try:
                    container.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    container.kill()
                    container.wait()
        finally:
            collector.stop()
    counts: dict[str, int] = {}
    for record in sink.records:
        counts[record["function_name"]] = counts.get(record["function_name"], 0) + 1
    assert counts == {"EVP_Digest": 1, "stella_work_hot": 3}
    (named,) = sink.probe_reattachments
    assert (named.reason, named.reattached, named.failed) == ("link_lost", 1, 0)
    assert "stella_work_hot" in named.detail and "container" in named.detail


def test_a_binary_replaced_inside_a_running_container_is_reattached_through_its_root(
    ebpf: None,
    workload_bin: Path,
    other_build: Path,
    features: KernelFeatures,
    tmp_path: Path,
    test_keys: Any,
    request: pytest.FixtureRequest,
) -> None:
    """A container's own copy of a probed binary replaced while the container runs (a new
    release renamed over it inside): seen by the periodic check through the container's root,
    re-resolved there and reattached; the new build's calls recorded under its own build id,
    the reattachment named in the seal of a chain that verifies."""
    reference, _ = request.getfixturevalue("_image_fixture")
    prefix = f"stella-health-{secrets.token_hex(3)}"
    info = CollectorInfo("test-collector", "host", None, "0", "0" * 64)
    writer = ChunkWriter.open(
        tmp_path, "inside", test_keys.signer("collector"), WriterConfig(), info
    )
    collector = Collector(
        build_plan(_podman_nodes(workload_bin), features),
        ProbeRuntime(ProbeSet.open(), features),
        writer,
        CollectorConfig(
            mode="trace",
            aggregation_ms=100,
            health_check_seconds=0.2,
            scope=Scope(container_name=f"{prefix}-*"),
        ),
    )
    collector.start()
    stop = threading.Event()
    thread = threading.Thread(target=collector.run, kwargs={"should_stop": stop.is_set})
    thread.start()
    name = f"{prefix}-replaced"
    container: subprocess.Popen[str] | None = None
    exec_run = ["podman", "exec", name, str(workload_bin), "--calls", "3"]
    try:
        container, _ = _start_container(
            name, reference, workload_bin, args=("--crypto",), own_files=True
        )
        _wait_for(
            lambda: sum(len(links) for links in collector.container_links.values()) == 2,
            KERNEL_PICKUP_SECONDS,
        )
        subprocess.run(exec_run, check=True, capture_output=True, timeout=60)  # the old build
        # A new release renamed over the workload inside the container, through its root.
        pid = subprocess.run(
            ["podman", "inspect", "--format", "{{.State.Pid}}", name],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        inside = Path(f"/proc/{pid}/root{workload_bin}")
        staged = inside.with_name(".stella-workload.new")
        shutil.copy2(other_build, staged)
        os.rename(staged, inside)
        _wait_for(lambda: collector.reattached["binary_replaced"] == 1, 10)
        subprocess.run(exec_run, check=True, capture_output=True, timeout=60)  # the new build
        # The container's first process still runs the old inode: its probes are closed.
        _finish(container)
        time.sleep(0.4)
    finally:
        stop.set()  # first: a loop still turning would keep the test process alive
        thread.join()
        try:
            if container is not None and container.poll() is None:
                subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True)
                try:
                    container.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    container.kill()
                    container.wait()
        finally:
            collector.stop()
    old_build = index_binary(str(workload_bin)).build_id
    new_build = index_binary(str(other_build)).build_id
    (event,) = [e for e in collector.health_events if e.reason == "binary_replaced"]
    line = event.describe()
    assert line.startswith(f"health: binary_replaced {workload_bin}: replaced in container ")
    assert "1 probe(s) reattached" in line
    chain = tmp_path / "inside"
    assert verify_chain(chain, test_keys.trust_root).passed
    hot: dict[str | None, int] = {}
    functions: dict[str, int] = {}
    for record in iter_chain_records(chain):
        functions[record["function_name"]] = functions.get(record["function_name"], 0) + 1
        if record["function_name"] == "stella_work_hot":
            assert record["details"]["container_name"] == name
            hot[record.get("build_id")] = hot.get(record.get("build_id"), 0) + 1
    assert hot == {old_build: 3, new_build: 3}
    assert functions == {"EVP_Digest": 1, "stella_work_hot": 6}
    predicates = [parse_seal(p.read_bytes()).predicate for p in chain.glob("*.seal.dsse.json")]
    (named,) = [item for p in predicates for item in p.probe_reattachments]
    assert (named.reason, named.binary_path) == ("binary_replaced", str(workload_bin))
    assert (named.previous_build_id, named.build_id) == (old_build, new_build)
    assert (named.reattached, named.failed) == (1, 0)
    assert sum(p.loss.by_reason.get("gap.binary_replaced", 0) for p in predicates) == 1


def test_a_binary_that_vanished_and_came_back_is_probed_again(
    collector: tuple[Collector, MemorySink, Path], other_build: Path
) -> None:
    c, sink, binary = collector
    old_build = index_binary(str(binary)).build_id
    binary.unlink()
    (gone,) = c.check_health()
    assert gone.reason == "binary_missing" and gone.binary_path == str(binary)
    assert c.check_health() == []  # said once
    shutil.copy2(other_build, binary)
    _run(binary)
    _drain(c)
    assert _parse_records(sink) == [], "the new file was probed without a health check"
    (back,) = c.check_health()
    assert (back.reason, back.reattached, back.failed) == ("binary_replaced", 2, 0)
    new_build = index_binary(str(other_build)).build_id
    _run(binary)
    _drain(c)
    (record,) = _parse_records(sink)
    assert record["build_id"] == new_build
    (named,) = sink.probe_reattachments
    assert (named.reason, named.binary_path) == ("binary_replaced", str(binary))
    assert (named.previous_build_id, named.build_id) == (old_build, new_build)
    assert (named.reattached, named.failed) == (2, 0)


def test_a_fifo_put_at_a_probed_path_does_not_hang_the_check(
    collector: tuple[Collector, MemorySink, Path], workload_bin: Path
) -> None:
    """A FIFO renamed over a probed binary (no ELF file any more): reading its build id would
    block the collection loop until some process opened the FIFO for writing. It is nothing
    probeable at the path, said once; the probes stay on the running copy, and a binary back
    at the path is a replacement as ever."""
    c, _, binary = collector
    fifo = binary.with_name(".fifo")
    os.mkfifo(fifo)
    os.rename(fifo, binary)
    found: list[Any] = []
    check = threading.Thread(target=lambda: found.extend(c.check_health()), daemon=True)
    check.start()
    check.join(10)
    if check.is_alive():  # the check blocked opening the FIFO: release it, then fail
        os.close(os.open(binary, os.O_WRONLY | os.O_NONBLOCK))
        check.join(10)
        pytest.fail("the health check blocked opening a FIFO at the probed path")
    (gone,) = found
    assert gone.reason == "binary_missing" and gone.binary_path == str(binary)
    assert "not a regular file" in gone.detail
    assert c.check_health() == []  # said once
    staged = binary.with_name(".new")
    shutil.copy2(workload_bin, staged)
    os.rename(staged, binary)
    (back,) = c.check_health()
    assert (back.reason, back.reattached, back.failed) == ("binary_replaced", 2, 0)


def test_a_fifo_at_a_probed_path_inside_a_container_root_is_refused_not_read(
    collector: tuple[Collector, MemorySink, Path], tmp_path: Path
) -> None:
    """A container's own file at a map's path is probed through its root; a FIFO there (the
    container's doing) is named as a failure, not opened (that would block the loop)."""
    c, _, binary = collector
    root = tmp_path / "root"
    inside = Path(f"{root}{binary}")
    inside.parent.mkdir(parents=True)
    os.mkfifo(inside)
    found: list[Any] = []
    attach = threading.Thread(target=lambda: found.append(c._attach_inside(str(root))), daemon=True)
    attach.start()
    attach.join(10)
    if attach.is_alive():
        os.close(os.open(inside, os.O_WRONLY | os.O_NONBLOCK))
        attach.join(10)
        pytest.fail("attaching inside blocked opening a FIFO")
    assert found == [{}]
    failed = [f for f in c.probe_failures if f.binary_path == str(inside)]
    assert len(failed) == 2 and all("not a regular file" in f.error for f in failed)


def test_a_binary_rewritten_in_place_is_a_replacement(
    collector: tuple[Collector, MemorySink, Path], other_build: Path
) -> None:
    """The same inode with another build in it (`cp` over a file no process runs): the probes
    stay on the inode at the old build's offsets, so the build id tells."""
    c, sink, binary = collector
    inode = binary.stat().st_ino
    binary.write_bytes(other_build.read_bytes())
    assert binary.stat().st_ino == inode
    (event,) = c.check_health()
    assert (event.reason, event.reattached, event.failed) == ("binary_replaced", 2, 0)
    _run(binary)
    _drain(c)
    (record,) = _parse_records(sink)
    assert record["build_id"] == index_binary(str(other_build)).build_id
    assert c.check_health() == []


def test_a_replacement_without_the_symbol_is_named_in_the_seal(
    collector: tuple[Collector, MemorySink, Path], tmp_path: Path
) -> None:
    c, sink, binary = collector
    stripped = tmp_path / "stripped"
    shutil.copy2(binary, stripped)
    subprocess.run(["strip", "-s", str(stripped)], check=True)
    os.rename(stripped, binary)
    (event,) = c.check_health()
    assert (event.reason, event.reattached, event.failed) == ("binary_replaced", 0, 2)
    named = {f.function_name for f in sink.probe_failures}
    assert named == {"stella_work_parse", "stella_work_hot"}
    assert all("not reattached" in f.error for f in sink.probe_failures)
    (named,) = sink.probe_reattachments
    assert (named.reattached, named.failed) == (0, 2)
    assert c.links == {}  # no probe left at the old offsets of a file that changed


def test_a_binary_replaced_between_planning_and_attaching_is_resolved_again(
    ebpf: None, workload_bin: Path, other_build: Path, tmp_path: Path, features: KernelFeatures
) -> None:
    """A deploy between reading the map (offsets from the old file) and attaching: the probes
    go to the new file's offsets, not the old ones."""
    binary = tmp_path / "stella-workload"
    shutil.copy2(workload_bin, binary)
    plan = build_plan(_nodes(binary), features)  # type: ignore[arg-type]
    planned = {spec.symbol: spec.offset for spec in plan.specs}
    staged = tmp_path / ".new"
    shutil.copy2(other_build, staged)
    os.rename(staged, binary)
    sink = MemorySink()
    c = Collector(
        plan,
        ProbeRuntime(ProbeSet.open(), features),
        sink,
        CollectorConfig(mode="trace", health_check_seconds=None),
    )
    c.start()
    try:
        new = index_binary(str(other_build))
        for spec in c.plan.specs:
            assert spec.offset == new.functions[spec.symbol][1] != planned[spec.symbol]
            assert spec.build_id == new.build_id
        assert c.check_health() == []  # nothing left to repair
        _run(binary)
        _drain(c)
        (record,) = _parse_records(sink)
        assert record["build_id"] == new.build_id
    finally:
        c.stop()
    assert sink.probe_failures == []


# --- the agent, as an operator runs it ------------------------------------------------------------


class _Lines:
    """The agent's stderr read line by line in a thread (the test waits for log lines)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert process.stderr is not None
        self._thread = threading.Thread(target=self._read, args=(process.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def having(self, text: str) -> list[str]:
        return [line for line in self.lines if text in line]


def test_the_agent_reattaches_a_binary_replaced_while_it_runs(
    ebpf: None, workload_bin: Path, other_build: Path, tmp_path: Path, test_keys: Any
) -> None:
    binary = tmp_path / "bin" / "stella-workload"
    binary.parent.mkdir()
    shutil.copy2(workload_bin, binary)
    fm = function_map_file(tmp_path / "fm.json", _nodes(binary))
    port = free_port()
    config = tmp_path / "stellaops.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "runtime_agent": {
                    "function_map": str(fm),
                    "metrics": {"listen": f"127.0.0.1:{port}"},
                    "probes": {"health_check_interval_ms": 200},
                    "export": {
                        "output_path": str(tmp_path / "evidence"),
                        "aggregation_window_ms": 100,
                    },
                },
                "signals": {
                    "chain_id": "health",
                    "signing": {"key_file": str(test_keys.private("collector"))},
                },
            }
        )
    )
    agent = subprocess.Popen(
        [sys.executable, "-m", "stella_bundle", "agent", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = _Lines(agent)
    try:
        wait_ready(port, agent, 60)
        assert agent.poll() is None, log.lines
        _run(binary)  # the old build: its first call recorded, its probe detached (coverage)
        time.sleep(0.5)
        # A deploy: the new release written beside and renamed over the probed path.
        staged = binary.with_name(".stella-workload.new")
        shutil.copy2(other_build, staged)
        os.rename(staged, binary)
        wait_for(lambda: log.having("health: binary_replaced"), 30, "the health log line")
        _run(binary)  # the new build
        metrics = wait_for(
            lambda: (
                (
                    s
                    if s.get("stella_probe_reattach_total", ("", {}))[1].get(
                        (
                            ("chain", "health"),
                            ("reason", "binary_replaced"),
                            ("service", "stella-workload"),
                        )
                    )
                    == 2
                    else None
                )
                if (s := scrape(port))
                else None
            ),
            10,
            "the reattach counter",
        )
        assert metrics["stella_probe_reattach_total"][0] == "counter"
        time.sleep(0.5)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=60)
    assert agent.returncode == 0, log.lines
    (line,) = log.having("health: binary_replaced")
    assert str(binary) in line and "2 probe(s) reattached" in line
    chain = tmp_path / "evidence" / "health"
    assert verify_chain(chain, test_keys.trust_root).passed
    builds = {
        r["build_id"]
        for r in iter_chain_records(chain)
        if r["function_name"] == "stella_work_parse"
    }
    assert builds == {
        index_binary(str(workload_bin)).build_id,
        index_binary(str(other_build)).build_id,
    }
    predicates = [parse_seal(p.read_bytes()).predicate for p in chain.glob("*.seal.dsse.json")]
    assert sum(p.loss.by_reason.get("gap.binary_replaced", 0) for p in predicates) == 2
    (named,) = [item for p in predicates for item in p.probe_reattachments]
    assert named.reason == "binary_replaced" and named.binary_path == str(binary)
    assert (named.previous_build_id, named.build_id) == (
        index_binary(str(workload_bin)).build_id,
        index_binary(str(other_build)).build_id,
    )
    assert (named.reattached, named.failed) == (2, 0)


# --- the agent killed under load and restarted ------------------------------------------------


def _agent_config(tmp_path: Path, fm: Path, key: Path, port: int) -> Path:
    config = tmp_path / "stellaops.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "runtime_agent": {
                    "function_map": str(fm),
                    "metrics": {"listen": f"127.0.0.1:{port}"},
                    "export": {
                        "output_path": str(tmp_path / "evidence"),
                        "aggregation_window_ms": 100,
                        "flush_interval_ms": 200,
                    },
                },
                "signals": {
                    "chain_id": "restart",
                    "mode": "trace",  # every call a record: a steady load on the writer
                    "rotation": {"max_age_seconds": 1},
                    "signing": {"key_file": str(key)},
                },
            }
        )
    )
    return config


def _start_agent(config: Path, port: int) -> tuple[subprocess.Popen[str], _Lines]:
    agent = subprocess.Popen(
        [sys.executable, "-m", "stella_bundle", "agent", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = _Lines(agent)
    wait_ready(port, agent, 60)
    assert agent.poll() is None, log.lines
    return agent, log


def _records(chunk: Path) -> bytes:
    import zstandard

    return zstandard.ZstdDecompressor().decompress(chunk.read_bytes(), max_output_size=1 << 28)


@pytest.mark.slow
def test_the_agent_killed_under_load_and_restarted_continues_its_chain(
    ebpf: None, workload_bin: Path, tmp_path: Path, test_keys: Any
) -> None:
    from stella_bundle.evidence.layout import chunk_name, partial_name, seal_name

    fm = function_map_file(tmp_path / "fm.json", _nodes(workload_bin))
    port = free_port()
    config = _agent_config(tmp_path, fm, test_keys.private("collector"), port)
    chain = tmp_path / "evidence" / "restart"
    # The load: the workload run again and again, ~1,000 probed calls a second, for the whole
    # test (across the kill and the restart).
    load = subprocess.Popen(
        ["sh", "-c", f"while :; do {workload_bin} --calls 50 >/dev/null; sleep 0.05; done"],
        start_new_session=True,
    )
    try:
        agent, _ = _start_agent(config, port)
        try:
            sealed = wait_for(
                lambda: s if len(s := sorted(chain.glob("*.seal.dsse.json"))) >= 2 else None,
                30,
                "two seals",
            )
            assert sealed
            wait_for(
                lambda: any(p.stat().st_size > 0 for p in chain.glob("*.ndjson.partial")),
                10,
                "records in the open chunk",
            )
            time.sleep(0.3)  # more lines written, more read and not yet written: mid-flow
        finally:
            agent.kill()  # SIGKILL: no final seal, no cleanup
            agent.wait(timeout=30)
        assert agent.returncode == -signal.SIGKILL
        # What was acknowledged at the kill: every sealed chunk, byte for byte; and what the
        # agent had written to its open chunk (complete lines; a torn last line is counted).
        sealed_files = {
            p.name: p.read_bytes()
            for p in chain.iterdir()
            if p.name.endswith((".seal.dsse.json", ".ndjson.zst"))
        }
        head = max(int(name.split(".")[0]) for name in sealed_files if "seal" in name)
        partial = chain / partial_name(head + 1)
        written = partial.read_bytes() if partial.exists() else None
        records_before = sum(
            parse_seal(sealed_files[seal_name(s)]).predicate.content.records
            for s in range(1, head + 1)
        )
        assert records_before > 0

        agent, log = _start_agent(config, port)
        try:
            # Collection resumes under the same load: a seal of the new run with records.
            wait_for(
                lambda: (chain / seal_name(head + 3)).exists(), 30, "a seal of the restarted agent"
            )
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=60)
        assert agent.returncode == 0, log.lines
    finally:
        os.killpg(load.pid, signal.SIGKILL)
        load.wait()

    # Nothing sealed before the kill changed.
    for name, data in sealed_files.items():
        assert (chain / name).read_bytes() == data, name
    seals = {
        int(p.name.split(".")[0]): parse_seal(p.read_bytes()).predicate
        for p in chain.glob("*.seal.dsse.json")
    }
    assert sorted(seals) == list(range(1, max(seals) + 1))
    assert {s.chain_id for s in seals.values()} == {"restart"}
    first_new = head + 1
    if written is not None:
        # The interrupted chunk recovered, every complete line the agent had written in it.
        recovered = seals[head + 1]
        assert recovered.reason == "recovered" and not recovered.final
        complete = written[: written.rfind(b"\n") + 1]
        assert _records(chain / chunk_name(head + 1)) == complete
        assert recovered.content.records == complete.count(b"\n")
        assert recovered.loss.torn_records == (1 if written[len(complete) :].strip() else 0)
        first_new = head + 2
    # The restarted agent's first seal links to the last one before it and declares the gap.
    restarted = seals[first_new]
    link = restarted.previous
    assert link is not None and link.sequence == first_new - 1
    assert (
        link.sha256 == hashlib.sha256((chain / seal_name(first_new - 1)).read_bytes()).hexdigest()
    )
    assert restarted.loss.by_reason.get("gap.unclean_restart") == 1
    assert sum(s.loss.by_reason.get("gap.unclean_restart", 0) for s in seals.values()) == 1
    assert seals[max(seals)].final
    report = verify_chain(chain, test_keys.trust_root)
    assert report.passed, report
    after = sum(seals[s].content.records for s in seals if s >= first_new)
    assert after > 0  # the load was recorded again after the restart


@pytest.mark.slow
def test_the_agent_killed_again_and_again_at_random_moments_keeps_one_chain(
    ebpf: None, workload_bin: Path, tmp_path: Path, test_keys: Any
) -> None:
    """SIGKILL at seeded random moments (while starting, attaching, collecting, sealing), four
    times, then a clean run: one chain that verifies, nothing sealed ever changed, every
    recovered chunk followed by a declared gap."""
    import random

    rng = random.Random(20261202)
    fm = function_map_file(tmp_path / "fm.json", _nodes(workload_bin))
    port = free_port()
    config = _agent_config(tmp_path, fm, test_keys.private("collector"), port)
    chain = tmp_path / "evidence" / "restart"
    command = [sys.executable, "-m", "stella_bundle", "agent", "run", "--config", str(config)]
    load = subprocess.Popen(
        ["sh", "-c", f"while :; do {workload_bin} --calls 50 >/dev/null; sleep 0.05; done"],
        start_new_session=True,
    )
    sealed: dict[str, bytes] = {}
    try:
        for run in range(4):
            agent = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if run == 1:  # killed while starting: importing, recovering, attaching
                time.sleep(rng.uniform(0.5, 3.0))
            else:  # killed while collecting (and sealing: a seal a second)
                wait_for(lambda: http_get(port, "/readyz")[0] == 200, 60, "ready")
                time.sleep(rng.uniform(0.0, 2.5))
            agent.kill()
            agent.wait(timeout=30)
            for path in chain.glob("*") if chain.is_dir() else ():
                if path.name.endswith((".seal.dsse.json", ".ndjson.zst")):
                    sealed.setdefault(path.name, path.read_bytes())
        agent, log = _start_agent(config, port)
        time.sleep(1.5)
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=60)
        assert agent.returncode == 0, log.lines
    finally:
        os.killpg(load.pid, signal.SIGKILL)
        load.wait()
    for name, data in sealed.items():
        assert (chain / name).read_bytes() == data, name
    seals = {
        int(p.name.split(".")[0]): parse_seal(p.read_bytes()).predicate
        for p in chain.glob("*.seal.dsse.json")
    }
    assert sorted(seals) == list(range(1, max(seals) + 1))
    recovered = [s for s, p in seals.items() if p.reason == "recovered"]
    assert recovered, "no kill interrupted an open chunk"
    for sequence in recovered:
        assert any(
            p.loss.by_reason.get("gap.unclean_restart") for s, p in seals.items() if s > sequence
        ), f"no gap declared after the chunk recovered at {sequence}"
    assert seals[max(seals)].final
    report = verify_chain(chain, test_keys.trust_root)
    assert report.passed, report
