"""CRI-O containers: name, image and image digest from the OCI spec CRI-O saves per container.

CRI-O writes the container's spec, with its own annotations, to the container's directories
in containers/storage before it creates the container (and so its cgroup): under the run root
(`/run/containers/storage/<driver>-containers/<id>/userdata/config.json`) and the graph root
(`/var/lib/containers/storage/...`, kept for restore). Read by path pattern, any storage driver;
not run against a real CRI-O here (no CRI-O package on this host): the layout and annotation
names are CRI-O's (pkg/annotations), the test is a constructed tree.

- name: the Kubernetes container name, from the labels CRI-O copies into
  `io.kubernetes.cri-o.Labels` (`io.kubernetes.container.name`), else from
  `io.kubernetes.cri-o.Metadata`'s name; pod name and namespace from the same labels;
- image: the image as the pod spec asked for it (`io.kubernetes.cri-o.Image`), else the name
  CRI-O knows it by (`io.kubernetes.cri-o.ImageName`);
- image digest: from a reference carrying `@sha256:…`, else what containers/storage records
  for the container's image (images.json's digest, read as for podman: runtime_podman.py; CRI-O
  keeps its containers and images there too). `ImageRef` is the image id, the digest of its
  config, not of its manifest: never used as the digest.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Final

from ..errors import StellaError
from ..jsonio import parse_json
from .runtime_podman import PodmanStorage

STORAGE_ROOTS: Final = (Path("/run/containers/storage"), Path("/var/lib/containers/storage"))
_LABELS: Final = "io.kubernetes.cri-o.Labels"
_METADATA: Final = "io.kubernetes.cri-o.Metadata"
_IMAGES: Final = ("io.kubernetes.cri-o.Image", "io.kubernetes.cri-o.ImageName")
_LABEL_FIELDS: Final = (
    ("container_name", "io.kubernetes.container.name"),
    ("pod_name", "io.kubernetes.pod.name"),
    ("namespace", "io.kubernetes.pod.namespace"),
)
_REFERENCE_DIGEST: Final = re.compile(r"@(sha256:[0-9a-f]{64})\Z")
# Container ids are hex; anything else would be a glob pattern or a path in the lookup below.
_CONTAINER_ID: Final = re.compile(r"[0-9a-f]{64}\Z")


def _json_object(text: Any, source: Path) -> dict[str, Any]:
    """An annotation holding a JSON object ({} when absent or not one)."""
    if not isinstance(text, str):
        return {}
    try:
        value = parse_json(text, source)
    except StellaError:
        return {}
    return value if isinstance(value, dict) else {}


class CrioMetadata:
    """container id → {container_name, image, image_digest[, pod_name, namespace]} from the
    spec CRI-O saved for it ({} when no storage root holds one)."""

    def __init__(self, roots: tuple[Path, ...] = STORAGE_ROOTS) -> None:
        self.roots = roots
        # containers.json and images.json of each root (the graph root's; a run root holds
        # them only for volatile containers).
        self.storages = tuple(PodmanStorage(root) for root in roots)

    def spec_path(self, container_id: str) -> Path | None:
        if not _CONTAINER_ID.match(container_id):
            return None
        for root in self.roots:  # the run root first: the graph root's copy is for restore
            found = sorted(root.glob(f"*-containers/{container_id}/userdata/config.json"))
            if found:
                return found[0]
        return None

    def lookup(self, container_id: str) -> dict[str, str]:
        path = self.spec_path(container_id)
        if path is None:
            return {}
        try:
            spec = parse_json(path.read_bytes(), path)
        except (OSError, StellaError):
            return {}  # being written or removed: asked again on the next look
        annotations = spec.get("annotations") if isinstance(spec, dict) else None
        if not isinstance(annotations, dict):
            return {}
        out = _names(annotations, path)
        references = [r for r in (annotations.get(key) for key in _IMAGES) if isinstance(r, str)]
        image = next((r for r in references if r), None)
        if image is not None:
            out["image"] = image
        digest = next((m.group(1) for r in references if (m := _REFERENCE_DIGEST.search(r))), None)
        if digest is None:
            digest = self._stored_digest(container_id)
        if digest is not None:
            out["image_digest"] = digest
        return out

    def _stored_digest(self, container_id: str) -> str | None:
        """The digest containers/storage records for the container's image."""
        stored = (storage.lookup(container_id) for storage in self.storages)
        found = next((answer for answer in stored if answer is not None), None)
        return None if found is None else found.get("image_digest")


def _names(annotations: dict[str, Any], path: Path) -> dict[str, str]:
    """Container name, pod name and namespace from the Kubernetes labels CRI-O saved, the
    container name else from the CRI metadata."""
    out: dict[str, str] = {}
    labels = _json_object(annotations.get(_LABELS), path)
    for field, label in _LABEL_FIELDS:
        value = labels.get(label)
        if isinstance(value, str) and value:
            out[field] = value
    name = _json_object(annotations.get(_METADATA), path).get("name")
    if "container_name" not in out and isinstance(name, str) and name:
        out["container_name"] = name
    return out
