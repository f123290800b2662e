"""Kernel function nodes (pkg:generic/linux-kernel) observed through the best attach type this
kernel loads, walked down the fallback chain; fentry objects built, locked and checked against
this kernel's BTF although this kernel refuses to run them."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from stella_bundle.collector.btfinfo import CoreRelocation, kernel_btf, unresolved
from stella_bundle.collector.events import StellaConfig
from stella_bundle.collector.features import KERNEL_ORDER, KernelFeatures, detect
from stella_bundle.collector.loader import ProbeRuntime, ProbeSet
from stella_bundle.collector.lockfile import LOCK_NAME, PACKAGE_BPF_DIR
from stella_bundle.collector.plan import KERNEL_SOURCES, RECORDED_PROBE_TYPE, build_plan
from stella_bundle.collector.session import Collector, CollectorConfig, MemorySink
from stella_bundle.collector.trial import lockdown_mode
from stella_bundle.errors import CollectorEnvironmentError
from stella_bundle.formats.function_map import ExpectedNode
from stella_bundle.jsonio import load_json_object

KERNEL = "pkg:generic/linux-kernel"
NODES = ("do_sys_openat2", "tcp_connect", "sched_process_exec")


def _chain(features: KernelFeatures) -> list[frozenset[str]]:
    """Disable sets walking the kernel fallback chain: the best type, then each next one."""
    available = [t for t in KERNEL_ORDER if features.has(t)]
    return [frozenset(available[:i]) for i in range(len(available))]


def _exercise(tmp_path: Path) -> tuple[str, int, str]:
    """Open a unique file, connect to a fresh port, exec a uniquely named binary."""
    opened = tmp_path / f"opened-{os.getpid()}"
    opened.write_text("x")
    opened.read_text()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    socket.create_connection(("127.0.0.1", port)).close()
    server.close()
    binary = tmp_path / "stella-exec-probe"
    shutil.copy("/bin/true", binary)
    subprocess.run([str(binary)], check=True)
    return str(opened), port, str(binary)


@pytest.mark.ebpf
def test_kernel_nodes_observed_through_the_best_type_down_the_chain(
    ebpf: None, features: KernelFeatures, tmp_path: Path
) -> None:
    # Every kernel type that loads here, best first (fentry too, on a kernel that allows it;
    # this machine's chain is tp_btf, raw_tracepoint, tracepoint).
    chain = _chain(features)
    assert len(chain) >= 2
    for step, disabled in enumerate(chain):
        _observe_kernel_nodes(tmp_path / str(step), disabled)


def _observe_kernel_nodes(tmp_path: Path, disabled: frozenset[str]) -> None:
    tmp_path.mkdir()
    detected = detect(disable=disabled)
    plan = build_plan([ExpectedNode.create(KERNEL, s) for s in NODES], detected)
    assert not plan.unobservable, plan.unobservable
    chosen = {spec.symbol: spec for spec in plan.specs}
    for symbol in NODES:
        variants = next(v for n, v in KERNEL_SOURCES.items() if n == symbol).variants
        best = next(t for t in KERNEL_ORDER if t in variants and detected.has(t))
        assert chosen[symbol].attach_type == best and best not in disabled
    sink = MemorySink()
    runtime = ProbeRuntime(ProbeSet.open(), detected)
    # Every process's opens, connects and execs (the other xdist worker's too): a ring with
    # room for seconds of them, should a loaded machine keep the collector's thread waiting.
    runtime.ring_size = 1 << 24  # 4x the default, per object
    collector = Collector(plan, runtime, sink, CollectorConfig(mode="trace"))
    collector.start()
    stop = threading.Event()
    thread = threading.Thread(target=collector.run, kwargs={"should_stop": stop.is_set})
    thread.start()
    try:
        path, port, binary = _exercise(tmp_path)
        time.sleep(1.3)
    finally:
        stop.set()
        thread.join()
        collector.stop()
    records: dict[str, list[dict[str, Any]]] = {}
    for record in sink.records:
        records.setdefault(record["function_name"], []).append(record)
    for symbol in NODES:
        expected = RECORDED_PROBE_TYPE.get(chosen[symbol].attach_type, chosen[symbol].attach_type)
        assert {r["probe_type"] for r in records[symbol]} == {expected}
    assert any(r["details"].get("path") == path for r in records["do_sys_openat2"])
    assert any(r["details"].get("port") == port for r in records["tcp_connect"])
    assert any(r["details"].get("path") == binary for r in records["sched_process_exec"])
    if chosen["sched_process_exec"].attach_type == "tp_btf":
        assert records["sched_process_exec"][0]["probe_type"] == "raw_tracepoint"


@pytest.mark.ebpf
def test_kernel_function_no_type_can_reach_is_reported_at_map_load(
    ebpf: None, features: KernelFeatures
) -> None:
    nodes = [
        ExpectedNode.create(KERNEL, "inet_csk_accept"),
        ExpectedNode.create(KERNEL, "security_file_open"),
        ExpectedNode.create(KERNEL, "no_such_kernel_function"),
    ]
    plan = build_plan(nodes, features)
    reasons = {u.symbol: u.reason for u in plan.unobservable}
    if not features.has("fentry") and not features.has("kprobe"):
        assert not plan.specs
        for symbol in ("inet_csk_accept", "security_file_open"):
            assert "no attach type can reach it" in reasons[symbol]
            assert "fentry unavailable" in reasons[symbol]
            assert "kprobe unavailable" in reasons[symbol]
    assert "has no probe" in reasons["no_such_kernel_function"]


def _lock() -> dict[str, Any]:
    return load_json_object(PACKAGE_BPF_DIR / LOCK_NAME, "lock")


def test_fentry_objects_are_locked_with_their_btf_targets_and_relocations() -> None:
    fentry: dict[str, str] = {}
    for entry in _lock()["objects"]:
        for program in entry["programs"]:
            if program["attach_type"] == "fentry":
                fentry[program["name"]] = program["btf_target"]
                if program["name"] == "stella_fe_tcp_connect":
                    relocations = entry["core_relocations"][program["section"]]
                    assert "field_byte_offset struct sock.__sk_common.skc_daddr" in relocations
    assert fentry["stella_fe_openat"] == "func do_sys_openat2"
    assert fentry["stella_fe_tcp_connect"] == "func tcp_connect"
    assert fentry["stella_fe_exec"] == "func security_bprm_check"
    assert fentry["stella_fe_accept"] == "func inet_csk_accept"


@pytest.mark.ebpf
def test_btf_programs_resolve_against_this_kernels_btf(ebpf: None) -> None:
    """The build-time check of programs that cannot run here: every BTF attach target and
    every CO-RE relocation of the BTF-attached programs exists in this kernel's BTF."""
    kernel = kernel_btf()
    targets: list[str] = []
    relocations: list[CoreRelocation] = []
    for entry in _lock()["objects"]:
        for program in entry["programs"]:
            if "btf_target" not in program:
                continue
            targets.append(program["btf_target"])
            for text in entry["core_relocations"].get(program["section"], []):
                kind, access = text.split(" ", 1)[0], text.split(" ", 1)[1]
                root, *path = access.replace("[", ".[").split(".")
                relocations.append(CoreRelocation(program["section"], kind, root, tuple(path)))
    assert len(targets) >= 8
    assert unresolved(kernel, relocations, targets) == []
    bogus = CoreRelocation("x", "field_byte_offset", "struct sock", ("__sk_common", "nope"))
    assert unresolved(kernel, [bogus], ["func no_such_function"]) == [
        "func no_such_function: not in the kernel's BTF",
        "field_byte_offset struct sock.__sk_common.nope: no member nope",
    ]


@pytest.mark.ebpf
def test_fentry_programs_are_refused_here_with_the_trial_evidence(
    ebpf: None, features: KernelFeatures
) -> None:
    # Not executed on this machine: the kernel (lockdown, integrity) refuses every fentry
    # program. The loader says so with the doctor's evidence rather than a permission hint.
    runtime = ProbeRuntime(ProbeSet.open(), features)
    if features.has("fentry"):  # a kernel that allows them: they load (and run above)
        runtime.load({"net.bpf.o": {"stella_fe_tcp_connect"}}, StellaConfig())
        runtime.close()
        return
    with pytest.raises(CollectorEnvironmentError) as info:
        runtime.load({"net.bpf.o": {"stella_fe_tcp_connect"}}, StellaConfig())
    runtime.close()
    text = str(info.value)
    assert "fentry: " + features.attach_types["fentry"].evidence() in text
    if lockdown_mode() == "integrity":
        assert "fentry: EPERM at load: kernel lockdown (integrity)" in text
        assert features.attach_types["fentry"].errno == errno.EPERM


@pytest.mark.ebpf
def test_signals_start_reports_unreachable_nodes_at_map_load_and_seals_them(
    ebpf: None, features: KernelFeatures, tmp_path: Path, test_keys: Any, run_cli: Any
) -> None:
    """`signals start` on a map with a kernel function no attach type reaches here and a USDT
    node on a binary without .note.stapsdt: both named before collecting and in the seal."""
    import json

    from stella_bundle.attest.statement import FUNCTION_MAP_PREDICATE, make_statement
    from stella_bundle.evidence.seal import parse_seal

    no_notes = tmp_path / "true"
    shutil.copy("/bin/true", no_notes)
    nodes = [
        ExpectedNode.create(KERNEL, "tcp_connect"),
        ExpectedNode.create(KERNEL, "inet_csk_accept"),
        ExpectedNode.create(
            "pkg:generic/true@1", "socket.connect", binary_path=str(no_notes), probe_types=("usdt",)
        ),
    ]
    predicate = {
        "service": "svc",
        "build_id": "test",
        "generated_at": "2026-01-01T00:00:00.000000Z",
        "sbom": {"digest": "sha256:" + "0" * 64, "format": "CycloneDX", "spec_version": "1.6"},
        "coverage": {
            "min_observation_rate": 0.95,
            "window_seconds": 1800,
            "fail_on_unexpected": True,
            "tag_min_rates": {},
        },
        "hot_functions": [],
        "expected_paths": [
            {
                "path_id": f"p{i}",
                "tag": "net",
                "priority": 1,
                "optional": False,
                "nodes": [node.to_dict()],
            }
            for i, node in enumerate(nodes)
        ],
    }
    fm = tmp_path / "fm.json"
    statement = make_statement(
        [{"name": "sbom.json", "digest": {"sha256": "0" * 64}}], FUNCTION_MAP_PREDICATE, predicate
    )
    fm.write_text(json.dumps(statement))
    result = run_cli(
        "signals", "start", "--function-map", fm, "--target", tmp_path / "evidence",
        "--key", test_keys.private("collector"), "--chain-id", "cli", "--pid", "1",
        "--duration", "0.5", "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    stderr = " ".join(result.stderr.split())
    if not features.has("fentry") and not features.has("kprobe"):
        assert "inet_csk_accept" in stderr and "no attach type can reach it" in stderr
    assert "has no .note.stapsdt" in stderr
    assert "collecting: 1 probes attached" in stderr
    named = {
        failure.function_name: failure.error
        for path in sorted((tmp_path / "evidence" / "cli").glob("*.seal.dsse.json"))
        for failure in parse_seal(path.read_bytes()).predicate.probe_failures
    }
    assert "has no .note.stapsdt" in named["socket.connect"]
    if not features.has("fentry") and not features.has("kprobe"):
        assert "no attach type can reach it" in named["inet_csk_accept"]
