"""Scope over containers with a real podman container (runc, cgroupfs manager): a container
started after collection began is added to the kernel's scope by its cgroup id, its records
carry its container id, name and image digest, and its cgroup leaves the scope when it stops.

The image is `podman import` of a local root filesystem (no registry). The workload binary
and the host's libraries are bind-mounted read-only, so the probes attached to the host files
(same inodes) fire inside the container; attaching to a container's own copies through
/proc/PID/root is not part of this test.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from collector_support import LIBCRYPTO, WORKLOAD_PURL, image_rootfs_archive, start_workload

from stella_bundle.collector.features import KernelFeatures
from stella_bundle.collector.loader import ProbeRuntime, ProbeSet
from stella_bundle.collector.plan import build_plan
from stella_bundle.collector.runtimes import RuntimeMetadata
from stella_bundle.collector.session import Collector, CollectorConfig, MemorySink
from stella_bundle.coverage import verify_observations
from stella_bundle.formats.function_map import (
    Coverage,
    ExpectedNode,
    ExpectedPath,
    FunctionMap,
    SbomRef,
)
from stella_bundle.formats.scope import Scope

PODMAN_RUN = (
    "podman",
    "run",
    "--runtime",
    "runc",
    "--cgroup-manager",
    "cgroupfs",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
    "--network",
    "none",
)
# Probed within this long of its cgroup appearing (the collector looks every aggregation
# window, 100 ms here; a loaded host adds its own delays: podman's cleanup of a --rm container,
# which removes the cgroup, is a process of its own, ~0.3 s of CPU stretched by the load).
PICKUP_SECONDS = 60.0
# With the kernel's cgroup_mkdir/rmdir events and no periodic look within the test (a one-minute
# aggregation window): podman's own start is most of it (~1 s at load 11). A third of the window,
# so a container found only by the periodic look still fails, with room for a loaded host.
KERNEL_PICKUP_SECONDS = 20.0


def _podman(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args], capture_output=True, text=True, check=True, timeout=120, **kwargs
    )


@pytest.fixture(scope="module")
def image(
    tmp_path_factory: pytest.TempPathFactory, workload_bin: Path
) -> Iterator[tuple[str, str]]:
    """A local image from a root filesystem: (reference, image digest). It holds its own
    copies of the workload (at the host's path) and of the libraries it loads."""
    if shutil.which("podman") is None or shutil.which("runc") is None:
        pytest.skip("podman and runc are needed (scripts/setup.sh)")
    archive = image_rootfs_archive(tmp_path_factory.mktemp("rootfs"), workload_bin)
    reference = f"localhost/stella-scope-test:{secrets.token_hex(4)}"
    _podman("import", str(archive), reference)
    digest = _podman("image", "inspect", "--format", "{{.Digest}}", reference).stdout.strip()
    try:
        yield reference, digest
    finally:
        subprocess.run(["podman", "rmi", "-f", reference], capture_output=True, check=False)


def _nodes(workload: Path) -> list[ExpectedNode]:
    return [
        ExpectedNode.create("pkg:deb/debian/libssl3", "EVP_Digest", binary_path=LIBCRYPTO),
        ExpectedNode.create(WORKLOAD_PURL, "stella_work_hot", binary_path=str(workload)),
    ]


def _wait_for(condition: Any, seconds: float) -> float:
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < seconds, "timed out"
        time.sleep(0.05)
    return time.monotonic() - start


@pytest.mark.ebpf
def test_a_container_started_after_collection_is_scoped_and_named(
    ebpf: None,
    workload_bin: Path,
    features: KernelFeatures,
    image: tuple[str, str],
    tmp_path: Path,
) -> None:
    reference, image_digest = image
    prefix = f"stella-scope-{secrets.token_hex(3)}"
    name = f"{prefix}-web"
    scope = Scope(container_name=f"{prefix}-*")
    config = CollectorConfig(mode="trace", aggregation_ms=60_000, scope=scope)
    sink = MemorySink()
    collector = Collector(
        build_plan(_nodes(workload_bin), features),
        ProbeRuntime(ProbeSet.open(), features),
        sink,
        config,
    )
    collector.start()  # no container of the scope runs yet
    assert collector.scope_cgroups == set()
    # Starts and stops learnt from the kernel (this kernel has tp_btf), not from a timer.
    assert collector.lifecycle_type == "tp_btf"
    assert len(collector.lifecycle_links) == 2
    stop = threading.Event()
    thread = threading.Thread(target=collector.run, kwargs={"should_stop": stop.is_set})
    thread.start()
    container: subprocess.Popen[str] | None = None
    try:
        container = subprocess.Popen(
            [
                *PODMAN_RUN,
                "-i",
                "--rm",
                "--name",
                name,
                "-v",
                f"{workload_bin}:/stella-workload:ro",
                "-v",
                "/usr/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu:ro",
                "-v",
                "/lib64:/lib64:ro",
                reference,
                "/stella-workload",
                "--wait",
                "--crypto",
                "--calls",
                "4",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert container.stdin is not None and container.stdout is not None
        ready = container.stdout.readline().split()
        assert ready and ready[0] == "ready", ready
        container_id = _podman("inspect", "--format", "{{.Id}}", name).stdout.strip()
        # The same program on the host, outside the scope, at the same time.
        host = start_workload(workload_bin, "--crypto", "--calls", "4")
        _wait_for(lambda: bool(collector.scope_cgroups), KERNEL_PICKUP_SECONDS)
        container.stdin.write("go\n")
        container.stdin.flush()
        result = json.loads(container.stdout.readline())
        assert result["calls"] == 4
        assert container.wait(timeout=60) == 0
        host.go()
        time.sleep(0.4)
        # Stopped (and removed: --rm): its cgroup leaves the kernel's scope map.
        _wait_for(lambda: not collector.scope_cgroups, KERNEL_PICKUP_SECONDS)
    finally:
        if container is not None and container.poll() is None:
            subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True)
            container.wait(timeout=60)
        stop.set()
        thread.join()
        collector.stop()

    counts: dict[str, int] = {}
    for record in sink.records:
        counts[record["function_name"]] = counts.get(record["function_name"], 0) + 1
        assert record["container_id"] == container_id
        assert record["image_digest"] == image_digest
        assert record["details"]["container_name"] == name
        assert record["details"]["container_runtime"] == "podman"
        assert record["details"]["scope"] == {
            "container_id": container_id,
            "container_name": name,
            "image_digest": image_digest,
        }
        assert record["pid"] != host.pid
    # Every call inside the container (trace mode), none of the host process's.
    assert counts == {"EVP_Digest": 1, "stella_work_hot": 4}
    assert sink.loss["filtered_out"] >= 5

    crypto, hot = _nodes(workload_bin)
    function_map = FunctionMap(
        service="web",
        build_id="test",
        generated_at="2026-01-01T00:00:00.000000Z",
        sbom=SbomRef("sha256:" + "0" * 64, "CycloneDX", "1.6"),
        coverage=Coverage(min_observation_rate=1.0),
        hot_functions=(),
        expected_paths=(
            ExpectedPath("crypto", "crypto", 50, False, (crypto,)),
            ExpectedPath("hot", "general", 10, False, (hot,)),
        ),
        scope=Scope(container_name=f"{prefix}-*", image_digest=image_digest),
    )
    report = verify_observations(function_map, sink.records).to_dict()
    assert report["verified"], report["failures"]
    assert report["scope"]["records_out_of_scope"] == 0


def _start_container(
    name: str,
    reference: str,
    workload: Path,
    *mounts: str,
    args: tuple[str, ...] = (),
    own_files: bool = False,
) -> tuple[subprocess.Popen[str], str]:
    """A container of the workload waiting for "go" on stdin; (process, container id). By
    default the host's workload and libraries are bind-mounted (the host's inodes); with
    `own_files` the container runs the image's own copies."""
    host_files = (
        ()
        if own_files
        else (
            *("-v", f"{workload}:/stella-workload:ro"),
            *("-v", "/usr/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu:ro"),
            *("-v", "/lib64:/lib64:ro"),
        )
    )
    process = subprocess.Popen(
        [
            *PODMAN_RUN,
            "-i",
            "--rm",
            "--name",
            name,
            *(item for mount in mounts for item in ("-v", mount)),
            *host_files,
            reference,
            str(workload) if own_files else "/stella-workload",
            "--wait",
            "--calls",
            "3",
            *args,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    ready = process.stdout.readline().split()
    assert ready and ready[0] == "ready", ready
    return process, _podman("inspect", "--format", "{{.Id}}", name).stdout.strip()


def _finish(process: subprocess.Popen[str]) -> None:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write("go\n")
    process.stdin.flush()
    assert json.loads(process.stdout.readline())["calls"] == 3
    assert process.wait(timeout=60) == 0


@pytest.mark.ebpf
def test_a_container_running_before_collection_and_its_restart_are_scoped(
    ebpf: None, workload_bin: Path, features: KernelFeatures, image: tuple[str, str]
) -> None:
    reference, image_digest = image
    prefix = f"stella-scope-{secrets.token_hex(3)}"
    name = f"{prefix}-db"
    first, first_id = _start_container(name, reference, workload_bin)
    config = CollectorConfig(
        mode="trace", aggregation_ms=100, scope=Scope(image_digest=image_digest)
    )
    sink = MemorySink()
    collector = Collector(
        build_plan(_nodes(workload_bin), features),
        ProbeRuntime(ProbeSet.open(), features),
        sink,
        config,
    )
    started: list[subprocess.Popen[str]] = [first]
    try:
        collector.start()
        # Already running: found at start (its cgroup, and the image digest from podman).
        assert collector.scope_cgroups
        stop = threading.Event()
        thread = threading.Thread(target=collector.run, kwargs={"should_stop": stop.is_set})
        thread.start()
        try:
            _finish(first)
            _wait_for(lambda: not collector.scope_cgroups, PICKUP_SECONDS)
            # Started again under the same name: a new container, a new cgroup, scoped again.
            second, second_id = _start_container(name, reference, workload_bin)
            started.append(second)
            _wait_for(lambda: bool(collector.scope_cgroups), PICKUP_SECONDS)
            _finish(second)
            time.sleep(0.4)
        finally:
            stop.set()
            thread.join()
    finally:
        for process in started:
            if process.poll() is None:
                subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True)
                process.wait(timeout=60)
        collector.stop()
    by_container: dict[str, int] = {}
    for record in sink.records:
        assert record["function_name"] == "stella_work_hot"
        assert record["image_digest"] == image_digest
        assert record["details"]["scope"]["container_name"] == name
        by_container[record["container_id"]] = by_container.get(record["container_id"], 0) + 1
    assert first_id != second_id
    assert by_container == {first_id: 3, second_id: 3}


@pytest.mark.ebpf
def test_an_executable_inside_the_container_narrows_the_container(
    ebpf: None, workload_bin: Path, features: KernelFeatures, image: tuple[str, str], tmp_path: Path
) -> None:
    """{container_name, executable}: the path is resolved inside the container (through
    /proc/PID/root); another program in the same container calling the same library is out."""
    reference, image_digest = image
    client = tmp_path / "stella-client"
    shutil.copy2(workload_bin, client)
    prefix = f"stella-scope-{secrets.token_hex(3)}"
    name = f"{prefix}-app"
    scope = Scope(container_name=f"{prefix}-*", executable="/stella-workload")
    config = CollectorConfig(mode="trace", aggregation_ms=60_000, scope=scope)
    sink = MemorySink()
    collector = Collector(
        build_plan(_nodes(workload_bin), features),
        ProbeRuntime(ProbeSet.open(), features),
        sink,
        config,
    )
    collector.start()
    stop = threading.Event()
    thread = threading.Thread(target=collector.run, kwargs={"should_stop": stop.is_set})
    thread.start()
    container: subprocess.Popen[str] | None = None
    try:
        container, container_id = _start_container(
            name, reference, workload_bin, f"{client}:/stella-client:ro", args=("--crypto",)
        )
        _wait_for(lambda: bool(collector.container_executables), KERNEL_PICKUP_SECONDS)
        # The other program, in the same container, the same libcrypto call.
        _podman("exec", name, "/stella-client", "--crypto", "--calls", "2")
        _finish(container)
        time.sleep(0.4)
    finally:
        if container is not None and container.poll() is None:
            subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True)
            container.wait(timeout=60)
        stop.set()
        thread.join()
        collector.stop()
    counts: dict[str, int] = {}
    for record in sink.records:
        counts[record["function_name"]] = counts.get(record["function_name"], 0) + 1
        assert record["details"]["scope"] == {
            "executable": "/stella-workload",
            "container_id": container_id,
            "container_name": name,
            "image_digest": image_digest,
        }
    assert counts == {"EVP_Digest": 1, "stella_work_hot": 3}  # the client's EVP_Digest is out
    assert sink.loss["filtered_out"] >= 1


@pytest.mark.ebpf
def test_probes_are_attached_to_the_containers_own_binaries(
    ebpf: None, workload_bin: Path, features: KernelFeatures, image: tuple[str, str]
) -> None:
    """The image's own workload and libcrypto (other inodes than the host's): probed through
    /proc/PID/root when the container starts, detached when it stops."""
    reference, image_digest = image
    prefix = f"stella-scope-{secrets.token_hex(3)}"
    name = f"{prefix}-own"
    config = CollectorConfig(
        mode="trace", aggregation_ms=60_000, scope=Scope(container_name=f"{prefix}-*")
    )
    sink = MemorySink()
    collector = Collector(
        build_plan(_nodes(workload_bin), features),
        ProbeRuntime(ProbeSet.open(), features),
        sink,
        config,
    )
    collector.start()
    stop = threading.Event()
    thread = threading.Thread(target=collector.run, kwargs={"should_stop": stop.is_set})
    thread.start()
    container: subprocess.Popen[str] | None = None
    attached_inside = 0
    try:
        container, container_id = _start_container(
            name, reference, workload_bin, args=("--crypto",), own_files=True
        )
        _wait_for(lambda: bool(collector.container_links), KERNEL_PICKUP_SECONDS)
        attached_inside = sum(len(links) for links in collector.container_links.values())
        _finish(container)
        _wait_for(lambda: not collector.container_links, KERNEL_PICKUP_SECONDS)
        time.sleep(0.4)
    finally:
        if container is not None and container.poll() is None:
            subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True)
            container.wait(timeout=60)
        stop.set()
        thread.join()
        collector.stop()
    assert attached_inside == 2  # EVP_Digest in its libcrypto, stella_work_hot in its workload
    counts: dict[str, int] = {}
    for record in sink.records:
        counts[record["function_name"]] = counts.get(record["function_name"], 0) + 1
        assert record["container_id"] == container_id
        assert record["image_digest"] == image_digest
    assert counts == {"EVP_Digest": 1, "stella_work_hot": 3}
    assert collector.probe_failures == []


def test_podman_names_are_read_from_its_storage_without_asking_podman(
    image: tuple[str, str],
) -> None:
    """A created container (no cgroup yet, nothing started) is named from containers/storage's
    files alone, as `podman inspect` names it."""
    reference, image_digest = image
    name = f"stella-scope-{secrets.token_hex(3)}-files"
    container_id = _podman(
        "create", "--runtime", "runc", "--name", name, reference, "/stella-workload"
    ).stdout.strip()
    try:
        answer = RuntimeMetadata(podman="").lookup("podman", container_id)
    finally:
        subprocess.run(["podman", "rm", "-f", name], capture_output=True, check=False)
    assert answer == {"container_name": name, "image": reference, "image_digest": image_digest}


def test_a_containers_root_filesystem_is_found_once_podman_mounted_it(
    image: tuple[str, str], workload_bin: Path
) -> None:
    """The root filesystem podman mounts for a container (before the OCI runtime makes its
    cgroup) is named from the OCI spec podman wrote: the image's own files, the same inodes a
    process inside sees; nothing for a container only created."""
    reference, _ = image
    name = f"stella-scope-{secrets.token_hex(3)}-rootfs"
    container_id = _podman(
        "create", *PODMAN_RUN[2:], "--name", name, reference, str(workload_bin)
    ).stdout.strip()
    runtime = RuntimeMetadata(podman="")
    try:
        created = runtime.rootfs("podman", container_id)
        _podman("init", container_id)  # mounted, the OCI spec written, runc create done
        found = runtime.rootfs("podman", container_id)
        merged = _podman(
            "inspect", "--format", "{{.GraphDriver.Data.MergedDir}}", container_id
        ).stdout.strip()
        pid = _podman("inspect", "--format", "{{.State.Pid}}", container_id).stdout.strip()
        assert found is not None
        outside, inside = os.stat(found + LIBCRYPTO), os.stat(f"/proc/{pid}/root{LIBCRYPTO}")
    finally:
        subprocess.run(["podman", "rm", "-f", name], capture_output=True, check=False)
    assert created is None
    assert found == merged
    assert (outside.st_ino, outside.st_dev) == (inside.st_ino, inside.st_dev)
    assert runtime.rootfs("docker", container_id) is None  # podman's layout only
