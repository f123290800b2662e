"""Podman containers: name, image and image digest from containers/storage's own state files.

Podman records a container in containers/storage when it creates it, before the OCI runtime
makes its cgroup, so a container is named as its cgroup appears; `podman inspect` (a subprocess
per container, 0.1-0.5 s, waiting on the container's lock while `podman run` holds it) is left
for ids these files do not hold (another graph root).

- `<graph root>/<driver>-containers/containers.json`: id → names (the first is podman's Name),
  image id, and a metadata string whose `image-name` is the reference it was created from;
- `<graph root>/<driver>-images/images.json`: image id → digest (what `podman inspect` calls
  ImageDigest).

Both files are replaced by rename on every change: each is parsed again only when its inode,
mtime or size changed. The container's root filesystem, mounted on the host before its cgroup
exists, is named by the OCI spec podman writes (`<id>/userdata/config.json`, `root.path`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Final

from ..digests import PREFIXED_SHA256_RE
from ..errors import StellaError
from ..jsonio import parse_json

GRAPH_ROOT: Final = Path("/var/lib/containers/storage")


class _StateFile:
    """One JSON state file, parsed again only when it changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._value: Any = None

    def read(self) -> Any:
        """The parsed document; None when absent or unreadable now (asked again next look)."""
        try:
            info = os.stat(self.path)
            stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
            if stamp != self._stamp:
                self._value = parse_json(self.path.read_bytes(), self.path)
                self._stamp = stamp
        except (OSError, StellaError):
            return None
        return self._value


def _by_id(document: Any, wanted: Any) -> dict[str, Any] | None:
    if not isinstance(document, list) or not isinstance(wanted, str):
        return None
    for entry in document:
        if isinstance(entry, dict) and entry.get("id") == wanted:
            return entry
    return None


def _image_name(entry: dict[str, Any], source: Path) -> str | None:
    text = entry.get("metadata")
    if not isinstance(text, str):
        return None
    try:
        metadata = parse_json(text, source)
    except StellaError:
        return None
    name = metadata.get("image-name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) and name else None


class PodmanStorage:
    """container id → {container_name, image, image_digest} from containers/storage."""

    def __init__(self, root: Path = GRAPH_ROOT) -> None:
        self.root = root
        self._files: list[tuple[_StateFile, _StateFile]] = []

    def _pairs(self) -> list[tuple[_StateFile, _StateFile]]:
        # One pair per storage driver (overlay-containers, vfs-containers, ...); looked for
        # again while there is none (podman's first container creates them).
        if not self._files:
            self._files = [
                (
                    _StateFile(found),
                    _StateFile(
                        self.root
                        / (found.parent.name.removesuffix("-containers") + "-images")
                        / "images.json"
                    ),
                )
                for found in sorted(self.root.glob("*-containers/containers.json"))
            ]
        return self._files

    def lookup(self, container_id: str) -> dict[str, str] | None:
        """The container's names; None when no state file holds its id."""
        for containers, images in self._pairs():
            entry = _by_id(containers.read(), container_id)
            if entry is None:
                continue
            out: dict[str, str] = {}
            names = entry.get("names")
            if isinstance(names, list) and names and isinstance(names[0], str) and names[0]:
                out["container_name"] = names[0]
            image_name = _image_name(entry, containers.path)
            if image_name is not None:
                out["image"] = image_name
            image = _by_id(images.read(), entry.get("image"))
            digest = image.get("digest") if image is not None else None
            if isinstance(digest, str) and PREFIXED_SHA256_RE.match(digest):
                out["image_digest"] = digest
            return out
        return None

    def rootfs(self, container_id: str) -> str | None:
        """The container's root filesystem as podman mounted it on the host (its OCI spec's
        `root.path`, mounted before the OCI runtime makes the cgroup); None when unknown or
        not mounted."""
        for containers, _images in self._pairs():
            spec = containers.path.parent / container_id / "userdata" / "config.json"
            try:
                document = parse_json(spec.read_bytes(), spec)
            except (OSError, StellaError):
                continue
            root = document.get("root") if isinstance(document, dict) else None
            path = root.get("path") if isinstance(root, dict) else None
            if isinstance(path, str) and os.path.isabs(path) and os.path.ismount(path):
                return path
        return None
