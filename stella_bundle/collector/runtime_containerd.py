"""containerd containers: name, image and image digest from containerd's metadata store.

containerd writes a container's record (image name, labels) to its bbolt store before it
creates the task, so the record exists when the kernel reports the container's cgroup. The
store is read directly (boltdb.py), not through the daemon: no socket, no `ctr` subprocess
(~40 ms each, and one for the container and one for its image).

Buckets (containerd metadata/buckets.go): v1/<namespace>/containers/<id>/{image, labels/},
v1/<namespace>/images/<name>/target/{digest, mediatype}. The image digest is the image's
target descriptor (its manifest or index digest, what `ctr images ls` shows and what
`name@digest` pulls), absent when the image was removed after the container was created.

containerd has no container names. The name is the Kubernetes container name
(`io.kubernetes.container.name`, set by the CRI plugin) or nerdctl's (`nerdctl/name`) when a
label carries one, else the container id (what `ctr run IMAGE ID` users name containers by).
Such ids need not be hex: the runc shim's cgroup /<namespace>/<id> is told apart from other
cgroups two levels down by the namespace, one of the store's (`container_at`). An id is looked
up in every namespace (the first holding it answers): Kubernetes' and nerdctl's are random hex.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeVar

from ..digests import PREFIXED_SHA256_RE
from .boltdb import BoltError, Bucket, open_snapshot

CONTAINERD_ROOT: Final = Path("/var/lib/containerd")
METADATA_DB: Final = Path("io.containerd.metadata.v1.bolt") / "meta.db"
# Labels that name a container, first found wins: the CRI plugin's (Kubernetes), nerdctl's.
NAME_LABELS: Final = ("io.kubernetes.container.name", "nerdctl/name")
# Labels the CRI plugin copies from the kubelet: the pod and its Kubernetes namespace.
_POD_LABELS: Final = (
    ("pod_name", "io.kubernetes.pod.name"),
    ("namespace", "io.kubernetes.pod.namespace"),
)
# containerd's identifier rule (identifiers.Validate): what may follow /<namespace>/ as an id.
_CONTAINER_ID: Final = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*\Z")
_MAX_ID_LENGTH: Final = 76
_T = TypeVar("_T")
# A commit during a read means another try; containerd commits a few times per container start.
_ATTEMPTS: Final = 3


def _text(value: bytes | None) -> str | None:
    if not value:
        return None
    try:
        return value.decode()
    except UnicodeDecodeError:
        return None


class ContainerdMetadata:
    """container id → {container_name, image, image_digest[, pod_name, namespace]}, read
    from the metadata store under containerd's root directory ({} when unknown there)."""

    def __init__(self, root: Path = CONTAINERD_ROOT) -> None:
        self.database = root / METADATA_DB
        self._namespaces: tuple[tuple[int, int, int], frozenset[str]] | None = None

    def lookup(self, container_id: str) -> dict[str, str]:
        key = container_id.encode()
        return self._read(lambda root: _container(root, key), {})

    def namespaces(self) -> frozenset[str]:
        """containerd's namespaces (`default`, `k8s.io`, …), read again only when the store
        changed: asked for every cgroup two levels down (container_at)."""
        try:
            info = os.stat(self.database)
        except OSError:
            return frozenset()
        stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
        if self._namespaces is None or self._namespaces[0] != stamp:
            self._namespaces = (stamp, self._read(_namespaces, frozenset()))
        return self._namespaces[1]

    def container_at(self, cgroup_path: str) -> str | None:
        """The id of the container whose cgroup is `cgroup_path` when it is the runc shim's
        /<namespace>/<id> (no cgroup parent given: `ctr run`, nerdctl with cgroupfs), ids of
        any form (`ctr run IMAGE web`); None otherwise. The namespace must be containerd's."""
        parts = cgroup_path.strip("/").split("/")
        if len(parts) != 2 or len(parts[1]) > _MAX_ID_LENGTH or not _CONTAINER_ID.match(parts[1]):
            return None
        return parts[1] if parts[0] in self.namespaces() else None

    def _read(self, reader: Callable[[Bucket], _T], nothing: _T) -> _T:
        """`reader` over the newest committed tree, `nothing` when the store is absent or
        does not parse; read again when a commit happened meanwhile."""
        for _ in range(_ATTEMPTS):
            try:
                fd, snapshot = open_snapshot(self.database)
            except (OSError, BoltError):
                return nothing  # no containerd here (or not yet started)
            try:
                found = reader(snapshot.root_bucket())
                if snapshot.unchanged():
                    return found
            except (BoltError, ValueError):
                # A torn read: pages reused by commits while reading. Checked like the rest.
                if snapshot.unchanged():
                    return nothing
            finally:
                os.close(fd)
        return nothing


def _namespaces(root: Bucket) -> frozenset[str]:
    version = root.bucket(b"v1")
    if version is None:
        return frozenset()
    names = (_text(name) for name, _bucket in version.buckets())
    return frozenset(name for name in names if name)


def _container(root: Bucket, key: bytes) -> dict[str, str]:
    version = root.bucket(b"v1")
    if version is None:
        return {}
    for _namespace, bucket in version.buckets():
        containers = bucket.bucket(b"containers")
        record = containers.bucket(key) if containers is not None else None
        if record is None:
            continue
        labels: dict[bytes, bytes] = {}
        label_bucket = record.bucket(b"labels")
        if label_bucket is not None:
            labels = {k: v for k, v, is_bucket in label_bucket.items() if not is_bucket}
        out: dict[str, str] = {}
        names = (_text(labels.get(label.encode())) for label in NAME_LABELS)
        out["container_name"] = next((n for n in names if n), None) or key.decode()
        for field, label in _POD_LABELS:
            value = _text(labels.get(label.encode()))
            if value:
                out[field] = value
        image = record.get(b"image")
        image_name = _text(image)
        if image_name:
            out["image"] = image_name
            images = bucket.bucket(b"images")
            entry = images.bucket(image) if images is not None and image else None
            target = entry.bucket(b"target") if entry is not None else None
            digest = _text(target.get(b"digest")) if target is not None else None
            if digest and PREFIXED_SHA256_RE.match(digest):
                out["image_digest"] = digest
        return out
    return {}
