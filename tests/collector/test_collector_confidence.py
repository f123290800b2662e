"""Confidence weights per probe type (DESIGN.md §4) in the verification report, from records a
real collection produced with every type that runs here: usdt, uprobe, uretprobe, tp_btf
(recorded raw_tracepoint) and tracepoint."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest
from collector_support import LIBC, REPO_ROOT

from stella_bundle.collector.features import KernelFeatures
from stella_bundle.collector.loader import ProbeRuntime, ProbeSet
from stella_bundle.collector.plan import build_plan
from stella_bundle.collector.session import Collector, CollectorConfig, MemorySink
from stella_bundle.coverage import VerifyOptions, verify_observations
from stella_bundle.formats.function_map import (
    Coverage,
    ExpectedNode,
    ExpectedPath,
    FunctionMap,
    SbomRef,
)

PYTHON = "/usr/bin/python3.11"
SCRIPT = REPO_ROOT / "tests" / "data" / "collector" / "audit_workload.py"
KERNEL = "pkg:generic/linux-kernel"
# DESIGN.md §4, "Probe types": the default weights.
DESIGN_WEIGHTS = {
    "uprobe": 1.0,
    "uretprobe": 1.0,
    "usdt": 1.0,
    "fentry": 0.9,
    "fexit": 0.9,
    "tracepoint": 0.8,
    "raw_tracepoint": 0.8,
    "kprobe": 0.7,
    "kretprobe": 0.7,
    "unknown": 0.5,
}


@pytest.mark.ebpf
def test_confidence_is_weighted_by_the_probe_type_that_observed_each_node(
    ebpf: None, features: KernelFeatures, tmp_path: Path
) -> None:
    if not Path(PYTHON).exists():
        pytest.skip(f"{PYTHON} is not installed")
    by_type = {
        "usdt": ExpectedNode.create(
            "pkg:deb/debian/python3.11@3.11.2",
            "socket.connect",
            binary_path=PYTHON,
            probe_types=("usdt",),
        ),
        "uprobe": ExpectedNode.create("pkg:deb/debian/libc6", "connect", binary_path=LIBC),
        "uretprobe": ExpectedNode.create(
            "pkg:deb/debian/libc6@2.36", "connect", binary_path=LIBC, probe_types=("uretprobe",)
        ),
        "kernel": ExpectedNode.create(KERNEL, "tcp_connect"),
        "tracepoint": ExpectedNode.create(KERNEL, "inet_sock_set_state"),
        "never": ExpectedNode.create(KERNEL, "sched_process_exec"),
    }
    plan = build_plan(list(by_type.values()), features)
    assert not plan.unobservable
    kernel_type = next(s.probe_type for s in plan.specs if s.symbol == "tcp_connect")
    process = subprocess.Popen(
        [PYTHON, str(SCRIPT), str(tmp_path / "f")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None and process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    sink = MemorySink()
    collector = Collector(
        plan, ProbeRuntime(ProbeSet.open(), features), sink, CollectorConfig(pids=(process.pid,))
    )
    collector.start()
    stop = threading.Event()
    thread = threading.Thread(target=collector.run, kwargs={"should_stop": stop.is_set})
    thread.start()
    try:
        process.stdin.write("go\n")
        process.stdin.flush()
        process.stdout.readline()
        process.stdin.write("bye\n")
        process.stdin.flush()
        assert process.wait(timeout=30) == 0
        time.sleep(1.2)
    finally:
        stop.set()
        thread.join()
        collector.stop()
    paths = tuple(
        ExpectedPath(f"p-{name}", "net", 1, False, (node,)) for name, node in by_type.items()
    )
    fmap = FunctionMap(
        "svc",
        "build",
        "2026-01-01T00:00:00.000000Z",
        SbomRef("sha256:" + "0" * 64, "cyclonedx", "1.5"),
        Coverage(min_observation_rate=0.5),
        (),
        paths,
    )
    result = verify_observations(fmap, sink.records, VerifyOptions())
    confidence = result.confidence
    assert confidence["weights"] == DESIGN_WEIGHTS
    observed_types = {
        name: {r["probe_type"] for r in sink.records if r["node_hash"] == node.node_hash}
        for name, node in by_type.items()
    }
    assert observed_types == {
        "usdt": {"usdt"},
        "uprobe": {"uprobe"},
        "uretprobe": {"uretprobe"},
        "kernel": {kernel_type},
        "tracepoint": {"tracepoint"},
        "never": set(),
    }
    expected = {
        "p-usdt": 1.0,
        "p-uprobe": 1.0,
        "p-uretprobe": 1.0,
        "p-kernel": DESIGN_WEIGHTS[kernel_type],  # 0.8 here (tp_btf, recorded raw_tracepoint)
        "p-tracepoint": 0.8,
        "p-never": 0.0,
    }
    assert confidence["per_path"] == expected
    assert confidence["overall"] == pytest.approx(sum(expected.values()) / len(expected), abs=1e-4)
    assert confidence["observed_nodes_by_probe_type"][kernel_type] >= 1
    for entry in result.per_path_breakdown:
        (node,) = entry["nodes"]
        assert node["confidence"] == expected[entry["path_id"]]
