"""Container context: pid or cgroup id → cgroup path → container id, pod UID, QoS class.

Patterns for docker, containerd (cri-containerd-…, /<namespace>/<id>), CRI-O (crio-…) and podman
(libpod-…) on cgroup v2 (systemd scopes) and cgroup v1 (/docker/<id>, /kubepods/…). Names, images
and image digests come from an operator-supplied metadata file, then from the runtime
(runtimes.py): unknown → absent, never guessed.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from ..configfile import read_json_config, refuse_unknown_keys
from ..errors import ConfigError
from .runtimes import RuntimeMetadata


def default_cgroup_root() -> Path:
    """The cgroup v2 hierarchy: /sys/fs/cgroup (unified mode) or /sys/fs/cgroup/unified (hybrid)."""
    base = Path("/sys/fs/cgroup")
    if (base / "cgroup.controllers").exists():
        return base
    if (base / "unified" / "cgroup.procs").exists():
        return base / "unified"
    return base


CGROUP_ROOT: Final = default_cgroup_root()

_ID = r"([0-9a-f]{64})"
_CONTAINER_PATTERNS: Final = (
    ("containerd", re.compile(rf"cri-containerd-{_ID}\.scope")),
    ("crio", re.compile(rf"crio-{_ID}\.scope")),
    ("podman", re.compile(rf"libpod-{_ID}\.scope")),
    ("docker", re.compile(rf"docker-{_ID}\.scope")),
    # cgroup v1 and cgroupfs-driver layouts: /docker/<id>, /kubepods/.../<id>, /libpod_parent/...
    ("docker", re.compile(rf"/docker/{_ID}(?:/|$)")),
    ("crio", re.compile(rf"/crio/{_ID}(?:/|$)")),
    # CRI-O with the cgroupfs manager: /kubepods/<qos>/pod<uid>/crio-<id> (not crio-conmon-<id>).
    ("crio", re.compile(rf"/crio-{_ID}(?:/|$)")),
    # podman with the cgroupfs manager: /libpod_parent/libpod-<id>
    ("podman", re.compile(rf"/libpod-{_ID}(?:/|$)")),
    ("containerd", re.compile(rf"/kubepods[^ ]*/pod[0-9a-f_-]+/{_ID}(?:/|$)")),
    # containerd's runc shim without a cgroup parent (ctr, nerdctl with cgroupfs): the
    # cgroup is /<containerd namespace>/<id>, e.g. /default/<id>. Ids of 64 hex digits by
    # their form; others (`ctr run IMAGE web`) by the namespace (CgroupResolver.parse).
    ("containerd", re.compile(rf"^/[A-Za-z0-9][A-Za-z0-9._-]*/{_ID}$")),
)
_POD_RE: Final = re.compile(
    r"kubepods(?:[-/](besteffort|burstable))?[-/]pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})"
)


@dataclass(frozen=True)
class ContainerInfo:
    container_id: str
    runtime: str
    pod_uid: str | None = None
    qos_class: str | None = None
    pod_name: str | None = None
    namespace: str | None = None
    image_digest: str | None = None
    container_name: str | None = None
    image: str | None = None  # the image reference the runtime created it from

    def record_fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {"container_id": self.container_id}
        if self.pod_name:
            out["pod_name"] = self.pod_name
        if self.namespace:
            out["namespace"] = self.namespace
        if self.image_digest:
            out["image_digest"] = self.image_digest
        return out

    def details(self) -> dict[str, Any]:
        out: dict[str, Any] = {"container_runtime": self.runtime}
        if self.container_name:
            out["container_name"] = self.container_name
        if self.image:
            out["container_image"] = self.image
        if self.pod_uid:
            out["pod_uid"] = self.pod_uid
        if self.qos_class:
            out["qos_class"] = self.qos_class
        return out


def parse_cgroup_path(path: str) -> ContainerInfo | None:
    """Container identity from one cgroup path, or None when it is not a container's."""
    for runtime, pattern in _CONTAINER_PATTERNS:
        match = pattern.search(path)
        if match:
            pod_uid = qos = None
            pod = _POD_RE.search(path)
            if pod:
                qos = pod.group(1) or "guaranteed"
                pod_uid = pod.group(2).replace("_", "-")
            return ContainerInfo(match.group(1), runtime, pod_uid, qos)
    return None


def cgroup_paths_of_pid(pid: int, proc: Path = Path("/proc")) -> list[str]:
    """Every hierarchy's path from /proc/PID/cgroup (v2 line `0::/x`, v1 `N:ctrl:/x`)."""
    try:
        text = (proc / str(pid) / "cgroup").read_text()
    except OSError:
        return []
    return [line.split(":", 2)[2] for line in text.splitlines() if line.count(":") >= 2]


_METADATA_KEYS: Final = ("pod_name", "namespace", "image_digest", "container_name", "image")


class MetadataMap:
    """Operator-supplied names: {"containers": {"<id>": {pod_name, namespace, image_digest,
    container_name, image}}}."""

    def __init__(self, entries: dict[str, dict[str, str]]) -> None:
        self.entries = entries

    @classmethod
    def load(cls, path: str | Path | None) -> MetadataMap:
        if path is None:
            return cls({})
        document = read_json_config(path)
        if not isinstance(document, dict):
            raise ConfigError("expected a container metadata object", path=path)
        containers = document.get("containers")
        if not isinstance(containers, dict):
            raise ConfigError(
                "expected an object of container id → metadata", path=path, field="containers"
            )
        refuse_unknown_keys(document, {"containers"}, path, "")
        entries: dict[str, dict[str, str]] = {}
        for cid, meta in containers.items():
            where = f"containers.{cid}"
            if not isinstance(meta, dict):
                raise ConfigError("expected an object", path=path, field=where)
            for key, value in meta.items():
                # A misspelt name (`pod`) was dropped, a null recorded as "None": the evidence
                # carries what the operator meant or the file is refused.
                if key not in _METADATA_KEYS:
                    raise ConfigError(
                        f"unknown key (allowed: {', '.join(sorted(_METADATA_KEYS))})",
                        path=path,
                        field=f"{where}.{key}",
                    )
                if not isinstance(value, str):
                    raise ConfigError(
                        f"expected a string, got {value!r}", path=path, field=f"{where}.{key}"
                    )
            entries[cid] = dict(meta)
        return cls(entries)

    def enrich(self, info: ContainerInfo) -> ContainerInfo:
        meta = self.entries.get(info.container_id)
        if not meta:
            return info
        return ContainerInfo(
            info.container_id,
            info.runtime,
            info.pod_uid,
            info.qos_class,
            meta.get("pod_name"),
            meta.get("namespace"),
            meta.get("image_digest"),
            meta.get("container_name"),
            meta.get("image"),
        )


class CgroupResolver:
    """cgroup v2 id (the cgroup directory's inode) → path, with a cached walk of the hierarchy."""

    def __init__(
        self,
        root: Path = CGROUP_ROOT,
        metadata: MetadataMap | None = None,
        runtime: RuntimeMetadata | None = None,
    ) -> None:
        self.root = root
        self.metadata = metadata or MetadataMap({})
        self.runtime = runtime if runtime is not None else RuntimeMetadata()
        self._paths: dict[int, str] = {}
        self._last_walk = 0.0
        self._infos: dict[int, ContainerInfo | None] = {}

    def _walk(self) -> None:
        now = time.monotonic()
        if now - self._last_walk < 0.5:
            return
        self._last_walk = now
        paths: dict[int, str] = {}
        for dirpath, _dirnames, _files in os.walk(self.root):
            try:
                paths[os.stat(dirpath).st_ino] = "/" + os.path.relpath(dirpath, self.root).lstrip(
                    "."
                )
            except OSError:
                continue
        self._paths = paths

    def path_of(self, cgroup_id: int) -> str | None:
        if cgroup_id not in self._paths:
            self._walk()
        return self._paths.get(cgroup_id)

    def ids_under(self, predicate: str) -> set[int]:
        """cgroup ids of every cgroup whose path contains `predicate` (a container id)."""
        return {cid for cid, path in self.all_paths().items() if predicate in path}

    def all_paths(self) -> dict[int, str]:
        """Every cgroup id → path, walked now."""
        self._last_walk = 0.0
        self._walk()
        return dict(self._paths)

    def parse(self, path: str) -> ContainerInfo | None:
        """parse_cgroup_path, then what only the runtime can tell: a containerd container
        named by its user (`/default/web`), told apart by its namespace."""
        info = parse_cgroup_path(path)
        if info is None:
            found = self.runtime.container_at(path)
            if found is not None:
                info = ContainerInfo(found[1], found[0])
        return info

    def enrich(self, info: ContainerInfo) -> ContainerInfo:
        """Names, image and digest: the operator's metadata file first, then for what it left
        out the runtime's answer (the pod's name and namespace too, from CRI labels)."""
        info = self.metadata.enrich(info)
        missing = [key for key in _METADATA_KEYS if getattr(info, key) is None]
        if missing:
            found = self.runtime.lookup(info.runtime, info.container_id)
            known = {key: found[key] for key in missing if found.get(key)}
            if known:
                info = replace(info, **known)
        return info

    def container_of(self, pid: int, cgroup_id: int) -> ContainerInfo | None:
        if cgroup_id in self._infos:
            return self._infos[cgroup_id]
        info = None
        path = self.path_of(cgroup_id) if cgroup_id else None
        if path is not None:
            info = self.parse(path)
        if info is None:
            # cgroup v1 hosts: the v2 id says nothing; read the pid's v1 paths while it lives.
            for candidate in cgroup_paths_of_pid(pid):
                info = self.parse(candidate)
                if info:
                    break
        if info is not None:
            info = self.enrich(info)
        if path is not None:
            self._infos[cgroup_id] = info
        return info
