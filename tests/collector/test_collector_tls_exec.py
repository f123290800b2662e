"""OpenSSL uprobes (SSL_do_handshake/SSL_write/SSL_read) and the exec tracepoint, on real
`openssl s_server` / `s_client` processes."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from service_support import free_port
from tls_support import self_signed_certificate, wait_listening

from stella_bundle.collector.features import KernelFeatures
from stella_bundle.collector.loader import ProbeRuntime, ProbeSet
from stella_bundle.collector.plan import build_plan
from stella_bundle.collector.session import Collector, CollectorConfig, MemorySink
from stella_bundle.formats.function_map import ExpectedNode

LIBSSL = "/usr/lib/x86_64-linux-gnu/libssl.so.3"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"


@pytest.mark.ebpf
def test_tls_and_exec_sources_observe_openssl(
    ebpf: None, tmp_path: Path, features: KernelFeatures
) -> None:
    key, cert = self_signed_certificate(tmp_path)
    nodes = [
        ExpectedNode.create("pkg:deb/debian/libssl3", s, binary_path=LIBSSL)
        for s in ("SSL_do_handshake", "SSL_write", "SSL_read")
    ] + [ExpectedNode.create("pkg:generic/linux-kernel", "execve")]
    plan = build_plan(nodes, features)
    assert not plan.unobservable
    sink = MemorySink()
    runtime = ProbeRuntime(ProbeSet.open(), features)
    # Every process's libssl calls and execs (the other xdist worker's too): rings with room
    # for seconds of them, should a loaded machine keep the collector's thread waiting.
    runtime.ring_size = 1 << 24  # 4x the default, per object
    collector = Collector(plan, runtime, sink, CollectorConfig(mode="trace"))
    collector.start()
    stop = threading.Event()
    thread = threading.Thread(target=collector.run, kwargs={"should_stop": stop.is_set})
    thread.start()
    port = free_port()
    server = subprocess.Popen(
        [OPENSSL, "s_server", "-quiet", "-accept", str(port), "-cert", str(cert), "-key", str(key)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Listening before the client connects (a loaded machine starts it late).
        wait_listening(port, server, tmp_path / "no-log", 60)
        subprocess.run(
            [OPENSSL, "s_client", "-quiet", "-no_ign_eof", "-connect", f"127.0.0.1:{port}"],
            input=b"hello\n",
            capture_output=True,
            timeout=20,
            check=False,
        )
        time.sleep(0.5)
    finally:
        server.terminate()
        server.wait()
        stop.set()
        thread.join()
        collector.stop()
    # The probes are machine-wide: the other xdist worker's processes may call libssl too, so
    # only the records of this test's two openssl processes (named "openssl") are checked.
    tls = [r for r in sink.records if r["kind"] == "tls" and r["comm"] == "openssl"]
    assert {r["function_name"] for r in tls} >= {"SSL_do_handshake", "SSL_write", "SSL_read"}
    assert all(r["probe_type"] == "uprobe" for r in sink.records if r["kind"] == "tls")
    writes = [r for r in tls if r["function_name"] == "SSL_write"]
    assert any(r.get("details", {}).get("bytes_requested") == 6 for r in writes), writes
    execs = [r for r in sink.records if r["kind"] == "exec"]
    assert any(r["details"]["path"].endswith("/openssl") for r in execs)
    exec_type = next(s.probe_type for s in plan.specs if s.symbol == "execve")
    assert all(r["probe_type"] == exec_type for r in execs)
