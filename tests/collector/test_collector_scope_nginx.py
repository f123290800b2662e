"""Scope, the issue's case itself: nginx serving TLS while `ab` hits it, both in libssl.

Host-wide, the load generator's SSL_CTX_new / SSL_do_handshake / SSL_write land in the
evidence of nginx's map and satisfy it. Scoped to nginx's executable, the kernel lets only
nginx's calls through, and the verifier reports ab's records (from a host-wide run) as out of
scope instead of counting them.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tls_support import AB, NGINX
from tls_support import nginx_tls as start_nginx_tls

from stella_bundle.collector.features import KernelFeatures
from stella_bundle.collector.loader import ProbeRuntime, ProbeSet
from stella_bundle.collector.plan import build_plan
from stella_bundle.collector.session import Collector, CollectorConfig, MemorySink
from stella_bundle.coverage import verify_observations
from stella_bundle.formats.function_map import (
    Coverage,
    ExpectedNode,
    ExpectedPath,
    FunctionMap,
    SbomRef,
)
from stella_bundle.formats.scope import NO_SCOPE_WARNING, Scope

LIBSSL = "/usr/lib/x86_64-linux-gnu/libssl.so.3"
SSL_PURL = "pkg:deb/debian/libssl3"
# nginx calls SSL_CTX_new once, at start-up (before collection); ab calls it for its run.
SYMBOLS = ("SSL_CTX_new", "SSL_do_handshake", "SSL_write")


def _nodes() -> list[ExpectedNode]:
    return [ExpectedNode.create(SSL_PURL, symbol, binary_path=LIBSSL) for symbol in SYMBOLS]


def _map(scope: Scope | None) -> FunctionMap:
    return FunctionMap(
        service="nginx",
        build_id="test",
        generated_at="2026-01-01T00:00:00.000000Z",
        sbom=SbomRef("sha256:" + "0" * 64, "CycloneDX", "1.6"),
        coverage=Coverage(min_observation_rate=1.0),
        hot_functions=(),
        expected_paths=tuple(
            ExpectedPath(node.symbol, "crypto", 50, False, (node,)) for node in _nodes()
        ),
        scope=scope,
    )


@pytest.fixture(scope="module")
def nginx_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """nginx with TLS on a free loopback port (its own prefix, config and self-signed key);
    yields the URL."""
    if shutil.which(NGINX) is None or shutil.which(AB) is None:
        pytest.skip("nginx-light and apache2-utils are needed (scripts/setup.sh)")
    with start_nginx_tls(tmp_path_factory.mktemp("nginx"), worker_connections=64) as (url, _):
        yield url


def _load(url: str, features: KernelFeatures, scope: Scope | None) -> tuple[MemorySink, int]:
    """Collect (trace mode) while ab sends 20 requests; returns the sink and ab's pid."""
    config = CollectorConfig(mode="trace", aggregation_ms=100, scope=scope)
    sink = MemorySink()
    collector = Collector(
        build_plan(_nodes(), features), ProbeRuntime(ProbeSet.open(), features), sink, config
    )
    collector.start()
    stop = threading.Event()
    thread = threading.Thread(target=collector.run, kwargs={"should_stop": stop.is_set})
    thread.start()
    try:
        client = subprocess.Popen(
            [AB, "-q", "-n", "20", "-c", "2", url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert client.wait(timeout=120) == 0
        time.sleep(0.4)
    finally:
        stop.set()
        thread.join()
        collector.stop()
    return sink, client.pid


def _by_comm(records: list[dict[str, Any]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for record in records:
        out.setdefault(record["comm"], set()).add(record["function_name"])
    return out


@pytest.mark.ebpf
def test_nginx_scope_counts_nginx_not_the_load_generator(
    ebpf: None, nginx_tls: str, features: KernelFeatures
) -> None:
    # Host-wide: the issue as measured, ab's calls land in nginx's evidence.
    host, ab_pid = _load(nginx_tls, features, None)
    host_comms = _by_comm(host.records)
    assert set(SYMBOLS) <= host_comms.get("ab", set()), host_comms
    assert any(r["pid"] == ab_pid for r in host.records)

    # Scoped to nginx's executable: only nginx's calls reach user space.
    scope = Scope(executable=NGINX)
    scoped, ab_pid = _load(nginx_tls, features, scope)
    assert scoped.records, "nginx's TLS calls were not observed"
    assert {r["comm"] for r in scoped.records} == {"nginx"}
    assert ab_pid not in {r["pid"] for r in scoped.records}
    assert {r["function_name"] for r in scoped.records} == {"SSL_do_handshake", "SSL_write"}
    assert all(r["details"]["scope"] == {"executable": NGINX} for r in scoped.records)
    assert scoped.loss["filtered_out"] >= 20  # ab's handshakes and writes, at least

    # The verifier of nginx's map, given both: ab's records are out of scope, so ab's
    # SSL_CTX_new does not satisfy nginx's map.
    records = scoped.records + host.records
    report = verify_observations(_map(scope), records).to_dict()
    assert report["scope"]["records_in_scope"] == len(scoped.records)
    assert report["scope"]["records_out_of_scope"] == len(host.records)
    assert report["scope"]["findings"]
    status = {p["path_id"]: p["status"] for p in report["per_path_breakdown"]}
    assert status == {
        "SSL_CTX_new": "missing",
        "SSL_do_handshake": "observed",
        "SSL_write": "observed",
    }
    assert not report["verified"]

    # Unscoped, ab satisfies the whole map, and the report warns.
    unscoped = verify_observations(_map(None), records).to_dict()
    assert unscoped["observation_rate"] == 1.0
    assert unscoped["warnings"] == [NO_SCOPE_WARNING]
