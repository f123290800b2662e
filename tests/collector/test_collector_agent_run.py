"""`stella agent run --config stellaops.yaml`: the runtime_agent settings change what really
happens in a real eBPF collection (attach types, probe limit, attach time), or the agent
refuses to start and writes nothing."""

from __future__ import annotations

import errno
import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from collector_support import LIBCRYPTO, start_workload, workload_nodes
from service_support import free_port, function_map_file, http_get, wait_ready

from stella_bundle.collector.features import KernelFeatures
from stella_bundle.collector.loader import ProbeRuntime, ProbeSet
from stella_bundle.collector.plan import build_plan
from stella_bundle.collector.session import Collector, CollectorConfig, MemorySink
from stella_bundle.errors import CollectorEnvironmentError
from stella_bundle.evidence.chain import verify_chain
from stella_bundle.evidence.reader import iter_chain_records
from stella_bundle.evidence.seal import parse_seal
from stella_bundle.formats.function_map import ExpectedNode
from stella_bundle.functionmap.elf import index_binary

pytestmark = [pytest.mark.ebpf, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def _config(
    tmp_path: Path, fm: Path, key: Path, port: int, probes: dict[str, Any], pid: int
) -> Path:
    path = tmp_path / "stellaops.yaml"
    document = {
        "runtime_agent": {
            "function_map": str(fm),
            "metrics": {"listen": f"127.0.0.1:{port}"},
            "probes": probes,
            "export": {
                "format": "ndjson",
                "output_path": str(tmp_path / "evidence"),
                "flush_interval_ms": 500,
                "aggregation_window_ms": 200,
            },
        },
        "signals": {"chain_id": "agent", "signing": {"key_file": str(key)}, "pids": [pid]},
    }
    path.write_text(yaml.safe_dump(document))
    return path


def _agent(config: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "stella_bundle", "agent", "run", "--config", str(config), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_agent_run_uses_only_the_allowed_attach_types(
    ebpf: None, workload_bin: Path, tmp_path: Path, test_keys: Any
) -> None:
    nodes = workload_nodes(workload_bin)  # user-space functions and kernel openat, a tracepoint
    fm = function_map_file(tmp_path / "fm.json", nodes)
    port = free_port()
    work = start_workload(workload_bin, "--crypto", "--open", "/etc/hostname")
    config = _config(
        tmp_path,
        fm,
        test_keys.private("collector"),
        port,
        {"default_types": ["uprobe"], "max_concurrent": 16, "attach_timeout_ms": 5000},
        work.pid,
    )
    agent = _agent(config)
    try:
        wait_ready(port, agent, 60)
        assert agent.poll() is None, agent.communicate()
        work.go()
        time.sleep(1.0)
    finally:
        agent.send_signal(signal.SIGTERM)
        _, stderr = agent.communicate(timeout=60)
    assert agent.returncode == 0, stderr
    assert f"metrics: http://127.0.0.1:{port}/metrics" in stderr
    chain = tmp_path / "evidence" / "agent"
    assert verify_chain(chain, test_keys.trust_root).passed
    records = list(iter_chain_records(chain))
    assert {"stella_work_parse", "EVP_Digest"} <= {r["function_name"] for r in records}
    assert {r["probe_type"] for r in records} == {"uprobe"}
    # The kernel nodes had no allowed attach type: named in the seal, not silently dropped.
    failures = {
        failure.function_name: failure
        for path in sorted(chain.glob("*.seal.dsse.json"))
        for failure in parse_seal(path.read_bytes()).predicate.probe_failures
    }
    assert {"openat", "inet_sock_set_state"} <= set(failures)
    assert "disabled" in failures["openat"].error


def test_without_default_types_the_kernel_nodes_are_attached(
    ebpf: None, workload_bin: Path, features: KernelFeatures
) -> None:
    """The contrast for the test above: the same plan, every attach type allowed."""
    plan = build_plan(workload_nodes(workload_bin), features)
    assert "openat" in {spec.symbol for spec in plan.specs}


def test_more_probes_than_max_concurrent_is_refused_before_anything_is_written(
    ebpf: None, workload_bin: Path, tmp_path: Path, test_keys: Any
) -> None:
    fm = function_map_file(tmp_path / "fm.json", workload_nodes(workload_bin))
    config = _config(
        tmp_path, fm, test_keys.private("collector"), free_port(), {"max_concurrent": 1}, 1
    )
    agent = _agent(config)
    _, stderr = agent.communicate(timeout=120)
    assert agent.returncode == 2, stderr
    (line,) = stderr.strip().splitlines()
    assert "probes.max_concurrent" in line and "more than the limit of 1" in line
    assert not list((tmp_path / "evidence").glob("*/*.seal.dsse.json"))


def test_probes_not_reached_within_the_attach_timeout_are_named(
    ebpf: None, features: KernelFeatures
) -> None:
    functions = sorted(index_binary(LIBCRYPTO).functions)[:300]
    plan = build_plan(
        [
            ExpectedNode.create("pkg:deb/debian/libssl3", s, binary_path=LIBCRYPTO)
            for s in functions
        ],
        features,
    )
    # 1 ms is far less than 300 attaches take (~0.2 s here). A thread preempted for that
    # millisecond on a loaded machine attaches nothing, and the collector rightly refuses
    # to start: then the same with twice the time, up to 128 ms.
    for timeout_ms in (1, 2, 4, 8, 16, 32, 64, 128):
        sink = MemorySink()
        collector = Collector(
            plan,
            ProbeRuntime(ProbeSet.open(), features),
            sink,
            CollectorConfig(pids=(1,), attach_timeout_ms=timeout_ms),
        )
        try:
            collector.start()
            break
        except CollectorEnvironmentError as exc:
            assert f"attach timeout ({timeout_ms} ms)" in str(exc), exc
    else:
        pytest.fail("no probe attached within 128 ms")
    try:
        timed_out = [f for f in sink.probe_failures if f.errno == errno.ETIME]
        # Most are cut off, none is lost silently.
        assert timed_out and collector.links
        assert len(collector.links) + len(sink.probe_failures) == len(plan.specs) + len(
            plan.unobservable
        )
        assert all(f"attach timeout ({timeout_ms} ms)" in f.error for f in timed_out)
    finally:
        collector.stop()


def test_the_metrics_listener_of_the_agent_reports_its_map(
    ebpf: None, workload_bin: Path, tmp_path: Path, test_keys: Any
) -> None:
    fm = function_map_file(tmp_path / "fm.json", workload_nodes(workload_bin)[:3])
    port = free_port()
    config = _config(tmp_path, fm, test_keys.private("collector"), port, {"max_concurrent": 8}, 1)
    agent = _agent(config, "--duration", "30")
    try:
        wait_ready(port, agent, 60)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
            text = response.read().decode()
        assert 'stella_probes_attached{chain="agent",service="stella-workload"} 3.0' in text
    finally:
        agent.send_signal(signal.SIGTERM)
        _, stderr = agent.communicate(timeout=60)
    assert agent.returncode == 0, stderr
    assert "collecting: 3 probes attached" in stderr


def test_the_packaged_config_runs_as_shipped_but_for_its_paths(
    ebpf: None, workload_bin: Path, tmp_path: Path, test_keys: Any
) -> None:
    """deploy/config/stellaops.yaml (systemd and Kubernetes) with only its absolute paths moved
    under a temporary directory: a signed map verified against its trust root, evidence written
    and sealed, the listener answering."""
    from stella_bundle.attest.dsse import envelope_bytes, sign_statement

    etc = tmp_path / "etc"
    (etc / "maps").mkdir(parents=True)
    (etc / "keys").mkdir()
    (etc / "keys" / "collector.key").write_bytes(test_keys.private("collector").read_bytes())
    (etc / "maps" / "trust-root.json").write_bytes(test_keys.trust_root.read_bytes())
    statement = json.loads(
        function_map_file(tmp_path / "fm.json", workload_nodes(workload_bin)[:3]).read_text()
    )
    envelope = sign_statement(statement, [test_keys.signer("function-map")])
    (etc / "maps" / "function-map.dsse.json").write_bytes(envelope_bytes(envelope))
    port = free_port()
    shipped = (ROOT / "deploy" / "config" / "stellaops.yaml").read_text()
    config = tmp_path / "stellaops.yaml"
    config.write_text(
        shipped.replace("/etc/stella/", f"{etc}/")
        .replace("/var/lib/stella/evidence", str(tmp_path / "evidence"))
        .replace("127.0.0.1:9464", f"127.0.0.1:{port}")
    )
    agent = _agent(config, "--duration", "30")
    try:
        wait_ready(port, agent, 60)
        assert http_get(port, "/healthz") == (200, "ok\n")
    finally:
        agent.send_signal(signal.SIGTERM)
        _, stderr = agent.communicate(timeout=60)
    assert agent.returncode == 0, stderr
    (chain,) = (tmp_path / "evidence").iterdir()
    assert chain.name.startswith("stella-workload-")  # SERVICE-HOST
    assert verify_chain(chain, test_keys.trust_root).passed


def _unit_capabilities() -> list[str]:
    unit = (ROOT / "deploy" / "systemd" / "stella-agent.service").read_text()
    line = next(x for x in unit.splitlines() if x.startswith("CapabilityBoundingSet="))
    return line.partition("=")[2].split()


def _confined(capabilities: list[str]) -> list[str]:
    """setpriv: root limited to `capabilities` (the bounding set caps even root, as systemd's
    CapabilityBoundingSet= does) and no new privileges (NoNewPrivileges=yes)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("setpriv (util-linux) is needed to confine the agent")
    allowed = ",".join("+" + cap.removeprefix("CAP_").lower() for cap in capabilities)
    return [setpriv, f"--bounding-set=-all,{allowed}", "--no-new-privs", "--"]


@pytest.mark.slow
def test_the_units_capabilities_are_enough_for_a_real_collection(
    ebpf: None, workload_bin: Path, tmp_path: Path, test_keys: Any
) -> None:
    port = free_port()
    fm = function_map_file(tmp_path / "fm.json", workload_nodes(workload_bin))
    work = start_workload(workload_bin, "--crypto", "--open", "/etc/hostname")
    config = _config(tmp_path, fm, test_keys.private("collector"), port, {}, work.pid)
    agent = subprocess.Popen(
        [*_confined(_unit_capabilities()), sys.executable, "-m", "stella_bundle", "agent", "run",
         "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_ready(port, agent, 60)
        assert agent.poll() is None, agent.communicate()
        work.go()
        time.sleep(1.0)
    finally:
        agent.send_signal(signal.SIGTERM)
        _, stderr = agent.communicate(timeout=60)
    assert agent.returncode == 0, stderr
    assert "not attached" not in stderr  # every probe attached with only these capabilities
    chain = tmp_path / "evidence" / "agent"
    observed = {r["function_name"] for r in iter_chain_records(chain)}
    assert {"stella_work_parse", "EVP_Digest", "openat"} <= observed
    assert verify_chain(chain, test_keys.trust_root).passed


def test_without_the_bpf_capabilities_the_agent_refuses_and_writes_nothing(
    ebpf: None, workload_bin: Path, tmp_path: Path, test_keys: Any
) -> None:
    fm = function_map_file(tmp_path / "fm.json", workload_nodes(workload_bin))
    config = _config(tmp_path, fm, test_keys.private("collector"), free_port(), {}, 1)
    fewer = [
        c for c in _unit_capabilities() if c not in ("CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN")
    ]
    result = subprocess.run(
        [*_confined(fewer), sys.executable, "-m", "stella_bundle", "agent", "run", "--config",
         str(config), "--duration", "1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert "CAP_BPF" in result.stderr
    assert not list((tmp_path / "evidence").glob("*/*.seal.dsse.json"))


@pytest.mark.slow
def test_sigterm_while_2000_probes_attach_still_ends_in_a_final_seal(
    ebpf: None, features: KernelFeatures, tmp_path: Path, test_keys: Any
) -> None:
    """systemd or the kubelet may stop the agent while it attaches: the stop waits for the
    attach, then detaches and seals, instead of killing the process with nothing sealed."""
    functions = sorted(index_binary(LIBCRYPTO).functions)[:2000]
    fm = function_map_file(
        tmp_path / "fm.json",
        [
            ExpectedNode.create("pkg:deb/debian/libssl3", s, binary_path=LIBCRYPTO)
            for s in functions
        ],
    )
    config = _config(tmp_path, fm, test_keys.private("collector"), free_port(), {}, 1)
    agent = _agent(config)
    assert agent.stderr is not None
    for line in agent.stderr:
        if line.startswith("metrics: "):  # said right before attaching
            agent.send_signal(signal.SIGTERM)
            break
    else:
        pytest.fail(f"the agent ended before attaching: {agent.wait()}")
    _, stderr = agent.communicate(timeout=120)
    assert agent.returncode == 0, stderr
    assert "collecting: " in stderr  # the attach finished, then the stop was honoured
    chain = tmp_path / "evidence" / "agent"
    seals = sorted(chain.glob("*.seal.dsse.json"))
    assert parse_seal(seals[-1].read_bytes()).predicate.final
    assert verify_chain(chain, test_keys.trust_root).passed


def test_systemd_hears_ready_after_attach_watchdog_pings_and_stopping(
    ebpf: None, workload_bin: Path, tmp_path: Path, test_keys: Any
) -> None:
    """The unit is Type=notify with WatchdogSec=: the agent speaks sd_notify on the socket
    systemd passes in $NOTIFY_SOCKET (here a socket of the test's own)."""
    import os
    import socket

    fm = function_map_file(tmp_path / "fm.json", workload_nodes(workload_bin)[:3])
    config = _config(tmp_path, fm, test_keys.private("collector"), free_port(), {}, 1)
    address = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(address)
        listener.settimeout(60)
        env = {**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"}
        agent = subprocess.Popen(
            [sys.executable, "-m", "stella_bundle", "agent", "run", "--config", str(config)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        try:
            ready = listener.recv(4096).decode().splitlines()
            assert ready[0] == "READY=1"
            assert ready[1].startswith("STATUS=collecting: 3 probes attached")
            pings = [listener.recv(4096).decode() for _ in range(3)]
            assert pings == ["WATCHDOG=1"] * 3  # every 0.2 s: half of WATCHDOG_USEC
            agent.send_signal(signal.SIGTERM)
            while (message := listener.recv(4096).decode()) == "WATCHDOG=1":
                pass
            assert message.splitlines()[0] == "STOPPING=1"
        finally:
            if agent.poll() is None:
                agent.send_signal(signal.SIGTERM)
            _, stderr = agent.communicate(timeout=60)
    assert agent.returncode == 0, stderr
