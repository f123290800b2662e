"""CRI-O containers by pattern: its cgroup paths, and names, images and digests from the specs
CRI-O saves in containers/storage, read from a constructed tree (tests/data/collector/
crio-storage: a run root and a graph root). No CRI-O runs here: not tested against a real one.
"""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stella_bundle.collector.containers import CGROUP_ROOT, CgroupResolver, parse_cgroup_path
from stella_bundle.collector.runtime_crio import CrioMetadata
from stella_bundle.collector.runtimes import RuntimeMetadata
from stella_bundle.collector.session import CollectorConfig
from stella_bundle.formats.scope import Scope

STORAGE = Path(__file__).resolve().parents[1] / "data" / "collector" / "crio-storage"
ROOTS = (STORAGE / "run", STORAGE / "graph")
TAGGED, BY_DIGEST, GRAPH_ONLY, TORN = "c1" * 32, "c2" * 32, "c3" * 32, "c4" * 32
DIGEST = "sha256:" + "d7" * 32
POD = "kubepods-besteffort-pod1b2c3d4e_0000_4111_8222_123456789abc.slice"


@pytest.mark.parametrize(
    "path",
    [
        f"/kubepods.slice/kubepods-besteffort.slice/{POD}/crio-{TAGGED}.scope",
        f"/kubepods.slice/kubepods-besteffort.slice/{POD}/crio-{TAGGED}.scope/container",
        # The cgroupfs manager: no .scope suffix.
        f"/kubepods/besteffort/pod1b2c3d4e-0000-4111-8222-123456789abc/crio-{TAGGED}",
    ],
)
def test_crio_cgroup_paths_give_the_container(path: str) -> None:
    info = parse_cgroup_path(path)
    assert info is not None
    assert (info.container_id, info.runtime) == (TAGGED, "crio")
    assert (info.pod_uid, info.qos_class) == ("1b2c3d4e-0000-4111-8222-123456789abc", "besteffort")


def test_conmon_cgroup_is_no_container() -> None:
    assert parse_cgroup_path(f"/kubepods.slice/{POD}/crio-conmon-{TAGGED}.scope") is None


def test_names_images_and_digests_from_the_saved_specs() -> None:
    crio = CrioMetadata(ROOTS)
    pod = {"pod_name": "web-0", "namespace": "shop"}
    # By tag: the digest containers/storage records for its image (images.json).
    assert crio.lookup(TAGGED) == {
        "container_name": "nginx",
        "image": "quay.io/stella/web:1.4",
        "image_digest": "sha256:" + "e8" * 32,
        **pod,
    }
    # The run root's spec wins over the graph root's older copy, the pod spec's digest over
    # the stored image's.
    assert crio.lookup(BY_DIGEST) == {
        "container_name": "sidecar",
        "image": f"quay.io/stella/sidecar@{DIGEST}",
        "image_digest": DIGEST,
        **pod,
    }
    # Only in the graph root and without labels: the CRI metadata's name.
    assert crio.lookup(GRAPH_ONLY) == {
        "container_name": "worker",
        "image": f"quay.io/stella/worker@{DIGEST}",
        "image_digest": DIGEST,
    }
    # Being written (not JSON yet), unknown, or not an id at all: nothing, never a guess.
    assert crio.lookup(TORN) == {}
    assert crio.lookup("ab" * 32) == {}
    assert crio.lookup("*") == {}
    assert CrioMetadata((STORAGE / "absent",)).lookup(TAGGED) == {}
    # A tagged image and no containers/storage state: no digest, never the image id.
    only_specs = CrioMetadata((STORAGE / "run",))
    assert "image_digest" not in only_specs.lookup(TAGGED)


def test_answers_are_cached_only_once_found(tmp_path: Path) -> None:
    """A spec not there yet (CRI-O still creating the container) is asked for again."""
    roots = (tmp_path / "run",)
    runtime = RuntimeMetadata(podman="", crio=CrioMetadata(roots))
    assert runtime.lookup("crio", TAGGED) == {}
    target = tmp_path / "run" / "overlay-containers" / TAGGED / "userdata"
    target.mkdir(parents=True)
    shutil.copy2(
        STORAGE / "run" / "overlay-containers" / TAGGED / "userdata" / "config.json", target
    )
    assert runtime.lookup("crio", TAGGED)["container_name"] == "nginx"
    (target / "config.json").unlink()
    assert runtime.lookup("crio", TAGGED)["container_name"] == "nginx"  # cached


@pytest.fixture
def crio_scope(ebpf: None) -> Iterator[Path]:
    """A real cgroup v2 directory named as CRI-O's systemd manager names a container's."""
    pod = CGROUP_ROOT / f"stella-test-{uuid.uuid4().hex[:8]}-{POD}"
    scope = pod / f"crio-{BY_DIGEST}.scope"
    scope.mkdir(parents=True)
    try:
        yield scope
    finally:
        for directory in (scope, pod):
            with contextlib.suppress(OSError):
                directory.rmdir()


@pytest.mark.ebpf
def test_a_crio_container_is_scoped_and_named_from_its_spec(
    collect_run: Any, crio_scope: Path
) -> None:
    """The workload in a cgroup named like a CRI-O container's, the map's scope by container
    name and digest: its records carry the names CRI-O saved (constructed tree)."""
    resolver = CgroupResolver(runtime=RuntimeMetadata(podman="", crio=CrioMetadata(ROOTS)))
    config = CollectorConfig(mode="trace", scope=Scope(container_name="side*", image_digest=DIGEST))
    run = collect_run(
        "--calls",
        "3",
        config=config,
        cgroup_procs=crio_scope / "cgroup.procs",
        filter_pid=False,
        resolver=resolver,
    )
    assert run.records_for("stella_work_hot")
    for record in run.sink.records:
        assert record["container_id"] == BY_DIGEST
        assert record["image_digest"] == DIGEST
        # The pod, from the Kubernetes labels CRI-O saved.
        assert (record["pod_name"], record["namespace"]) == ("web-0", "shop")
        details = record["details"]
        assert details["container_runtime"] == "crio"
        assert details["container_name"] == "sidecar"
        assert details["container_image"] == f"quay.io/stella/sidecar@{DIGEST}"
        assert details["scope"]["container_name"] == "sidecar"


@pytest.mark.parametrize("roots", [[], [""], ["/run/containers/storage", 3]])
def test_crio_storage_roots_that_are_not_directories_are_refused(roots: list[Any]) -> None:
    from stella_bundle.collector.run import StartOptions, _runtime_metadata
    from stella_bundle.errors import ConfigError

    options = StartOptions(function_map=Path("fm.json"), config=Path("stellaops.yaml"))
    with pytest.raises(ConfigError) as caught:
        _runtime_metadata({"crio_storage_roots": roots}, options)
    assert caught.value.field == "signals.crio_storage_roots"
    assert "stellaops.yaml" in str(caught.value)


def test_storage_roots_from_the_settings_are_the_ones_read() -> None:
    from stella_bundle.collector.run import StartOptions, _runtime_metadata

    runtime = _runtime_metadata(
        {"crio_storage_roots": [str(root) for root in ROOTS], "containerd_root": "/srv/ctrd"},
        StartOptions(function_map=Path("fm.json")),
    )
    assert runtime.lookup("crio", BY_DIGEST)["container_name"] == "sidecar"
    assert runtime.containerd.database == Path("/srv/ctrd/io.containerd.metadata.v1.bolt/meta.db")
