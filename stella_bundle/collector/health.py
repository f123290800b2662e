"""Probe health: binaries replaced on disk and links lost, found by periodic checks.

A uprobe is attached to an inode at a file offset. When a package upgrade or a deploy puts a
new file at the probed path (rename over it: a new inode; or rewrite in place: a new build id),
the probe stays on the old inode and new processes run code nobody watches. And a link whose
file descriptor was closed (or whose number now names something else) watches nothing.

Both are observed for real, without trusting our own bookkeeping:

- binaries: `stat` of each probed path (device, inode, size, mtime, ctime); when any changed,
  the build id is read again. A new inode or a new build id is a replacement; the same inode
  and build id (a `touch`) is not. A path that vanished is reported once; the probes stay on
  the running copy until a file appears there again (then it is a replacement).
- links: BPF_OBJ_GET_INFO_BY_FD on each link's fd must still name the link id and program id
  the kernel gave at attach; a closed fd, an fd naming no BPF link, or another link is lost.

The collector re-resolves and reattaches (session.py); this module only finds and describes.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from ..formats.seal import REATTACH_REASONS, ProbeReattachment
from ..functionmap.elf import read_build_id

if TYPE_CHECKING:
    from .loader import Link, ProbeRuntime
    from .plan import AttachSpec

HealthReason = Literal["binary_replaced", "link_lost", "binary_missing"]
# A link watched: a spec index (on the host's binary) or (cgroup id, spec index) (on a
# container's own copy).
LinkKey = int | tuple[int, int]
DEFAULT_HEALTH_CHECK_SECONDS: Final = 2.0


@dataclass(frozen=True)
class BinaryIdentity:
    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int
    build_id: str | None

    def same_file_as(self, other: BinaryIdentity) -> bool:
        return (self.device, self.inode, self.size, self.mtime_ns, self.ctime_ns) == (
            other.device,
            other.inode,
            other.size,
            other.mtime_ns,
            other.ctime_ns,
        )

    def describe(self) -> str:
        return f"inode {self.inode}, build id {self.build_id or 'none'}"


def identify(path: str, known: BinaryIdentity | None = None) -> BinaryIdentity | None:
    """What is at `path` now (None: nothing, or no regular file: opening a FIFO to read its
    build id would block the collection loop until a writer came); the build id is read only
    when the file changed since `known`."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    found = BinaryIdentity(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, None)
    if known is not None and found.same_file_as(known):
        return known
    return BinaryIdentity(
        found.device, found.inode, found.size, found.mtime_ns, found.ctime_ns, read_build_id(path)
    )


def nothing_probeable(path: str) -> str:
    """Why `identify` found nothing at `path`, for the log line."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "gone from disk"
    return f"not a regular file (mode {stat.filemode(mode)})"


@dataclass(frozen=True)
class HealthEvent:
    """One thing the health check found and what was done about it (the agent's log line)."""

    reason: HealthReason
    binary_path: str | None
    detail: str
    reattached: int = 0
    failed: int = 0
    previous_build_id: str | None = None
    build_id: str | None = None

    def reattachment(self) -> ProbeReattachment:
        """How the seal names it (reattaching reasons only)."""
        return ProbeReattachment(
            self.reason,
            self.binary_path,
            self.previous_build_id,
            self.build_id,
            self.reattached,
            self.failed,
            self.detail,
        )

    def describe(self) -> str:
        where = f" {self.binary_path}" if self.binary_path else ""
        done = ""
        if self.reason in REATTACH_REASONS:
            done = f"; {self.reattached} probe(s) reattached"
            if self.failed:
                done += f", {self.failed} could not be (named in the next seal)"
        return f"health: {self.reason}{where}: {self.detail}{done}"


@dataclass(frozen=True)
class _LinkSeen:
    link: Link
    ids: tuple[int, int] | None


class ProbeHealth:
    """What each probed binary and each link was when last seen healthy."""

    def __init__(self) -> None:
        self.binaries: dict[str, BinaryIdentity | None] = {}
        # The file each binary's probes are on (kept while the path is empty: a file coming
        # back is compared with, and reported against, the build that was probed).
        self._probed: dict[str, BinaryIdentity] = {}
        self._links: dict[LinkKey, _LinkSeen] = {}
        self._program_ids: dict[tuple[str, str], int | None] = {}

    # Binaries ---------------------------------------------------------------------------------
    def watch_binaries(self, specs: Iterable[AttachSpec]) -> None:
        for spec in specs:
            if spec.user_space and spec.target not in self.binaries:
                found = identify(spec.target)
                self.binaries[spec.target] = found
                if found is not None:
                    self._probed[spec.target] = found

    def changed_binaries(self) -> list[tuple[str, BinaryIdentity | None, BinaryIdentity | None]]:
        """(path, the file probed, now) of every probed binary replaced or gone since the last
        look (now None: gone)."""
        changes: list[tuple[str, BinaryIdentity | None, BinaryIdentity | None]] = []
        for path, seen in self.binaries.items():
            now = identify(path, seen)
            if now == seen:
                continue
            self.binaries[path] = now
            probed = self._probed.get(path)
            if now is None:
                changes.append((path, probed, None))
                continue
            self._probed[path] = now
            same = probed is not None and (now.device, now.inode, now.build_id) == (
                probed.device,
                probed.inode,
                probed.build_id,
            )
            if not same:  # a touch (same file, same build) is no replacement
                changes.append((path, probed, now))
        return changes

    # Links ------------------------------------------------------------------------------------
    def _expected_program(self, runtime: ProbeRuntime, spec: AttachSpec) -> int | None:
        key = (spec.object_name, spec.program)
        if key not in self._program_ids:
            self._program_ids[key] = runtime.program_id(*key)
        return self._program_ids[key]

    def lost_links(
        self,
        runtime: ProbeRuntime,
        links: Mapping[LinkKey, Link],
        spec_of: Callable[[LinkKey], AttachSpec],
    ) -> list[LinkKey]:
        """Keys of every link that no longer is what the kernel gave at attach (all links in
        one call: keys not given are forgotten). A link not seen before is taken as it is
        now (its program id checked)."""
        lost: list[LinkKey] = []
        for index, link in links.items():
            seen = self._links.get(index)
            ids = runtime.link_identity(link)
            # Identity, not equality: a new link often gets the fd number of the old one.
            if seen is None or seen.link is not link:
                expected = self._expected_program(runtime, spec_of(index))
                if ids is None or (expected is not None and ids[1] != expected):
                    lost.append(index)
                    continue
                self._links[index] = _LinkSeen(link, ids)
            elif ids != seen.ids:
                lost.append(index)
        for index in [i for i in self._links if i not in links]:
            del self._links[index]  # detached on purpose (first hit, container, stop)
        for index in lost:
            self._links.pop(index, None)
        return lost
