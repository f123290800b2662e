"""Container names and image digests from the container runtime that started them.

The cgroup path gives a container's id and runtime; its name and image digest are only known
to the runtime. Podman's state files in containers/storage are read by runtime_podman.py
(`podman inspect`, Name, ImageName and ImageDigest, only for ids they do not hold); containerd's
metadata store by runtime_containerd.py, CRI-O's saved container specs by runtime_crio.py.
Answers are cached per container id; a failed answer is not (the next look asks again). Only
containers of that runtime are asked; absent answers stay absent, never guessed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Final

from ..digests import PREFIXED_SHA256_RE
from .runtime_containerd import ContainerdMetadata
from .runtime_crio import CrioMetadata
from .runtime_podman import PodmanStorage

# A hung runtime must not stall collection: podman inspect answers in ~0.1 s here.
INSPECT_TIMEOUT_SECONDS: Final = 5.0


class RuntimeMetadata:
    """container id → {"container_name", "image", "image_digest"} from the runtime, cached."""

    def __init__(
        self,
        podman: str | None = None,
        containerd: ContainerdMetadata | None = None,
        crio: CrioMetadata | None = None,
        podman_storage: PodmanStorage | None = None,
    ) -> None:
        self.podman = podman if podman is not None else shutil.which("podman")
        self.containerd = containerd if containerd is not None else ContainerdMetadata()
        self.crio = crio if crio is not None else CrioMetadata()
        self.podman_storage = podman_storage if podman_storage is not None else PodmanStorage()
        self._cache: dict[str, dict[str, str]] = {}

    def container_at(self, cgroup_path: str) -> tuple[str, str] | None:
        """(runtime, container id) of a cgroup path no name pattern recognises: containerd's
        /<namespace>/<id> with an id of any form (the namespace tells it apart)."""
        container_id = self.containerd.container_at(cgroup_path)
        return None if container_id is None else ("containerd", container_id)

    def lookup(self, runtime: str, container_id: str) -> dict[str, str]:
        if container_id in self._cache:
            return self._cache[container_id]
        found: dict[str, str] = {}
        if runtime == "podman":
            from_files = self.podman_storage.lookup(container_id)
            if from_files is not None:
                found = from_files
            elif self.podman:
                found = _podman_inspect(self.podman, container_id)
        elif runtime == "containerd":
            found = self.containerd.lookup(container_id)
        elif runtime == "crio":
            found = self.crio.lookup(container_id)
        if found:
            self._cache[container_id] = found
        return found

    def rootfs(self, runtime: str, container_id: str) -> str | None:
        """The container's root filesystem as mounted on the host, where the runtime says (podman
        only); None: found through a process of the container once it runs in its root."""
        if runtime == "podman":
            return self.podman_storage.rootfs(container_id)
        return None


def _podman_inspect(podman: str, container_id: str) -> dict[str, str]:
    try:
        done = subprocess.run(
            [podman, "inspect", "--type", "container", "--format", "json", container_id],
            capture_output=True,
            timeout=INSPECT_TIMEOUT_SECONDS,
            check=False,
        )
        documents = json.loads(done.stdout) if done.returncode == 0 else []
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return {}
    if not isinstance(documents, list) or not documents or not isinstance(documents[0], dict):
        return {}
    document = documents[0]
    out: dict[str, str] = {}
    name = document.get("Name")
    if isinstance(name, str) and name:
        out["container_name"] = name.lstrip("/")
    image = document.get("ImageName")
    if isinstance(image, str) and image:
        out["image"] = image
    digest = document.get("ImageDigest")
    if isinstance(digest, str) and PREFIXED_SHA256_RE.match(digest):
        out["image_digest"] = digest
    return out
