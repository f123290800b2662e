"""containerd containers with a real containerd daemon (started by the test, runc shim): a
container started after collection began is probed inside (its own binaries, through
/proc/PID/root), its records carry its id, name, image and image digest read from
containerd's metadata store, and its probes are detached when it stops.

The daemon runs on its own root, state directory and socket (systemd is not PID 1 here, and
the package's service start is refused). The image is the podman scope test's root
filesystem, `podman save`d as an OCI archive and `ctr image import`ed. Under CI=true a
daemon that cannot start fails these tests (no skip).
"""

from __future__ import annotations

import json
import os
import random
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
from collector_support import (
    LIBCRYPTO,
    WORKLOAD_PURL,
    Containerd,
    ContainerdUnavailable,
    containerd_daemon,
    image_rootfs_archive,
    start_workload,
)
from prometheus_client.parser import text_string_to_metric_families
from service_support import free_port, function_map_file, http_get, wait_for, wait_ready

from stella_bundle.collector.containers import CgroupResolver, parse_cgroup_path
from stella_bundle.collector.features import KernelFeatures
from stella_bundle.collector.loader import ProbeRuntime, ProbeSet
from stella_bundle.collector.plan import build_plan
from stella_bundle.collector.runtime_containerd import METADATA_DB, ContainerdMetadata
from stella_bundle.collector.runtimes import RuntimeMetadata
from stella_bundle.collector.session import Collector, CollectorConfig, MemorySink
from stella_bundle.collector.workload import container_cgroups
from stella_bundle.evidence.chain import verify_chain
from stella_bundle.evidence.reader import iter_chain_records
from stella_bundle.formats.function_map import ExpectedNode
from stella_bundle.formats.scope import Scope

IN_CI = bool(os.environ.get("CI"))
# From `ctr run` to probes attached inside: the shim, runc and the first exec take most of it
# (processes of their own, stretched by a loaded host: only a failure waits this long).
PICKUP_SECONDS = 60.0


def _unavailable(reason: str) -> None:
    # Under CI these tests must run: a containerd that cannot start is a failure there.
    if IN_CI:
        pytest.fail(f"containerd tests cannot run under CI=true: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    try:
        with containerd_daemon(tmp_path_factory.mktemp("containerd")) as daemon:
            yield daemon
    except ContainerdUnavailable as exc:
        _unavailable(str(exc))


@pytest.fixture(scope="module")
def image(
    containerd: Containerd, tmp_path_factory: pytest.TempPathFactory, workload_bin: Path
) -> tuple[str, str]:
    """The podman scope test's image in containerd: (reference, containerd's image digest)."""
    if shutil.which("podman") is None:
        _unavailable("podman is needed to build the image (scripts/setup.sh)")
    base = tmp_path_factory.mktemp("containerd-image")
    archive = image_rootfs_archive(base / "rootfs", workload_bin)
    return containerd.import_rootfs(archive, "localhost/stella-containerd-test", base)


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
def test_a_containerd_container_is_probed_named_and_detached_when_it_stops(
    ebpf: None,
    workload_bin: Path,
    features: KernelFeatures,
    containerd: Containerd,
    image: tuple[str, str],
) -> None:
    reference, image_digest = image
    resolver = CgroupResolver(
        runtime=RuntimeMetadata(containerd=ContainerdMetadata(containerd.root))
    )
    config = CollectorConfig(
        mode="trace", aggregation_ms=60_000, scope=Scope(image_digest=image_digest)
    )
    sink = MemorySink()
    collector = Collector(
        build_plan(_nodes(workload_bin), features),
        ProbeRuntime(ProbeSet.open(), features),
        sink,
        config,
        resolver,
    )
    collector.start()  # no container of the image runs yet
    assert collector.scope_cgroups == set()
    assert collector.lifecycle_type == "tp_btf"  # starts and stops learnt from the kernel
    stop = threading.Event()
    thread = threading.Thread(target=collector.run, kwargs={"should_stop": stop.is_set})
    thread.start()
    container_id = secrets.token_hex(32)
    container: subprocess.Popen[str] | None = None
    attached_inside = 0
    try:
        # The image's own workload and libcrypto: probed through /proc/PID/root.
        container = _ctr_run(
            containerd, reference, container_id, workload_bin, "--crypto", "--calls", "3"
        )
        assert container.stdin is not None and container.stdout is not None
        # The same program on the host, outside the scope, at the same time.
        host = start_workload(workload_bin, "--crypto", "--calls", "3")
        _wait_for(lambda: bool(collector.container_links), PICKUP_SECONDS)
        attached_inside = sum(len(links) for links in collector.container_links.values())
        (cgroup_id,) = collector.scope_cgroups
        path = resolver.path_of(cgroup_id)
        assert path == f"/default/{container_id}"  # the runc shim's cgroup, no parent given
        container.stdin.write("go\n")
        container.stdin.flush()
        assert json.loads(container.stdout.readline())["calls"] == 3
        assert container.wait(timeout=60) == 0
        host.go()
        # Stopped and removed (--rm): its cgroup leaves the scope, the probes inside detach.
        _wait_for(
            lambda: not collector.container_links and not collector.scope_cgroups, PICKUP_SECONDS
        )
        time.sleep(0.4)
    finally:
        if container is not None and container.poll() is None:
            containerd.ctr("task", "rm", "-f", container_id, check=False)
            containerd.ctr("containers", "rm", container_id, check=False)
            container.kill()
            container.wait(timeout=60)
        stop.set()
        thread.join()
        collector.stop()
    assert attached_inside == 2  # EVP_Digest in its libcrypto, stella_work_hot in its workload
    assert collector.probe_failures == []
    counts: dict[str, int] = {}
    for record in sink.records:
        counts[record["function_name"]] = counts.get(record["function_name"], 0) + 1
        assert record["container_id"] == container_id
        assert record["image_digest"] == image_digest
        details = record["details"]
        assert details["container_runtime"] == "containerd"
        # containerd has no names: without a naming label the name is the id.
        assert details["container_name"] == container_id
        assert details["container_image"] == reference
        assert details["scope"] == {
            "container_id": container_id,
            "container_name": container_id,
            "image_digest": image_digest,
        }
        assert record["pid"] != host.pid
    assert counts == {"EVP_Digest": 1, "stella_work_hot": 3}  # none of the host's calls


def test_metadata_store_names_many_containers_as_ctr_does(
    containerd: Containerd, image: tuple[str, str]
) -> None:
    """Created containers (no task): names from the CRI and nerdctl labels or the id, the
    image and its digest, read from the store; enough of them that the containers bucket
    spans branch and leaf pages. Unknown ids and a missing store answer nothing."""
    reference, image_digest = image
    created: list[str] = []
    try:
        for index in range(60):
            container_id = secrets.token_hex(32)
            labels: tuple[str, ...] = ()
            if index % 3 == 1:
                labels = ("--label", f"io.kubernetes.container.name=web-{index}")
                labels += ("--label", "io.kubernetes.pod.name=web-pod")
                labels += ("--label", "io.kubernetes.pod.namespace=shop")
            elif index % 3 == 2:
                labels = ("--label", f"nerdctl/name=app-{index}")
            containerd.ctr("containers", "create", *labels, reference, container_id, "/x")
            created.append(container_id)
        store = ContainerdMetadata(containerd.root)
        for index, container_id in enumerate(created):
            expected = {"image": reference, "image_digest": image_digest}
            if index % 3 == 1:
                expected |= {
                    "container_name": f"web-{index}",
                    "pod_name": "web-pod",
                    "namespace": "shop",
                }
            elif index % 3 == 2:
                expected["container_name"] = f"app-{index}"
            else:
                expected["container_name"] = container_id
            assert store.lookup(container_id) == expected
            info = containerd.ctr("containers", "info", container_id).stdout
            assert json.loads(info)["Image"] == reference
        assert store.lookup(secrets.token_hex(32)) == {}
        assert ContainerdMetadata(containerd.root / "absent").lookup(created[0]) == {}
    finally:
        for container_id in created:
            containerd.ctr("containers", "rm", container_id, check=False)


def test_the_runc_shims_cgroup_path_is_a_containerd_container() -> None:
    container_id = "ab" * 32
    info = parse_cgroup_path(f"/default/{container_id}")
    assert info is not None and (info.container_id, info.runtime) == (container_id, "containerd")
    assert parse_cgroup_path(f"/k8s.io/{container_id}") is not None
    # Not by its form: a name (the resolver asks containerd's namespaces), or deeper.
    assert parse_cgroup_path("/default/web") is None
    assert parse_cgroup_path(f"/a/b/{container_id}") is None


def test_a_torn_or_corrupt_store_gives_an_answer_or_nothing_never_an_error(
    containerd: Containerd, image: tuple[str, str], tmp_path: Path
) -> None:
    """Copies of the daemon's store with each page overwritten in turn (and cut short): the
    reader answers with strings or with nothing; it never raises or loops."""
    reference, image_digest = image
    container_id = secrets.token_hex(32)
    containerd.ctr("containers", "create", reference, container_id, "/x")
    try:
        original = (containerd.root / METADATA_DB).read_bytes()
    finally:
        containerd.ctr("containers", "rm", container_id, check=False)
    copy = tmp_path / METADATA_DB
    copy.parent.mkdir(parents=True)
    copy.write_bytes(original)
    store = ContainerdMetadata(tmp_path)
    expected = {"container_name": container_id, "image": reference, "image_digest": image_digest}
    assert store.lookup(container_id) == expected
    noise = random.Random(13)
    page_size = 4096
    damaged: list[bytes] = [original[:size] for size in (0, 100, page_size, 2 * page_size + 7)]
    for page in range(len(original) // page_size):
        for _ in range(2):
            data = bytearray(original)
            offset = page * page_size + noise.randrange(page_size - 64)
            data[offset : offset + 64] = noise.randbytes(64)
            damaged.append(bytes(data))
    answers = 0
    for data in damaged:
        copy.write_bytes(data)
        answer = store.lookup(container_id)
        assert all(isinstance(v, str) for v in answer.values())
        answers += answer == expected
    assert answers  # most pages are not on the path to this container


def _ctr_run(
    containerd: Containerd, reference: str, container_id: str, workload: Path, *args: str
) -> subprocess.Popen[str]:
    """`ctr run --rm` of the image's own workload (at the host's path) waiting for "go" on
    stdin, returned once it is ready."""
    command = ["ctr", "--address", containerd.address, "run", "--rm", reference, container_id]
    process = subprocess.Popen(
        [*command, str(workload), "--wait", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    ready = process.stdout.readline().split()
    assert ready and ready[0] == "ready", ready
    return process


def test_a_container_named_by_its_user_is_recognised_by_its_namespace(
    containerd: Containerd, image: tuple[str, str], workload_bin: Path
) -> None:
    """`ctr run IMAGE web-…`: the cgroup /default/web-… is no pattern's; the resolver tells it
    from a systemd unit's by containerd's namespaces, and the scope matches it by name."""
    reference, image_digest = image
    container_id = f"web-{secrets.token_hex(3)}"
    store = ContainerdMetadata(containerd.root)
    resolver = CgroupResolver(runtime=RuntimeMetadata(podman="", containerd=store))
    process = _ctr_run(containerd, reference, container_id, workload_bin, "--calls", "1")
    try:
        paths = resolver.all_paths()
        (cgroup_id,) = [c for c, path in paths.items() if path == f"/default/{container_id}"]
        info = resolver.container_of(0, cgroup_id)
        assert info is not None
        assert (info.container_id, info.runtime) == (container_id, "containerd")
        assert (info.container_name, info.image, info.image_digest) == (
            container_id,
            reference,
            image_digest,
        )
        scope = Scope(container_name="web-*", image_digest=image_digest)
        assert container_cgroups(scope, resolver, paths) == {cgroup_id}
        assert "default" in store.namespaces()
        # Two levels down but not under a containerd namespace, or the namespace itself.
        assert resolver.parse("/system.slice/cron.service") is None
        assert resolver.parse("/default") is None
        assert resolver.parse("/default/web/x") is None
        assert resolver.parse("/default/-bad") is None
    finally:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
        assert process.wait(timeout=60) == 0


@pytest.mark.ebpf
def test_a_containerd_container_running_before_collection_is_picked_up(
    ebpf: None,
    workload_bin: Path,
    features: KernelFeatures,
    containerd: Containerd,
    image: tuple[str, str],
) -> None:
    """Already running when the collector starts: found in the cgroup tree and named at
    start, probed inside at once; its probes detached when it stops."""
    reference, image_digest = image
    container_id = f"db-{secrets.token_hex(3)}"
    resolver = CgroupResolver(
        runtime=RuntimeMetadata(podman="", containerd=ContainerdMetadata(containerd.root))
    )
    config = CollectorConfig(mode="trace", aggregation_ms=100, scope=Scope(container_name="db-*"))
    sink = MemorySink()
    collector = Collector(
        build_plan(_nodes(workload_bin), features),
        ProbeRuntime(ProbeSet.open(), features),
        sink,
        config,
        resolver,
    )
    container = _ctr_run(containerd, reference, container_id, workload_bin, "--calls", "2")
    try:
        collector.start()
        assert len(collector.scope_cgroups) == 1
        assert sum(len(links) for links in collector.container_links.values()) == 2
        stop = threading.Event()
        thread = threading.Thread(target=collector.run, kwargs={"should_stop": stop.is_set})
        thread.start()
        try:
            assert container.stdin is not None and container.stdout is not None
            container.stdin.write("go\n")
            container.stdin.flush()
            assert json.loads(container.stdout.readline())["calls"] == 2
            assert container.wait(timeout=60) == 0
            # Its cgroup out of the kernel's scope map, its probes inside detached.
            _wait_for(
                lambda: not collector.container_links and not collector.scope_cgroups,
                PICKUP_SECONDS,
            )
        finally:
            stop.set()
            thread.join()
    finally:
        if container.poll() is None:
            containerd.ctr("task", "rm", "-f", container_id, check=False)
            containerd.ctr("containers", "rm", container_id, check=False)
            container.kill()
            container.wait(timeout=60)
        collector.stop()
    assert [r["function_name"] for r in sink.records] == ["stella_work_hot"] * 2
    for record in sink.records:
        assert record["container_id"] == container_id
        assert record["image_digest"] == image_digest
        assert record["details"]["container_name"] == container_id
        assert record["details"]["container_image"] == reference


@pytest.mark.ebpf
@pytest.mark.slow
def test_the_agent_collects_from_a_containerd_container(
    ebpf: None,
    workload_bin: Path,
    containerd: Containerd,
    image: tuple[str, str],
    tmp_path: Path,
    test_keys: Any,
) -> None:
    """`stella agent run` with a map scoped to the image's digest, containerd's root given in
    stellaops.yaml: the container started after the agent is probed inside (the probes gauge
    rises by its two probes and falls back when it stops), and the signed chain's records
    carry its id, name, image and digest."""
    reference, image_digest = image
    fm = function_map_file(tmp_path / "fm.json", _nodes(workload_bin), service="containerd-web")
    statement = json.loads(fm.read_text())
    statement["predicate"]["scope"] = {"image_digest": image_digest}
    fm.write_text(json.dumps(statement))
    port = free_port()
    config = tmp_path / "stellaops.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "runtime_agent": {
                    "function_map": str(fm),
                    "metrics": {"listen": f"127.0.0.1:{port}"},
                    "export": {
                        "format": "ndjson",
                        "output_path": str(tmp_path / "evidence"),
                        "flush_interval_ms": 500,
                        "aggregation_window_ms": 200,
                    },
                },
                "signals": {
                    "chain_id": "ctrd",
                    "mode": "trace",
                    "signing": {"key_file": str(test_keys.private("collector"))},
                    "containerd_root": str(containerd.root),
                },
            }
        )
    )
    log = (tmp_path / "agent.log").open("w")
    agent = subprocess.Popen(
        [sys.executable, "-m", "stella_bundle", "agent", "run", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def attached() -> float:
        status, text = http_get(port, "/metrics")
        assert status == 200
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "stella_probes_attached":
                    return float(sample.value)
        raise AssertionError("no stella_probes_attached")

    container_id = secrets.token_hex(32)
    container: subprocess.Popen[str] | None = None
    try:
        wait_ready(port, agent, 60)
        assert agent.poll() is None, (tmp_path / "agent.log").read_text()
        before = attached()
        container = _ctr_run(
            containerd, reference, container_id, workload_bin, "--crypto", "--calls", "3"
        )
        wait_for(lambda: attached() == before + 2, PICKUP_SECONDS, "probes inside attached")
        assert container.stdin is not None and container.stdout is not None
        container.stdin.write("go\n")
        container.stdin.flush()
        assert json.loads(container.stdout.readline())["calls"] == 3
        assert container.wait(timeout=60) == 0
        wait_for(lambda: attached() == before, PICKUP_SECONDS, "probes inside detached")
        time.sleep(1.0)  # a flush interval
    finally:
        if container is not None and container.poll() is None:
            containerd.ctr("task", "rm", "-f", container_id, check=False)
            containerd.ctr("containers", "rm", container_id, check=False)
            container.kill()
            container.wait(timeout=60)
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=120)
        log.close()
    assert agent.returncode == 0, (tmp_path / "agent.log").read_text()
    chain = tmp_path / "evidence" / "ctrd"
    assert verify_chain(chain, test_keys.trust_root).passed
    records = list(iter_chain_records(chain))
    counts: dict[str, int] = {}
    for record in records:
        counts[record["function_name"]] = counts.get(record["function_name"], 0) + 1
        assert record["container_id"] == container_id
        assert record["image_digest"] == image_digest
        assert record["details"]["container_runtime"] == "containerd"
        assert record["details"]["container_name"] == container_id
        assert record["details"]["container_image"] == reference
    assert counts == {"EVP_Digest": 1, "stella_work_hot": 3}


def test_labels_larger_than_a_page_are_read(containerd: Containerd, image: tuple[str, str]) -> None:
    """Labels of 24 KB (containerd allows 4 KB each): the container's labels bucket spans
    overflow pages of the store."""
    reference, image_digest = image
    container_id = secrets.token_hex(32)
    big = [item for i in range(6) for item in ("--label", f"a.big{i}={'x' * 4000}")]
    containerd.ctr(
        "containers",
        "create",
        *big,
        *("--label", "nerdctl/name=big-one"),
        reference,
        container_id,
        "/x",
    )
    try:
        assert ContainerdMetadata(containerd.root).lookup(container_id) == {
            "container_name": "big-one",
            "image": reference,
            "image_digest": image_digest,
        }
    finally:
        containerd.ctr("containers", "rm", container_id, check=False)
