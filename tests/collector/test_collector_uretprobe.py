"""A node asking for its return (probe_types ["uretprobe"]) is observed when the function
returns, not before: the workload blocks inside the function until the test releases it."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest
from service_support import wait_for

from stella_bundle.collector.features import KernelFeatures
from stella_bundle.collector.loader import ProbeRuntime, ProbeSet
from stella_bundle.collector.plan import build_plan
from stella_bundle.collector.session import Collector, CollectorConfig, MemorySink
from stella_bundle.formats.function_map import ExpectedNode

FUNCTION = "stella_block_until_released"
PURL = "pkg:generic/stella-blocking@1.0.0"


@pytest.mark.ebpf
@pytest.mark.parametrize("mode", ["coverage", "trace"])
def test_return_probe_fires_only_when_the_function_returns(
    ebpf: None, features: KernelFeatures, blocking_bin: Path, mode: str
) -> None:
    on_return = ExpectedNode.create(
        PURL, FUNCTION, binary_path=str(blocking_bin), probe_types=("uretprobe",)
    )
    # The same function observed on entry, as a peer: it fires while the call still blocks.
    on_entry = ExpectedNode.create(
        "pkg:generic/stella-blocking-entry@1.0.0", FUNCTION, binary_path=str(blocking_bin)
    )
    plan = build_plan([on_return, on_entry], features)
    assert [s.attach_type for s in plan.specs] == ["uretprobe", "uprobe"]
    process = subprocess.Popen(
        [str(blocking_bin)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdin is not None and process.stdout is not None
    pid = int(process.stdout.readline().split()[1])
    sink = MemorySink()
    collector = Collector(
        plan, ProbeRuntime(ProbeSet.open(), features), sink, CollectorConfig(mode=mode, pids=(pid,))
    )
    collector.start()
    stop = threading.Event()
    thread = threading.Thread(target=collector.run, kwargs={"should_stop": stop.is_set})
    thread.start()
    try:
        process.stdin.write("go\n")
        process.stdin.flush()
        assert process.stdout.readline().strip() == "inside"
        # The entry record first (a loaded machine may wake the collector's thread late),
        # then a moment more: a return probe firing at entry would have been sent with it.
        wait_for(lambda: sink.records, 60, "the entry record")
        time.sleep(0.5)
        while_blocked = [dict(r) for r in sink.records]
        process.stdin.write("release\n")
        process.stdin.flush()
        assert process.stdout.readline().strip() == "done 42"
        assert process.wait(timeout=30) == 0
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join()
        collector.stop()
    assert [r["node_hash"] for r in while_blocked] == [on_entry.node_hash]
    returned = [r for r in sink.records if r["node_hash"] == on_return.node_hash]
    assert len(returned) == 1
    record = returned[0]
    assert record["probe_type"] == "uretprobe"
    assert record["function_name"] == FUNCTION and record["pid"] == pid
    assert record["binary_path"] == str(blocking_bin) and len(record["build_id"]) == 40
    entry = next(r for r in sink.records if r["node_hash"] == on_entry.node_hash)
    assert entry["probe_type"] == "uprobe"
    assert entry["observed_at"] < record["observed_at"]


@pytest.mark.ebpf
def test_return_probe_unavailable_is_reported_at_map_load(ebpf: None, blocking_bin: Path) -> None:
    from stella_bundle.collector.features import detect

    node = ExpectedNode.create(
        PURL, FUNCTION, binary_path=str(blocking_bin), probe_types=("uretprobe",)
    )
    plan = build_plan([node], detect(disable={"uretprobe"}))
    assert not plan.specs
    assert "return probes unavailable" in plan.unobservable[0].reason
    assert "uretprobe unavailable (disabled)" in plan.unobservable[0].reason
