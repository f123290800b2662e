"""Container context: cgroup path patterns, and a real cgroup v2 scope with the workload in it."""

from __future__ import annotations

import contextlib
import json
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stella_bundle.collector.containers import (
    CGROUP_ROOT,
    CgroupResolver,
    MetadataMap,
    parse_cgroup_path,
)
from stella_bundle.collector.session import CollectorConfig

CID = "4f" * 32


@pytest.mark.parametrize(
    ("path", "runtime"),
    [
        (f"/system.slice/cri-containerd-{CID}.scope", "containerd"),
        (f"/kubepods.slice/kubepods-burstable.slice/crio-{CID}.scope", "crio"),
        (f"/machine.slice/libpod-{CID}.scope/container", "podman"),
        (f"/system.slice/docker-{CID}.scope", "docker"),
        (f"/docker/{CID}", "docker"),
        (f"/libpod_parent/libpod-{CID}", "podman"),
    ],
)
def test_container_runtimes_are_recognised(path: str, runtime: str) -> None:
    info = parse_cgroup_path(path)
    assert info is not None
    assert info.container_id == CID
    assert info.runtime == runtime


def test_kubepods_path_gives_pod_uid_and_qos() -> None:
    path = (
        "/kubepods.slice/kubepods-burstable.slice/"
        "kubepods-burstable-pod1b2c3d4e_0000_4111_8222_123456789abc.slice/"
        f"cri-containerd-{CID}.scope"
    )
    info = parse_cgroup_path(path)
    assert info is not None
    assert info.pod_uid == "1b2c3d4e-0000-4111-8222-123456789abc"
    assert info.qos_class == "burstable"
    guaranteed = parse_cgroup_path(
        f"/kubepods.slice/kubepods-pod1b2c3d4e_0000_4111_8222_123456789abc.slice/crio-{CID}.scope"
    )
    assert guaranteed is not None and guaranteed.qos_class == "guaranteed"


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/user.slice/user-0.slice/session-1.scope",
        "/system.slice/cron.service",
        f"/x/{CID[:40]}",
    ],
)
def test_non_container_paths_give_nothing(path: str) -> None:
    assert parse_cgroup_path(path) is None


def test_metadata_file_names_the_pod(tmp_path: Path) -> None:
    meta = tmp_path / "meta.json"
    digest = "sha256:" + "ab" * 32
    meta.write_text(
        json.dumps(
            {
                "containers": {
                    CID: {"pod_name": "web-0", "namespace": "shop", "image_digest": digest}
                }
            }
        )
    )
    info = parse_cgroup_path(f"/system.slice/cri-containerd-{CID}.scope")
    assert info is not None
    enriched = MetadataMap.load(meta).enrich(info)
    assert enriched.record_fields() == {
        "container_id": CID,
        "pod_name": "web-0",
        "namespace": "shop",
        "image_digest": digest,
    }


@pytest.fixture
def containerd_scope(ebpf: None) -> Iterator[tuple[str, Path]]:
    """A cgroup v2 scope named like a containerd container, under a kubepods pod slice."""
    container_id = secrets.token_hex(32)
    pod_uid = str(uuid.uuid4())
    pod = CGROUP_ROOT / f"stella-test-kubepods-besteffort-pod{pod_uid.replace('-', '_')}.slice"
    scope = pod / f"cri-containerd-{container_id}.scope"
    scope.mkdir(parents=True)
    try:
        yield container_id, scope
    finally:
        for directory in (scope, pod):
            with contextlib.suppress(OSError):
                directory.rmdir()


@pytest.mark.ebpf
def test_records_carry_the_container_id_of_a_real_cgroup(
    collect_run: Any, containerd_scope: tuple[str, Path], tmp_path: Path
) -> None:
    container_id, scope = containerd_scope
    run = collect_run(
        "--calls",
        "10",
        config=CollectorConfig(containers=(container_id,)),
        cgroup_procs=scope / "cgroup.procs",
        filter_pid=False,
    )
    records = run.records_for("stella_work_hot")
    assert records, "the workload inside the container was not observed"
    for record in run.sink.records:
        assert record["container_id"] == container_id
        assert record["details"]["container_runtime"] == "containerd"
        assert record["details"]["qos_class"] == "besteffort"
    # The container filter kept everything else out, and said so.
    assert run.sink.loss["filtered_out"] >= 0


@pytest.mark.ebpf
def test_resolver_maps_cgroup_ids_to_paths(containerd_scope: tuple[str, Path]) -> None:
    container_id, scope = containerd_scope
    resolver = CgroupResolver()
    ids = resolver.ids_under(container_id)
    assert ids == {scope.stat().st_ino}
    info = resolver.container_of(0, scope.stat().st_ino)
    assert info is not None and info.container_id == container_id


def test_runtime_metadata_absent_when_the_runtime_cannot_answer(tmp_path: Path) -> None:
    from stella_bundle.collector.runtimes import RuntimeMetadata

    broken = RuntimeMetadata(podman=str(tmp_path / "no-podman"))
    assert broken.lookup("podman", CID) == {}
    assert broken.lookup("docker", CID) == {}  # only podman is asked
    resolver = CgroupResolver(runtime=broken)
    info = parse_cgroup_path(f"/libpod_parent/libpod-{CID}")
    assert info is not None
    assert resolver.enrich(info) == info  # nothing guessed


def test_podman_storage_files_answer_and_unreadable_ones_do_not(tmp_path: Path) -> None:
    """containers/storage's containers.json and images.json name a podman container; a file
    being rewritten (unparsable now) answers nothing and is read again once it changed."""
    from stella_bundle.collector.runtime_podman import PodmanStorage
    from stella_bundle.collector.runtimes import RuntimeMetadata

    image, digest = "ab" * 32, "sha256:" + "cd" * 32
    (tmp_path / "overlay-containers").mkdir()
    (tmp_path / "overlay-images").mkdir()
    containers = tmp_path / "overlay-containers" / "containers.json"
    containers.write_text('[{"id": "' + CID)  # cut short
    (tmp_path / "overlay-images" / "images.json").write_text(
        json.dumps([{"id": image, "digest": digest, "names": ["localhost/app:1"]}])
    )
    runtime = RuntimeMetadata(podman="", podman_storage=PodmanStorage(tmp_path))
    assert runtime.lookup("podman", CID) == {}
    metadata = json.dumps({"image-name": "localhost/app:1", "name": "app-1"})
    containers.write_text(
        json.dumps([{"id": CID, "names": ["app-1"], "image": image, "metadata": metadata}])
    )
    assert runtime.lookup("podman", CID) == {
        "container_name": "app-1",
        "image": "localhost/app:1",
        "image_digest": digest,
    }
    assert runtime.lookup("podman", "77" * 32) == {}
