"""Scope (issue 13): a function map names its workload; the kernel lets only that workload's
events through, records say which workload matched, and the verifier counts only those.

The issue's case with the project's workload: the "server" is the workload binary, the
"client" a copy of it at another path (another inode) making the same libcrypto calls
(EVP_Digest). Both run at once under one collector.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from collector_support import LIBCRYPTO, WORKLOAD_PURL, Workload, start_workload

from stella_bundle.canonical import canonical_bytes
from stella_bundle.collector.containers import CGROUP_ROOT
from stella_bundle.collector.features import KernelFeatures
from stella_bundle.collector.loader import ProbeRuntime, ProbeSet
from stella_bundle.collector.plan import build_plan
from stella_bundle.collector.session import Collector, CollectorConfig, MemorySink
from stella_bundle.coverage import verify_files, verify_observations
from stella_bundle.errors import ConfigError
from stella_bundle.formats.function_map import (
    Coverage,
    ExpectedNode,
    ExpectedPath,
    FunctionMap,
    SbomRef,
)
from stella_bundle.formats.scope import NO_SCOPE_WARNING, Scope

CRYPTO = "pkg:deb/debian/libssl3"


def _nodes(server: Path) -> list[ExpectedNode]:
    return [
        ExpectedNode.create(CRYPTO, "EVP_Digest", binary_path=LIBCRYPTO),
        ExpectedNode.create(WORKLOAD_PURL, "stella_work_hot", binary_path=str(server)),
    ]


def _map(server: Path, scope: Scope | None) -> FunctionMap:
    crypto, hot = _nodes(server)
    return FunctionMap(
        service="stella-workload",
        build_id="test",
        generated_at="2026-01-01T00:00:00.000000Z",
        sbom=SbomRef("sha256:" + "0" * 64, "CycloneDX", "1.6"),
        coverage=Coverage(min_observation_rate=1.0),
        hot_functions=(),
        expected_paths=(
            ExpectedPath("crypto", "crypto", 50, False, (crypto,)),
            ExpectedPath("hot-loop", "general", 10, False, (hot,)),
        ),
        scope=scope,
    )


def _collect(
    server: Path,
    features: KernelFeatures,
    processes: list[tuple[Path, tuple[str, ...]]],
    scope: Scope | None,
    *,
    cgroup_procs: Path | None = None,
) -> tuple[MemorySink, list[int]]:
    """Collect (trace mode: every hit) while each (binary, args) runs to completion; the
    first process is moved to `cgroup_procs` when given. Returns the sink and the pids."""
    plan = build_plan(_nodes(server), features)
    config = CollectorConfig(mode="trace", aggregation_ms=100, scope=scope)
    sink = MemorySink()
    collector = Collector(plan, ProbeRuntime(ProbeSet.open(), features), sink, config)
    works: list[Workload] = [
        start_workload(binary, *args, cgroup_procs=cgroup_procs if index == 0 else None)
        for index, (binary, args) in enumerate(processes)
    ]
    try:
        collector.start()
    except BaseException:
        for work in works:
            work.process.kill()
            work.process.wait()
        raise
    stop = threading.Event()
    thread = threading.Thread(target=collector.run, kwargs={"should_stop": stop.is_set})
    thread.start()
    try:
        for work in works:
            work.go()
        time.sleep(0.4)
    finally:
        stop.set()
        thread.join()
        collector.stop()
    return sink, [work.pid for work in works]


@pytest.fixture
def client_bin(workload_bin: Path, tmp_path: Path) -> Path:
    """The same program at another path: another inode, the same library calls."""
    client = tmp_path / "stella-client"
    shutil.copy2(workload_bin, client)
    return client


@pytest.mark.ebpf
def test_executable_scope_keeps_the_clients_calls_out_in_the_kernel(
    ebpf: None, workload_bin: Path, client_bin: Path, features: KernelFeatures
) -> None:
    scope = Scope(executable=str(workload_bin))
    sink, (server_pid, client_pid) = _collect(
        workload_bin,
        features,
        [(workload_bin, ("--calls", "5")), (client_bin, ("--crypto", "--calls", "5"))],
        scope,
    )
    by_symbol: dict[str, int] = {}
    for record in sink.records:
        by_symbol[record["function_name"]] = by_symbol.get(record["function_name"], 0) + 1
        assert record["pid"] == server_pid, record
        assert record["details"]["scope"] == {"executable": str(workload_bin)}
    # The server's own loop was seen, every call (trace mode); the client's EVP_Digest never
    # reached user space, and the kernel said it filtered something out.
    assert by_symbol == {"stella_work_hot": 5}
    assert sink.loss["filtered_out"] >= 1
    assert client_pid not in {r["pid"] for r in sink.records}


@pytest.mark.ebpf
def test_the_verifier_counts_only_the_workloads_records(
    ebpf: None,
    workload_bin: Path,
    client_bin: Path,
    features: KernelFeatures,
    tmp_path: Path,
) -> None:
    processes = [(workload_bin, ("--calls", "3")), (client_bin, ("--crypto", "--calls", "3"))]
    # The server's evidence, and the client's (collected scoped to the client: its records
    # say so), both handed to the verifier of the server's map.
    server_sink, (server_pid, _) = _collect(
        workload_bin, features, processes, Scope(executable=str(workload_bin))
    )
    client_sink, (_, client_pid) = _collect(
        workload_bin, features, processes, Scope(executable=str(client_bin))
    )
    client_records = client_sink.records
    assert client_records and {r["function_name"] for r in client_records} == {"EVP_Digest"}
    assert {r["pid"] for r in client_records} == {client_pid}
    # ... and a host-wide collection: records with no workload context at all.
    host_sink, (_, host_client_pid) = _collect(workload_bin, features, processes, None)
    assert any(r["pid"] == host_client_pid for r in host_sink.records)
    records = server_sink.records + client_records + host_sink.records

    scoped = verify_observations(_map(workload_bin, Scope(executable=str(workload_bin))), records)
    report = scoped.to_dict()
    assert report["scope"]["declared"] == {"executable": str(workload_bin)}
    assert report["scope"]["records_in_scope"] == len(server_sink.records)
    out = len(client_records) + len(host_sink.records)
    assert report["scope"]["records_out_of_scope"] == out
    assert report["records"]["out_of_scope"] == out
    assert (
        f"{out} record(s) came from processes outside the scope" in (report["scope"]["findings"][0])
    )
    # The client's EVP_Digest does not satisfy the server's crypto path.
    status = {p["path_id"]: p["status"] for p in report["per_path_breakdown"]}
    assert status == {"crypto": "missing", "hot-loop": "observed"}
    assert report["observation_rate"] == 0.5
    assert not report["verified"]
    assert report["unexpected_symbols"] == []
    assert report["warnings"] == []
    assert all(r["pid"] == server_pid for r in server_sink.records)

    # The same records through the file scanner (msgspec fast path), one file per source.
    paths = []
    for name, part in (
        ("server", server_sink.records),
        ("other", records[len(server_sink.records) :]),
    ):
        path = tmp_path / f"{name}.ndjson"
        path.write_bytes(b"".join(canonical_bytes(r) + b"\n" for r in part))
        paths.append(path)
    from_files = verify_files(_map(workload_bin, Scope(executable=str(workload_bin))), paths)
    assert from_files.to_dict()["scope"] == report["scope"]
    assert from_files.per_path_breakdown == scoped.per_path_breakdown

    # Without a scope the client satisfies the server's map: the report says so, loudly.
    unscoped = verify_observations(_map(workload_bin, None), records).to_dict()
    assert unscoped["observation_rate"] == 1.0
    assert unscoped["warnings"] == [NO_SCOPE_WARNING]
    assert unscoped["scope"]["declared"] is None
    assert unscoped["scope"]["records_out_of_scope"] == 0


@pytest.fixture
def unit_cgroup(ebpf: None) -> Iterator[tuple[str, Path]]:
    """A cgroup v2 directory named like a systemd service, with a child cgroup (a unit's
    processes may sit below the unit's own cgroup)."""
    unit = f"stella-test-{secrets.token_hex(4)}.service"
    slice_dir = CGROUP_ROOT / "stella-test.slice"
    unit_dir = slice_dir / unit
    child = unit_dir / "worker"
    child.mkdir(parents=True)
    try:
        yield unit, child
    finally:
        for directory in (child, unit_dir, slice_dir):
            with contextlib.suppress(OSError):
                directory.rmdir()


@pytest.mark.ebpf
def test_systemd_unit_scope_follows_the_units_cgroup_subtree(
    workload_bin: Path,
    client_bin: Path,
    features: KernelFeatures,
    unit_cgroup: tuple[str, Path],
) -> None:
    unit, child = unit_cgroup
    sink, (server_pid, _) = _collect(
        workload_bin,
        features,
        [(workload_bin, ("--crypto", "--calls", "2")), (client_bin, ("--crypto", "--calls", "2"))],
        Scope(systemd_unit=unit),
        cgroup_procs=child / "cgroup.procs",
    )
    assert {r["function_name"] for r in sink.records} == {"EVP_Digest", "stella_work_hot"}
    for record in sink.records:
        assert record["pid"] == server_pid
        assert record["details"]["scope"] == {"systemd_unit": unit}
    assert sink.loss["filtered_out"] >= 1  # the client's EVP_Digest


@pytest.mark.ebpf
def test_a_workload_not_on_this_host_is_refused_before_anything_loads(
    ebpf: None, workload_bin: Path, features: KernelFeatures, tmp_path: Path
) -> None:
    plan = build_plan(_nodes(workload_bin), features)
    for scope, field in (
        (Scope(executable=str(tmp_path / "absent")), "scope.executable"),
        (Scope(systemd_unit="stella-absent-unit.service"), "scope.systemd_unit"),
    ):
        runtime = ProbeRuntime(ProbeSet.open(), features)
        collector = Collector(plan, runtime, MemorySink(), CollectorConfig(scope=scope))
        with pytest.raises(ConfigError) as caught:
            collector.start()
        assert caught.value.field == field
        assert not runtime.objects  # nothing was loaded


def test_scope_reads_and_writes_the_map_format() -> None:
    data: dict[str, Any] = {"executable": "/usr/sbin/nginx", "container_name": "web-*"}
    scope = Scope.from_dict(data)
    assert scope.to_dict() == data
    assert scope.matches({"details": {"scope": {**data, "container_name": "web-1"}}})
    assert not scope.matches({"details": {"scope": {"executable": "/usr/sbin/nginx"}}})
    assert not scope.matches({"details": {"scope": {**data, "container_name": "db-1"}}})
    assert not scope.matches({"node_hash": "x"})
    assert json.loads(json.dumps(_map(Path("/bin/true"), scope).to_dict()))["scope"] == data
