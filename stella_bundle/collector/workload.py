"""A function map's scope made concrete on this host: the kernel filter keys (cgroup ids,
executable inodes) and the workload context each record carries (DESIGN.md §6).

Executable path → (inode, device) of the file it resolves to; systemd unit → the id of its
cgroup directory (the directory's inode), which covers every cgroup below it; container name
pattern / image digest → the cgroup ids of the matching containers (names and digests from the
container metadata, never guessed).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from ..errors import ConfigError
from ..formats.scope import Scope
from .containers import CgroupResolver, ContainerInfo
from .events import SCOPE_CGROUP, SCOPE_EXE


def kernel_dev(st_dev: int) -> int:
    """The kernel's dev_t of a device number from stat(2): MKDEV is major << 20 | minor,
    which is what inode->i_sb->s_dev holds (user space sees glibc's encoding)."""
    return (os.major(st_dev) << 20) | os.minor(st_dev)


def executable_key(path: str) -> tuple[int, int]:
    """(inode, kernel dev_t) of the file an executable path resolves to."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise ConfigError(
            f"the scope's executable {path} cannot be read on this host: {exc.strerror}",
            field="scope.executable",
        ) from exc
    return info.st_ino, kernel_dev(info.st_dev)


@dataclass(frozen=True)
class ResolvedScope:
    """The scope's selectors as kernel filter keys."""

    scope: Scope
    cgroup_ids: frozenset[int]  # each covers its whole subtree
    executables: frozenset[tuple[int, int]]  # (inode, kernel dev_t)

    @property
    def kernel_flags(self) -> int:
        flags = SCOPE_EXE if self.scope.executable is not None else 0
        if self.scope.systemd_unit is not None or self.scope.container_selected:
            flags |= SCOPE_CGROUP
        return flags

    def context(self, container: ContainerInfo | None) -> dict[str, Any]:
        """The workload context a record of this scope carries (its details.scope): the
        selector values that matched; for a container, its own id, name and digest."""
        out: dict[str, Any] = {}
        scope = self.scope
        if scope.executable is not None:
            out["executable"] = scope.executable
        if scope.systemd_unit is not None:
            out["systemd_unit"] = scope.systemd_unit
        if scope.container_selected and container is not None:
            out["container_id"] = container.container_id
            if container.container_name:
                out["container_name"] = container.container_name
            if container.image_digest:
                out["image_digest"] = container.image_digest
        return out


def _unit_cgroups(unit: str, paths: dict[int, str]) -> set[int]:
    return {cid for cid, path in paths.items() if PurePosixPath(path).name == unit}


def container_cgroups(
    scope: Scope,
    resolver: CgroupResolver,
    paths: dict[int, str],
    unnamed: set[int] | None = None,
) -> set[int]:
    """The cgroup ids of the running containers the scope's container selectors match; the
    ids of containers nothing could be learnt about (yet) are added to `unnamed`."""
    containers = Scope(container_name=scope.container_name, image_digest=scope.image_digest)
    ids: set[int] = set()
    for cid, path in paths.items():
        info = resolver.parse(path)
        if info is None:
            continue
        info = resolver.enrich(info)
        if unnamed is not None and info.container_name is None and info.image_digest is None:
            unnamed.add(cid)
        if containers.context_matches(
            {"container_name": info.container_name, "image_digest": info.image_digest}
        ):
            ids.add(cid)
    return ids


def container_root(resolver: CgroupResolver, cgroup_path: str) -> str | None:
    """/proc/PID/root of a process of the container whose cgroup is `cgroup_path`: its own
    filesystem. None while it has no process yet, or only one still in the host's root (a
    container's cgroup exists before its first process pivots into the container's root)."""
    procs = resolver.root / cgroup_path.lstrip("/") / "cgroup.procs"
    try:
        pids = procs.read_text().split()
        host_root = os.stat("/")
    except OSError:
        return None
    for pid in pids:
        root = f"/proc/{pid}/root"
        try:
            info = os.stat(root)
        except OSError:
            continue
        if (info.st_ino, info.st_dev) != (host_root.st_ino, host_root.st_dev):
            return root
    return None


def executable_key_in(root: str, executable: str) -> tuple[int, int] | None:
    """(inode, kernel dev_t) of `executable` in the filesystem under `root`, or None."""
    try:
        info = os.stat(root + executable)
    except OSError:
        return None
    return info.st_ino, kernel_dev(info.st_dev)


def resolve_scope(scope: Scope, resolver: CgroupResolver) -> ResolvedScope:
    """Kernel keys for `scope` on this host; ConfigError naming the selector when the workload
    is not found (a filter that matches nothing would collect nothing, silently)."""
    executables: set[tuple[int, int]] = set()
    # With a container selector the path names a file in each container's own filesystem:
    # resolved per container (container_executable_key), not on the host.
    if scope.executable is not None and not scope.container_selected:
        executables.add(executable_key(scope.executable))
    cgroup_ids: set[int] = set()
    if scope.systemd_unit is not None or scope.container_selected:
        paths = resolver.all_paths()
        if scope.systemd_unit is not None:
            cgroup_ids = _unit_cgroups(scope.systemd_unit, paths)
            if not cgroup_ids:
                raise ConfigError(
                    f"no cgroup of unit {scope.systemd_unit} under {resolver.root}: "
                    "is the unit running?",
                    field="scope.systemd_unit",
                )
        else:
            # None may run yet: containers started later are added as their cgroups appear
            # (Collector.watch_containers).
            cgroup_ids = container_cgroups(scope, resolver, paths)
    return ResolvedScope(scope, frozenset(cgroup_ids), frozenset(executables))
